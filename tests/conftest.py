"""Shared fixtures: the reference implementation's outputs (../shared/reference, ``SATCLIP_SHARED``
overrides the path; else the repository's subset of them in data/reference, so the location tower,
harmonics, checkpoint and image-tower tests need no ../shared), 20 real
Sentinel-2 sample patches (../shared's, else 20 built from the repository's 8 in data/sample: the
stream and shard tests need no ../shared), a small released-format checkpoint made here, and a
huggingface_hub cache the test fills."""

from __future__ import annotations

import json
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
    """../shared/reference, else data/reference: the same file names, fewer rows (its README)."""
    folder = SHARED / "reference"
    return folder if folder.is_dir() else BUNDLE


@pytest.fixture(scope="session")
def reference_image_tower(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the reference checkpoint whole (its 45 MB image tower included) and the image tower's
    input and output: ../shared/reference, else one rebuilt from data/reference byte for byte
    (:mod:`satclip.testing.reference`; the location files hold the bundle's rows)."""
    import shutil

    import numpy as np
    import torch
    from safetensors.torch import load_file

    from satclip.testing.reference import VISUAL, model_input, rebuild_visual

    folder = SHARED / "reference"
    if folder.is_dir():
        return folder
    out = tmp_path_factory.mktemp("reference-whole")
    ckpt = torch.load(BUNDLE / "satclip-resnet18-l10.ckpt", map_location="cpu", weights_only=True)
    digest = json.loads((BUNDLE / "sources.json").read_text())["visual_digest"]
    visual = rebuild_visual(load_file(BUNDLE / "visual_trained.safetensors"), digest)
    ckpt["state_dict"].update({VISUAL + k: v for k, v in visual.items()})
    torch.save(ckpt, out / "satclip-resnet18-l10.ckpt")
    with np.load(BUNDLE / "img_input_224_dn.npz") as archive:
        np.save(out / "img_input_224.npy", model_input(archive["dn"]))
    for name in ("img_emb_satclip-resnet18-l10.npy", "coords.npy", "loc_emb_satclip-resnet18-l10.npy"):
        shutil.copyfile(BUNDLE / name, out / name)
    return out


@pytest.fixture(scope="session")
def reference_with_image_tower(reference_image_tower: Path) -> Path:
    """The reference checkpoint with its image tower (``model.visual.*``), as released checkpoints are."""
    return reference_image_tower / "satclip-resnet18-l10.ckpt"


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
