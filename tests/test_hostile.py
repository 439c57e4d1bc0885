"""Hostile files: pickled code in checkpoints (from disk, the hub cache, a URL cache, or resume) is refused
before it runs; config files are never evaluated as code; remote checkpoints only over https."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import satclip


class _Payload:
    """Unpickling this creates ``marker``: if the marker exists, code from the file ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _hostile(path: Path, marker: Path) -> Path:
    """A plausible SatCLIP Lightning checkpoint with a payload hidden in its hyper-parameters."""
    hparams = {
        "embed_dim": 256,
        "vision_layers": "moco_resnet18",
        "in_channels": 13,
        "le_type": "sphericalharmonics",
        "pe_type": "siren",
        "legendre_polys": 10,
        "note": _Payload(marker),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {"model.logit_scale": torch.zeros(())}, "hyper_parameters": hparams}, path)
    assert not marker.exists()
    return path


@pytest.mark.parametrize("loader", [satclip.load, satclip.load_location_encoder])
def test_hostile_checkpoint_from_hub_cache_is_refused(tmp_path: Path, hub_cache: Path, fill_hub_cache, loader) -> None:
    marker = tmp_path / "PWNED"
    fill_hub_cache(hub_cache, "someone/SatCLIP-Evil", {"satclip-evil.ckpt": _hostile(tmp_path / "evil.ckpt", marker)})
    with pytest.raises(ValueError, match=r"refusing to load.*nothing in the file was run"):
        loader("someone/SatCLIP-Evil")
    assert not marker.exists()


def test_hostile_checkpoint_from_url_cache_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "PWNED"
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _hostile(Path(torch.hub.get_dir()) / "checkpoints" / "evil.ckpt", marker)
    with pytest.raises(ValueError, match="refusing to load"):
        satclip.load_location_encoder("https://example.org/models/evil.ckpt")
    assert not marker.exists()


@pytest.mark.parametrize("url", ["http://example.org/m.ckpt", "ftp://example.org/m.ckpt", "file:///etc/m.ckpt"])
def test_only_https_urls(url: str) -> None:
    with pytest.raises(ValueError, match="only https"):
        satclip.load(url)


# --- satclip fit: configs are data, resuming is weights-only --------------------------------------

TINY_FIT = [
    "--model.vision",
    "test_resnet",
    "--model.embed_dim",
    "16",
    "--model.location",
    '{"pe": "sphericalharmonics", "nn": "siren", "legendre_polys": 3, "dim_hidden": 16, "num_layers": 1}',
    "--data",
    "satclip.train.synthetic.SyntheticDataModule",
    "--data.num_batches",
    "2",
    "--data.val_batches",
    "0",
    "--trainer.max_steps",
    "2",
    "--trainer.accelerator",
    "cpu",
    "--trainer.logger",
    "false",
    "--trainer.enable_progress_bar",
    "false",
    "--trainer.enable_model_summary",
    "false",
]


@pytest.mark.parametrize(
    "config",
    [
        "model:\n  embed_dim: !!python/object/apply:builtins.open ['{marker}', 'w']\n",
        "!!python/object/apply:builtins.open ['{marker}', 'w']\n",
        "trainer:\n  callbacks:\n    - class_path: builtins.open\n      init_args: {{file: '{marker}', mode: w}}\n",
    ],
)
def test_fit_config_is_never_evaluated_as_code(tmp_path: Path, config: str, capsys: pytest.CaptureFixture) -> None:
    from satclip.train.cli import main

    marker = tmp_path / "PWNED"
    path = tmp_path / "hostile.yaml"
    path.write_text(config.format(marker=marker))
    with pytest.raises(SystemExit) as info:
        main(["--config", str(path), *TINY_FIT, "--trainer.default_root_dir", str(tmp_path)])
    assert info.value.code == 2
    assert "error:" in capsys.readouterr().err
    assert not marker.exists()


def test_fit_refuses_to_resume_from_a_hostile_checkpoint(tmp_path: Path) -> None:
    from satclip.train.checkpoint_io import UnsafeCheckpointError
    from satclip.train.cli import main

    marker = tmp_path / "PWNED"
    path = _hostile(tmp_path / "hostile.ckpt", marker)
    with pytest.raises(UnsafeCheckpointError, match=r"refusing to load .*hostile\.ckpt"):
        main([*TINY_FIT, "--trainer.default_root_dir", str(tmp_path / "run"), "--ckpt_path", str(path)])
    assert not marker.exists()


def test_fit_names_an_empty_corrupt_or_foreign_checkpoint(tmp_path: Path) -> None:
    from satclip.cli import main

    good = tmp_path / "weights.pt"
    torch.save({"w": torch.ones(3)}, good)
    files = {
        "empty.ckpt": (b"", r"not a readable PyTorch checkpoint \(an empty file\)"),
        "garbage.ckpt": (bytes(range(256)) * 8, r"not a readable PyTorch checkpoint \(unpickling failed\)"),
        "truncated.ckpt": (good.read_bytes()[:300], r"not a readable PyTorch checkpoint \(RuntimeError: PytorchStreamReader"),
        "notes.ckpt": (b"just some text\n", r"not a readable PyTorch checkpoint"),
        "weights.ckpt": (good.read_bytes(), r"not a satclip/Lightning checkpoint: no \['state_dict', 'global_step'\] entry"),
    }
    for name, (data, message) in files.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(SystemExit, match=rf"^satclip fit: '.*{name}' is {message}") as info:
            main(["fit", *TINY_FIT, "--trainer.default_root_dir", str(tmp_path / "run"), "--ckpt_path", str(tmp_path / name)])
        assert "weights_only=False" not in str(info.value)
    with pytest.raises(SystemExit, match=r"^satclip fit: --ckpt_path '.*nowhere.ckpt': no such file \(or one of last, best, hpc, registry\)$"):
        main(["fit", *TINY_FIT, "--trainer.default_root_dir", str(tmp_path / "run"), "--ckpt_path", str(tmp_path / "nowhere.ckpt")])
