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
    hparams = {"embed_dim": 256, "vision_layers": "moco_resnet18", "in_channels": 13, "le_type": "sphericalharmonics",
               "pe_type": "siren", "legendre_polys": 10, "note": _Payload(marker)}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {"model.logit_scale": torch.zeros(())}, "hyper_parameters": hparams}, path)
    assert not marker.exists()
    return path


@pytest.mark.parametrize("loader", [satclip.load, satclip.load_location_encoder])
def test_hostile_checkpoint_from_hub_cache_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loader) -> None:
    marker = tmp_path / "PWNED"
    folder = tmp_path / "hub" / "models--someone--SatCLIP-Evil"
    _hostile(folder / "snapshots" / "abc123" / "satclip-evil.ckpt", marker)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
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
