"""``satclip bench``: several location encoders on several tasks, under several protocols, label
budgets, probes and seeds, from one YAML file (:mod:`satclip.eval.bench_config`).

For every (encoder, task, protocol, budget, probe, seed) the probe is fit on each training fold of
the protocol (:mod:`satclip.eval.splits`), cut down to the label budget (the same rows for every
encoder and probe), and scored on the fold's test rows; the row kept is the mean over folds (with
their std). Rows are appended to ``OUT/results.csv`` (or ``.parquet``), rewritten under a temporary
name and renamed after each (task, encoder); ``--resume`` skips the rows already there, and an
(encoder, task) whose rows are all there is not even embedded. Embeddings are computed once per
(encoder, task) and tower outputs cached in ``OUT/embeddings/``. ``OUT/summary.md`` (mean ± std
over seeds) and ``OUT/bench.png`` (score against label budget) are written at the end.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from threadpoolctl import threadpool_limits

from ..cliargs import add_progress_argument
from ..outputs import written_whole
from .bench_config import BenchConfig, EncoderSpec, TaskSpec, read_config
from .bench_features import EncoderUnavailable, encoder_features
from .bench_probes import probe_score
from .bench_report import budget_label, plot_budgets, summary_markdown, write_text
from .fitting import Split
from .splits import Folds, Protocol, budget_subset, protocol_folds

KEY = ("encoder", "task", "protocol", "budget", "probe", "seed")
FIELDS = (*KEY, "metric", "score", "fold_std", "folds", "n_train", "n_test", "seconds")


@dataclass
class Task:
    """A task's table, read once: its coordinates and targets, and the hold-out columns its protocols use."""

    spec: TaskSpec
    split: Split
    columns: dict[str, np.ndarray]

    @property
    def y(self) -> np.ndarray:
        return self.split.y.astype(np.float64) if self.spec.task == "regression" else self.split.y


def load_task(spec: TaskSpec, protocols: list[Protocol]) -> Task:
    """Read a task's table (bad rows are an error naming them) and its hold-out columns."""
    from ..tables import read_table as read_arrow
    from .tables import read_table

    split = read_table(spec.path, spec.target, lon_col=spec.lon_col, lat_col=spec.lat_col, time_col=spec.time_col)
    columns = {}
    for protocol in protocols:
        if protocol.kind == "holdout" and protocol.column:
            table = read_arrow(spec.path, text=[protocol.column])
            if protocol.column not in table.column_names:
                raise ValueError(f"task {spec.name!r} ({spec.path}): protocol {protocol.name!r} needs column {protocol.column!r}; it has {table.column_names}")
            columns[protocol.column] = np.array([str(v) for v in table.column(protocol.column).to_pylist()])
    return Task(spec, split, columns)


def read_results(path: Path) -> pd.DataFrame:
    """The rows of a results file (CSV or Parquet), key columns as text and seeds as integers."""
    if not path.is_file():
        return pd.DataFrame(columns=list(FIELDS))
    frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, dtype={k: str for k in KEY if k != "seed"})
    missing = sorted(set(FIELDS) - set(frame.columns))
    if missing:
        raise ValueError(f"{path}: not a satclip bench results file (missing columns {missing})")
    frame = frame.astype({k: str for k in KEY if k != "seed"})
    return frame.astype({"seed": int})


def write_results(frame: pd.DataFrame, path: Path) -> None:
    """Write ``frame`` under a temporary name and rename it over ``path``."""
    with written_whole(path) as partial:
        if path.suffix == ".parquet":
            frame.to_parquet(partial, index=False)
        else:
            frame.to_csv(partial, index=False)


def score_folds(features: np.ndarray, y: np.ndarray, *, folds: Folds, task: str, probe: str, budget: int | None, seed: int) -> dict[str, float]:
    """Mean and std over ``folds`` of a probe's test score, training on ``budget`` rows of each fold
    (drawn from seed, fold and budget only, so every encoder and probe sees the same rows)."""
    scores, n_train, n_test = [], [], []
    for k, (train, test) in enumerate(folds):
        rows = budget_subset(train, budget, rng=np.random.default_rng([seed, k, budget or 0]))
        scores.append(probe_score(probe, task, features=features, y=y, train=rows, test=test, seed=seed))
        n_train.append(len(rows))
        n_test.append(len(test))
    return {
        "score": float(np.mean(scores)),
        "fold_std": float(np.std(scores)),
        "folds": len(folds),
        "n_train": float(np.mean(n_train)),
        "n_test": float(np.mean(n_test)),
    }


def _todo(config: BenchConfig, encoder: EncoderSpec, *, task: TaskSpec, done: set[tuple]) -> list[tuple[Protocol, int | None, str, int]]:
    return [
        (protocol, budget, probe, seed)
        for protocol in config.protocols_of(task)
        for budget in config.budgets
        for probe in config.probes_of(task)
        for seed in range(config.seeds)
        if (encoder.name, task.name, protocol.name, budget_label(budget), probe, seed) not in done
    ]


def _folds(task: Task, protocol: Protocol, *, seed: int, cache: dict[tuple[str, int], Folds]) -> Folds:
    """The folds of ``protocol`` with ``seed`` on ``task``, cut once per task (kept in ``cache``)."""
    key = (protocol.name, seed)
    if key not in cache:
        where = f"task {task.spec.name!r}, protocol {protocol.name!r}"
        cache[key] = protocol_folds(protocol, task.split.lonlat, seed=seed, column=task.columns.get(protocol.column or ""), where=where)
    return cache[key]


def _row(names: tuple[str, str, str], features: np.ndarray, *, y: np.ndarray, folds: Folds, protocol: str, budget: int | None, probe: str, seed: int) -> dict:
    """One results row of (encoder, task, task kind) ``names``, with one BLAS thread (the probes'
    matrices are small: one thread is faster than several competing)."""
    encoder, task, kind = names
    start = time.perf_counter()
    with threadpool_limits(1):
        scored = score_folds(features, y, folds=folds, task=kind, probe=probe, budget=budget, seed=seed)
    return {
        "encoder": encoder,
        "task": task,
        "protocol": protocol,
        "budget": budget_label(budget),
        "probe": probe,
        "seed": seed,
        "metric": "r2" if kind == "regression" else "accuracy",
        **scored,
        "seconds": round(time.perf_counter() - start, 4),
    }


def run_suite(
    config: BenchConfig, out: Path, *, resume: bool = False, progress: Callable[[str], None] | None = print, jobs: int = 1, note: Callable[[str], None] = print
) -> pd.DataFrame:
    """Run every row of ``config`` not already in ``out``'s results (with ``resume``), ``jobs`` rows at
    a time in worker processes (1: in this one); write the results, the summary and the plot; return
    the results of this configuration."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / config.results
    results = read_results(path) if resume else pd.DataFrame(columns=list(FIELDS))
    done = {tuple(r) for r in results[list(KEY)].itertuples(index=False, name=None)}
    for task_spec in config.tasks:
        protocols = config.protocols_of(task_spec)
        task: Task | None = None
        folds: dict[tuple[str, int], Folds] = {}
        for encoder in config.encoders:
            todo = _todo(config, encoder, task=task_spec, done=done)
            if not todo:
                continue
            task = task or load_task(task_spec, protocols)
            start = time.perf_counter()
            try:
                features = encoder_features(encoder, task_spec.name, split=task.split, cache=out / "embeddings")
            except EncoderUnavailable as err:
                note(f"{task_spec.name}: {encoder.name} skipped: {err}")
                continue
            names = (encoder.name, task_spec.name, task_spec.task)
            y = task.y
            work = [
                partial(_row, names, features, y=y, folds=_folds(task, p, seed=seed, cache=folds), protocol=p.name, budget=budget, probe=probe, seed=seed)
                for p, budget, probe, seed in todo
            ]
            if jobs > 1:
                from joblib import Parallel, delayed

                rows = Parallel(n_jobs=jobs)(delayed(item)() for item in work)
            else:
                rows = [item() for item in work]
            results = (
                pd.concat([results, pd.DataFrame(rows, columns=list(FIELDS))], ignore_index=True) if len(results) else pd.DataFrame(rows, columns=list(FIELDS))
            )
            write_results(results, path)
            done.update((r["encoder"], r["task"], r["protocol"], r["budget"], r["probe"], r["seed"]) for r in rows)
            if progress is not None:
                progress(f"{task_spec.name}: {encoder.name}: {len(rows)} rows in {time.perf_counter() - start:.1f} s")
    mine = results[results["encoder"].isin([e.name for e in config.encoders]) & results["task"].isin([t.name for t in config.tasks])]
    if len(mine):
        write_text(out / "summary.md", summary_markdown(mine, config))
        plot_budgets(mine, config, path=out / "bench.png")
    return mine


def _say(line: str) -> None:
    print(line, flush=True)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="YAML suite: encoders, tasks, protocols, budgets, probes, seeds (configs/bench/default.yaml)")
    parser.add_argument("--out", "--output", dest="out", help="output folder (default: the config's 'out'; --output: old spelling)")
    parser.add_argument("--resume", action="store_true", help="keep the results file and run only the rows it lacks")
    parser.add_argument("--overwrite", action="store_true", help="start the results file afresh")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads for embedding")
    parser.add_argument("--jobs", type=int, default=1, help="rows fit at a time, in worker processes (each probe uses one thread)")
    add_progress_argument(parser)


def run(args: argparse.Namespace) -> int:
    config = read_config(args.config)
    out = Path(args.out or config.out)
    path = out / config.results
    if args.resume and args.overwrite:
        raise ValueError("--resume and --overwrite exclude each other")
    if path.exists() and not (args.resume or args.overwrite):
        raise ValueError(f"{path} exists: --resume to add the rows it lacks, --overwrite to start afresh")
    if args.jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {args.jobs}")
    torch.set_num_threads(max(1, args.threads))
    start = time.perf_counter()
    run_suite(config, out, resume=args.resume, progress=None if args.no_progress else _say, jobs=args.jobs, note=_say)
    print(f"\n{(out / 'summary.md').read_text() if (out / 'summary.md').is_file() else ''}")
    print(f"results: {path}, summary: {out / 'summary.md'}, plot: {out / 'bench.png'} ({time.perf_counter() - start:.0f} s)")
    return 0
