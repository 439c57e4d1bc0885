"""Small copies of the big corpora, built from the real Sentinel-2 sample patches in data/sample, in
each corpus's published layout (shared by tests/test_corpora.py and scripts/bench_majortom.py).

- Major TOM Core-S2L2A / Core-S2L1C: Parquet parts, one row per row group, the published columns;
  each band a single-band GeoTIFF at the band's own resolution (10 m: the cell; 20 / 60 m: every
  2nd / 6th pixel of it, with the matching transform), a 10 m uint8 cloud mask, a PNG thumbnail.
  A "cell" is a real 256 px patch tiled and cut to ``size`` px (600 by default: 4 patches of 256).
  L1C's B10 is a stand-in (the sample patches, being L2A, have none): B09's pixels.
- SSL4EO-S12 v1.1: a zipped, consolidated Zarr format 2 store written by xarray with the card's
  variables; each location a real patch tiled and cut to 264 px, four timestamps (one a season).
- S2-100K as published now: ``data/shard-00000.tar`` of ``images/patch_N.tif`` plus ``metadata.parquet``.
"""

from __future__ import annotations

import json
import os
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.io import MemoryFile
from rasterio.warp import transform as warp

from satclip.data.transforms import S2_BANDS, S2_BANDS_13

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"
RESOLUTION = {"B01": 60, "B02": 10, "B03": 10, "B04": 10, "B05": 20, "B06": 20, "B07": 20, "B08": 10, "B8A": 20, "B09": 60, "B10": 60, "B11": 20, "B12": 20}
"""Sentinel-2 band resolutions in metres (Major TOM's card)."""
SEASON_TIMES = ("2021-02-10T10:20:30", "2021-05-12T10:21:31", "2021-08-09T10:22:32", "2021-11-15T10:23:33")


def sample_patches() -> list[Path]:
    return sorted((SAMPLE / "images").glob("*.tif"))


def _tiled(path: Path, size: int) -> tuple[np.ndarray, object, Affine]:
    """A real patch (12, 256, 256) tiled to (12, size, size), with its CRS and transform."""
    with rasterio.open(path) as src:
        data, crs, t = src.read(), src.crs, src.transform
    reps = -(-size // data.shape[1])
    return np.ascontiguousarray(np.tile(data, (1, reps, reps))[:, :size, :size]), crs, t


def geotiff(array: np.ndarray, crs, transform: Affine) -> bytes:
    """(C, H, W) or (H, W) array -> GeoTIFF bytes (deflate)."""
    array = array[None] if array.ndim == 2 else array
    with MemoryFile() as memfile:
        with memfile.open(
            driver="GTiff",
            width=array.shape[2],
            height=array.shape[1],
            count=array.shape[0],
            dtype=array.dtype,
            crs=crs,
            transform=transform,
            compress="deflate",
        ) as dst:
            dst.write(array)
        return bytes(memfile.read())


def _png(rgb: np.ndarray) -> bytes:
    with MemoryFile() as memfile:
        with memfile.open(driver="PNG", width=rgb.shape[2], height=rgb.shape[1], count=3, dtype="uint8") as dst:
            dst.write(rgb)
        return bytes(memfile.read())


def majortom_row(patch: Path, cell_id: str, level: str = "L2A", size: int = 600, when: str = "20200902T101031", cloud_side: float = 0.5) -> dict:
    """One Major TOM row (column -> value) from a real patch; the cloud mask covers a top-left square
    of ``cloud_side`` of the cell's side (a quarter of the cell by default)."""
    data, crs, t = _tiled(patch, size)
    by_name = dict(zip(S2_BANDS, data))
    if level == "L1C":
        by_name["B10"] = by_name["B09"]
    row: dict = {"product_id": f"S2B_MSI{level}_{when}_N0500_R022_T33UXP_{when}", "grid_cell": cell_id, "product_datetime": when}
    row["thumbnail"] = _png(np.stack([np.clip(by_name[b][::10, ::10] // 12, 0, 255).astype(np.uint8) for b in ("B04", "B03", "B02")]))
    for name in S2_BANDS_13 if level == "L1C" else S2_BANDS:
        f = RESOLUTION[name] // 10
        row[name] = geotiff(by_name[name][::f, ::f], crs, Affine(t.a * f, 0.0, t.c, 0.0, t.e * f, t.f))
    mask = np.zeros((size, size), np.uint8)
    mask[: round(size * cloud_side), : round(size * cloud_side)] = 1
    row["cloud_mask"] = geotiff(mask, crs, t)
    return row


def _index_row(row: dict) -> dict:
    """The published ``metadata.parquet`` fields of a row that come from its bytes: the cell centre
    (of the 10 m band's georeference), its CRS, cloud cover (percent of the mask) and no-data fraction."""
    with MemoryFile(row["B02"]) as m, m.open() as ref:
        t, crs, height, width, nodata = ref.transform, ref.crs, ref.height, ref.width, float((ref.read(1) == 0).mean())
    with MemoryFile(row["cloud_mask"]) as m, m.open() as src:
        cloud = float((src.read(1) != 0).mean()) * 100
    (lon,), (lat,) = warp(crs, "EPSG:4326", [t.c + width / 2 * t.a], [t.f + height / 2 * t.e])
    return {"cloud_cover": cloud, "nodata": nodata, "centre_lat": lat, "centre_lon": lon, "crs": crs.to_string()}


def _grid_number(part: str) -> int:
    """``272U`` -> 272, ``3D`` -> -3 (Major TOM's row / column ids: U/D, R/L)."""
    return int(part[:-1]) * (-1 if part[-1] in "DL" else 1)


def write_majortom(root: Path, rows_per_part: list[list[dict]], level: str = "L2A", url_base: str | None = None) -> Path:
    """``root/images/part_NNNNN.parquet`` (one row per row group) and ``root/metadata.parquet`` with the
    published columns; ``parquet_url`` is ``url_base + name`` (default: the Hugging Face address)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    bands = S2_BANDS_13 if level == "L1C" else S2_BANDS
    schema = pa.schema(
        [
            ("product_id", pa.string()),
            ("grid_cell", pa.string()),
            ("product_datetime", pa.string()),
            ("thumbnail", pa.binary()),
            *((b, pa.binary()) for b in sorted(bands)),
            ("cloud_mask", pa.binary()),
        ]
    )
    (root / "images").mkdir(parents=True, exist_ok=True)
    meta = []
    for p, rows in enumerate(rows_per_part, start=1):
        name = f"part_{p:05d}.parquet"
        table = pa.Table.from_pylist(rows, schema=schema)
        pq.write_table(table, root / "images" / name, row_group_size=1)
        base = url_base if url_base is not None else f"https://huggingface.co/datasets/Major-TOM/Core-S2{level}/resolve/main/images/"
        meta += [
            {
                "grid_cell": r["grid_cell"],
                "grid_row_u": _grid_number(r["grid_cell"].split("_")[0]),
                "grid_col_r": _grid_number(r["grid_cell"].split("_")[1]),
                "product_id": r["product_id"],
                "timestamp": r["product_datetime"],
                **_index_row(r),
                "parquet_url": base + name,
                "parquet_row": i,
            }
            for i, r in enumerate(rows)
        ]
    pq.write_table(pa.Table.from_pylist(meta), root / "metadata.parquet")
    return root


def write_ssl4eo(path: Path, patches: list[Path], first_id: int = 0, size: int = 264) -> Path:
    """One SSL4EO-S12 v1.1 S2L2A ``*.zarr.zip`` with a location per patch and the four seasons."""
    import xarray as xr

    n, times = len(patches), len(SEASON_TIMES)
    bands = np.empty((n, times, len(S2_BANDS), size, size), np.int16)
    lon, lat, crs, xs, ys = [], [], [], [], []
    for s, patch in enumerate(patches):
        data, c, t = _tiled(patch, size)
        for k in range(times):
            bands[s, k] = np.roll(data, 7 * k, axis=2).astype(np.int16)  # S2-100K DNs are < 32768
        x_ = t.c + (np.arange(size) + 0.5) * t.a
        y_ = t.f + (np.arange(size) + 0.5) * t.e
        (cx,), (cy,) = warp(c, "EPSG:4326", [t.c + size / 2 * t.a], [t.f + size / 2 * t.e])
        lon.append(cx), lat.append(cy), crs.append(int(c.to_epsg())), xs.append(x_), ys.append(y_)
    ids = [f"{first_id + s:07d}" for s in range(n)]
    ds = xr.Dataset(
        {
            "bands": (("sample", "time", "band", "y", "x"), bands),
            "center_lat": (("sample",), np.array(lat)),
            "center_lon": (("sample",), np.array(lon)),
            "cloud_mask": (("sample", "time", "y", "x"), np.zeros((n, times, size, size), np.uint8)),
            "crs": (("sample",), np.array(crs, np.int64)),
            "file_id": (("sample", "time"), np.array([[f"{w.replace('-', '').replace(':', '')}_T33UXP" for w in SEASON_TIMES]] * n)),
            "sample_id": (("sample", "time"), np.array([[f"{i}_{k}" for k in range(times)] for i in ids])),
            "time_": (("sample", "time"), np.array([list(SEASON_TIMES)] * n, dtype="datetime64[ns]")),
            "x_": (("sample", "x"), np.array(xs)),
            "y_": (("sample", "y"), np.array(ys)),
        },
        coords={"band": list(S2_BANDS), "sample": ids, "time": np.arange(times), "x": np.arange(size), "y": np.arange(size)},
    )
    ds.bands.encoding["chunks"] = (1, 1, len(S2_BANDS), size, size)  # one chunk per location and timestamp, as published
    folder = path.with_name(path.name[: -len(".zip")])
    ds.to_zarr(folder, zarr_format=2, consolidated=True, mode="w")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for base, _, files in sorted(os.walk(folder)):
            for f in sorted(files):
                zf.write(Path(base) / f, (Path(base) / f).relative_to(folder).as_posix())
    return path


def write_s2_100k_published(root: Path) -> Path:
    """``root/data/shard-00000.tar`` (``images/patch_N.tif``) and ``root/metadata.parquet``
    (``fn, lon, lat, patch_idx, shard``) from data/sample."""
    import csv

    import pyarrow as pa
    import pyarrow.parquet as pq

    (root / "data").mkdir(parents=True)
    with (SAMPLE / "index.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    with tarfile.open(root / "data" / "shard-00000.tar", "w") as tar:
        for row in rows:
            tar.add(SAMPLE / "images" / row["fn"], arcname=f"images/{row['fn']}")
    table = pa.table(
        {
            "fn": [r["fn"] for r in rows],
            "lon": [float(r["lon"]) for r in rows],
            "lat": [float(r["lat"]) for r in rows],
            "patch_idx": list(range(len(rows))),
            "shard": [0] * len(rows),
        }
    )
    pq.write_table(table, root / "metadata.parquet")
    return root


def write_s2_100k_folder(root: Path, n: int = 20) -> Path:
    """An S2-100K folder as ../shared/data/s2-sample holds it (``images/patch_N.tif``: 12-band uint16
    LZW GeoTIFFs, one 512 px internal tile; ``index.csv`` with ``lat, lon, url, fn``), ``n`` patches made
    from the 8 real ones in data/sample: the first 8 as they are, each further copy mirrored (left-right,
    then up-down) and moved one patch width east (then north) so that its pixels, georeference and centre
    all differ; the index holds each file's own georeferenced centre."""
    import csv

    from satclip.geo import lonlat_from_georeference

    (root / "images").mkdir(parents=True)
    rows = []
    for i in range(n):
        source = sample_patches()[i % 8]
        copy = i // 8
        name = source.name if copy == 0 else f"patch_{int(source.stem.split('_')[1]) + 1_000_000 * copy}.tif"
        target = root / "images" / name
        if copy == 0:
            target.write_bytes(source.read_bytes())
        else:
            with rasterio.open(source) as src:
                data, profile = src.read(), src.profile
            data = np.ascontiguousarray(data[:, :, ::-1] if copy % 2 else data[:, ::-1, :])
            shift = Affine.translation(data.shape[2] * copy, 0) if copy % 2 else Affine.translation(0, -data.shape[1] * copy)
            profile.update(transform=profile["transform"] * shift, compress="lzw", tiled=True, blockxsize=512, blockysize=512)
            with rasterio.open(target, "w", **profile) as dst:
                dst.write(data)
        lon, lat = lonlat_from_georeference(target)
        rows.append({"lat": lat, "lon": lon, "url": f"https://example.invalid/s2-100k/{name}", "fn": name})
    with (root / "index.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["lat", "lon", "url", "fn"])
        writer.writeheader()
        writer.writerows(rows)
    return root


def read_shards(out: Path) -> tuple[dict, dict[str, dict]]:
    """The manifest and every sample ({ext: bytes}) of a shard folder, checking the manifest counts
    (the key is the member name up to its first dot, as WebDataset reads it)."""
    manifest = json.loads((out / "manifest.json").read_text())
    samples: dict[str, dict] = {}
    for shard in manifest["shards"]:
        keys = set()
        with tarfile.open(out / shard["name"]) as tar:
            for member in tar:
                key, ext = member.name.split(".", 1)
                keys.add(key)
                samples.setdefault(key, {})[ext] = tar.extractfile(member).read()
        assert len(keys) == shard["samples"]
    assert manifest["samples"] == len(samples) == sum(s["samples"] for s in manifest["shards"])
    return manifest, samples
