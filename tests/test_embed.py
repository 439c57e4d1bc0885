"""``satclip embed``: streaming CSV/Parquet/NPY -> NPY/Parquet/CSV, order kept, ids carried, bad rows named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.csv
import pytest
import torch
from towers import export_tiny_tower

import satclip
from satclip import tables
from satclip.cli import main as cli_main
from satclip.io import embed

N = 700


@pytest.fixture(scope="module")
def tower(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_tiny_tower(tmp_path_factory.mktemp("tower"), output_dim=8, legendre_polys=6, dim_hidden=16)


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    return pd.DataFrame(
        {
            "site": [f"s{i:04d}" for i in range(N)],
            "y": rng.normal(size=N),
            "latitude": rng.uniform(-90, 90, N),
            "longitude": rng.uniform(-180, 180, N),
        }
    )


def _expected(tower: Path, lonlat: np.ndarray, dtype: str | None = None) -> np.ndarray:
    with torch.no_grad():
        return satclip.load_location_encoder(tower, dtype=dtype)(torch.from_numpy(np.ascontiguousarray(lonlat))).numpy()


@pytest.mark.parametrize("fmt_in", [".csv", ".parquet"])
@pytest.mark.parametrize("fmt_out", [".npy", ".parquet", ".csv"])
def test_embed_tables_in_chunks(tmp_path: Path, tower: Path, table: pd.DataFrame, fmt_in: str, fmt_out: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tables, "CSV_BLOCK_BYTES", 4096)  # several read chunks for a small file
    monkeypatch.setattr(embed, "READ_ROWS", 100)
    src = tmp_path / f"coords{fmt_in}"
    table.to_csv(src, index=False) if fmt_in == ".csv" else table.to_parquet(src)
    out = tmp_path / f"emb{fmt_out}"
    rows = embed.embed_file(satclip.load_location_encoder(tower), src, output=out, lon_col="longitude", lat_col="latitude", batch_size=128, progress=False)
    assert rows == N and not out.with_name(out.name + ".partial").exists()
    expected = _expected(tower, table[["longitude", "latitude"]].to_numpy())
    if fmt_out == ".npy":
        np.testing.assert_allclose(np.load(out), expected, rtol=0, atol=1e-12)  # GEMM rounding depends on the batch
        return
    got = pd.read_parquet(out) if fmt_out == ".parquet" else pyarrow.csv.read_csv(out).to_pandas()  # exact float parsing
    assert list(got.columns) == ["site", "y"] + [f"emb_{i}" for i in range(8)]
    assert got["site"].tolist() == table["site"].tolist()
    np.testing.assert_array_equal(got["y"].to_numpy(), table["y"].to_numpy())
    np.testing.assert_allclose(got.filter(like="emb_").to_numpy(), expected, rtol=0, atol=1e-12)


def test_cli_embed_npy_float32(tmp_path: Path, tower: Path, table: pd.DataFrame) -> None:
    lonlat = table[["longitude", "latitude"]].to_numpy()
    np.save(tmp_path / "c.npy", lonlat)
    argv = [
        "embed",
        "--checkpoint",
        str(tower),
        "--input",
        str(tmp_path / "c.npy"),
        "--output",
        str(tmp_path / "e.npy"),
        "--batch-size",
        "100",
        "--dtype",
        "float32",
        "--no-progress",
    ]
    assert cli_main(argv) == 0
    got = np.load(tmp_path / "e.npy")
    assert got.dtype == np.float32 and got.shape == (N, 8)
    np.testing.assert_allclose(got, _expected(tower, lonlat, "float32"), rtol=0, atol=1e-6)
    np.testing.assert_allclose(got, _expected(tower, lonlat), rtol=0, atol=1e-5)


def test_bad_rows_are_named_with_global_row_numbers(tmp_path: Path, tower: Path, table: pd.DataFrame, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tables, "CSV_BLOCK_BYTES", 4096)  # the bad rows are in later chunks
    bad = table.copy()
    bad.loc[450, "latitude"] = 91.0
    bad.loc[601, "longitude"] = np.nan
    src = tmp_path / "bad.csv"
    bad.to_csv(src, index=False)
    out = tmp_path / "e.parquet"
    with pytest.raises(ValueError) as info:
        embed.embed_file(satclip.load_location_encoder(tower), src, output=out, lon_col="longitude", lat_col="latitude", batch_size=100, progress=False)
    message = str(info.value)
    assert "bad.csv" in message and "450 (lon=" in message and "lat=91.0" in message
    assert not out.exists() and not (tmp_path / "e.parquet.partial").exists()


def test_bad_inputs(tmp_path: Path, tower: Path, table: pd.DataFrame) -> None:
    enc = satclip.load_location_encoder(tower)
    table.to_csv(tmp_path / "c.csv", index=False)
    assert embed.embed_file(enc, tmp_path / "c.csv", output=tmp_path / "auto.npy", progress=False) == len(table)  # longitude/latitude found
    table.assign(lon=0.0).to_csv(tmp_path / "two.csv", index=False)
    with pytest.raises(ValueError, match=r"two.csv'?: more than one longitude column: \['longitude', 'lon'\]; choose one with --lon-col"):
        embed.embed_file(enc, tmp_path / "two.csv", output=tmp_path / "e.npy", progress=False)
    with pytest.raises(ValueError, match=r"no column 'LON'"):
        embed.embed_file(enc, tmp_path / "c.csv", output=tmp_path / "e.npy", lon_col="LON", progress=False)
    np.save(tmp_path / "three.npy", np.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"takes no time \(a static tower\): give \(N, 2\) \[lon, lat\]"):
        embed.embed_file(enc, tmp_path / "three.npy", output=tmp_path / "e.npy", progress=False)
    np.save(tmp_path / "four.npy", np.zeros((4, 4)))
    with pytest.raises(ValueError, match=r"expected an \(N, 2\) array .* got shape \(4, 4\)"):
        embed.embed_file(enc, tmp_path / "four.npy", output=tmp_path / "e.npy", progress=False)
    with pytest.raises(ValueError, match="unsupported format '.txt'"):
        embed.embed_file(enc, tmp_path / "c.csv", output=tmp_path / "e.txt", progress=False)
    with pytest.raises(FileNotFoundError, match="no such file"):
        embed.embed_file(enc, tmp_path / "missing.csv", output=tmp_path / "e.npy", progress=False)
    text = tmp_path / "text.csv"
    pd.DataFrame({"lon": ["a", "b"], "lat": [1.0, 2.0]}).to_csv(text, index=False)
    with pytest.raises(ValueError, match="column 'lon' is not numeric"):
        embed.embed_file(enc, text, output=tmp_path / "e.npy", progress=False)


def test_python_api_shape(tower: Path) -> None:
    enc = satclip.load_location_encoder(tower)
    lonlat = torch.tensor([[-73.97, 40.78], [151.2, -33.86], [0.0, 90.0]], dtype=torch.float64)
    assert enc(lonlat).shape == (3, 8)


def test_cli_reports_bad_rows_without_traceback(tmp_path: Path, tower: Path) -> None:
    pd.DataFrame({"id": [1, 2, 3], "lon": [0.0, 10.0, 20.0], "lat": [0.0, 95.0, 1.0]}).to_csv(tmp_path / "c.csv", index=False)
    argv = ["embed", "--checkpoint", str(tower), "--input", str(tmp_path / "c.csv"), "--output", str(tmp_path / "e.csv"), "--no-progress"]
    import signal

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit, match=r"satclip embed: .*c.csv.*data rows 1 \(lon=10.0, lat=95.0\)"):
        cli_main(argv)
    assert not (tmp_path / "e.csv").exists()
    assert signal.getsignal(signal.SIGTERM) == before  # the command's SIGTERM handler is gone again


def test_a_column_that_turns_to_text_late_is_read_as_text(tmp_path: Path, tower: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tables, "CSV_BLOCK_BYTES", 4096)  # the type is inferred from the first block only
    ids = [str(i) for i in range(N)]
    ids[650] = "x650"
    lonlat = np.random.default_rng(0).uniform(-60, 60, (N, 2))
    pd.DataFrame({"id": ids, "lon": lonlat[:, 0], "lat": lonlat[:, 1]}).to_csv(tmp_path / "late.csv", index=False)
    for fmt in (".csv", ".parquet"):
        out = tmp_path / f"emb{fmt}"
        assert embed.embed_file(satclip.load_location_encoder(tower), tmp_path / "late.csv", output=out, progress=False) == N
        got = pd.read_parquet(out) if fmt == ".parquet" else pd.read_csv(out, dtype={"id": str})
        assert got["id"].tolist() == ids
    pd.DataFrame({"lon": [str(v) for v in lonlat[:, 0]][:-1] + ["east"], "lat": lonlat[:, 1]}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ValueError, match=r"bad.csv'.*column 'lon' changes type .*coordinates must be numbers"):
        embed.embed_file(satclip.load_location_encoder(tower), tmp_path / "bad.csv", output=tmp_path / "bad.npy", progress=False)
    # coordinate columns found by name (not given) are coordinates too, also the latitude the row count reads
    pd.DataFrame({"Longitude": lonlat[:, 0], "Latitude": [str(v) for v in lonlat[:, 1]][:-1] + ["north"]}).to_csv(tmp_path / "found.csv", index=False)
    with pytest.raises(ValueError, match=r"found.csv'.*column 'Latitude' changes type .*coordinates must be numbers"):
        embed.embed_file(satclip.load_location_encoder(tower), tmp_path / "found.csv", output=tmp_path / "found.npy", progress=False)


def test_empty_header_only_and_same_column_inputs_are_named(tmp_path: Path, tower: Path) -> None:
    enc = satclip.load_location_encoder(tower)
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "header.csv").write_text("id,lon,lat\n")
    with pytest.raises(ValueError, match=r"empty.csv'.*not a readable CSV"):
        embed.embed_file(enc, tmp_path / "empty.csv", output=tmp_path / "e.npy", progress=False)
    with pytest.raises(ValueError, match=r"header.csv'.*no data rows"):
        embed.embed_file(enc, tmp_path / "header.csv", output=tmp_path / "e.npy", progress=False)
    with pytest.raises(ValueError, match=r"longitude and latitude columns are both 'lat'"):
        embed.embed_file(enc, tmp_path / "header.csv", output=tmp_path / "e.npy", lon_col="lat", progress=False)


def test_cli_device_errors_are_one_line(tmp_path: Path, tower: Path) -> None:
    if torch.backends.mps.is_available():
        pytest.skip("mps is available here")
    argv = ["embed", "--checkpoint", str(tower), "--input", "x.csv", "--output", str(tmp_path / "e.npy"), "--device", "mps"]
    with pytest.raises(SystemExit, match=r"^satclip embed: --device mps: not available here"):
        cli_main(argv)


def test_sigterm_leaves_no_partial_output(tmp_path: Path, tower: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    np.save(tmp_path / "many.npy", np.random.default_rng(0).uniform(-60, 60, (3_000_000, 2)))
    out = tmp_path / "emb.npy"
    cmd = [sys.executable, "-m", "satclip.cli", "embed", "--checkpoint", str(tower), "--input", str(tmp_path / "many.npy"),
           "--output", str(out), "--batch-size", "1024", "--no-progress"]  # fmt: skip
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    partial = out.with_name(out.name + ".partial")
    deadline = time.monotonic() + 120
    while not partial.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert partial.exists(), proc.stderr.read() if proc.poll() is not None else "no partial output after 120 s"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    assert not partial.exists() and not out.exists()


def _check_geo_metadata(path: Path, lonlat: np.ndarray) -> None:
    """The GeoParquet 1.1 file metadata, checked field by field against the specification."""
    import json

    import pyarrow.parquet as pq

    from satclip.io.geoparquet import CRS84_PROJJSON

    geo = json.loads(pq.read_metadata(path).metadata[b"geo"])
    assert geo["version"] == "1.1.0" and geo["primary_column"] == "geometry"
    column = geo["columns"]["geometry"]
    assert column["encoding"] == "WKB" and column["geometry_types"] == ["Point"]
    assert column["crs"] == CRS84_PROJJSON and column["crs"]["id"] == {"authority": "OGC", "code": "CRS84"}
    assert column["crs"]["coordinate_system"]["axis"][0]["direction"] == "east"  # lon first
    np.testing.assert_allclose(column["bbox"], [*lonlat.min(0), *lonlat.max(0)])
    assert pq.read_schema(path).field("geometry").type == pyarrow.binary()


def test_geoparquet_points(tmp_path: Path, tower: Path, table: pd.DataFrame, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embed, "READ_ROWS", 100)  # several row groups
    src, out = tmp_path / "coords.csv", tmp_path / "emb.parquet"
    table.to_csv(src, index=False)
    assert (
        cli_main(
            [
                "embed",
                "--checkpoint",
                str(tower),
                "--input",
                str(src),
                "--output",
                str(out),
                "--lon-col",
                "longitude",
                "--lat-col",
                "latitude",
                "--geoparquet",
                "--batch-size",
                "64",
                "--no-progress",
            ]
        )
        == 0
    )
    lonlat = table[["longitude", "latitude"]].to_numpy()
    _check_geo_metadata(out, lonlat)
    # the WKB itself: byte order 1, type 1 (Point), x = lon, y = lat, as float64
    raw = pd.read_parquet(out)["geometry"]
    points = np.frombuffer(b"".join(raw), dtype=[("o", "u1"), ("t", "<u4"), ("x", "<f8"), ("y", "<f8")])
    assert (points["o"] == 1).all() and (points["t"] == 1).all()
    np.testing.assert_array_equal(np.stack([points["x"], points["y"]], 1), lonlat)
    gpd = pytest.importorskip("geopandas")
    frame = gpd.read_parquet(out)
    assert frame.crs.to_string() == "OGC:CRS84" and list(frame["site"]) == list(table["site"])
    np.testing.assert_array_equal(np.stack([frame.geometry.x, frame.geometry.y], 1), lonlat)
    np.testing.assert_allclose(frame[[f"emb_{i}" for i in range(8)]].to_numpy(), _expected(tower, lonlat), rtol=0, atol=1e-12)


def test_geoparquet_needs_parquet_and_a_free_geometry_name(tmp_path: Path, tower: Path, table: pd.DataFrame) -> None:
    src = tmp_path / "coords.csv"
    table.assign(geometry="x").to_csv(src, index=False)
    enc = satclip.load_location_encoder(tower)
    with pytest.raises(ValueError, match="--geoparquet writes Parquet"):
        embed.embed_file(enc, src, output=tmp_path / "emb.csv", lon_col="longitude", lat_col="latitude", progress=False, geoparquet=True)
    with pytest.raises(ValueError, match=r"\['geometry'\] clash"):
        embed.embed_file(enc, src, output=tmp_path / "emb.parquet", lon_col="longitude", lat_col="latitude", progress=False, geoparquet=True)
    assert not (tmp_path / "emb.parquet").exists() and not (tmp_path / "emb.parquet.partial").exists()
