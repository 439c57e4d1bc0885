"""The Hub the ecosystem's way: huggingface_hub's cache variables (each in a fresh interpreter, with a
pre-populated cache), the registry of released models, ``hf-hub:`` ids, and exports that go to the
Hub and come back (``save_pretrained`` / ``from_pretrained``, ``satclip export --push-to-hub``)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import satclip
from satclip import pretrained
from satclip.cli import main as cli
from satclip.io import hub
from satclip.location import LocationEncoder

ROOT = Path(__file__).resolve().parents[1]
LONLAT = torch.tensor([[-73.97, 40.78], [151.2, -33.86], [0.0, -89.5]], dtype=torch.float64)
RESOLVE = "import sys; from satclip.io.hub import resolve_hub_id; print(resolve_hub_id(sys.argv[1]))"


def _fresh_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "XDG_"))}
    return {**env, "HOME": str(home), "PYTHONPATH": str(ROOT), **extra}


@pytest.mark.parametrize(
    "variable, cache_of",
    [
        ("HF_HUB_CACHE", lambda d: d),
        ("HF_HOME", lambda d: d / "hub"),
        ("XDG_CACHE_HOME", lambda d: d / "huggingface" / "hub"),
        ("HOME", lambda d: d / ".cache" / "huggingface" / "hub"),  # ~
    ],
)
def test_cache_variable_is_honoured(variable: str, cache_of, tmp_path: Path, fill_hub_cache) -> None:
    target = tmp_path / "chosen"
    source = tmp_path / "weights.ckpt"
    source.write_bytes(b"weights")
    fill_hub_cache(cache_of(target), "someone/Tower", {"tower.ckpt": source})
    home = target if variable == "HOME" else tmp_path / "home"
    env = _fresh_env(home, HF_HUB_OFFLINE="1", **({} if variable == "HOME" else {variable: str(target)}))
    done = subprocess.run([sys.executable, "-c", RESOLVE, "hf-hub:someone/Tower/tower.ckpt"], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    found = Path(done.stdout.strip())
    assert found.read_bytes() == b"weights" and str(found).startswith(str(cache_of(target)))


def test_offline_variable_fails_at_once_naming_file_and_path(tmp_path: Path) -> None:
    env = _fresh_env(tmp_path, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", RESOLVE, "satclip-resnet50-l40"], capture_output=True, text=True, env=env, timeout=120)
    elapsed = time.perf_counter() - start
    assert done.returncode != 0 and elapsed < 20  # an interpreter start; no DNS retries
    assert "satclip-resnet50-l40.ckpt" in done.stderr and "HF_HUB_OFFLINE is set" in done.stderr
    assert str(tmp_path / "hf" / "hub" / "models--microsoft--SatCLIP-ResNet50-L40") in done.stderr


def test_registry_lists_the_six_releases() -> None:
    names = [w.name for w in satclip.list_pretrained()]
    assert names == [f"satclip-{v}-l{L}" for v in ("resnet18", "resnet50", "vit16") for L in (10, 40)]
    for w in satclip.list_pretrained():
        assert w.repo_id.startswith("microsoft/SatCLIP-") and w.filename == w.name + ".ckpt" and w.sha256 is None
        assert w.license == "MIT" and "2311.17179" in w.citation
    pinned = {w.name: w.revision for w in satclip.list_pretrained() if w.revision}
    assert pinned == {"satclip-vit16-l40": "0ef2acc0b91d3c8cfdf4a0cc03207095989287ab"}  # torchgeo's; nothing invented


def test_satclip_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["list"]) == 0
    out = capsys.readouterr().out
    assert all(w.name in out and w.hub_id in out for w in satclip.list_pretrained()) and "0ef2acc0b91d" in out
    assert cli(["list", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 6 and rows[-1]["revision"].startswith("0ef2acc")


@pytest.mark.parametrize(
    "name",
    [
        "satclip-resnet18-l10",
        "hf-hub:microsoft/SatCLIP-ResNet18-L10",
        "hf-hub:microsoft/SatCLIP-ResNet18-L10/satclip-resnet18-l10.ckpt",
        "microsoft/SatCLIP-ResNet18-L10",
    ],
)
def test_released_name_and_hub_ids_load_from_cache(name: str, hub_cache: Path, fill_hub_cache, released_ckpt: Path) -> None:
    fill_hub_cache(hub_cache, "microsoft/SatCLIP-ResNet18-L10", {"satclip-resnet18-l10.ckpt": released_ckpt})
    with torch.no_grad():
        emb = satclip.load_location_encoder(name)(LONLAT)
        ref = satclip.load_location_encoder(released_ckpt)(LONLAT)
    assert torch.equal(emb, ref)


def test_pinned_revision_is_the_one_looked_up(hub_cache: Path, fill_hub_cache, released_ckpt: Path) -> None:
    fill_hub_cache(hub_cache, "microsoft/SatCLIP-ViT16-L40", {"satclip-vit16-l40.ckpt": released_ckpt})  # some other commit
    with pytest.raises(FileNotFoundError, match="0ef2acc0b91d3c8cfdf4a0cc03207095989287ab"):
        satclip.load_location_encoder("satclip-vit16-l40")
    fill_hub_cache(hub_cache, "microsoft/SatCLIP-ViT16-L40", {"satclip-vit16-l40.ckpt": released_ckpt}, revision="0ef2acc0b91d3c8cfdf4a0cc03207095989287ab")
    assert isinstance(satclip.load_location_encoder("satclip-vit16-l40"), LocationEncoder)


def test_sha256_is_verified_where_known(hub_cache: Path, fill_hub_cache, released_ckpt: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    fill_hub_cache(hub_cache, "microsoft/SatCLIP-ResNet18-L40", {"satclip-resnet18-l40.ckpt": released_ckpt})
    entry = pretrained.PRETRAINED["satclip-resnet18-l40"]
    monkeypatch.setitem(pretrained.PRETRAINED, entry.name, dataclasses.replace(entry, sha256="0" * 64))
    with pytest.raises(ValueError, match="expected 0000"):
        satclip.load_location_encoder("satclip-resnet18-l40")
    digest = hashlib.sha256(released_ckpt.read_bytes()).hexdigest()
    monkeypatch.setitem(pretrained.PRETRAINED, entry.name, dataclasses.replace(entry, sha256=digest))
    assert isinstance(satclip.load_location_encoder("satclip-resnet18-l40"), LocationEncoder)


def test_save_pretrained_from_pretrained_round_trip(tmp_path: Path, hub_cache: Path, fill_hub_cache, released_ckpt: Path) -> None:
    tower = satclip.load_location_encoder(released_ckpt)
    folder = tower.save_pretrained(tmp_path / "tower")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    fill_hub_cache(hub_cache, "me/my-tower", {name: folder / name for name in ("config.json", "model.safetensors")})
    with torch.no_grad():
        ref = tower(LONLAT)
        for source in (folder, "me/my-tower", "hf-hub:me/my-tower"):
            back = LocationEncoder.from_pretrained(source)
            assert not back.training and torch.equal(back(LONLAT), ref)


def test_push_to_hub_offline_fails_clearly(tmp_path: Path, released_ckpt: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConnectionError, match="cannot push .* to 'me/tower': HF_HUB_OFFLINE is set"):
        satclip.load_location_encoder(released_ckpt).save_pretrained(tmp_path / "a", push_to_hub="me/tower")
    with pytest.raises(SystemExit, match="satclip export: cannot push .*offline"):
        cli(["export", "--checkpoint", str(released_ckpt), "--out", str(tmp_path / "b"), "--push-to-hub", "me/tower"])
    assert (tmp_path / "b" / "model.safetensors").is_file()  # the export itself is written first


def test_hub_id_forms() -> None:
    assert hub.parse_hub_id("hf-hub:me/tower") == hub.HubFile("me/tower", ("config.json", "model.safetensors"))
    assert hub.parse_hub_id("hf-hub:me/tower/w.ckpt") == hub.HubFile("me/tower", ("w.ckpt",))
    assert hub.parse_hub_id("me/Tower") == hub.HubFile("me/Tower", ("tower.ckpt",))  # the bare alias: released naming
    assert not hub.is_hub_id("runs/last.ckpt") and not hub.is_hub_id("satclip-resnet18-l11")
