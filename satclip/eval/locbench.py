"""``satclip locbench``: the land-ocean and checkerboard experiments of Russwurm et al. (ICLR 2024).

Protocol (``../shared/README.md``), with the differences stated:

- land-ocean: 5,000 training points uniform on the sphere (seed 0), 5,000 validation points
  (seed 1), test on the 100 km grid of the equal-area projection EPSG:6933 (50,662 points);
  labels from the 1 km ``global-land-mask`` package (GLOBE data, offline) instead of the paper's
  dissolved Natural Earth 1:110m polygons: the finer coastline changes accuracies slightly.
- checkerboard: 16 classes on 200 Fibonacci support points (class i mod 16), each point labelled by
  its nearest support point; 10,000 training points (seed 0), 5,000 validation points (seed 1),
  test on a 10,000-point Fibonacci lattice.
- batch 2,000, at most 500 epochs, early stopping with patience 30 on the validation loss, the
  authors' tuned hyper-parameters per encoding x network; the data are fixed and the seed changes
  the initialisation and the batch order.

Runs are appended to ``DIR/runs.csv`` as they finish (an interrupted bench resumes where it
stopped); ``DIR/table.csv`` and ``DIR/table.md`` hold mean +- std test accuracy (%), one row per
encoding, one column per network.
"""

from __future__ import annotations

import argparse
import csv
from functools import cache
from pathlib import Path

import numpy as np
import torch

from ..cliargs import add_progress_argument, add_tower_dtype_argument
from . import points
from .fitting import Split
from .locfit import DTYPES, fit_table

TASKS = ("landocean", "checkerboard")
ENCODINGS = ("direct", "cartesian3d", "wrap", "grid", "theory", "spherec", "spherec+", "spherem", "spherem+", "sphericalharmonics")
NETWORKS = ("linear", "fcnet", "siren")
# The paper's land-ocean test accuracies (%), encoding -> (linear, fcnet, siren).
PAPER_LANDOCEAN = {
    "direct": (71.4, 90.3, 95.1),
    "cartesian3d": (70.5, 92.7, 92.8),
    "wrap": (74.4, 93.2, 95.2),
    "grid": (81.7, 95.1, 95.5),
    "theory": (86.9, 94.9, 95.5),
    "spherec": (79.6, 95.0, 95.2),
    "spherec+": (84.6, 95.3, 95.5),
    "spherem": (74.0, 89.1, 88.3),
    "spherem+": (81.9, 92.1, 93.7),
    "sphericalharmonics": (94.4, 95.9, 95.8),
}
RUN_FIELDS = ("task", "pe", "nn", "seed", "accuracy", "epochs", "best_epoch", "seconds")


@cache
def task_data(task: str) -> tuple[Split, Split, Split]:
    """(train, validation, test) splits of a benchmark task."""
    if task == "landocean":
        make = lambda pts: Split(pts, points.is_land(pts).astype(np.int64))  # noqa: E731
        return make(points.uniform_sphere(5000, 0)), make(points.uniform_sphere(5000, 1)), make(points.ease2_grid(100_000.0))
    if task == "checkerboard":
        make = lambda pts: Split(pts, points.checkerboard_classes(pts))  # noqa: E731
        return make(points.uniform_sphere(10_000, 0)), make(points.uniform_sphere(5000, 1)), make(points.fibonacci_lattice(10_000))
    raise ValueError(f"unknown locbench task {task!r}; choose from {TASKS}")


def _read_runs(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


def run_bench(
    task: str,
    encodings: list[str],
    *,
    networks: list[str],
    seeds: int,
    out: Path,
    max_epochs: int = 500,
    patience: int = 30,
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
) -> list[dict[str, str]]:
    """Run every (encoding, network, seed) not already in ``out/runs.csv``; write the tables; return all runs."""
    from tqdm.auto import tqdm

    out.mkdir(parents=True, exist_ok=True)
    runs_path = out / "runs.csv"
    runs = [r for r in _read_runs(runs_path) if r["task"] == task]
    done = {(r["pe"], r["nn"], int(r["seed"])) for r in runs}
    todo = [(pe, nn, s) for pe in encodings for nn in networks for s in range(seeds) if (pe, nn, s) not in done]
    if todo:
        train, val, test = task_data(task)
    new_file = not runs_path.is_file()
    with runs_path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=RUN_FIELDS)
        if new_file:
            writer.writeheader()
        bar = tqdm(todo, desc=f"locbench {task}", unit="run", disable=not progress)
        for pe, nn, seed in bar:
            bar.set_postfix_str(f"{pe} x {nn} seed {seed}")
            _, report = fit_table(
                train, val, test=test, task="classification", pe=pe, nn_name=nn, tuned=task, max_epochs=max_epochs, patience=patience, seed=seed, dtype=dtype
            )
            row = {
                "task": task,
                "pe": pe,
                "nn": nn,
                "seed": seed,
                "accuracy": f"{100 * report['test']['accuracy']:.3f}",
                "epochs": report["history"]["epochs"],
                "best_epoch": report["history"]["best_epoch"],
                "seconds": report["seconds"],
            }
            writer.writerow(row)
            f.flush()
            runs.append({k: str(v) for k, v in row.items()})
    write_tables(task, runs, out=out, encodings=encodings, networks=networks)
    return runs


def summarise(runs: list[dict[str, str]]) -> dict[tuple[str, str], tuple[float, float, int]]:
    """(encoding, network) -> (mean, std, n) test accuracy in %, std over seeds (ddof 0)."""
    groups: dict[tuple[str, str], list[float]] = {}
    for r in runs:
        groups.setdefault((r["pe"], r["nn"]), []).append(float(r["accuracy"]))
    return {k: (float(np.mean(v)), float(np.std(v)), len(v)) for k, v in groups.items()}


def write_tables(task: str, runs: list[dict[str, str]], *, out: Path, encodings: list[str], networks: list[str]) -> None:
    """``table.csv`` (pe, then mean/std/n per network) and ``table.md`` (mean +- std, paper values for land-ocean)."""
    stats = summarise(runs)
    rows = [pe for pe in ENCODINGS if any((pe, nn) in stats for nn in networks)]
    rows += [pe for pe in encodings if pe not in rows and any((pe, nn) in stats for nn in networks)]
    with (out / "table.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["pe"] + [f"{nn}_{s}" for nn in networks for s in ("mean", "std", "n")])
        for pe in rows:
            cells = []
            for nn in networks:
                m, sd, n = stats.get((pe, nn), (float("nan"), float("nan"), 0))
                cells += [f"{m:.2f}", f"{sd:.2f}", str(n)]
            writer.writerow([pe, *cells])
    paper = PAPER_LANDOCEAN if task == "landocean" else {}
    lines = [
        f"{task}: test accuracy (%), mean +- std over seeds" + (" (paper value in parentheses)" if paper else ""),
        "",
        "| encoding | " + " | ".join(networks) + " |",
        "|---|" + "---|" * len(networks),
    ]
    for pe in rows:
        cells = []
        for nn in networks:
            if (pe, nn) not in stats:
                cells.append("")
                continue
            m, sd, n = stats[(pe, nn)]
            ref = paper.get(pe)
            note = f" ({ref[NETWORKS.index(nn)]})" if ref and nn in NETWORKS else ""
            cells.append(f"{m:.1f} ± {sd:.1f}{note}" + ("" if n > 1 else " [1 seed]"))
        lines.append(f"| {pe} | " + " | ".join(cells) + " |")
    (out / "table.md").write_text("\n".join(lines) + "\n")


def _names(text: str | None, default: tuple[str, ...]) -> list[str]:
    return list(default) if not text or text == "all" else [t.strip() for t in text.split(",") if t.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", required=True, choices=TASKS)
    parser.add_argument("--pe", default="all", help=f"comma-separated encodings or 'all' ({','.join(ENCODINGS)})")
    parser.add_argument("--nn", default="all", help=f"comma-separated networks or 'all' ({','.join(NETWORKS)})")
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 per encoding x network")
    parser.add_argument("--max-epochs", type=int, default=500)
    parser.add_argument("--patience", type=int, default=30)
    add_tower_dtype_argument(parser, help="precision of the fitted towers (default: float32)", default="float32")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument(
        "--out",
        "--output",
        dest="out",
        default="locbench-out",
        help="output folder: runs.csv, table.csv, table.md; a rerun adds only the runs runs.csv lacks (--output: old spelling)",
    )
    add_progress_argument(parser)


def run(args: argparse.Namespace) -> int:
    from ..location import NETWORKS as REGISTERED_NETWORKS
    from ..location import POSITIONAL_ENCODINGS

    encodings, networks = _names(args.pe, ENCODINGS), _names(args.nn, NETWORKS)
    unknown = [e for e in encodings if e not in POSITIONAL_ENCODINGS] + [n for n in networks if n not in REGISTERED_NETWORKS]
    if unknown:
        raise SystemExit(
            f"satclip locbench: unknown encoding/network {unknown}; encodings {sorted(POSITIONAL_ENCODINGS)}, networks {sorted(REGISTERED_NETWORKS)}"
        )
    if args.seeds < 1:
        raise SystemExit(f"satclip locbench: --seeds must be >= 1, got {args.seeds}")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    run_bench(
        args.task,
        encodings,
        networks=networks,
        seeds=args.seeds,
        out=out,
        max_epochs=args.max_epochs,
        patience=args.patience,
        dtype=DTYPES[args.tower_dtype],
        progress=not args.no_progress,
    )
    print((out / "table.md").read_text())
    return 0
