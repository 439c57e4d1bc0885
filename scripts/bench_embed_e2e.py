#!/usr/bin/env python
"""Benchmark `satclip embed` end to end: points/s and peak memory, from CSV and Parquet to npy, Parquet, GeoParquet.

For each row count it writes, in a temporary directory, a table of ``id, lon, lat`` (uniform points on
the sphere) as CSV and as Parquet, and an exported tower of the released shape (spherical harmonics
L = ``--degree``, SIREN 2 x 512, 256 outputs; random weights). Then, each in its own process with
``OMP_NUM_THREADS`` = ``--threads``:

- ``satclip embed`` (the real CLI) for every input x output pair; wall time and the process's peak
  resident memory (VmHWM from /proc, polled every 20 ms);
- ``tower alone``: the same tower on the same points, read from an ``.npy`` memory map and embedded
  in the CLI's chunks (``satclip.io.embed.READ_ROWS`` rows, ``embed_array`` in ``--batch-size``
  batches, results discarded), timed around the embedding only;
- ``startup``: ``satclip embed`` of a one-row file (interpreter, imports, loading the tower).

The table gives points/s, the end-to-end time against the tower alone, the share of the time that is
neither the tower nor the start-up (reading, parsing, writing: the I/O share) and the peak memory;
memory bounded independently of the row count means the peaks of the smallest and largest row
counts are about equal. The order of the runs is interleaved over ``--repeats`` so that load on a
shared machine hits them alike; medians and the spread (max - min over median) are reported.

    python scripts/bench_embed_e2e.py --rows 100000 1000000
    python scripts/bench_embed_e2e.py --rows 10000000 --inputs csv --outputs npy --repeats 1
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OUTPUTS = {"npy": (".npy", []), "parquet": (".parquet", []), "geoparquet": (".parquet", ["--geoparquet"])}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000], help="row counts (default 100k 1M)")
    p.add_argument("--inputs", nargs="+", choices=["csv", "parquet"], default=["csv", "parquet"])
    p.add_argument("--outputs", nargs="+", choices=list(OUTPUTS), default=list(OUTPUTS))
    p.add_argument("--degree", type=int, default=10, help="L of the tower (default 10)")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32", help="--dtype of satclip embed (default float32)")
    p.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS of every run (default 2)")
    p.add_argument("--batch-size", type=int, default=8192)
    p.add_argument("--repeats", type=int, default=2, help="interleaved repetitions of every run (default 2)")
    p.add_argument("--tower-only", nargs=2, metavar=("TOWER", "NPY"), help=argparse.SUPPRESS)  # the child of a "tower alone" run
    return p.parse_args(argv)


def random_table(n: int, seed: int):
    """An Arrow table of n rows: id (int64), lon, lat (float64 degrees, uniform on the sphere)."""
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    lon, lat = rng.uniform(-180, 180, n), np.degrees(np.arcsin(rng.uniform(-1, 1, n)))
    return pa.table({"id": np.arange(n), "lon": lon, "lat": lat})


def write_inputs(folder: Path, n: int) -> dict[str, Path]:
    """The n-row table as CSV, Parquet and an (n, 2) .npy of [lon, lat]; returns their paths by format."""
    import numpy as np
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    table = random_table(n, seed=n)
    paths = {"csv": folder / f"points{n}.csv", "parquet": folder / f"points{n}.parquet", "npy": folder / f"points{n}.npy"}
    pacsv.write_csv(table, paths["csv"])
    pq.write_table(table, paths["parquet"])
    np.save(paths["npy"], np.stack([table["lon"].to_numpy(), table["lat"].to_numpy()], 1))
    return paths


def _vm_hwm(pid: int) -> int:
    """VmHWM (the peak resident memory of the process's current image, in bytes) from /proc, 0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def run_child(cmd: list[str], threads: int) -> tuple[float, int, str]:
    """Run ``cmd``; (wall seconds, its peak resident memory in bytes, its stdout). Raises with its stderr if it fails.

    The peak is VmHWM polled every 20 ms: a child's ``ru_maxrss`` (wait4, RUSAGE_CHILDREN) also counts the
    parent's own peak, which Linux records when the child replaces its image (exec)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err, text=True)
        peak = 0
        while proc.poll() is None:
            peak = max(peak, _vm_hwm(proc.pid))
            time.sleep(0.02)
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        if proc.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err.read()[-2000:]}")
        return wall, peak, out.read()


def embed_cmd(tower: Path, source: Path, output: Path, extra: list[str], args: argparse.Namespace) -> list[str]:
    return [
        sys.executable,
        "-m",
        "satclip.cli",
        "embed",
        "--checkpoint",
        str(tower),
        "--input",
        str(source),
        "--output",
        str(output),
        "--dtype",
        args.dtype,
        "--batch-size",
        str(args.batch_size),
        "--no-progress",
        *extra,
    ]


def tower_only(tower: str, npy: str, dtype: str, batch_size: int) -> None:
    """The child of a "tower alone" run: print the seconds spent embedding the .npy's points in the CLI's chunks."""
    import numpy as np

    from satclip.io.checkpoints import load_location_encoder
    from satclip.io.embed import READ_ROWS, embed_array

    encoder = load_location_encoder(tower, dtype=dtype)
    lonlat = np.load(npy, mmap_mode="r")
    start = time.perf_counter()
    for i in range(0, lonlat.shape[0], READ_ROWS):
        embed_array(encoder, np.asarray(lonlat[i : i + READ_ROWS]), batch_size=batch_size)
    print(f"{time.perf_counter() - start:.6f}")


def bench(args: argparse.Namespace) -> tuple[list[dict[str, object]], dict[tuple[int, str], int]]:
    """Every run of every row count: (table rows, failed runs by (rows, input -> output))."""
    import satclip
    from satclip.io.export import export_location_encoder

    results: list[dict[str, object]] = []
    failures: dict[tuple[int, str], int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        tower = folder / "tower"
        export_location_encoder(satclip.build_location_encoder(legendre_polys=args.degree).eval(), tower)
        one = write_inputs(folder, 1)
        for n in args.rows:
            paths = write_inputs(folder, n)
            runs: dict[str, list[tuple[float, int]]] = {}
            for _ in range(args.repeats):
                cmd = [sys.executable, __file__, "--tower-only", str(tower), str(paths["npy"])]
                wall, peak, stdout = run_child([*cmd, "--dtype", args.dtype, "--batch-size", str(args.batch_size)], args.threads)
                runs.setdefault("tower alone", []).append((float(stdout.strip()), peak))
                wall, peak, _ = run_child(embed_cmd(tower, one["csv"], folder / "one.npy", [], args), args.threads)
                runs.setdefault("startup", []).append((wall, peak))
                for source in args.inputs:
                    for name in args.outputs:
                        suffix, extra = OUTPUTS[name]
                        output = folder / f"out{suffix}"
                        label = f"{source} -> {name}"
                        try:
                            wall, peak, _ = run_child(embed_cmd(tower, paths[source], output, extra, args), args.threads)
                        except RuntimeError as err:  # reported, and the other runs go on
                            print(f"{n} rows, {label}: {err}", file=sys.stderr)
                            failures[n, label] = failures.get((n, label), 0) + 1
                            continue
                        output.unlink()
                        runs.setdefault(label, []).append((wall, peak))
            tower_s = statistics.median(s for s, _ in runs["tower alone"])
            startup = statistics.median(s for s, _ in runs["startup"])
            for label, values in runs.items():
                seconds = [s for s, _ in values]
                wall = statistics.median(seconds)
                results.append(
                    {
                        "rows": n,
                        "run": label,
                        "seconds": wall,
                        "spread": (max(seconds) - min(seconds)) / wall if wall else 0.0,
                        "peak MiB": max(p for _, p in values) / 2**20,
                        "tower": tower_s,
                        "startup": startup,
                        "failed": failures.get((n, label), 0),
                    }
                )
            for path in paths.values():
                path.unlink()
    return results, failures


def table(results: list[dict[str, object]], args: argparse.Namespace) -> str:
    lines = [
        f"satclip embed end to end: L = {args.degree}, {args.dtype}, {args.threads} thread(s), batch {args.batch_size}, "
        f"medians of {args.repeats}, load average {os.getloadavg()[0]:.1f}",
        "",
        "| rows | run | seconds | spread | points/s | tower alone / end to end (speed) | I/O share | start-up share | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        n, s, tower, startup = int(r["rows"]), float(r["seconds"]), float(r["tower"]), float(r["startup"])  # type: ignore[arg-type]
        if r["run"] == "startup":
            lines.append(f"| 1 | satclip embed of a one-row CSV (start-up) | {s:.2f} | {float(r['spread']):.0%} | - | - | - | - | {float(r['peak MiB']):.0f} |")  # type: ignore[arg-type]
            continue
        if r["run"] == "tower alone":
            cells = f"{n / s:,.0f} | 1.00 | - | - |"
        else:
            cells = f"{n / s:,.0f} | {tower / s:.2f} | {max(0.0, s - tower - startup) / s:.0%} | {startup / s:.0%} |"
        failed = f" ({r['failed']} of the runs failed, see stderr)" if r.get("failed") else ""
        lines.append(f"| {n:,} | {r['run']}{failed} | {s:.2f} | {float(r['spread']):.0%} | {cells} {float(r['peak MiB']):.0f} |")  # type: ignore[arg-type]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.tower_only:
        os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
        tower_only(*args.tower_only, args.dtype, args.batch_size)
        return 0
    results, failures = bench(args)
    print(table(results, args))
    for (n, label), count in failures.items():
        print(f"FAILED: {n:,} rows, {label}: {count} of {args.repeats} runs (errors on stderr)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
