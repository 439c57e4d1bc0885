"""data/reference, the subset of ../shared/reference the tests use without it: its rows, its sources, its
checkpoint, and the image tower and input rebuilt from it."""

from __future__ import annotations

import hashlib
import json
from importlib import resources

import numpy as np
import pytest
import torch
from conftest import BUNDLE, SHARED
from safetensors.torch import load_file

import satclip
from satclip.testing.reference import VISUAL, digital_numbers, model_input, rebuild_visual, state_digest, trained_part

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


def test_rebuilt_image_tower_is_the_recorded_one_and_refuses_another() -> None:
    trained = load_file(BUNDLE / "visual_trained.safetensors")
    assert all(k in ("fc.weight", "fc.bias") or k.endswith((".running_mean", ".running_var", ".num_batches_tracked")) for k in trained)
    assert sum(v.numel() for v in trained.values()) == 140_948
    visual = rebuild_visual(trained, SOURCES["visual_digest"])
    assert len(visual) == 122 and sum(v.numel() for v in visual.values()) == 11_348_820
    assert trained_part(visual).keys() == trained.keys()
    moved = {**trained, "fc.bias": trained["fc.bias"] + 1e-7}
    with pytest.raises(ValueError, match="rebuilt from data/reference is not the reference's"):
        rebuild_visual(moved, SOURCES["visual_digest"])
    rng = torch.get_rng_state()
    rebuild_visual(trained, SOURCES["visual_digest"])
    assert torch.equal(torch.get_rng_state(), rng)  # the seed-0 initialisation leaves the caller's random state alone


def test_image_input_round_trips_through_its_digital_numbers() -> None:
    with np.load(BUNDLE / "img_input_224_dn.npz") as archive:
        dn = archive["dn"]
    assert dn.dtype == np.uint16 and dn.shape == (3, 12, 224, 224)
    image = model_input(dn)
    assert image.dtype == np.float32 and image.shape == (3, 13, 224, 224) and not image[:, 10].any()
    assert np.array_equal(digital_numbers(image), dn)
    with pytest.raises(ValueError, match="not uint16 reflectance"):
        digital_numbers(-image)


def test_rebuilt_image_tower_and_input_are_shared_byte_for_byte_when_present() -> None:
    """With ../shared (CI): the rebuilt tower is the 45 MB original tensor for tensor, the input the original array."""
    reference = SHARED / "reference"
    if not reference.is_dir():
        return
    state = torch.load(reference / CKPT, map_location="cpu", weights_only=True)["state_dict"]
    original = {k[len(VISUAL) :]: v for k, v in state.items() if k.startswith(VISUAL)}
    rebuilt = rebuild_visual(load_file(BUNDLE / "visual_trained.safetensors"), SOURCES["visual_digest"])
    assert state_digest(original) == SOURCES["visual_digest"]
    assert sorted(rebuilt) == sorted(original) and all(torch.equal(rebuilt[k], v) and rebuilt[k].dtype == v.dtype for k, v in original.items())
    with np.load(BUNDLE / "img_input_224_dn.npz") as archive:
        assert np.array_equal(model_input(archive["dn"]), np.load(reference / "img_input_224.npy"))
    assert np.array_equal(np.load(BUNDLE / "img_emb_satclip-resnet18-l10.npy"), np.load(reference / "img_emb_satclip-resnet18-l10.npy"))
