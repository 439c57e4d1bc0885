"""``satclip probe``: how much do pretrained location embeddings tell about a downstream target?

The table's coordinates are embedded with each checkpoint's location tower; a probe (ridge or a
small MLP, inputs standardised) is fit on k-1 folds and scored on the held-out fold. Random CV
shuffles rows; spatial CV holds out whole ``--cell-deg`` x ``--cell-deg`` degree cells, so a probe
cannot lean on near-duplicate neighbours. Baselines in the same table, with the same probe and
folds: raw lon/lat, sin/cos of lon/lat, and untrained spherical harmonics (L=10). Other encoders
join the same table: ``--features NAME=file.npy`` (precomputed (rows, D) embeddings in the
table's row order) and ``--encoder geoclip`` (GeoCLIP's pretrained location encoder, when the
``geoclip`` package is installed; its weights ship inside it and it takes [lat, lon]).

Probes: ``ridge`` = ridge regression (or the ridge classifier: one-vs-rest ridge on +-1 targets)
with alpha chosen by efficient leave-one-out CV on the training folds (RidgeCV /
RidgeClassifierCV); ``mlp`` = scikit-learn's MLP (two
hidden layers of 256, early stopping on 10% of the training folds).
"""

from __future__ import annotations

import argparse
import csv
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..cliargs import add_output_arguments, add_progress_argument
from ..columns import add_coordinate_arguments
from ..outputs import refuse_existing, written_whole
from ..probes import ALPHAS, fold_indices
from .fitting import in_batches


def lonlat_features(lonlat: np.ndarray) -> np.ndarray:
    """The raw [lon, lat] baseline."""
    return np.array(lonlat, dtype=np.float64)


def sincos_features(lonlat: np.ndarray) -> np.ndarray:
    """The wrap baseline: [sin, cos] of lon and lat."""
    rad = np.radians(lonlat)
    return np.concatenate([np.sin(rad), np.cos(rad)], axis=1)


def sh_features(lonlat: np.ndarray, degree: int = 10) -> np.ndarray:
    """Untrained real spherical harmonics up to ``degree`` L (L² features)."""
    from ..location import spherical_harmonics

    return spherical_harmonics(torch.as_tensor(lonlat, dtype=torch.float64), degree).numpy()


def baseline_features(lonlat: np.ndarray) -> dict[str, np.ndarray]:
    """The baselines: raw [lon, lat], [sin, cos] of lon and lat, and real spherical harmonics L=10."""
    return {"lon/lat": lonlat_features(lonlat), "sin/cos": sincos_features(lonlat), "SH L=10 (untrained)": sh_features(lonlat, 10)}


@torch.no_grad()
def geoclip_features(lonlat: np.ndarray, batch_size: int = 8192) -> np.ndarray:
    """GeoCLIP's pretrained location embeddings (512-d) of (N, 2) [lon, lat]; needs the ``geoclip`` package."""
    try:
        from geoclip import LocationEncoder
    except ImportError as err:
        raise ImportError(f"--encoder geoclip needs the geoclip package (pip install geoclip), which is not importable here: {err}") from None
    encoder = LocationEncoder().eval()
    latlon = torch.as_tensor(np.ascontiguousarray(lonlat[:, ::-1]), dtype=torch.float32)  # GeoCLIP takes [lat, lon]
    with torch.no_grad():
        return in_batches(encoder, latlon, batch_size=batch_size).double().numpy()


ENCODERS: dict[str, tuple[str, Callable[[np.ndarray], np.ndarray]]] = {"geoclip": ("GeoCLIP", geoclip_features)}
"""``--encoder`` name -> (table name, features of (N, 2) [lon, lat])."""


def load_features(spec: str, rows: int, *, kept: np.ndarray | None = None) -> tuple[str, np.ndarray]:
    """``NAME=file.npy`` -> (NAME, (rows, D) float64), checked against the table's row count; with
    ``kept`` (the source table's rows that ``--drop-invalid`` kept), features of every source row
    are reduced to the kept ones."""
    name, sep, path = spec.partition("=")
    if not sep or not name or not path:
        raise ValueError(f"--features {spec!r}: expected NAME=file.npy")
    if not Path(path).is_file():
        raise FileNotFoundError(f"--features {spec!r}: no such file {path!r}")
    try:
        feats = np.load(path, allow_pickle=False)
    except ValueError as err:
        raise ValueError(f"--features {spec!r}: not a numeric .npy array ({err})") from None
    if feats.ndim == 1:
        feats = feats[:, None]
    if kept is not None and feats.ndim == 2 and feats.shape[0] == len(kept) != rows:
        feats = feats[kept]  # aligned to the table as given: the dropped rows go here too
    if feats.ndim != 2 or feats.shape[0] != rows:
        dropped = f" ({len(kept) - rows} of its {len(kept)} rows were dropped by --drop-invalid: give the kept rows or all)" if kept is not None else ""
        raise ValueError(f"--features {spec!r}: expected ({rows}, D) rows in the table's order{dropped}, got shape {feats.shape}")
    if not np.issubdtype(feats.dtype, np.number) or not np.isfinite(feats).all():
        raise ValueError(f"--features {spec!r}: values must be finite numbers (dtype {feats.dtype})")
    return name, feats.astype(np.float64)


PROBE_KINDS = ("ridge", "logistic", "knn", "mlp")


def make_probe(kind: str, task: str, *, seed: int = 0, hidden: tuple[int, ...] = (256, 256), neighbours: int = 10):
    """An unfitted scikit-learn estimator: standardise inputs, then ridge / logistic / k-NN / MLP.

    ``logistic`` (L2, C=1, lbfgs) is for classification only; ``knn`` averages (regression) or votes
    (classification) over ``neighbours`` nearest standardised feature vectors; ``mlp`` has ``hidden``
    layers and stops early on 10% of the training rows."""
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.linear_model import LogisticRegression, RidgeClassifierCV, RidgeCV
    from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    regression = task == "regression"
    if kind == "ridge":
        est = RidgeCV(alphas=ALPHAS) if regression else RidgeClassifierCV(alphas=ALPHAS)
    elif kind == "mlp":
        cls = MLPRegressor if regression else MLPClassifier
        est = cls(hidden_layer_sizes=hidden, early_stopping=True, max_iter=500, random_state=seed)
    elif kind == "logistic":
        if regression:
            raise ValueError("the logistic probe is for classification tasks, not regression")
        est = LogisticRegression(max_iter=1000)
    elif kind == "knn":
        est = (KNeighborsRegressor if regression else KNeighborsClassifier)(n_neighbors=neighbours)
    else:
        raise ValueError(f"probe must be one of {PROBE_KINDS}, got {kind!r}")
    if regression:
        est = TransformedTargetRegressor(est, transformer=StandardScaler())
    return make_pipeline(StandardScaler(), est)


def score(task: str, y_true: np.ndarray, *, y_pred: np.ndarray) -> dict[str, float]:
    if task == "regression":
        err = y_pred - y_true
        mse = float(np.mean(err**2))
        return {"r2": 1 - mse / float(np.var(y_true)), "mse": mse, "mae": float(np.mean(np.abs(err)))}
    return {"accuracy": float(np.mean(y_pred == y_true))}


def probe_features(
    features: np.ndarray, y: np.ndarray, *, folds: list[tuple[np.ndarray, np.ndarray]], task: str, kind: str = "ridge", seed: int = 0
) -> list[dict[str, float]]:
    """Per-fold scores of a probe on ``features``."""
    results = []
    for train_idx, test_idx in folds:
        model = make_probe(kind, task, seed=seed).fit(features[train_idx], y[train_idx])
        results.append(score(task, y[test_idx], y_pred=model.predict(features[test_idx])))
    return results


def run_probe(
    feature_sets: dict[str, np.ndarray],
    lonlat: np.ndarray,
    *,
    y: np.ndarray,
    task: str,
    kind: str,
    cvs: list[str],
    n_folds: int,
    seed: int = 0,
    cell_deg: float = 10.0,
    progress: Callable[[str], None] | None = None,
) -> list[dict[str, object]]:
    """One row per (features, cv, fold) with the fold's scores."""
    rows = []
    for cv in cvs:
        folds = fold_indices(lonlat, n_folds, cv=cv, seed=seed, cell_deg=cell_deg)
        for name, feats in feature_sets.items():
            if progress:
                progress(f"{cv}: {name}")
            for k, s in enumerate(probe_features(feats, y, folds=folds, task=task, kind=kind, seed=seed)):
                rows.append({"features": name, "cv": cv, "fold": k, **s})
    return rows


def summary_table(rows: list[dict[str, Any]], task: str) -> str:
    """Markdown: one row per feature set, mean +- std over folds per (cv, metric)."""
    metrics = ("r2", "mse") if task == "regression" else ("accuracy",)
    names = list(dict.fromkeys(r["features"] for r in rows))
    cvs = list(dict.fromkeys(r["cv"] for r in rows))
    header = [f"{cv} {m.upper() if m == 'mse' else ('R²' if m == 'r2' else m)}" for cv in cvs for m in metrics]
    lines = ["| features | " + " | ".join(header) + " |", "|---|" + "---|" * len(header)]
    for name in names:
        cells = []
        for cv in cvs:
            for m in metrics:
                v = np.array([float(r[m]) for r in rows if r["features"] == name and r["cv"] == cv])
                cells.append(f"{v.mean():.3f} ± {v.std():.3f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", action="append", default=[], help="checkpoint / hub id / export to probe (repeatable)")
    parser.add_argument(
        "--features",
        action="append",
        default=[],
        metavar="NAME=FILE.npy",
        help="precomputed embeddings of any encoder, (rows, D) in the table's row order (repeatable)",
    )
    parser.add_argument(
        "--encoder", action="append", default=[], choices=sorted(ENCODERS), help="another pretrained location encoder: geoclip (needs the geoclip package)"
    )
    parser.add_argument("--data", required=True, help="CSV/Parquet table with coordinates and the target")
    parser.add_argument("--target", required=True)
    parser.add_argument("--task", default="regression", choices=("regression", "classification"))
    parser.add_argument("--probe", default="ridge", choices=("ridge", "mlp"))
    parser.add_argument("--cv", nargs="+", default=["random"], choices=("random", "spatial"), help="one or both schemes")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--cell-deg", type=float, default=10.0, help="spatial CV cell size in degrees")
    add_coordinate_arguments(parser)
    parser.add_argument("--drop-invalid", action="store_true", help="leave out rows with bad coordinates or no target (counted) instead of stopping")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-baselines", action="store_true", help="skip lon/lat, sin/cos and untrained SH")
    add_progress_argument(parser)
    add_output_arguments(parser, help="folder for probe_folds.csv and probe.md (default: print only)", required=False)


def run(args: argparse.Namespace) -> int:
    from .. import load_location_encoder
    from ..io.embed import embed_array
    from .tables import read_table

    if not (args.checkpoint or args.features or args.encoder) and args.no_baselines:
        raise SystemExit("satclip probe: nothing to probe: give --checkpoint, --features or --encoder, or drop --no-baselines")
    if args.out:
        refuse_existing(Path(args.out) / "probe_folds.csv", Path(args.out) / "probe.md", overwrite=args.overwrite)
    torch.set_num_threads(max(1, min(torch.get_num_threads(), 4)))
    table = read_table(args.data, args.target, lon_col=args.lon_col, lat_col=args.lat_col, crs=args.crs, drop_invalid=args.drop_invalid)
    y = table.y.astype(np.float64) if args.task == "regression" else table.y
    features: dict[str, np.ndarray] = {}
    for ckpt in args.checkpoint:
        encoder = load_location_encoder(ckpt)
        features[Path(ckpt).name if Path(ckpt).exists() else ckpt] = embed_array(encoder, table.lonlat, dtype=np.float64)
    try:
        for spec in args.features:
            name, feats = load_features(spec, len(y), kept=table.kept if table.dropped else None)
            features[name] = feats
        for name in args.encoder:
            title, fn = ENCODERS[name]
            features[title] = fn(table.lonlat)
    except (ValueError, FileNotFoundError, ImportError) as err:
        raise SystemExit(f"satclip probe: {err}") from None
    if not args.no_baselines:
        features.update(baseline_features(table.lonlat))
    rows = run_probe(
        features,
        table.lonlat,
        y=y,
        task=args.task,
        kind=args.probe,
        cvs=args.cv,
        n_folds=args.folds,
        seed=args.seed,
        cell_deg=args.cell_deg,
        progress=None if args.no_progress else lambda s: print(f"probing {s}", flush=True),
    )
    title = (
        f"{args.target} ({args.task}), {args.probe} probe, {args.folds}-fold CV "
        f"(spatial: {args.cell_deg:g}-degree cells), {len(y)} rows{f' ({table.dropped} invalid dropped)' if table.dropped else ''}; "
        "mean ± std over folds"
    )
    text = f"{title}\n\n{summary_table(rows, args.task)}\n"
    if args.out:
        out = Path(args.out)
        with written_whole(out / "probe_folds.csv") as partial, partial.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        with written_whole(out / "probe.md") as partial:
            partial.write_text(text)
    print(text)
    return 0
