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
    assert [r["kind"] for r in rows] == ["checkpoint"] * 6 + ["backbone"] * 3 and rows[5]["revision"].startswith("0ef2acc")
    assert [r["name"] for r in rows[6:]] == [f"{v}_sentinel2_all_moco" for v in ("resnet18", "resnet50", "vit_small_patch16_224")]


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


def _moco_like(tmp_path: Path, vision: str = "resnet18") -> tuple[Path, dict[str, torch.Tensor]]:
    """A plain state dict of timm's ``vision`` over 13 bands, as torchgeo's SSL4EO-S12 files hold."""
    import timm

    state = timm.create_model(vision, pretrained=False, in_chans=13, num_classes=0).state_dict()
    path = tmp_path / "moco.pth"
    torch.save(state, path)
    return path, state


def test_image_backbone_weights_by_name_come_from_the_cache_at_the_pinned_revision(
    tmp_path: Path, hub_cache: Path, fill_hub_cache, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses

    from satclip.vision import build_image_encoder

    entry = pretrained.BACKBONES["resnet18_sentinel2_all_moco"]
    assert entry.repo_id == "torchgeo/resnet18_sentinel2_all_moco" and entry.filename.endswith(f"-{entry.sha256}.pth")
    path, state = _moco_like(tmp_path)
    fill_hub_cache(hub_cache, entry.repo_id, {entry.filename: path}, revision=entry.revision)
    with pytest.raises(ValueError, match=f"expected {entry.sha256}"):  # the real file's hash prefix, not this one's
        build_image_encoder("resnet18", weights=entry.name)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    monkeypatch.setitem(pretrained.BACKBONES, entry.name, dataclasses.replace(entry, sha256=digest[:8]))
    model = build_image_encoder("resnet18", weights=entry.name, embed_dim=16)
    got = model.state_dict()
    assert all(torch.equal(got[k], v) for k, v in state.items()) and got["fc.weight"].shape == (16, 512)
    assert build_image_encoder("resnet18", weights=entry.hub_id, embed_dim=16).state_dict()["conv1.weight"].equal(state["conv1.weight"])


def test_a_released_config_offline_with_an_empty_cache_stops_at_once_naming_the_file(tmp_path: Path) -> None:
    env = _fresh_env(tmp_path, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), WANDB_MODE="offline")
    cmd = [sys.executable, "-m", "satclip.cli", "fit", "--config", str(ROOT / "configs" / "satclip-resnet18-l10.yaml")]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    elapsed = time.perf_counter() - start
    entry = pretrained.BACKBONES["resnet18_sentinel2_all_moco"]
    assert done.returncode == 1 and elapsed < 120  # interpreter, torch and lightning imports; no download attempt
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("satclip fit: image-backbone weights 'resnet18_sentinel2_all_moco'") and "Traceback" not in done.stderr
    assert f"https://huggingface.co/{entry.repo_id}/resolve/{entry.revision}/{entry.filename}" in last
    assert str(tmp_path / "hf" / "hub" / "models--torchgeo--resnet18_sentinel2_all_moco") in last


def test_image_weights_are_a_name_an_hf_hub_file_or_an_existing_path(tmp_path: Path) -> None:
    from satclip.vision import resolve_image_weights

    with pytest.raises(FileNotFoundError, match=r"'runs/x\.pth': no such file, and not a registry name \(one of \['resnet18_sentinel2_all_moco'"):
        resolve_image_weights("runs/x.pth")
    with pytest.raises(ValueError, match="an hf-hub id names one file"):
        resolve_image_weights("hf-hub:torchgeo/resnet18_sentinel2_all_moco")
    path, _ = _moco_like(tmp_path)
    assert resolve_image_weights(path) == path


def test_the_offline_check_asks_the_configured_endpoint_through_huggingface_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    """A mirror (HF_ENDPOINT) that answers is online, whatever huggingface.co does; one that does not is offline at once."""
    import http.server
    import threading

    from huggingface_hub import constants

    from satclip import hubfiles

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
        assert hubfiles.offline_reason() is None
    finally:
        server.shutdown()
        server.server_close()
    start = time.perf_counter()
    reason = hubfiles.offline_reason()  # the same port, now closed
    assert reason is not None and "no answer from http://127.0.0.1" in reason and time.perf_counter() - start < 5


def test_dir_lists_the_lazy_public_names() -> None:
    import satclip.train

    assert {"load", "load_location_encoder", "list_pretrained", "LocationEncoder", "__version__"} <= set(dir(satclip))
    assert "SatCLIPModule" in dir(satclip.train)
