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
patches/s are shown too. The ratio is writer/baseline per core. ``--repeats`` runs the baseline and
the writer alternately (on a loaded machine a single pair is noisy): the rates are medians, the ratio
is the median of each repeat's writer/baseline, with its range. ``--profile`` then runs the writer
once more (one process) under cProfile on CPU time and prints where its CPU time goes, by stage.

    python scripts/bench_majortom.py                       # 8 cells of 1068 px, workers 1
    python scripts/bench_majortom.py --cells 16 --workers 1 2 --repeats 5 --profile
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import resource
import statistics
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
        for top, left in patch_offsets(*shape, size=size):
            np.ascontiguousarray(cell[:, top : top + size, left : left + size])
            patches += 1
    return patches


STAGES = {
    "Parquet row groups read (main process)": [("majortom.py", "cell_tasks")],
    "band GeoTIFFs decoded (rasterio)": [("majortom.py", "_read_band")],
    "bands onto the 10 m grid": [("majortom.py", "to_10m")],
    "patches cut (contiguous copies)": [("majortom.py", "encode_cell", "numpy.ascontiguousarray")],
    "patch centres (pyproj)": [("geo.py", "lonlat_of_pixels")],
    "records (JSON fields)": [("sources.py", "sample_record")],
    "s2c encoding (Blosc LZ4 + CRC-32)": [("payload.py", "encode_fast")],
    "tar writing": [("tarwriter.py", "add")],
}
"""Stage -> the functions whose cumulative CPU time it is: (file, function), or (file, caller, callee)
for a built-in called from one function."""


def profile(root: Path, out: Path, patch_size: int) -> None:
    """Run the writer once in this process under cProfile (CPU time) and print the time by stage."""
    profiler = cProfile.Profile(time.process_time)
    profiler.runcall(write_shards, [root], out, patch_size=patch_size, workers=1, progress=False)
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]  # (file, line, name) -> (cc, nc, tt, ct, callers)
    total = sum(tt for _, _, tt, _, _ in stats.values())
    print(f"\nwhere the writer's CPU time goes (one process, {total:.2f} s under cProfile):")
    accounted = 0.0
    for stage, functions in STAGES.items():
        seconds = 0.0
        for spec in functions:
            for (file, _, name), (_, _, _, cumulative, callers) in stats.items():
                if len(spec) == 2 and file.endswith(spec[0]) and name == spec[1]:
                    seconds += cumulative
                elif len(spec) == 3 and name == f"<built-in method {spec[2]}>":
                    seconds += sum(c[3] for (f, _, n), c in callers.items() if f.endswith(spec[0]) and n == spec[1])
        accounted += seconds
        print(f"  {stage:<44} {seconds:6.3f} s  {100 * seconds / total:5.1f} %")
    print(f"  {'the rest (tasks, pool, manifest, Python)':<44} {total - accounted:6.3f} s  {100 * (total - accounted) / total:5.1f} %")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, default=8)
    parser.add_argument("--size", type=int, default=1068, help="cell side in px at 10 m (Major TOM: 1068)")
    parser.add_argument("--patch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, nargs="+", default=[1])
    parser.add_argument("--repeats", type=int, default=1, help="baseline and writer runs, alternated (default 1)")
    parser.add_argument("--profile", action="store_true", help="then profile the writer by stage")
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
        runs: dict[tuple[str, int], list[tuple[float, float]]] = {}
        size = 0.0
        for repeat in range(args.repeats):
            cpu, wall = cpu_seconds(), time.perf_counter()
            n = baseline(folders, args.patch_size)
            runs.setdefault(("rasterio, one band file at a time (baseline)", 1), []).append((n / (cpu_seconds() - cpu), n / (time.perf_counter() - wall)))
            for workers in args.workers:
                out = tmp_path / f"out-{workers}-{repeat}"
                cpu, wall = cpu_seconds(), time.perf_counter()
                manifest = write_shards([root], out, patch_size=args.patch_size, workers=workers, progress=False)
                n = manifest["samples"]
                runs.setdefault(("satclip shards -> s2c shards", workers), []).append((n / (cpu_seconds() - cpu), n / (time.perf_counter() - wall)))
                size = sum(p.stat().st_size for p in out.glob("*.tar")) / n / 2**10
        print(
            f"{args.cells} Major TOM cells of {args.size} px, {len(S2_BANDS)} bands, patches of {args.patch_size} px; {size:.0f} KiB per s2c sample in the tars"
        )
        print(f"{'path':<48} {'workers':>7} {'patches/s/core':>15} {'patches/s':>10} {'ratio/core':>10} {'range (repeats)':>20}")
        base = runs[("rasterio, one band file at a time (baseline)", 1)]
        for (name, workers), rates in runs.items():
            ratios = [r[0] / b[0] for r, b in zip(rates, base)]
            spread = f"{min(ratios):.2f}-{max(ratios):.2f} ({len(ratios)})"
            per_core, per_wall = statistics.median(r[0] for r in rates), statistics.median(r[1] for r in rates)
            print(f"{name:<48} {workers:>7} {per_core:>15.1f} {per_wall:>10.1f} {statistics.median(ratios):>10.2f} {spread:>20}")
        if args.profile:
            profile(root, tmp_path / "profiled", args.patch_size)


if __name__ == "__main__":
    main()
