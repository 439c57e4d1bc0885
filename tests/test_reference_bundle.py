"""data/reference, the subset of ../shared/reference the tests use without it: its rows, its sources, its checkpoint."""

from __future__ import annotations

import hashlib
import json
from importlib import resources

import numpy as np
import torch
from conftest import BUNDLE, SHARED

import satclip

SOURCES = json.loads((BUNDLE / "sources.json").read_text())
CKPT = "satclip-resnet18-l10.ckpt"


def _recipe_coords() -> np.ndarray:
    """The 2000 coordinates of ../shared/reference/coords.npy by the recipe in its README."""
    rng = np.random.default_rng(1234)
    lon = rng.uniform(-180, 180, 1990)
    lat = np.degrees(np.arcsin(rng.uniform(-1, 1, 1990)))
    fixed = [(0, 0), (180, 0), (-180, 0), (0, 90), (0, -90), (179.999, 89.999), (-179.999, -89.999), (12.5, -45.25), (-73.97, 40.78), (151.2, -33.86)]
    return np.concatenate([np.stack([lon, lat], 1), np.array(fixed, dtype=np.float64)])


def test_bundle_coordinates_are_the_recorded_rows_of_the_recipe() -> None:
    coords = np.load(BUNDLE / "coords.npy")
    assert coords.shape == (len(SOURCES["rows"]), 2)
    np.testing.assert_allclose(coords, _recipe_coords()[SOURCES["rows"]], rtol=0, atol=1e-12)
    assert np.load(BUNDLE / "sh_exact_L40_first500.npy").shape == (SOURCES["l40_rows"], 1600)
    assert SOURCES["rows"][: SOURCES["l40_rows"]] == list(range(SOURCES["l40_rows"]))


def test_packaged_tuned_hparams_are_the_authors_table() -> None:
    shipped = resources.files("satclip.eval").joinpath("tuned_hparams.csv").read_bytes()
    assert hashlib.sha256(shipped).hexdigest() == SOURCES["sha256"]["data/locencoder-tuned-hparams.csv"]


def test_bundle_checkpoint_is_the_location_tower_in_the_released_format() -> None:
    ckpt = torch.load(BUNDLE / CKPT, map_location="cpu", weights_only=True)
    state = ckpt["state_dict"]
    assert ckpt["hyper_parameters"]["vision_layers"] == "moco_resnet18" and ckpt["hyper_parameters"]["legendre_polys"] == 10
    assert not any(k.startswith("model.visual.") for k in state)
    tower = sorted(k[len("model.location.") :] for k in state if k.startswith("model.location."))
    assert tower == sorted(k[len("model.") :] for k in state if k.startswith("model.nnet.")) and len(tower) == 6
    assert state["model.location.nnet.layers.0.weight"].shape == (512, 100) and state["model.nnet.layers.0.weight"].dtype == torch.float64
    with torch.no_grad():
        emb = satclip.load_location_encoder(BUNDLE / CKPT)(torch.from_numpy(np.load(BUNDLE / "coords.npy"))).numpy()
    np.testing.assert_allclose(emb, np.load(BUNDLE / "loc_emb_satclip-resnet18-l10.npy"), rtol=0, atol=1e-9)


def test_bundle_is_a_subset_of_shared_when_present() -> None:
    """With ../shared (CI): the sources are the ones recorded, and each bundle file their rows. Without: nothing to compare."""
    if not (SHARED / "reference").is_dir():
        return
    for name, digest in SOURCES["sha256"].items():
        assert hashlib.sha256((SHARED / name).read_bytes()).hexdigest() == digest, f"../shared/{name} changed: run scripts/make_test_reference.py"
    rows, l40 = SOURCES["rows"], SOURCES["l40_rows"]
    for name in ("coords.npy", "loc_emb_satclip-resnet18-l10.npy", "sh_analytic_L10.npy"):
        assert np.array_equal(np.load(BUNDLE / name), np.load(SHARED / "reference" / name)[rows]), name
    for name in ("sh_exact_L40_first500.npy", "sh_analytic_L40_first500.npy"):
        assert np.array_equal(np.load(BUNDLE / name), np.load(SHARED / "reference" / name)[:l40]), name
    full = torch.load(SHARED / "reference" / CKPT, map_location="cpu", weights_only=True)
    ours = torch.load(BUNDLE / CKPT, map_location="cpu", weights_only=True)
    assert ours["hyper_parameters"] == full["hyper_parameters"]
    kept = {k: v for k, v in full["state_dict"].items() if not k.startswith("model.visual.")}
    assert sorted(ours["state_dict"]) == sorted(kept) and all(torch.equal(ours["state_dict"][k], v) for k, v in kept.items())
