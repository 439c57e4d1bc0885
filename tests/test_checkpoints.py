"""Loading released and own checkpoints, hub ids from a pre-populated cache, and refusing unsafe files."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch

import satclip
from satclip.io import checkpoints

CKPT = "satclip-resnet18-l10.ckpt"
HUB_ID = "microsoft/SatCLIP-ResNet18-L10"


@pytest.fixture(scope="module")
def coords(reference: Path) -> torch.Tensor:
    return torch.from_numpy(np.load(reference / "coords.npy"))


def test_released_location_encoder_is_exact(reference: Path, coords: torch.Tensor) -> None:
    enc = satclip.load_location_encoder(reference / CKPT)
    assert not enc.training and enc.dtype == torch.float64
    assert enc.config["convention"] == "satclip" and enc.config["dim_hidden"] == 512
    with torch.no_grad():
        emb = enc(coords).numpy()
    np.testing.assert_allclose(emb, np.load(reference / "loc_emb_satclip-resnet18-l10.npy"), rtol=0, atol=1e-9)


def test_released_location_encoder_float32(reference: Path, coords: torch.Tensor) -> None:
    enc = satclip.load_location_encoder(reference / CKPT, dtype="float32")
    with torch.no_grad():
        emb = enc(coords)
    assert emb.dtype == torch.float32
    np.testing.assert_allclose(emb.numpy(), np.load(reference / "loc_emb_satclip-resnet18-l10.npy"), rtol=0, atol=1e-4)


def test_released_full_model_is_exact(reference_image_tower: Path) -> None:
    model = satclip.load(reference_image_tower / CKPT)
    assert not model.training
    image = torch.from_numpy(np.load(reference_image_tower / "img_input_224.npy"))
    coords = torch.from_numpy(np.load(reference_image_tower / "coords.npy")[:50])
    with torch.no_grad():
        img = model.encode_image(image).numpy()
        loc = model.encode_location(coords).numpy()
    ref = np.load(reference_image_tower / "img_emb_satclip-resnet18-l10.npy")
    assert np.abs(img - ref).max() <= 1e-4 * np.abs(ref).max()
    np.testing.assert_allclose(loc, np.load(reference_image_tower / "loc_emb_satclip-resnet18-l10.npy")[:50], rtol=0, atol=1e-9)


def test_released_format_full_model(reference_with_image_tower: Path, reference: Path, coords: torch.Tensor) -> None:
    """``satclip.load`` on the released layout: ``model.visual.*`` is the timm resnet18 as saved, the location tower the reference's."""
    import timm

    model = satclip.load(reference_with_image_tower)
    state = torch.load(reference_with_image_tower, map_location="cpu", weights_only=True)["state_dict"]
    visual = timm.create_model("resnet18", pretrained=False, in_chans=13, num_classes=256)
    visual.load_state_dict({k[len("model.visual.") :]: v for k, v in state.items() if k.startswith("model.visual.")})
    image = torch.rand(2, 13, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(model.encode_image(image), visual.eval()(image))
        loc = model.encode_location(coords[:50]).numpy()
    np.testing.assert_allclose(loc, np.load(reference / "loc_emb_satclip-resnet18-l10.npy")[:50], rtol=0, atol=1e-9)
    assert torch.equal(model.logit_scale.detach(), state["model.logit_scale"])


def test_released_hparams_mapping() -> None:
    hp = {
        "embed_dim": 512,
        "vision_layers": "moco_vit16",
        "in_channels": 13,
        "le_type": "sphericalharmonics",
        "pe_type": "siren",
        "legendre_polys": 40,
        "harmonics_calculation": "closed-form",
        "capacity": 256,
        "num_hidden_layers": 3,
        "frequency_num": 32,
        "min_radius": 1e-5,
        "max_radius": 1e-3,
    }
    kwargs = checkpoints.released_model_kwargs(hp)
    assert kwargs["vision"] == "vit_small_patch16_224" and kwargs["embed_dim"] == 512
    # frequency_num / radii are not parameters of spherical harmonics: left out
    assert kwargs["location"] == {
        "pe": "sphericalharmonics",
        "nn": "siren",
        "legendre_polys": 40,
        "convention": "closed-form",
        "dim_hidden": 256,
        "num_layers": 3,
    }
    with pytest.raises(ValueError, match="vision_layers='clip_rn50'"):
        checkpoints.released_model_kwargs({**hp, "vision_layers": "clip_rn50"})
    with pytest.raises(ValueError, match="harmonics_calculation='discretized'"):
        checkpoints.released_model_kwargs({**hp, "harmonics_calculation": "discretized"})


def test_hub_id_from_prepopulated_cache(hub_cache: Path, fill_hub_cache, reference: Path, coords: torch.Tensor) -> None:
    fill_hub_cache(hub_cache, HUB_ID, {CKPT: reference / CKPT})
    enc = satclip.load_location_encoder(HUB_ID)
    with torch.no_grad():
        emb = enc(coords[:100]).numpy()
    np.testing.assert_allclose(emb, np.load(reference / "loc_emb_satclip-resnet18-l10.npy")[:100], rtol=0, atol=1e-9)


def test_hub_id_offline_not_cached_fails_at_once(hub_cache: Path) -> None:
    start = time.perf_counter()
    with pytest.raises(FileNotFoundError) as info:
        satclip.load_location_encoder("microsoft/SatCLIP-ViT16-L40")
    assert time.perf_counter() - start < 2.0
    message = str(info.value)
    assert "satclip-vit16-l40.ckpt" in message and "offline" in message
    assert str(hub_cache / "models--microsoft--SatCLIP-ViT16-L40") in message


def test_own_checkpoint_format(tmp_path: Path) -> None:
    from satclip.model import SatCLIP

    kwargs = {
        "embed_dim": 16,
        "vision": "resnet18",
        "in_chans": 4,
        "vision_weights": "/nonexistent/moco.pth",
        "location": {"pe": "sphericalharmonics", "nn": "siren", "legendre_polys": 4, "dim_hidden": 32, "num_layers": 1},
        "location_dtype": "float64",
    }
    torch.manual_seed(0)
    model = SatCLIP(**{**kwargs, "vision_weights": None})
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    path = tmp_path / "own.ckpt"
    torch.save({"state_dict": state, "satclip": {"format": 1, "variant": "tiny", "model": kwargs}, "epoch": 3}, path)

    loaded = satclip.load(path)  # vision_weights is ignored: the checkpoint holds the backbone
    lonlat = torch.tensor([[10.0, 20.0], [-170.0, -80.0]], dtype=torch.float64)
    image = torch.rand(2, 4, 64, 64)
    model.eval()
    with torch.no_grad():
        assert torch.equal(loaded.encode_location(lonlat), model.encode_location(lonlat))
        assert torch.equal(loaded.encode_image(image), model.encode_image(image))
        enc = satclip.load_location_encoder(path)
        assert torch.equal(enc(lonlat), model.encode_location(lonlat))
    assert enc.output_dim == 16


def test_unsafe_pickle_is_refused_and_not_run(tmp_path: Path) -> None:
    target = tmp_path / "pwned.txt"

    class Evil:
        def __reduce__(self):
            return (open, (str(target), "w"))

    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": Evil()}, path)
    assert not target.exists()
    with pytest.raises(ValueError, match="refusing to load"):
        satclip.load_location_encoder(path)
    with pytest.raises(ValueError, match="refusing to load"):
        satclip.load(path)
    from satclip.vision import build_image_encoder, load_backbone_weights  # image-tower weights: the same one reader

    with pytest.raises(ValueError, match="refusing to load"):
        load_backbone_weights(build_image_encoder("resnet18", embed_dim=8), path)
    assert not target.exists()


def test_bad_inputs_have_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such file"):
        satclip.load_location_encoder(tmp_path / "missing.ckpt")
    with pytest.raises(FileNotFoundError, match="no such file or directory, and not a released model name .* a Hugging Face Hub id"):
        satclip.load_location_encoder("runs/missing.ckpt")  # dir/file.ckpt is a path, never a hub id
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        satclip.load_location_encoder(text)
    unknown = tmp_path / "unknown.ckpt"
    torch.save({"state_dict": {"model.logit_scale": torch.zeros(())}}, unknown)
    with pytest.raises(ValueError, match="unknown checkpoint format"):
        satclip.load_location_encoder(unknown)
    no_weights = tmp_path / "no_weights.ckpt"
    hp = {
        "embed_dim": 256,
        "vision_layers": "moco_resnet18",
        "in_channels": 13,
        "le_type": "sphericalharmonics",
        "pe_type": "siren",
        "legendre_polys": 10,
        "capacity": 512,
        "num_hidden_layers": 2,
    }
    torch.save({"state_dict": {"model.logit_scale": torch.zeros(())}, "hyper_parameters": hp}, no_weights)
    with pytest.raises(ValueError, match=r"missing \['nnet.last_layer.bias'"):
        satclip.load_location_encoder(no_weights)
    with pytest.raises(ValueError, match="only https"):
        satclip.load_location_encoder("http://example.com/satclip.ckpt")


def test_l40_exact_harmonics_vs_reference_harmonics(reference: Path) -> None:
    """The reference's L=40 features are imprecise; through a released-size tower the embeddings move by
    <~1e-3 for |lat| <= 60 and by a few 1e-2 near the poles (numbers in the README)."""
    from satclip.location import build_location_encoder, spherical_harmonics

    exact = torch.from_numpy(np.load(reference / "sh_exact_L40_first500.npy"))  # at the first rows of coords.npy
    lonlat = torch.from_numpy(np.load(reference / "coords.npy")[: len(exact)])
    ours = spherical_harmonics(lonlat, 40)
    assert (ours - exact).abs().max() <= 1e-9
    torch.manual_seed(0)
    tower = build_location_encoder(legendre_polys=40).eval()  # released architecture: 2 x 512 SIREN, 256 outputs
    with torch.no_grad():
        diff = (tower.nnet(ours) - tower.nnet(torch.from_numpy(np.load(reference / "sh_analytic_L40_first500.npy")))).abs().amax(1)
    mid = lonlat[:, 1].abs() <= 60
    assert diff[mid].max() <= 2e-3
    assert 1e-3 <= diff[~mid].max() <= 0.1
