"""``satclip embed-grid``: COG / Zarr rasters whose pixels equal the tower at their centres."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from towers import export_tiny_tower

import satclip
from satclip.cli import main as cli_main
from satclip.io import embed_grid as eg
from satclip.io.bands import PCAFit, Quantiser
from satclip.io.grid import Grid

rasterio = pytest.importorskip("rasterio")

BBOX = (-20.0, -10.0, 12.0, 14.0)  # 32 x 24 degrees
RES = 0.1  # 320 x 240 pixels: 128-pixel tiles, edge tiles included


@pytest.fixture(scope="module")
def tower(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_tiny_tower(tmp_path_factory.mktemp("tower"), output_dim=6, legendre_polys=5, dim_hidden=16, seed=1)


def _expected(tower: Path, lonlat: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return satclip.load_location_encoder(tower)(torch.from_numpy(np.ascontiguousarray(lonlat))).numpy()


def _sampled_pixels(grid: Grid, n: int = 200) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    rows, cols = rng.integers(0, grid.height, n), rng.integers(0, grid.width, n)
    return rows, cols, np.stack([grid.lon(cols), grid.lat(rows)], axis=1)


def _read_tif(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read()


def _run(tower: Path, out: Path, **kw) -> eg.GridResult:
    grid = Grid.from_bbox(BBOX, RES)
    return eg.embed_grid(
        satclip.load_location_encoder(tower), out, grid=grid, tile=kw.pop("tile", 128), batch_size=kw.pop("batch_size", 5000), progress=False, **kw
    )


def test_grid_geometry() -> None:
    world = Grid.from_bbox((-180, -90, 180, 90), 0.1)
    assert world.shape == (1800, 3600) and world.transform == (0.1, 0.0, -180.0, 0.0, -0.1, 90.0)
    assert world.lat()[[0, -1]] == pytest.approx([89.95, -89.95]) and world.lon()[[0, -1]] == pytest.approx([-179.95, 179.95])
    grid = Grid.from_bbox(BBOX, RES)
    seen = np.zeros(grid.shape, dtype=int)
    for w in grid.tiles(128):
        assert w.height <= 128 and w.width <= 128
        seen[w.row : w.row + w.height, w.col : w.col + w.width] += 1
    assert (seen == 1).all()
    assert len(grid.sample(10**6)) == grid.width * grid.height and 900 <= len(grid.sample(1000)) <= 1100


@pytest.mark.parametrize(
    "bbox, res, message",
    [
        ((170, 0, -170, 10), 1.0, r"crosses the antimeridian; embed two boxes instead \(170..180 and -180..-170\), or swap them if you meant west -170"),
        ((10, 50, -10, 40), 1.0, r"south > north; the order is west south east north \(north 50, south 40\?\)"),  # inverted: no antimeridian advice
        ((0, 10, 10, 0), 1.0, "south > north"),
        ((0, 0, 10.05, 10), 0.1, "whole number"),
        ((0, 0, 10, 95), 1.0, "latitudes"),
        ((0, 0, 0, 10), 1.0, "empty"),
        ((0, 0, 10, 10), -1.0, "resolution"),
    ],
)
def test_bad_grids_are_rejected(bbox, res, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Grid.from_bbox(bbox, res)


def test_float32_cog_matches_the_tower_at_pixel_centres(tmp_path: Path, tower: Path) -> None:
    out = tmp_path / "emb.tif"
    result = _run(tower, out)
    assert result.pixels == 320 * 240 and not list(tmp_path.glob("*.partial*"))
    grid = Grid.from_bbox(BBOX, RES)
    with rasterio.open(out) as ds:
        assert ds.crs.to_epsg() == 4326 and tuple(ds.transform)[:6] == grid.transform
        assert ds.count == 6 and ds.dtypes[0] == "float32" and np.isnan(ds.nodata)
        assert ds.descriptions == tuple(f"emb_{i}" for i in range(6))
        assert ds.block_shapes[0] == (128, 128) and ds.overviews(1) == [2, 4]
        assert ds.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert "centre" in ds.tags()["satclip_pixel_coordinates"]
        data = ds.read()
    rows, cols, lonlat = _sampled_pixels(grid)
    np.testing.assert_allclose(data[:, rows, cols].T, _expected(tower, lonlat), rtol=0, atol=1e-6)
    # the georeference alone gives the same centres
    with rasterio.open(out) as ds:
        xs, ys = rasterio.transform.xy(ds.transform, rows, cols)
    np.testing.assert_allclose(np.stack([xs, ys], 1), lonlat, atol=1e-12)


def test_overviews_are_2x2_averages(tmp_path: Path, tower: Path) -> None:
    from satclip.io.cog import average_2x2

    _run(tower, tmp_path / "f.tif")
    _run(tower, tmp_path / "q.tif", dtype="int8")
    for name in ("f.tif", "q.tif"):
        with rasterio.open(tmp_path / name) as ds:
            base, nodata = ds.read(), ds.nodata
        with rasterio.open(tmp_path / name, overview_level=0) as ov1, rasterio.open(tmp_path / name, overview_level=1) as ov2:
            level1, level2 = ov1.read(), ov2.read()
        assert level1.shape == (6, 120, 160) and level2.shape == (6, 60, 80)
        np.testing.assert_allclose(level1, average_2x2(base, nodata), rtol=1e-6, atol=1e-6 if name == "f.tif" else 0)
        np.testing.assert_allclose(level2, average_2x2(level1, nodata), rtol=1e-6, atol=1e-6 if name == "f.tif" else 0)
    codes = np.array([[[1, 2, 7], [4, -128, 7]]], dtype=np.int8)
    np.testing.assert_array_equal(average_2x2(codes, -128), [[[2, 7]]])  # nodata left out; odd edge padded
    halves = np.array([[[np.nan, np.nan], [np.nan, np.nan]]], dtype=np.float32)
    assert np.isnan(average_2x2(halves, float("nan"))).all()


def test_int8_cog_is_within_the_quantisation_step(tmp_path: Path, tower: Path) -> None:
    out = tmp_path / "emb.tif"
    result = _run(tower, out, dtype="int8")  # the default sample holds the whole grid: nothing is clipped
    with rasterio.open(out) as ds:
        assert ds.dtypes[0] == "int8" and ds.nodata == -128
        scale, offset = np.array(ds.scales), np.array(ds.offsets)
        assert ds.tags()["satclip_int8_clipped"] == str(result.clipped)
        codes = ds.read()
    assert (scale > 0).all() and codes.min() >= -127
    grid = Grid.from_bbox(BBOX, RES)
    rows, cols, lonlat = _sampled_pixels(grid)
    values = codes[:, rows, cols].T * scale + offset
    assert result.clipped == 0
    assert (np.abs(values - _expected(tower, lonlat)) <= scale / 2 + 1e-9).all()
    q = Quantiser(scale, offset)
    np.testing.assert_array_equal(q.decode(codes[:, rows, cols], axis=0).T, values)


def test_int8_values_outside_a_sparse_sample_are_clipped_and_counted(tmp_path: Path, tower: Path) -> None:
    result = _run(tower, tmp_path / "sparse.tif", dtype="int8", sample=30)
    codes = _read_tif(tmp_path / "sparse.tif")
    assert int((np.abs(codes) == 127).sum()) >= result.clipped > 0  # clipped values sit at the ends of the code range
    assert codes.min() >= -127


def test_float16_dims_and_pca(tmp_path: Path, tower: Path) -> None:
    grid = Grid.from_bbox(BBOX, RES)
    rows, cols, lonlat = _sampled_pixels(grid)
    expected = _expected(tower, lonlat)
    _run(tower, tmp_path / "half.tif", dtype="float16", dims=3)
    half = _read_tif(tmp_path / "half.tif")
    assert half.shape == (3, 240, 320)
    np.testing.assert_allclose(half[:, rows, cols].T, expected[:, :3].astype(np.float16), rtol=0, atol=0)
    result = _run(tower, tmp_path / "pca.tif", pca=2)
    assert result.pca_path == tmp_path / "pca.pca.npz"
    fit = PCAFit.load(result.pca_path)
    assert fit.components.shape == (2, 6) and fit.explained_variance_ratio[0] >= fit.explained_variance_ratio[1]
    with rasterio.open(tmp_path / "pca.tif") as ds:
        assert ds.descriptions == ("pc_1", "pc_2")
        pcs = ds.read()
    np.testing.assert_allclose(pcs[:, rows, cols].T, fit.transform(expected), rtol=0, atol=1e-5)


def test_zarr_opens_with_xarray(tmp_path: Path, tower: Path) -> None:
    pytest.importorskip("zarr")
    xr = pytest.importorskip("xarray")
    grid = Grid.from_bbox(BBOX, RES)
    rows, cols, lonlat = _sampled_pixels(grid)
    _run(tower, tmp_path / "emb.zarr", tile=128)
    ds = xr.open_zarr(tmp_path / "emb.zarr")
    assert ds.embedding.dims == ("band", "lat", "lon") and ds.attrs["Conventions"].startswith("CF")
    assert ds.lat.attrs["units"] == "degrees_north" and ds.lon.attrs["standard_name"] == "longitude"
    assert ds.embedding.attrs["grid_mapping"] == "crs" and "WGS 84" in ds.crs.attrs["crs_wkt"]
    np.testing.assert_allclose(ds.lon.values, grid.lon()) and np.testing.assert_allclose(ds.lat.values, grid.lat())
    picked = ds.embedding.sel(lon=xr.DataArray(lonlat[:, 0]), lat=xr.DataArray(lonlat[:, 1])).values.T
    np.testing.assert_allclose(picked, _expected(tower, lonlat), rtol=0, atol=1e-6)
    _run(tower, tmp_path / "q.zarr", dtype="int8")
    q = xr.open_zarr(tmp_path / "q.zarr")
    values = (q.embedding * q.scale + q.offset).values[:, rows, cols].T
    assert (np.abs(values - _expected(tower, lonlat)) <= q.scale.values / 2 + 1e-6).all()


def test_streams_one_tile_and_one_batch_at_a_time(tmp_path: Path, tower: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from satclip.io import cog

    blocks, batches = [], []
    write, embed = cog.COGWriter.write, eg.embed_array
    monkeypatch.setattr(cog.COGWriter, "write", lambda self, w, block: (blocks.append(block.shape), write(self, w, block)))
    monkeypatch.setattr(eg, "embed_array", lambda enc, lonlat, **k: (batches.append(len(lonlat)), embed(enc, lonlat, **k))[1])
    _run(tower, tmp_path / "emb.tif", batch_size=1000)
    assert len(blocks) == 6 and all(k == 6 and h <= 128 and w <= 128 for k, h, w in blocks)  # 3 x 2 tiles, edges smaller
    assert max(batches) <= 1000 and sum(batches) == 320 * 240


def test_failure_leaves_no_output(tmp_path: Path, tower: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from satclip.io import cog

    calls = []

    def fail(self, window, block):
        calls.append(window)
        if len(calls) == 3:
            raise RuntimeError("disk full")

    monkeypatch.setattr(cog.COGWriter, "write", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        _run(tower, tmp_path / "emb.tif")
    assert list(tmp_path.iterdir()) == []


def test_cli(tmp_path: Path, tower: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "cli.tif"
    assert (
        cli_main(["embed-grid", "--checkpoint", str(tower), "--bbox", "-20", "-10", "12", "14", "--resolution", "4", "--output", str(out), "--no-progress"])
        == 0
    )
    assert "wrote 48 pixels x 6 bands" in capsys.readouterr().out and _read_tif(out).shape == (6, 6, 8)
    with pytest.raises(SystemExit, match="antimeridian"):
        cli_main(["embed-grid", "--checkpoint", str(tower), "--bbox", "170", "0", "-170", "10", "--resolution", "1", "--output", str(out)])
    with pytest.raises(SystemExit, match="use .tif or .zarr"):
        cli_main(["embed-grid", "--checkpoint", str(tower), "--bbox", "0", "0", "4", "4", "--resolution", "1", "--output", str(tmp_path / "x.png")])


def test_sizes_above_the_limit_are_refused_before_anything_is_written(tmp_path: Path, tower: Path, capsys: pytest.CaptureFixture) -> None:
    world = Grid.from_bbox((-180, -90, 180, 90), 0.0001)
    with pytest.raises(
        ValueError,
        match=r"3600000 x 1800000 = 6.48e\+12 pixels x 6 bands x 4 bytes \(float32\) = 156 TB uncompressed, above the limit of 100 GB \(computing it: about 8.56 years at 24,000 points/s, one CPU thread\)",
    ):
        eg.check_size(world, 6, dtype="float32")
    assert eg.check_size(Grid.from_bbox(BBOX, RES), 6, dtype="int8") == 320 * 240 * 6
    # refused before the checkpoint is read (it does not exist), within a second; the old --output / --dtype spellings work
    args = ["embed-grid", "--checkpoint", str(tmp_path / "no-such.ckpt"), "--bbox", "-180", "-90", "180", "90", "--resolution", "0.0001", "--no-progress"]
    start = time.perf_counter()
    with pytest.raises(SystemExit, match=r"satclip embed-grid: the output would be .* at least 1 band x 2 bytes \(float16\) = 13 TB.*--max-gb$"):
        cli_main([*args, "--out", str(tmp_path / "w.tif"), "--storage-dtype", "float16"])
    assert time.perf_counter() - start < 1.0
    with pytest.raises(SystemExit, match=r"x 3 bands x 1 bytes \(int8\) = 19.4 TB.*above the limit of 10000 GB"):
        cli_main([*args, "--output", str(tmp_path / "w.zarr"), "--dtype", "int8", "--pca", "3", "--max-gb", "1e4"])
    with pytest.raises(SystemExit, match=r"x 6 bands x 4 bytes \(float32\) = 156 TB"):
        cli_main([*args[:2], str(tower), *args[3:], "--out", str(tmp_path / "w.tif"), "--dim", "6"])
    assert list(tmp_path.iterdir()) == []
    grid = ["--bbox", "-20", "-10", "12", "14", "--resolution", "4", "--output", str(tmp_path / "small.tif"), "--no-progress"]
    with pytest.raises(SystemExit, match=r"the output would be 8 x 6 = 48 pixels x 6 bands x 4 bytes \(float32\) = 0.00115 MB.*limit of 1e-06 GB"):
        cli_main(["embed-grid", "--checkpoint", str(tower), *grid, "--max-gb", "1e-6"])


def test_an_existing_output_is_replaced_only_with_overwrite(tmp_path: Path, tower: Path) -> None:
    for out in (tmp_path / "emb.tif", tmp_path / "emb.zarr"):
        out.mkdir() if out.suffix == ".zarr" else out.write_bytes(b"mine")
        with pytest.raises(ValueError, match=f"{out} already exists; pass --overwrite to replace it"):
            _run(tower, out)
        _run(tower, out, overwrite=True, dims=2)
        assert out.exists() and out.stat().st_size > 4
    _run(tower, tmp_path / "p.tif", pca=2)
    (tmp_path / "p.tif").unlink()
    with pytest.raises(ValueError, match="p.pca.npz already exists"):  # the PCA fit beside it is an output too
        _run(tower, tmp_path / "p.tif", pca=2)


@pytest.mark.slow
@pytest.mark.parametrize("suffix, staging", [(".tif", "w.tif.partial.stage0.tif"), (".zarr", "w.zarr.partial")])
def test_sigterm_and_ctrl_c_remove_the_staging_files(tmp_path: Path, tower: Path, suffix: str, staging: str) -> None:
    out = tmp_path / "out"
    out.mkdir()
    for sig, status, how in ((signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "Ctrl-C")):
        cmd = [sys.executable, "-m", "satclip.cli", "embed-grid", "--checkpoint", str(tower), "--bbox", "-180", "-90", "180", "90"]
        proc = subprocess.Popen([*cmd, "--resolution", "0.02", "--output", str(out / f"w{suffix}")], stderr=subprocess.PIPE, text=True)
        started = time.monotonic()
        while not (out / staging).exists():
            assert proc.poll() is None and time.monotonic() - started < 60, "no staging file"
            time.sleep(0.05)
        time.sleep(0.5)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == status and err.strip().endswith(f"satclip embed-grid: interrupted ({how})") and "Traceback" not in err, err[-2000:]
        assert list(out.iterdir()) == []


def test_released_checkpoint_grid(tmp_path: Path, reference: Path) -> None:
    ckpt = reference / "satclip-resnet18-l10.ckpt"
    grid = Grid.from_bbox((-180, -90, 180, 90), 10.0)
    eg.embed_grid(satclip.load_location_encoder(ckpt), tmp_path / "world.tif", grid=grid, progress=False)
    rows, cols, lonlat = _sampled_pixels(grid, 50)
    np.testing.assert_allclose(_read_tif(tmp_path / "world.tif")[:, rows, cols].T, _expected(ckpt, lonlat), rtol=0, atol=1e-6)
