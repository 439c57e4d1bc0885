"""``satclip embed-images``: the image tower over shards or a GeoTIFF folder, equal to ``encode_image``."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import satclip
from satclip.cli import main as cli_main
from satclip.data.payload import decode_tif
from satclip.data.shards import write_shards
from satclip.io import embed_images as ei
from satclip.io.models import ImageInputs, image_inputs
from satclip.model import SatCLIP

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"
KWARGS = {"embed_dim": 16, "vision": "resnet18", "in_chans": 13, "location": {"legendre_polys": 4, "dim_hidden": 8, "num_layers": 1}}


def save_checkpoint(path: Path, data: dict | None = None) -> Path:
    torch.manual_seed(0)
    model = SatCLIP(**KWARGS)
    ckpt = {"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}, "satclip": {"format": 1, "model": KWARGS}}
    if data is not None:
        ckpt["datamodule_hyper_parameters"] = data
    torch.save(ckpt, path)
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.ckpt")


def expected(checkpoint: Path, files: list[Path], crop: int = 224) -> np.ndarray:
    """The reference preprocessing by hand: DN / 10000, zero B10 at index 10, centre crop, encode_image."""
    images = []
    for f in files:
        x = decode_tif(f.read_bytes()).astype(np.float32) / 10000
        x = np.insert(x, 10, 0.0, axis=0)
        top, left = (x.shape[1] - crop) // 2, (x.shape[2] - crop) // 2
        images.append(x[:, top : top + crop, left : left + crop])
    with torch.no_grad():
        return satclip.load(checkpoint).encode_image(torch.from_numpy(np.stack(images))).numpy()


def test_folder_and_shards_match_encode_image(tmp_path: Path, checkpoint: Path) -> None:
    index = pd.read_csv(SAMPLE / "index.csv")
    files = [SAMPLE / "images" / fn for fn in index["fn"]]
    want = expected(checkpoint, files)
    model, preprocess = satclip.create_model_and_transforms(checkpoint)
    inputs = preprocess.inputs
    assert inputs == ImageInputs(None, True, 224) and not model.training
    rows, skipped = ei.embed_images(model, ei.open_images(SAMPLE, inputs, batch_size=3), output=tmp_path / "folder.parquet", progress=False)
    assert rows == len(files) and skipped == {}
    out = pd.read_parquet(tmp_path / "folder.parquet")
    assert list(out["key"]) == [fn.removesuffix(".tif") for fn in index["fn"]]  # input order kept
    np.testing.assert_allclose(out[["lon", "lat"]].to_numpy(), index[["lon", "lat"]].to_numpy(), atol=1e-9)
    np.testing.assert_allclose(out[[f"emb_{i}" for i in range(16)]].to_numpy(), want, rtol=0, atol=1e-5)
    write_shards([SAMPLE], tmp_path / "shards", payload="s2c", samples_per_shard=3, progress=False)
    assert (
        cli_main(
            [
                "embed-images",
                "--checkpoint",
                str(checkpoint),
                "--input",
                str(tmp_path / "shards"),
                "--output",
                str(tmp_path / "shards.csv"),
                "--batch-size",
                "4",
                "--no-progress",
            ]
        )
        == 0
    )
    shards = pd.read_csv(tmp_path / "shards.csv")
    assert list(shards["key"]) == list(out["key"])
    np.testing.assert_allclose(shards[[f"emb_{i}" for i in range(16)]].to_numpy(), want, rtol=0, atol=1e-5)


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_unknown_locations_and_bad_files(tmp_path: Path, checkpoint: Path, capsys: pytest.CaptureFixture) -> None:
    import rasterio

    folder = tmp_path / "tifs"
    folder.mkdir()
    src = SAMPLE / "images" / "patch_25630.tif"
    shutil.copy(src, folder / "a.tif")
    with rasterio.open(folder / "b.tif", "w", driver="GTiff", width=256, height=256, count=12, dtype="uint16") as dst:
        dst.write(decode_tif(src.read_bytes()))  # no georeference: embedded, lon/lat NaN
    (folder / "c.tif").write_bytes(b"not a tiff")  # skipped, counted
    out = tmp_path / "emb.parquet"
    assert cli_main(["embed-images", "--checkpoint", str(checkpoint), "--input", str(folder), "--output", str(out), "--no-progress"]) == 0
    assert "skipped 1 (decode: 1)" in capsys.readouterr().out
    table = pd.read_parquet(out)
    assert list(table["key"]) == ["a", "b"] and np.isnan(table.loc[1, ["lon", "lat"]].to_numpy(float)).all()
    np.testing.assert_allclose(table.loc[0, ["lon", "lat"]].to_numpy(float), satclip.geo.lonlat_from_georeference(src), atol=1e-9)
    np.testing.assert_allclose(table.iloc[:, 3:].to_numpy()[0], table.iloc[:, 3:].to_numpy()[1], atol=1e-6)


def test_recorded_crop_and_clear_errors(tmp_path: Path) -> None:
    ckpt = save_checkpoint(tmp_path / "crop.ckpt", data={"crop_size": 64, "bands": None, "insert_b10": True})
    assert image_inputs(ckpt, 13) == ImageInputs(None, True, 64)
    assert image_inputs(ckpt, 13, crop_size=128).crop_size == 128
    with pytest.raises(ValueError, match="takes 12 bands, but the inputs give 13"):
        image_inputs(ckpt, 12)
    with pytest.raises(SystemExit, match="no such file or directory"):
        cli_main(["embed-images", "--checkpoint", str(ckpt), "--input", str(tmp_path / "nowhere"), "--output", str(tmp_path / "e.parquet")])
    with pytest.raises(SystemExit, match="unsupported format"):
        cli_main(["embed-images", "--checkpoint", str(ckpt), "--input", str(SAMPLE), "--output", str(tmp_path / "e.npy")])


def test_create_model_and_transforms_preprocesses_as_the_reference(checkpoint: Path) -> None:
    """The front door's preprocessing: DN / 10000, zero B10 at index 10, centre crop; a (C, H, W) patch or a batch."""
    index = pd.read_csv(SAMPLE / "index.csv")
    files = [SAMPLE / "images" / fn for fn in index["fn"][:3]]
    model, preprocess = satclip.create_model_and_transforms(str(checkpoint), crop_size=128)
    dn = np.stack([decode_tif(f.read_bytes()) for f in files])
    x = preprocess(dn)
    hand = np.insert(dn.astype(np.float32) / 10000, 10, 0.0, axis=1)[:, :, 64:192, 64:192]
    assert x.dtype == torch.float32 and x.shape == (3, 13, 128, 128)
    np.testing.assert_array_equal(x.numpy(), hand)
    assert torch.equal(preprocess(torch.from_numpy(dn[0])), x[:1])
    with torch.no_grad():
        np.testing.assert_allclose(model.encode_image(x).numpy(), expected(checkpoint, files, crop=128), rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="12 bands, but the band order names 13"):
        preprocess(dn, source_bands=[f"B{i}" for i in range(13)])
