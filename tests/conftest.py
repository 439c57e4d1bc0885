"""Shared fixtures: the reference implementation's outputs (../shared/reference, ``SATCLIP_SHARED``
overrides the path; else the repository's subset of them in data/reference, so the location tower,
harmonics and checkpoint tests need no ../shared; only the image tower's skip without it), 20 real
Sentinel-2 sample patches (../shared's, else 20 built from the repository's 8 in data/sample: the
stream and shard tests need no ../shared), a small released-format checkpoint made here, and a
huggingface_hub cache the test fills."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SATCLIP_SHARED", ROOT.parent / "shared"))


BUNDLE = ROOT / "data" / "reference"


@pytest.fixture(scope="session")
def reference() -> Path:
    """../shared/reference, else data/reference: the same file names, fewer rows, no image tower (its README)."""
    folder = SHARED / "reference"
    return folder if folder.is_dir() else BUNDLE


@pytest.fixture(scope="session")
def reference_image_tower() -> Path:
    """../shared/reference, whose checkpoint holds the image tower (45 MB, not in data/reference); skips without it."""
    folder = SHARED / "reference"
    if not folder.is_dir():
        pytest.skip("the reference checkpoint's image tower (45 MB) is in ../shared/reference only, which is not beside the repository")
    return folder


@pytest.fixture(scope="session")
def reference_with_image_tower(reference: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference checkpoint with an image tower: ../shared's as it is; data/reference's has none, so
    there a seeded timm resnet18 (13 bands, 256 outputs, the released ``moco_resnet18`` tower) fills ``model.visual.*``."""
    import timm
    import torch

    path = reference / "satclip-resnet18-l10.ckpt"
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if any(k.startswith("model.visual.") for k in ckpt["state_dict"]):
        return path
    torch.manual_seed(0)
    visual = timm.create_model("resnet18", pretrained=False, in_chans=13, num_classes=256).state_dict()
    ckpt["state_dict"].update({f"model.visual.{k}": v for k, v in visual.items()})
    out = tmp_path_factory.mktemp("reference-full") / path.name
    torch.save(ckpt, out)
    return out


@pytest.fixture(scope="session")
def s2_sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20 real S2-100K-layout patches: ../shared's, else 20 made from the repository's 8 (tests/corpora.py)."""
    folder = SHARED / "data" / "s2-sample"
    if folder.is_dir():
        return folder
    from corpora import write_s2_100k_folder

    return write_s2_100k_folder(tmp_path_factory.mktemp("s2-sample"))


@pytest.fixture(scope="session")
def released_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint in the released microsoft/SatCLIP-* layout (location tower only, L = 10, 64 wide)."""
    import torch

    from satclip.location import build_location_encoder

    torch.manual_seed(0)
    hp = {
        "embed_dim": 256,
        "vision_layers": "moco_resnet18",
        "in_channels": 13,
        "le_type": "sphericalharmonics",
        "pe_type": "siren",
        "legendre_polys": 10,
        "capacity": 64,
        "num_hidden_layers": 2,
    }
    tower = build_location_encoder("sphericalharmonics", "siren", legendre_polys=10, dim_hidden=64, num_layers=2)
    state = {f"model.location.{k}": v for k, v in tower.state_dict().items()}
    path = tmp_path_factory.mktemp("released") / "satclip-resnet18-l10.ckpt"
    torch.save({"state_dict": {**state, "model.logit_scale": torch.zeros(())}, "hyper_parameters": hp}, path)
    return path


def _fill_hub_cache(cache: Path, repo_id: str, files: dict[str, Path], revision: str = "0123456789abcdef0123456789abcdef01234567") -> Path:
    """Lay ``files`` (name -> source) out as huggingface_hub does: snapshots/<revision>/name and refs/main."""
    folder = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = folder / "snapshots" / revision
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, source in files.items():
        (snapshot / name).symlink_to(source)
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text(revision)
    return cache


@pytest.fixture
def fill_hub_cache() -> Callable[..., Path]:
    """``fill_hub_cache(cache, repo_id, {name: source}, revision=...)``: a pre-populated hub cache."""
    return _fill_hub_cache


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty huggingface_hub cache in use for this test, offline (huggingface_hub reads HF_HUB_CACHE at import)."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache
