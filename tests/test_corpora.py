"""``satclip shards`` on the big corpora, built small from the real sample patches (tests/corpora.py):
Major TOM Core-S2L2A / L1C Parquet, SSL4EO-S12 v1.1 zarr.zip, S2-100K as published now. Coordinates,
bit-exact values, patches per cell, times, cloud filtering, corrupt rows, manifests, and `satclip fit`."""

from __future__ import annotations

import json
import math
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
from corpora import SEASON_TIMES, majortom_row, read_shards, sample_patches, write_majortom, write_s2_100k_published, write_ssl4eo
from rasterio.enums import Resampling
from rasterio.io import MemoryFile
from rasterio.warp import transform as warp

from satclip.acqtime import day_of_year, parse_time
from satclip.cli import main
from satclip.data.payload import decode
from satclip.data.shardlist import read_manifest
from satclip.data.shards import ShardInputError, read_index, write_shards
from satclip.data.transforms import S2_BANDS, S2_BANDS_13

WHEN = "20200902T101031"


@pytest.fixture(scope="module")
def l2a(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    patches = sample_patches()
    rows = [majortom_row(patches[i], f"{100 + i}U_{200 + i}R", when=WHEN) for i in range(3)]
    return write_majortom(tmp_path_factory.mktemp("majortom-l2a"), [rows[:2], rows[2:]]), rows


def _cell_10m(row: dict, bands: tuple[str, ...]) -> tuple[np.ndarray, object, object]:
    """Reference: each band read by rasterio onto the 10 m grid of B02 (GDAL nearest resampling)."""
    with MemoryFile(row["B02"]) as m, m.open() as ref:
        height, width, crs, t = ref.height, ref.width, ref.crs, ref.transform
    out = []
    for name in bands:
        with MemoryFile(row[name]) as m, m.open() as src:
            out.append(src.read(1, out_shape=(height, width), resampling=Resampling.nearest))
    return np.stack(out), crs, t


def test_majortom_l2a_patches_coordinates_values_time_and_workers(l2a, tmp_path):
    root, rows = l2a
    one = write_shards([root], tmp_path / "one", samples_per_shard=5, progress=False)
    two = write_shards([root], tmp_path / "two", samples_per_shard=5, workers=2, progress=False)
    assert one == two and one["samples"] == 12 and one["with_time"] == 12  # 3 cells x 4 patches of 256 in 600 px
    assert one["version"] == 2 and one["bands"] == list(S2_BANDS) and one["skipped"] == {} and one["filtered"] == {}
    for shard in one["shards"]:
        assert (tmp_path / "one" / shard["name"]).read_bytes() == (tmp_path / "two" / shard["name"]).read_bytes()
    _, samples = read_shards(tmp_path / "one")
    for row in rows:
        cell, crs, t = _cell_10m(row, S2_BANDS)
        mine = {k: v for k, v in samples.items() if k.startswith(row["grid_cell"])}
        assert len(mine) == 4
        for sample in mine.values():
            record = json.loads(sample["json"])
            top, left = record["offset"]
            assert (top, left) in {(44, 44), (44, 300), (300, 44), (300, 300)}  # centred: 44 px dropped each side
            np.testing.assert_array_equal(decode("s2c", sample["s2c"]), cell[:, top : top + 256, left : left + 256])
            (lon,), (lat,) = warp(crs, "EPSG:4326", [t.c + (left + 128) * t.a], [t.f + (top + 128) * t.e])
            assert abs(record["lon"] - lon) <= 1e-5 and abs(record["lat"] - lat) <= 1e-5
            assert record["time"] == "2020-09-02T10:10:31Z" and record["doy"] == day_of_year(parse_time(WHEN)) == 246
            assert record["cell"] == row["grid_cell"] and record["product_id"] == row["product_id"]


def test_majortom_l1c_cloud_filter_and_corrupt_rows_are_counted(tmp_path, capsys, caplog):
    patches = sample_patches()
    rows = [majortom_row(patches[i], f"{i}D_{i}L", level="L1C") for i in range(5)]
    rows[1]["B05"] = rows[1]["B05"][: len(rows[1]["B05"]) // 2]  # truncated band bytes
    rows[2]["B03"] = None  # a missing band
    rows[3]["product_datetime"] = "2020-13-45"  # a bad datetime
    root = write_majortom(tmp_path / "l1c", [rows], level="L1C")
    assert main(["shards", str(root / "images" / "part_00001.parquet"), "--out", str(tmp_path / "out"), "--max-cloud", "0.5"]) == 0
    printed = capsys.readouterr().out
    assert "wrote 6 samples" in printed and "skipped (corrupt): 3 (band_decode=1, band_missing=1, datetime=1)" in printed
    assert "filtered: 2 (cloud=2)" in printed
    manifest, samples = read_shards(tmp_path / "out")
    assert manifest["bands"] == list(S2_BANDS_13) and manifest["skipped"] == {"band_decode": 1, "band_missing": 1, "datetime": 1}
    assert manifest["filtered"] == {"cloud": 2}  # the cloudy top-left patch of each good cell
    assert {json.loads(s["json"])["cell"] for s in samples.values()} == {"0D_0L", "4D_4L"}
    assert all(json.loads(s["json"])["cloud"] == 0.0 for s in samples.values())
    cell, _, _ = _cell_10m(rows[0], S2_BANDS_13)
    for sample in samples.values():
        record = json.loads(sample["json"])
        if record["cell"] == "0D_0L":
            top, left = record["offset"]
            np.testing.assert_array_equal(decode("s2c", sample["s2c"]), cell[:, top : top + 256, left : left + 256])
    small = majortom_row(patches[0], "9D_9L", level="L1C", size=100)
    again = dict(rows[4], thumbnail=b"a second copy of row 4")
    numbered = dict(rows[0], grid_cell="8D_8L", product_datetime="20200902")
    more = write_majortom(tmp_path / "more", [rows[:1], [small, rows[4], again, rows[0], numbered]], level="L1C")
    manifest = write_shards([more], tmp_path / "more-out", progress=False)
    assert manifest["samples"] == 8 and manifest["skipped"] == {"datetime": 1, "duplicate": 2, "small_cell": 1}  # the first copy of each cell kept
    assert "part_00002.parquet:row 4: product_datetime '20200902' is a number, not a date-time" in caplog.text
    assert "skipped (duplicate) part_00002.parquet:row 3: grid_cell '0D_0L' with product_id 'S2B_MSIL1C_" in caplog.text
    assert "was already read at part_00001.parquet:row 0" in caplog.text
    assert "part_00002.parquet:row 0: the cell is 100x100 px at 10 m, smaller than a 256 px patch" in caplog.text
    with pytest.raises(ShardInputError, match=r"no column\(s\) \['B99'\] for --bands"):
        write_shards([root], tmp_path / "x", bands=["B02", "B99"], progress=False)
    with pytest.raises(ShardInputError, match="--max-cloud is a fraction"):
        write_shards([root], tmp_path / "x", max_cloud=50, progress=False)


@pytest.fixture(scope="module")
def ssl4eo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ssl4eo") / "train" / "S2L2A"
    root.mkdir(parents=True)
    patches = sample_patches()
    write_ssl4eo(root / "ssl4eos12_train_seasonal_data_000001.zarr.zip", patches[:2], first_id=0)
    write_ssl4eo(root / "ssl4eos12_train_seasonal_data_000002.zarr.zip", patches[2:3], first_id=2)
    return root.parent.parent


def test_ssl4eo_one_sample_per_location_and_timestamp_exact(ssl4eo, tmp_path):
    import zarr
    from zarr.storage import ZipStore

    manifest = write_shards([ssl4eo], tmp_path / "all", samples_per_shard=5, workers=2, progress=False)
    assert manifest["samples"] == 12 and manifest["with_time"] == 12 and manifest["bands"] == list(S2_BANDS)
    _, samples = read_shards(tmp_path / "all")
    for path in sorted(ssl4eo.rglob("*.zarr.zip")):
        group = zarr.open_consolidated(ZipStore(path, mode="r"), mode="r", zarr_format=2)
        for s, sample_ids in enumerate(group["sample_id"][:]):
            for t, sample_id in enumerate(sample_ids):
                sample = samples[str(sample_id)]
                record = json.loads(sample["json"])
                stored = group["bands"][s, t]
                image = decode("s2c", sample["s2c"])
                assert image.dtype == np.uint16 and (image.astype(np.int64) == stored.astype(np.int64)).all()
                assert (record["lon"], record["lat"]) == (float(group["center_lon"][s]), float(group["center_lat"][s]))
                x, y = group["x_"][s], group["y_"][s]  # pixel-centre coordinates: the centre is between the middle two
                (lon,), (lat,) = warp(f"EPSG:{int(group['crs'][s])}", "EPSG:4326", [(x[131] + x[132]) / 2], [(y[131] + y[132]) / 2])
                assert abs(record["lon"] - lon) <= 1e-5 and abs(record["lat"] - lat) <= 1e-5
                assert record["time"] == SEASON_TIMES[t] + "Z" and record["crs"] == f"EPSG:{int(group['crs'][s])}"
    summer = write_shards([ssl4eo], tmp_path / "q3", season=3, progress=False)
    _, samples = read_shards(tmp_path / "q3")
    assert summer["samples"] == 3 and all(json.loads(s["json"])["time"].startswith("2021-08") for s in samples.values())


def test_a_parquet_that_is_no_major_tom_part_says_why(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "ds" / "images").mkdir(parents=True)
    part = tmp_path / "ds" / "images" / "part_00001.parquet"
    part.write_bytes(b"PAR1 but not really")
    with pytest.raises(ShardInputError, match=rf"ds: 1 .parquet file\(s\) but no Major TOM part; {part} is not a readable Parquet file \(ArrowInvalid"):
        write_shards([tmp_path / "ds"], tmp_path / "out", progress=False)
    with pytest.raises(ShardInputError, match=rf"one kind at a time; not usable: {part} \(not a readable Parquet file \(ArrowInvalid"):
        write_shards([part], tmp_path / "out", progress=False)
    pq.write_table(pa.table({"lon": [1.0], "lat": [2.0]}), part)
    with pytest.raises(ShardInputError, match=r"without Major TOM's column\(s\) \['product_id', 'grid_cell', 'product_datetime'\] \(it has \['lon', 'lat'\]\)"):
        write_shards([part], tmp_path / "out", progress=False)


def test_a_zarr_zip_that_is_not_one_is_named(ssl4eo, tmp_path, capsys):
    (tmp_path / "text.zarr.zip").write_text("not a zip")
    (tmp_path / "empty.zarr.zip").write_bytes(b"")
    with zipfile.ZipFile(tmp_path / "plain.zarr.zip", "w") as z:
        z.writestr("readme.txt", "a zip, but no consolidated Zarr metadata")
    for name, cause in (("text", "BadZipFile"), ("empty", "BadZipFile"), ("plain", "")):
        bad = tmp_path / f"{name}.zarr.zip"
        with pytest.raises(ShardInputError, match=f"^{bad}: not a readable SSL4EO-S12 v1.1 zarr.zip \\({cause}"):
            write_shards([*sorted(ssl4eo.rglob("*.zarr.zip")), bad], tmp_path / "out", progress=False)
        assert main(["shards", str(bad), "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"satclip shards: error: {bad}: not a readable SSL4EO-S12 v1.1 zarr.zip (") and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


def test_s2_100k_as_published_tars_and_metadata_parquet(tmp_path):
    root = write_s2_100k_published(tmp_path / "s2-100k")
    index = read_index(root / "metadata.parquet")
    assert index == read_index(Path(__file__).resolve().parents[1] / "data" / "sample" / "index.csv")
    manifest = write_shards([root], tmp_path / "out", progress=False)  # finds data/*.tar and metadata.parquet
    _, samples = read_shards(tmp_path / "out")
    assert manifest["samples"] == 8 and manifest["with_time"] == 0
    for key, sample in samples.items():
        record = json.loads(sample["json"])
        assert (record["lon"], record["lat"]) == index[f"{key}.tif"] and "time" not in record
    folder = tmp_path / "folder"
    (folder / "images").mkdir(parents=True)
    with tarfile.open(root / "data" / "shard-00000.tar") as tar:
        tar.extractall(folder, filter="data")
    (folder / "metadata.parquet").write_bytes((root / "metadata.parquet").read_bytes())
    assert write_shards([folder], tmp_path / "out2", progress=False)["samples"] == 8  # images/ + metadata.parquet


def test_geotiff_time_tag_is_carried(tmp_path):
    folder = tmp_path / "tifs"
    folder.mkdir()
    src = sample_patches()[0]
    with rasterio.open(src) as s:
        profile, data = s.profile, s.read()
    with rasterio.open(folder / "a.tif", "w", **profile) as dst:
        dst.write(data)
        dst.update_tags(TIFFTAG_DATETIME="2019:07:04 10:30:00")
    write_shards([folder], tmp_path / "out", progress=False)
    _, samples = read_shards(tmp_path / "out")
    assert json.loads(samples["a"]["json"])["time"] == "2019-07-04T10:30:00Z"


def test_manifest_versions(tmp_path):
    shard = tmp_path / "shard-000000.tar"
    shard.write_bytes(b"")
    old = {
        "format": "satclip-shards/1",
        "payload": "s2c",
        "dtype": "uint16",
        "bands": list(S2_BANDS),
        "shards": [{"name": shard.name, "samples": 3}],
        "samples": 3,
    }  # written before time was carried
    (tmp_path / "manifest.json").write_text(json.dumps(old))
    assert read_manifest([str(shard)]) == ({str(shard): 3}, tuple(S2_BANDS))
    (tmp_path / "manifest.json").write_text(json.dumps({**old, "version": 99}))
    with pytest.raises(ValueError, match="manifest version 99 is newer"):
        read_manifest([str(shard)])


def test_each_corpus_streams_into_fit_with_time(l2a, ssl4eo, tmp_path):
    from satclip.data.datamodule import SatCLIPDataModule
    from satclip.train.cli import main as fit

    patches = sample_patches()
    l1c = write_majortom(tmp_path / "l1c", [[majortom_row(patches[i], f"{i}U_0R", level="L1C") for i in range(2)]], level="L1C")
    sets = {"majortom-l2a": [l2a[0]], "majortom-l1c": [l1c], "ssl4eo": [ssl4eo], "s2-100k": [write_s2_100k_published(tmp_path / "s2")]}
    for name, inputs in sets.items():
        out = tmp_path / name
        write_shards(inputs, out, samples_per_shard=4, progress=False)
        batch = next(iter(SatCLIPDataModule(train_urls=str(out), batch_size=4, num_workers=0, crop_size=32, epoch_length=4).train_dataloader()))
        assert batch["time"].dtype.is_floating_point and batch["time"].shape == (4,) and batch["image"].shape[1] == 13
        assert bool(batch["time"].isnan().all()) if name == "s2-100k" else bool(batch["time"].isfinite().all()), name
        assert not math.isnan(float(batch["lonlat"].sum()))
        cli = fit(
            [
                "--config",
                str(Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"),
                "--data.init_args.train_urls",
                str(out),
                "--data.init_args.val_urls",
                "null",
                "--data.init_args.num_workers",
                "0",
                "--data.init_args.crop_size",
                "32",
                "--data.init_args.batch_size",
                "4",
                "--data.init_args.epoch_length",
                "8",
                "--trainer.max_steps",
                "2",
                "--trainer.default_root_dir",
                str(tmp_path / f"run-{name}"),
                "--trainer.enable_progress_bar",
                "false",
                "--trainer.enable_model_summary",
                "false",
                "--trainer.limit_val_batches",
                "0",
            ]
        )
        assert cli.trainer.global_step == 2, name


@pytest.mark.parametrize("factor", [1, 2, 6])
def test_to_10m_replicates_each_pixel_factor_by_factor(factor):
    from satclip.data.majortom import to_10m

    band = np.random.default_rng(factor).integers(0, 10_000, (7, 5), dtype=np.uint16)
    expected = np.repeat(np.repeat(band, factor, axis=0), factor, axis=1)
    np.testing.assert_array_equal(to_10m(band, factor), expected)
    out = np.zeros((2, 7 * factor, 5 * factor), np.uint16)
    to_10m(band, factor, out=out[1])
    np.testing.assert_array_equal(out[1], expected)
    assert not out[0].any()  # nothing written outside ``out``
