"""Transforms: band order with B10, reflectance scaling, crops, flips, blur, coordinate jitter."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from satclip.data.transforms import (
    S2_BANDS,
    S2_BANDS_13,
    Augment,
    band_indices,
    crop,
    crop_offsets,
    finish_batch,
    gaussian_blur,
    insert_zero_bands,
    jitter_lonlat,
    random_flips,
    select_bands,
    target_bands,
    to_reflectance,
)


def test_b10_inserted_at_index_10_as_zeros():
    target = target_bands(S2_BANDS, insert_b10=True)
    assert target == S2_BANDS_13 and target[10] == "B10" and len(target) == 13
    image = np.arange(12 * 4 * 5, dtype=np.uint16).reshape(12, 4, 5) + 1
    out = select_bands(image, band_indices(S2_BANDS, target))
    assert out.shape == (13, 4, 5) and out.dtype == np.uint16
    assert (out[10] == 0).all()
    np.testing.assert_array_equal(out[:10], image[:10])
    np.testing.assert_array_equal(out[11:], image[10:])


def test_band_selection_and_reordering():
    target = target_bands(S2_BANDS, bands=["B04", "B03", "B02"])
    image = np.stack([np.full((2, 2), i, dtype=np.uint16) for i in range(12)])
    out = select_bands(image, band_indices(S2_BANDS, target))
    assert out[:, 0, 0].tolist() == [3, 2, 1]  # B04, B03, B02 are source indices 3, 2, 1
    assert target_bands(S2_BANDS, insert_b10=False) == S2_BANDS
    assert target_bands(S2_BANDS_13, insert_b10=True) == S2_BANDS_13  # already there: unchanged


def test_band_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"\['B99'\] are not in the source bands"):
        band_indices(S2_BANDS, ["B02", "B99"])
    with pytest.raises(ValueError, match="only 3 bands"):
        target_bands(S2_BANDS, bands=["B02", "B03", "B04"], insert_b10=True)


def test_reflectance_is_dn_over_10000():
    dn = torch.tensor([0, 1, 1234, 10000, 65535], dtype=torch.uint16)
    out = to_reflectance(dn)
    assert out.dtype == torch.float32
    np.testing.assert_array_equal(out.numpy(), np.array([0, 1, 1234, 10000, 65535], dtype=np.float32) / np.float32(10000))
    assert to_reflectance(torch.tensor([0.5], dtype=torch.float64)).dtype == torch.float32  # float: cast only


def test_crops():
    assert crop_offsets(256, 256, size=224) == (16, 16)  # centre, as torchvision's CenterCrop
    image = np.arange(256 * 256).reshape(1, 256, 256)
    assert crop(image, 224, top=16, left=16)[0, 0, 0] == 16 * 256 + 16
    rng = np.random.default_rng(0)
    offsets = {crop_offsets(256, 250, size=224, rng=rng) for _ in range(200)}
    assert all(0 <= t <= 32 and 0 <= left <= 26 for t, left in offsets) and len(offsets) > 50
    with pytest.raises(ValueError, match="smaller than the crop size 224"):
        crop_offsets(200, 256, size=224)


def test_flips_are_per_sample_and_both_happen():
    images = torch.arange(64 * 2 * 3 * 3, dtype=torch.float32).reshape(64, 2, 3, 3)
    out = random_flips(images.clone(), torch.Generator().manual_seed(0))  # in place
    kinds = set()
    for x, y in zip(images, out):
        variants = {"none": x, "h": x.flip(-1), "v": x.flip(-2), "hv": x.flip(-1).flip(-2)}
        kinds.add(next(k for k, v in variants.items() if torch.equal(v, y)))
    assert kinds == {"none", "h", "v", "hv"}


def test_gaussian_blur_matches_torchvision_and_keeps_constants():
    tvf = pytest.importorskip("torchvision.transforms.functional")
    images = torch.rand(3, 13, 20, 24, generator=torch.Generator().manual_seed(1))
    sigma = torch.tensor([0.3, 1.0, 2.0])
    for k in (3, 5, 7):  # reflected edges for every tap distance
        out = gaussian_blur(images, sigma, kernel_size=k)
        for i, s in enumerate(sigma.tolist()):
            expected = tvf.gaussian_blur(images[i : i + 1], [k, k], [s, s])
            torch.testing.assert_close(out[i : i + 1], expected, atol=1e-6, rtol=1e-5)
    flat = torch.full((2, 4, 8, 8), 0.25)
    torch.testing.assert_close(gaussian_blur(flat, torch.tensor([0.5, 1.5])), flat)
    with pytest.raises(ValueError, match="reflect padding of 3 needs more than 3 pixels"):
        gaussian_blur(torch.ones(1, 1, 3, 8), torch.tensor([1.0]), kernel_size=7)


def test_jitter_modes():
    lonlat = torch.zeros(20000, 2, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    ref = jitter_lonlat(lonlat, 0.01, mode="reference", generator=gen)
    assert ref.dtype == torch.float64
    assert (ref >= 0).all() and (ref < 0.01).all()  # one-sided: every point moves north-east
    sym = jitter_lonlat(lonlat, 0.01, mode="symmetric", generator=gen)
    assert (sym.abs() < 0.01).all() and (sym < 0).any(dim=0).all()
    assert sym.mean(dim=0).abs().max() < 2e-4  # centred (std of the mean ~4e-5)
    edge = torch.tensor([[179.999, 89.999], [-179.999, -89.999]], dtype=torch.float64)
    moved = jitter_lonlat(edge, 0.01, mode="symmetric", generator=torch.Generator().manual_seed(3))
    assert (moved[:, 0].abs() <= 180).all() and (moved[:, 1].abs() <= 90).all()
    torch.testing.assert_close(jitter_lonlat(edge, 0.0), edge)
    with pytest.raises(ValueError, match="'north' is not one of"):
        jitter_lonlat(edge, 0.01, mode="north")


def test_finish_batch_eval_and_train():
    dn = torch.randint(0, 10000, (4, 13, 8, 8), generator=torch.Generator().manual_seed(0)).to(torch.uint16)
    lonlat = torch.tensor([[10.0, 20.0]] * 4, dtype=torch.float64)
    batch = {"image": dn, "lonlat": lonlat, "key": list("abcd")}
    plain = finish_batch(batch)
    torch.testing.assert_close(plain["image"], dn.float() / 10000)
    assert plain["lonlat"] is lonlat and plain["key"] == list("abcd")
    augmented = finish_batch(batch, Augment(blur=False, jitter=0.5), generator=torch.Generator().manual_seed(0))
    assert augmented["image"].shape == (4, 13, 8, 8) and augmented["image"].dtype == torch.float32
    assert not torch.equal(augmented["lonlat"], lonlat) and (augmented["lonlat"] - lonlat).abs().max() < 0.5
    # flips only permute pixels: per-image sums are unchanged
    torch.testing.assert_close(augmented["image"].sum(dim=(2, 3)), plain["image"].sum(dim=(2, 3)))
    with pytest.raises(ValueError, match="jitter_mode"):
        Augment(jitter_mode="one-sided")


def test_zero_bands_inserted_after_transfer():
    dn = torch.arange(1, 1 + 2 * 12 * 3 * 3, dtype=torch.float32).view(2, 12, 3, 3)
    out = insert_zero_bands(dn, [10])
    assert out.shape == (2, 13, 3, 3) and (out[:, 10] == 0).all()
    assert torch.equal(out[:, :10], dn[:, :10]) and torch.equal(out[:, 11:], dn[:, 10:])
    edges = insert_zero_bands(dn, [0, 5, 13])
    assert edges.shape == (2, 15, 3, 3) and (edges[:, [0, 5, 13]] == 0).all()
    assert torch.equal(edges[:, [1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 12, 14]], dn)
    with pytest.raises(ValueError, match=r"distinct indices in \[0, 13\)"):
        insert_zero_bands(dn, [13])
    batch = {"image": dn.to(torch.uint16), "lonlat": torch.zeros(2, 2, dtype=torch.float64), "zero_bands": [10]}
    finished = finish_batch(batch)
    assert "zero_bands" not in finished and "zero_bands" in batch
    torch.testing.assert_close(finished["image"], out / 10000)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_uint16_batch_finished_on_the_gpu_matches_the_cpu():
    dn = torch.tensor([[0, 1, 32767, 32768, 65535]], dtype=torch.uint16).view(1, 1, 1, 5).expand(2, 13, 4, 5)
    batch = {"image": dn.contiguous(), "lonlat": torch.zeros(2, 2, dtype=torch.float64), "key": ["a", "b"]}
    cpu = finish_batch(batch)["image"]
    gpu = finish_batch({**batch, "image": batch["image"].cuda(), "lonlat": batch["lonlat"].cuda()})["image"]
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=0, atol=0)
    gen = torch.Generator(device="cuda").manual_seed(0)
    out = finish_batch({**batch, "image": batch["image"].cuda(), "lonlat": batch["lonlat"].cuda()}, Augment(), generator=gen)
    assert out["image"].dtype == torch.float32 and out["image"].is_cuda and out["lonlat"].dtype == torch.float64


def test_training_augmentation_keeps_each_patch_band_mean_levels() -> None:
    """The band means are the signal the location tower learns from: flips, blur (reflect padding,
    normalised kernel), B10 insertion and the uint16 -> reflectance conversion must keep the level of
    a constant patch exactly, on the device path (finish_batch) as in the workers (Augment.blurred)."""
    levels = torch.tensor([[50, 900, 4000], [7000, 120, 3333]], dtype=torch.int32)  # (patch, band) digital numbers
    images = levels[:, :, None, None].expand(2, 3, 16, 16).to(torch.uint16).contiguous()
    batch = {"image": images, "lonlat": torch.zeros(2, 2, dtype=torch.float64), "zero_bands": [1]}
    augment = Augment(flips=True, blur=True, jitter=0.0)
    out = finish_batch(batch, augment, generator=torch.Generator().manual_seed(0))["image"]
    expected = torch.stack([levels[:, 0], torch.zeros(2), levels[:, 1], levels[:, 2]], dim=1).float() / 10000
    assert torch.allclose(out.mean(dim=(2, 3)), expected, rtol=0, atol=1e-6)
    assert torch.allclose(out.amin(dim=(2, 3)), out.amax(dim=(2, 3)), rtol=0, atol=1e-6)  # still constant
    worker = augment.blurred(images.float() / 10000, torch.Generator().manual_seed(1))
    assert torch.allclose(worker.mean(dim=(2, 3)), levels.float() / 10000, rtol=0, atol=1e-6)
