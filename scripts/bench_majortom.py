#!/usr/bin/env python
"""Shard-writer throughput from Major TOM Parquet into ``s2c`` shards, against reading the same cells'
bands with rasterio one file at a time, measured in the same run.

The cells are built from the real sample patches (tests/corpora.py: Major TOM's published layout,
each band a GeoTIFF at its own resolution), ``--size`` px at 10 m (1,068 as published). Paths:

- ``satclip shards``: the whole writer (Parquet row groups streamed, bands decoded, brought to 10 m,
  cut into ``--patch-size`` patches, coordinates, s2c encoding, tar writing), ``--workers`` processes;
- baseline: the same cells' bands as separate GeoTIFF files (Major TOM's own download layout,
  ``<cell>/<band>.tif``), each opened and read with rasterio onto the 10 m grid
  (``out_shape``, nearest) and cut into the same patches, in one process; nothing written.

"Per core" is patches per CPU-second of this process and its children (getrusage); wall-clock
patches/s are shown too. The ratio is writer/baseline per core.

    python scripts/bench_majortom.py                       # 8 cells of 1068 px, workers 1
    python scripts/bench_majortom.py --cells 16 --workers 1 2
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from corpora import majortom_row, sample_patches, write_majortom  # noqa: E402

from satclip.data.majortom import patch_offsets  # noqa: E402
from satclip.data.shards import write_shards  # noqa: E402
from satclip.data.transforms import S2_BANDS  # noqa: E402


def cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def baseline(folders: list[Path], size: int) -> int:
    """Read every band file of every cell with rasterio onto the 10 m grid and cut the patches."""
    patches = 0
    for folder in folders:
        with rasterio.open(folder / "B02.tif") as ref:
            shape = (ref.height, ref.width)
        bands = []
        for band in S2_BANDS:
            with rasterio.open(folder / f"{band}.tif") as src:
                bands.append(src.read(1, out_shape=shape, resampling=Resampling.nearest))
        cell = np.stack(bands)
        for top, left in patch_offsets(*shape, size):
            np.ascontiguousarray(cell[:, top : top + size, left : left + size])
            patches += 1
    return patches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, default=8)
    parser.add_argument("--size", type=int, default=1068, help="cell side in px at 10 m (Major TOM: 1068)")
    parser.add_argument("--patch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, nargs="+", default=[1])
    args = parser.parse_args()
    patches = sample_patches()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        rows = [majortom_row(patches[i % len(patches)], f"{i}U_{i}R", size=args.size) for i in range(args.cells)]
        root = write_majortom(tmp_path / "majortom", [rows])
        folders = []
        for row in rows:
            folder = tmp_path / "files" / row["grid_cell"]
            folder.mkdir(parents=True)
            for band in S2_BANDS:
                (folder / f"{band}.tif").write_bytes(row[band])
            folders.append(folder)
        del rows
        results = []
        cpu, wall = cpu_seconds(), time.perf_counter()
        n = baseline(folders, args.patch_size)
        base = (n / (cpu_seconds() - cpu), n / (time.perf_counter() - wall))
        results.append(("rasterio, one band file at a time (baseline)", 1, *base))
        for workers in args.workers:
            cpu, wall = cpu_seconds(), time.perf_counter()
            manifest = write_shards([root], tmp_path / f"out-{workers}", patch_size=args.patch_size, workers=workers, progress=False)
            n = manifest["samples"]
            results.append(("satclip shards -> s2c shards", workers, n / (cpu_seconds() - cpu), n / (time.perf_counter() - wall)))
    print(f"{args.cells} Major TOM cells of {args.size} px, {len(S2_BANDS)} bands, patches of {args.patch_size} px")
    print(f"{'path':<48} {'workers':>7} {'patches/s/core':>15} {'patches/s':>10} {'ratio/core':>10}")
    for name, workers, per_core, per_wall in results:
        print(f"{name:<48} {workers:>7} {per_core:>15.1f} {per_wall:>10.1f} {per_core / base[0]:>10.2f}")


if __name__ == "__main__":
    main()
