"""``satclip locfit``: fit a location encoder (or fine-tune a pretrained tower) to a table.

Tables are CSV/Parquet files with longitude and latitude columns (``lon``, ``lat`` by default) and
a target column. Classification with two labels trains with binary cross-entropy, with more labels
with cross-entropy; regression with MSE on the standardised target. Training stops early on the
validation loss. ``DIR/metrics.json`` holds the test (and validation) metrics and every setting.

Defaults for an encoding x network pair come from the Siren(SH) authors' tuned values
(``tuned_hparams.csv``, shipped with the package): their land-ocean row for binary classification,
their checkerboard row for multi-class classification; regression and pairs without a row use the
network's defaults with lr 1e-3 and no weight decay. Explicit options always win.

With ``--init-from`` the tower of a pretrained checkpoint (anything ``satclip.load_location_encoder``
reads) gets a linear head and is fine-tuned (or, with ``--freeze-tower``, only the head is fit).

The fitted model is written to ``DIR/model`` in the location-tower export format of
``satclip export`` (``config.json`` + ``model.safetensors``): the head and the regression target
scaling are folded into the tower's last affine layer, so ``satclip.load_location_encoder(DIR/model)``
returns a plain tower whose outputs are the predictions (class logits, or values in target units).
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from dataclasses import asdict
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..cliargs import add_output_arguments, add_tower_dtype_argument
from ..columns import add_coordinate_arguments
from ..location import NETWORKS, POSITIONAL_ENCODINGS, LocationEncoder, build_location_encoder, with_last_affine
from ..location.registry import hyperparameter_names
from ..outputs import refuse_existing, written_whole
from .fitting import LocationPredictor, Split, evaluate, infer_kind, train_predictor
from .tables import read_table

TUNED_TASKS = ("landocean", "checkerboard")
# the tuned table spells the "+" variants out
_CSV_NAMES = {"spherecplus": "spherec+", "spheremplus": "spherem+"}
_INT_HPARAMS = ("legendre_polys", "dim_hidden", "num_layers", "frequency_num")
_FLOAT_HPARAMS = ("min_radius", "max_radius")
DTYPES = {"float32": torch.float32, "float64": torch.float64}


@cache
def _tuned_table() -> dict[tuple[str, str, str], dict[str, str]]:
    text = resources.files(__package__).joinpath("tuned_hparams.csv").read_text()
    rows = csv.DictReader(text.splitlines())
    return {(r["task"], _CSV_NAMES.get(r["pe"], r["pe"]), r["nn"]): r for r in rows}


def tuned_hparams(task: str, pe: str, *, nn_name: str) -> dict[str, Any] | None:
    """The authors' tuned values for (task, encoding, network), or None when the table has no row.

    Returns architecture hyper-parameters (only those set) plus ``lr`` and ``weight_decay``.
    """
    if task not in TUNED_TASKS:
        raise ValueError(f"tuned task must be one of {TUNED_TASKS}, got {task!r}")
    row = _tuned_table().get((task, pe, nn_name))
    if row is None:
        return None
    out: dict[str, Any] = {k: int(float(row[k])) for k in _INT_HPARAMS if row[k]}
    out.update({k: float(row[k]) for k in _FLOAT_HPARAMS if row[k]})
    out.update(lr=float(row["lr"]), weight_decay=float(row["weight_decay"]))
    return out


def resolve_settings(kind: str, pe: str, *, nn_name: str, tuned: str = "auto", overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Hyper-parameters for a fit: tuned row (``tuned``: auto, landocean, checkerboard or none), then ``overrides``.

    Returns ``{"hparams": ..., "lr": ..., "weight_decay": ..., "source": ...}``; architecture
    hyper-parameters that neither the encoding nor the network accepts are dropped from a tuned row
    (and listed under ``"ignored"``), but an explicit override that fits neither raises in the builder.
    """
    if tuned == "auto":
        tuned = {"binary": "landocean", "multiclass": "checkerboard"}.get(kind, "none")
    row = tuned_hparams(tuned, pe, nn_name=nn_name) if tuned != "none" else None
    settings: dict[str, Any] = {"lr": 1e-3, "weight_decay": 0.0, "source": "defaults", "ignored": []}
    hparams: dict[str, Any] = {}
    if row is not None:
        settings.update(lr=row.pop("lr"), weight_decay=row.pop("weight_decay"), source=f"tuned:{tuned}")
        accepted = _accepted_hparams(pe, nn_name)
        hparams = {k: v for k, v in row.items() if k in accepted}
        settings["ignored"] = sorted(set(row) - set(hparams))
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key in ("lr", "weight_decay"):
            settings[key] = value
        else:
            hparams[key] = value
    settings["hparams"] = hparams
    return settings


def _accepted_hparams(pe: str, nn_name: str) -> set[str]:
    names: set[str] = set()
    for table, name in ((POSITIONAL_ENCODINGS, pe), (NETWORKS, nn_name)):
        if name not in table:
            raise ValueError(f"unknown {'positional encoding' if table is POSITIONAL_ENCODINGS else 'network'} {name!r}; choose from {sorted(table)}")
        names |= hyperparameter_names(table[name])
    return names


def build_predictor(
    kind: str,
    train: Split,
    *,
    pe: str = "sphericalharmonics",
    nn_name: str = "siren",
    hparams: dict[str, Any] | None = None,
    init_from: str | None = None,
    dtype: torch.dtype = torch.float32,
) -> LocationPredictor:
    """A fresh tower with ``kind``'s outputs, or a pretrained tower (``init_from``) with a linear head."""
    classes = None if kind == "regression" else np.unique(train.y).tolist()
    n_out = len(classes) if classes is not None and kind == "multiclass" else 1
    y = train.y.astype(np.float64) if kind == "regression" else None
    y_mean, y_std = (float(y.mean()), float(y.std()) or 1.0) if y is not None else (0.0, 1.0)
    if init_from is None:
        tower = build_location_encoder(pe, nn_name, output_dim=n_out, dtype=dtype, **(hparams or {}))
        head: nn.Module = nn.Identity()
    else:
        from .. import load_location_encoder

        tower = load_location_encoder(init_from).to(dtype)
        head = nn.Linear(tower.output_dim, n_out).to(dtype)
    return LocationPredictor(tower, head, kind=kind, classes=classes, y_mean=y_mean, y_std=y_std)


def fit_table(
    train: Split,
    val: Split,
    *,
    test: Split | None,
    task: str,
    pe: str = "sphericalharmonics",
    nn_name: str = "siren",
    tuned: str = "auto",
    overrides: dict[str, Any] | None = None,
    init_from: str | None = None,
    freeze_tower: bool = False,
    batch_size: int = 2000,
    max_epochs: int = 500,
    patience: int = 30,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> tuple[LocationPredictor, dict[str, Any]]:
    """Fit and evaluate; returns the predictor and a report (test/val metrics, settings, history)."""
    kind = infer_kind(task, train.y)
    overrides = dict(overrides or {})
    if init_from is not None:
        # a pretrained tower keeps its architecture; only the optimiser settings apply
        settings: dict[str, Any] = {
            "hparams": {},
            "lr": overrides.get("lr") or (1e-3 if freeze_tower else 1e-4),
            "weight_decay": overrides.get("weight_decay") or 0.0,
            "source": f"init_from:{init_from}",
            "ignored": [],
        }
    else:
        settings = resolve_settings(kind, pe, nn_name=nn_name, tuned=tuned, overrides=overrides)
    torch.manual_seed(seed)
    start = time.perf_counter()
    model = build_predictor(kind, train, pe=pe, nn_name=nn_name, hparams=settings["hparams"], init_from=init_from, dtype=dtype)
    history = train_predictor(
        model,
        train,
        val=val,
        lr=settings["lr"],
        weight_decay=settings["weight_decay"],
        batch_size=batch_size,
        max_epochs=max_epochs,
        patience=patience,
        freeze_tower=freeze_tower,
        seed=seed,
    )
    report = {
        "task": task,
        "kind": kind,
        "test": evaluate(model, test) if test is not None else None,
        "val": evaluate(model, val),
        "settings": {
            "pe": model.tower.config.get("pe", pe),
            "nn": model.tower.config.get("nn", nn_name),
            **settings,
            "init_from": init_from,
            "freeze_tower": freeze_tower,
            "batch_size": batch_size,
            "max_epochs": max_epochs,
            "patience": patience,
            "seed": seed,
            "dtype": str(dtype).replace("torch.", ""),
            "classes": model.classes or None,
            "n_train": len(train.y),
            "n_val": len(val.y),
            "n_test": len(test.y) if test is not None else 0,
            "dropped": {"train": train.dropped, "val": val.dropped, "test": test.dropped if test is not None else 0},
        },
        "history": {k: v for k, v in asdict(history).items() if k not in ("train_loss", "val_loss")},
        "seconds": round(time.perf_counter() - start, 2),
    }
    return model, report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--train", required=True, help="training table (CSV or Parquet) with lon, lat and the target")
    parser.add_argument("--val", required=True, help="validation table: early stopping on its loss")
    parser.add_argument("--test", help="test table: its metrics go to metrics.json")
    parser.add_argument("--target", required=True, help="target column")
    parser.add_argument("--task", required=True, choices=("classification", "regression"))
    add_coordinate_arguments(parser)
    parser.add_argument("--time-col", help="acquisition-time column for a time-aware --pe (sphericalharmonics_time): ISO 8601, datetimes or Unix seconds")
    parser.add_argument("--drop-invalid", action="store_true", help="leave out rows with bad coordinates or no target (counted) instead of stopping")
    parser.add_argument("--pe", default="sphericalharmonics", help="positional encoding (default: sphericalharmonics)")
    parser.add_argument("--nn", default="siren", help="network: linear, mlp, fcnet, siren (default: siren)")
    parser.add_argument(
        "--tuned",
        default="auto",
        choices=("auto", "none", *TUNED_TASKS),
        help="tuned defaults: auto = landocean for binary, checkerboard for multi-class, none for regression",
    )
    for name, kind in (
        ("legendre-polys", int),
        ("dim-hidden", int),
        ("num-layers", int),
        ("frequency-num", int),
        ("time-harmonics", int),
        ("time-dropout", float),
        ("min-radius", float),
        ("max-radius", float),
        ("lr", float),
        ("weight-decay", float),
    ):
        parser.add_argument(f"--{name}", type=kind, help="overrides the tuned/default value")
    parser.add_argument("--batch-size", type=int, default=2000)
    parser.add_argument("--max-epochs", type=int, default=500)
    parser.add_argument("--patience", type=int, default=30, help="epochs without a better validation loss before stopping")
    parser.add_argument("--seed", type=int, default=0)
    add_tower_dtype_argument(parser, help="precision of the fitted tower (default: float32)", default="float32")
    parser.add_argument("--init-from", help="fine-tune the location tower of this checkpoint / hub id / export (adds a linear head)")
    parser.add_argument("--freeze-tower", action="store_true", help="with --init-from: train only the head")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: these networks are small)")
    add_output_arguments(parser, help="output folder: metrics.json, model/, prediction.png (default: locfit-out)", required=False, default="locfit-out")
    parser.add_argument("--plot", action="store_true", help="also write prediction.png: the predicted field with the training points")


def run(args: argparse.Namespace) -> int:
    if args.freeze_tower and not args.init_from:
        raise SystemExit("satclip locfit: --freeze-tower needs --init-from (a pretrained tower to freeze)")
    out = Path(args.out)
    refuse_existing(out / "metrics.json", out / "model", overwrite=args.overwrite)
    torch.set_num_threads(args.threads)
    takes_time = bool(getattr(POSITIONAL_ENCODINGS.get(args.pe), "takes_time", False)) if not args.init_from else None
    if args.time_col and takes_time is False:
        raise SystemExit(f"satclip locfit: --time-col {args.time_col!r}: --pe {args.pe} takes no time; use --pe sphericalharmonics_time")

    def read(path: str) -> Split:
        return read_table(path, args.target, lon_col=args.lon_col, lat_col=args.lat_col, crs=args.crs, drop_invalid=args.drop_invalid, time_col=args.time_col)

    train, val = read(args.train), read(args.val)
    test = read(args.test) if args.test else None
    overrides = {
        k: getattr(args, k)
        for k in (
            "legendre_polys",
            "dim_hidden",
            "num_layers",
            "frequency_num",
            "time_harmonics",
            "time_dropout",
            "min_radius",
            "max_radius",
            "lr",
            "weight_decay",
        )
    }
    model, report = fit_table(
        train,
        val,
        test=test,
        task=args.task,
        pe=args.pe,
        nn_name=args.nn,
        tuned=args.tuned,
        overrides=overrides,
        init_from=args.init_from,
        freeze_tower=args.freeze_tower,
        batch_size=args.batch_size,
        max_epochs=args.max_epochs,
        patience=args.patience,
        seed=args.seed,
        dtype=DTYPES[args.tower_dtype],
    )
    report["settings"].update(target=args.target, train=args.train, val=args.val, test=args.test)
    out.mkdir(parents=True, exist_ok=True)
    report["model"] = save_predictor(model, out)
    if args.plot:
        from .plots import plot_prediction

        plot_prediction(model, train, out=out / "prediction.png", title=f"{args.target}: {report['settings']['pe']} x {report['settings']['nn']}")
    with written_whole(out / "metrics.json") as partial:
        partial.write_text(json.dumps(report, indent=2, default=str))
    shown = report["test"] if report["test"] is not None else report["val"]
    print(
        json.dumps(
            {
                "split": "test" if report["test"] is not None else "val",
                **shown,
                "epochs": report["history"]["epochs"],
                "dropped_rows": sum(report["settings"]["dropped"].values()),
                "out": str(out),
            }
        )
    )
    return 0


def as_location_encoder(model: LocationPredictor) -> LocationEncoder:
    """The whole predictor as one location tower: head and target scaling folded into the last affine layer.

    Every network of the tower ends with an affine map (its last weight and bias), so a linear head
    ``H`` and the regression de-standardisation compose with it exactly. The result outputs class
    logits (binary: one logit for the second class) or values in the target's units.
    """
    tower = model.tower
    state = tower.state_dict()
    w_key, b_key = list(state)[-2:]
    weight, bias = state[w_key].double(), state[b_key].double()
    if isinstance(model.head, nn.Linear):
        weight, bias = model.head.weight.double() @ weight, model.head.weight.double() @ bias + model.head.bias.double()
    elif not isinstance(model.head, nn.Identity):
        raise ValueError(f"only a linear head can be folded into the tower, got {type(model.head).__name__}")
    if model.kind == "regression":
        weight, bias = weight * model.y_std, bias * model.y_std + model.y_mean
    return with_last_affine(tower, weight, bias=bias)


def save_predictor(model: LocationPredictor, out: Path) -> dict[str, Any]:
    """Export the fitted predictor as a location tower (``out/model``, readable by ``load_location_encoder``)."""
    from ..io.export import export_location_encoder

    export_location_encoder(as_location_encoder(model), out / "model", source="satclip locfit")
    return {
        "path": str(out / "model"),
        "outputs": "values in target units" if model.kind == "regression" else ("logit of the second class" if model.kind == "binary" else "class logits"),
        "classes": model.classes or None,
    }
