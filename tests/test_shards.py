"""``satclip shards``: the three input layouts, coordinates, manifest, bit-exact payloads, bad inputs."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
from corpora import read_shards

from satclip.acqtime import day_of_year, parse_time
from satclip.cli import main
from satclip.data.payload import decode
from satclip.data.shards import ShardInputError, encode_in_order, read_index, read_index_table, write_shards
from satclip.data.transforms import S2_BANDS

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def index(s2_sample) -> dict[str, tuple[float, float]]:
    return read_index(s2_sample / "index.csv")


def test_read_index_any_column_order(s2_sample, index):
    assert len(index) == 20
    with open(s2_sample / "index.csv", newline="") as f:
        row = next(csv.DictReader(f))  # columns lat, lon, url, fn
    assert index[row["fn"]] == (float(row["lon"]), float(row["lat"]))


def test_s2_100k_folder_s2c(s2_sample, index, tmp_path):
    manifest = write_shards([s2_sample], tmp_path, samples_per_shard=8, progress=False)
    assert manifest["format"] == "satclip-shards/2" and manifest["version"] == 2 and manifest["with_time"] == 0
    assert manifest["payload"] == "s2c" and manifest["dtype"] == "uint16"
    assert manifest["bands"] == list(S2_BANDS) == "B01 B02 B03 B04 B05 B06 B07 B08 B8A B09 B11 B12".split()
    assert [(s["name"], s["samples"]) for s in manifest["shards"]] == [("shard-000000.tar", 8), ("shard-000001.tar", 8), ("shard-000002.tar", 4)]
    _, samples = read_shards(tmp_path)
    assert sorted(samples) == sorted(name[:-4] for name in index)
    for key, sample in samples.items():
        assert sorted(sample) == ["json", "s2c"]
        record = json.loads(sample["json"])
        assert (record["lon"], record["lat"]) == index[f"{key}.tif"]
        assert record["source"] == f"images/{key}.tif"
        assert record["crs"].startswith("EPSG:326") or record["crs"].startswith("EPSG:327")
        assert record["bands"] == manifest["bands"]
        assert record["shape"] == [12, 256, 256] and record["dtype"] == "uint16"
        with rasterio.open(s2_sample / "images" / f"{key}.tif") as dataset:
            np.testing.assert_array_equal(decode("s2c", sample["s2c"]), dataset.read())


def test_geotiff_folder_coordinates_from_georeference(s2_sample, index, tmp_path):
    folder = tmp_path / "tifs"
    (folder / "more").mkdir(parents=True)
    files = sorted((s2_sample / "images").glob("*.tif"))
    for i, path in enumerate(files):
        shutil.copy(path, folder / ("more" if i % 2 else "") / path.name)
    manifest = write_shards([folder], tmp_path / "out", payload="tif", samples_per_shard=100, progress=False)
    assert manifest["samples"] == 20 and len(manifest["shards"]) == 1
    _, samples = read_shards(tmp_path / "out")
    for key, sample in samples.items():
        record = json.loads(sample["json"])
        name = key.split("/")[-1] + ".tif"
        assert record["source"] == f"{key}.tif"
        assert sample["tif"] == (s2_sample / "images" / name).read_bytes()
        lon, lat = index[name]
        assert abs(record["lon"] - lon) < 1e-5 and abs(record["lat"] - lat) < 1e-5, (name, record, (lon, lat))


def _s2_100k_tars(s2_sample: Path, folder: Path) -> list[Path]:
    """Two tars in the published S2-100K style (members images/patch_N.tif), plus a stray file."""
    folder.mkdir()
    files = sorted((s2_sample / "images").glob("*.tif"))
    tars = [folder / "s2-100k-000.tar", folder / "s2-100k-001.tar"]
    for tar_path, part in zip(tars, (files[:12], files[12:])):
        with tarfile.open(tar_path, "w") as tar:
            for path in part:
                tar.add(path, arcname=f"images/{path.name}")
            tar.add(s2_sample / "index.csv", arcname="index.csv")
    return tars


def test_s2_100k_tars_with_index_and_workers(s2_sample, index, tmp_path):
    tars = _s2_100k_tars(s2_sample, tmp_path / "tars")
    one = write_shards(tars, tmp_path / "one", index=s2_sample / "index.csv", samples_per_shard=6, progress=False)
    two = write_shards(tars, tmp_path / "two", index=s2_sample / "index.csv", samples_per_shard=6, workers=2, progress=False)
    assert one == two and one["samples"] == 20 and [s["samples"] for s in one["shards"]] == [6, 6, 6, 2]
    for shard in one["shards"]:  # deterministic output, whatever the number of processes
        assert (tmp_path / "one" / shard["name"]).read_bytes() == (tmp_path / "two" / shard["name"]).read_bytes()
    _, samples = read_shards(tmp_path / "one")
    for key, sample in samples.items():
        record = json.loads(sample["json"])
        assert (record["lon"], record["lat"]) == index[f"{key}.tif"]
        assert record["source"].endswith(f".tar:images/{key}.tif")
        with rasterio.open(s2_sample / "images" / f"{key}.tif") as dataset:
            np.testing.assert_array_equal(decode("s2c", sample["s2c"]), dataset.read())


def test_s2_100k_tar_folder_without_index_uses_georeference(s2_sample, index, tmp_path):
    tars = _s2_100k_tars(s2_sample, tmp_path / "tars")
    tars[0].unlink()
    write_shards([tmp_path / "tars"], tmp_path / "out", payload="tif", progress=False)
    _, samples = read_shards(tmp_path / "out")
    assert len(samples) == 8
    for key, sample in samples.items():
        record = json.loads(sample["json"])
        lon, lat = index[f"{key}.tif"]
        assert abs(record["lon"] - lon) < 1e-5 and abs(record["lat"] - lat) < 1e-5


def _write_index(path: Path, header: list[str], rows: list[list]) -> Path:
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    return path


def test_bad_index(tmp_path):
    cases = {
        "no_lat.csv": (["fn", "lon"], [["a.tif", 1.0]], r"no latitude column found among \['fn', 'lon'\]"),
        "no_fn.csv": (["name", "lon", "lat"], [["a.tif", 1.0, 2.0]], r"missing column\(s\) \['fn'\]"),
        "two_lon.csv": (["fn", "lon", "Longitude", "lat"], [["a.tif", 1.0, 1.0, 2.0]], r"more than one longitude column: \['lon', 'Longitude'\]"),
        "text.csv": (["fn", "lon", "lat"], [["a.tif", "east", 1.0]], r"line 2 \('a.tif'\): lon='east', lat=1.0: not numbers"),
        "lat95.csv": (["fn", "lon", "lat"], [["a.tif", 1.0, 2.0], ["b.tif", 3.0, 95.0]], r"1 of 2 rows.*first bad row 1"),
        "nan.csv": (["fn", "lon", "lat"], [["a.tif", "nan", 2.0]], r"lon=None, lat=2.0: not numbers \(an empty cell"),  # Arrow reads nan as empty
        "inf.csv": (["fn", "lon", "lat"], [["a.tif", "inf", 2.0]], r"non-finite"),
        "twice.csv": (["fn", "lon", "lat"], [["a.tif", 1, 2], ["images/a.tif", 1, 2]], r"'a.tif' is listed more than once"),
        "empty.csv": (["fn", "lon", "lat"], [], r"no rows"),
    }
    for name, (header, rows, message) in cases.items():
        with pytest.raises(ShardInputError, match=message):
            read_index(_write_index(tmp_path / name, header, rows))
    assert read_index(_write_index(tmp_path / "wrap.csv", ["lat", "fn", "lon"], [[1.0, "a.tif", 190.0]])) == {"a.tif": (-170.0, 1.0)}
    assert read_index(_write_index(tmp_path / "named.csv", ["Latitude", "fn", "LNG"], [[1.0, "a.tif", 5.0]])) == {"a.tif": (5.0, 1.0)}
    xy = _write_index(tmp_path / "xy.csv", ["fn", "x", "y"], [["a.tif", 5.0, 1.0]])
    with pytest.raises(ShardInputError, match="pass --crs EPSG:4326"):
        read_index(xy)
    assert read_index(xy, crs="EPSG:4326") == {"a.tif": (5.0, 1.0)}


def test_index_time_column_lands_in_the_records(s2_sample, index, tmp_path):
    """A time column of the index (found by name, or --time-col) gives every record its time, folder and tars alike."""
    names = sorted(index)
    when = {name: f"2021-{1 + i % 12:02d}-{1 + i:02d}T10:20:{i:02d}Z" for i, name in enumerate(names)}
    world = tmp_path / "world"
    shutil.copytree(s2_sample / "images", world / "images")
    _write_index(world / "index.csv", ["fn", "lon", "lat", "Acquired"], [[n, *index[n], when[n]] for n in names[:-1]] + [[names[-1], *index[names[-1]], ""]])
    manifest = write_shards([world], tmp_path / "folder", progress=False)
    assert manifest["samples"] == 20 and manifest["with_time"] == 19  # the empty cell: unknown (the GeoTIFF has no time tag)
    tars = _s2_100k_tars(s2_sample, tmp_path / "tars")
    both = _write_index(tmp_path / "both.csv", ["fn", "lon", "lat", "time", "date"], [[n, *index[n], when[n], "2000-01-01"] for n in names])
    with pytest.raises(ShardInputError, match=r"more than one time column: \['time', 'date'\]; choose one with --time-col"):
        write_shards(tars, tmp_path / "tars-out", index=both, progress=False)
    assert main(["shards", *map(str, tars), "--index", str(both), "--time-col", "time", "--out", str(tmp_path / "tars-out")]) == 0
    for out in ("folder", "tars-out"):
        _, samples = read_shards(tmp_path / out)
        for key, sample in samples.items():
            record = json.loads(sample["json"])
            if out == "tars-out" or key != names[-1][:-4]:
                assert record["time"] == when[f"{key}.tif"] and record["doy"] == day_of_year(parse_time(when[f"{key}.tif"]))
            else:
                assert "time" not in record
    bad = _write_index(tmp_path / "bad.csv", ["fn", "lon", "lat", "time"], [[names[0], 1.0, 2.0, "last tuesday"]])
    with pytest.raises(ShardInputError, match=r"bad.csv column 'time' data row 0: 'last tuesday' is not an ISO 8601 date"):
        read_index_table(bad)
    with pytest.raises(ShardInputError, match=r"no time column 'when' \(--time-col\)"):
        read_index_table(both, time_col="when")


def test_missing_and_bad_files_are_named(s2_sample, tmp_path):
    root = tmp_path / "s2"
    (root / "images").mkdir(parents=True)
    files = sorted((s2_sample / "images").glob("*.tif"))[:3]
    for path in files:
        shutil.copy(path, root / "images")
    rows = [[p.name, 10.0, 20.0] for p in files] + [["patch_404.tif", 1.0, 2.0]]
    _write_index(root / "index.csv", ["fn", "lon", "lat"], rows)
    with pytest.raises(ShardInputError, match=r"1 of 4 files in the index are missing .*patch_404.tif"):
        write_shards([root], tmp_path / "out", progress=False)

    _write_index(root / "index.csv", ["fn", "lon", "lat"], rows[:3])
    (root / "images" / files[1].name).write_bytes(files[1].read_bytes()[:-1000])
    with pytest.raises(ShardInputError, match=rf"images/{files[1].name}: tif payload could not be decoded"):
        write_shards([root], tmp_path / "out", progress=False)

    shutil.copy(files[1], root / "images")
    with pytest.raises(ShardInputError, match=r"12 bands, but the band list names 13"):
        write_shards([root], tmp_path / "out", bands=[*S2_BANDS, "B10"], progress=False)

    (root / "images" / "extra.tif").write_bytes(files[0].read_bytes())
    with pytest.raises(ShardInputError, match=r"1 GeoTIFFs are not in the index: extra.tif"):
        write_shards([root], tmp_path / "out", progress=False)
    (root / "images" / "extra.tif").unlink()

    write_shards([root], tmp_path / "out", progress=False)
    with pytest.raises(ShardInputError, match="already holds shards"):
        write_shards([root], tmp_path / "out", progress=False)
    assert write_shards([root], tmp_path / "out", overwrite=True, progress=False)["samples"] == 3


def test_a_bad_file_among_many_stops_the_workers_with_its_message(tmp_path):
    """40 good GeoTIFFs and one garbage '.tif' first in order, 2 workers: a prompt, clean error (it used to hang)."""
    folder = tmp_path / "in"
    folder.mkdir()
    good = sorted((ROOT / "data" / "sample" / "images").glob("*.tif"))[0]
    for i in range(40):
        (folder / f"p{i:02d}.tif").symlink_to(good)
    (folder / "a_bad.tif").write_bytes(b"not a tiff at all")
    cmd = [sys.executable, "-m", "satclip.cli", "shards", str(folder), "--out", str(tmp_path / "out"), "--workers", "2"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "satclip shards: error: a_bad.tif: tif payload is not a TIFF" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_dying_worker_stops_the_run():
    with pytest.raises(ShardInputError, match=r"an encoding worker process \(\d+\) died \(exit status 1\) after 0 inputs were encoded"):
        list(encode_in_order(os._exit, [1, 1, 1], workers=2))
    assert list(encode_in_order(abs, range(-100, 0), workers=2, in_flight=1)) == list(range(100, 0, -1))


def test_a_failed_overwrite_keeps_the_old_set(tmp_path):
    sample = ROOT / "data" / "sample"
    out = tmp_path / "out"
    write_shards([sample], out, samples_per_shard=4, progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    (out / "notes.txt").write_text("mine")
    bad = tmp_path / "bad"
    shutil.copytree(sample, bad)
    victim = sorted((bad / "images").glob("*.tif"))[-1]
    victim.write_bytes(victim.read_bytes()[:5000])
    for workers in (1, 2):
        with pytest.raises(ShardInputError, match="could not be decoded"):
            write_shards([bad], out, samples_per_shard=4, workers=workers, overwrite=True, progress=False)
        assert {p.name: p.read_bytes() for p in out.iterdir() if p.name != "notes.txt"} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "out"]  # no temporary folder left
    shutil.copy(sample / "images" / victim.name, victim)
    assert write_shards([bad], out, samples_per_shard=3, overwrite=True, progress=False)["samples"] == 8
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "notes.txt", *(f"shard-00000{i}.tar" for i in range(3))]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "out"]
    with pytest.raises(ShardInputError, match="must be >= 1"):
        write_shards([bad], tmp_path / "x", samples_per_shard=0, progress=False)


def test_mixed_patch_sizes_are_refused(tmp_path):
    root = tmp_path / "s2"
    (root / "images").mkdir(parents=True)
    good = sorted((ROOT / "data" / "sample" / "images").glob("*.tif"))[0]
    shutil.copy(good, root / "images" / "a.tif")
    with rasterio.open(good) as src:
        profile, data = src.profile, src.read()[:, :64, :64]
    profile.update(width=64, height=64)
    with rasterio.open(root / "images" / "b.tif", "w", **profile) as dst:
        dst.write(data)
    _write_index(root / "index.csv", ["fn", "lon", "lat"], [["a.tif", 1.0, 2.0], ["b.tif", 3.0, 4.0]])
    with pytest.raises(ShardInputError, match=r"b.tif: shape \(12, 64, 64\), the other samples are \(12, 256, 256\)"):
        write_shards([root], tmp_path / "out", progress=False)


def test_bad_tars(s2_sample, tmp_path):
    tars = _s2_100k_tars(s2_sample, tmp_path / "tars")
    _write_index(tmp_path / "few.csv", ["fn", "lon", "lat"], [["patch_75123.tif", 1.0, 2.0]])
    with pytest.raises(ShardInputError, match=r"member 'images/patch_\d+.tif' is not in the index"):
        write_shards(tars, tmp_path / "out", index=tmp_path / "few.csv", progress=False)
    broken = tmp_path / "broken.tar"
    broken.write_bytes(tars[0].read_bytes()[:1_500_000])
    with pytest.raises(ShardInputError, match=r"broken.tar: not a readable tar"):
        write_shards([broken], tmp_path / "out2", progress=False)
    with pytest.raises(ShardInputError, match=r"input .*nowhere does not exist"):
        write_shards([tmp_path / "nowhere"], tmp_path / "out3", progress=False)


def test_cli(tmp_path, capsys):
    sample = Path(__file__).resolve().parents[1] / "data" / "sample"
    assert main(["shards", str(sample), "--out", str(tmp_path / "out"), "--samples-per-shard", "4"]) == 0
    assert "wrote 8 samples in 2 shards" in capsys.readouterr().out
    manifest, _ = read_shards(tmp_path / "out")
    assert manifest["payload"] == "s2c"
    assert main(["shards", str(sample), "--out", str(tmp_path / "out")]) == 2
    assert "already holds shards" in capsys.readouterr().err
