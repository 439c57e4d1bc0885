"""``GeographyMetrics``: what the location tower knows about the world, logged at every validation.

Retrieval (``val/top1`` ...) rises under any temperature, also while the tower forgets the smooth
signals a downstream user needs (docs/benchmarks/pretrain-quality.md). This callback makes that
visible during the run, in whatever logger it uses (CSV, TensorBoard, wandb):

- ``geo/<table>/<cv>``: the ridge probe (:func:`satclip.probes.ridge_scores`, the estimator of
  ``satclip probe``) of the tower's embeddings on each configured table of (lon, lat, target),
  R² for a regression target and accuracy for classes, with random and spatial (``cell_deg`` cells)
  ``folds``-fold CV; ``geo/<table>/<cv>_untrained`` and ``geo/<table>/<cv>_sh`` the same probe on a
  freshly initialised tower of the same architecture and on plain spherical harmonics of the same
  L, computed once at the start of the run; ``geo/<table>/<cv>_gain`` the tower's score minus the
  better of the two (below 0: pretraining made the tower worse than an untrained one);
- every ``map_every_n_validations`` validations (the first included), a world map of the first three
  principal components of the embeddings as RGB: a TensorBoard image / wandb Image ``geo/map``, and
  ``<log dir>/geography/map-step=S.png``;
- ``perf/val_fraction``: the share of wall time spent in validation (these probes included) since
  the previous validation, and ``perf/geography_s`` the probes' time.

Distributed: rank 0 computes everything and broadcasts the numbers, so every rank logs the same
values and they do not depend on the number of ranks. Cost: one embedding of each table (at most
``max_rows`` rows, a fixed sample) and two CV ridge fits (one eigendecomposition per fold) per table per
validation; about a second for two tables of a few thousand rows on 2 CPU cores.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import lightning.pytorch as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from ..columns import find_coordinate_columns
from ..geo import validate_lonlat
from ..io.embed import embed_array
from ..location import LocationEncoder, spherical_harmonics
from ..maps import PCAColours, lonlat_grid
from ..model import location_tower
from ..outputs import written_whole
from ..probes import fold_indices, ridge_scores
from ..tables import numbers, read_table

CVS = ("random", "spatial")


@dataclass
class ProbeTable:
    """A table to probe: a CSV or Parquet file with longitude / latitude columns (found by
    :func:`satclip.columns.find_coordinate_columns` unless named) and a ``target`` column.
    ``task``: "regression" or "classification" (default: classification for text, booleans and
    integers with at most 20 distinct values). ``name`` (default: the file's stem) names the metrics."""

    path: str
    target: str
    task: str | None = None
    name: str | None = None
    lon_col: str | None = None
    lat_col: str | None = None


@dataclass
class _Loaded:
    name: str
    task: str
    lonlat: np.ndarray
    y: np.ndarray
    folds: dict[str, list[tuple[np.ndarray, np.ndarray]]]


def read_probe_table(table: ProbeTable, max_rows: int, *, n_folds: int, cell_deg: float, seed: int) -> _Loaded:
    """Read, check and (beyond ``max_rows``) subsample a probe table, and cut its CV folds once."""
    import pyarrow.compute as pc

    path = Path(table.path)
    if not path.is_file():
        raise FileNotFoundError(f"geography.tables: {table.path!r} is not a file (paths are relative to the folder satclip fit runs in)")
    try:
        data = read_table(path)
    except ValueError as err:
        raise ValueError(f"geography.tables: {err}") from None
    lon_col, lat_col = find_coordinate_columns(data.column_names, table.lon_col, lat_col=table.lat_col, crs=None, where=str(path))
    if table.target not in data.column_names:
        raise ValueError(f"geography.tables: {path} has no target column {table.target!r}; it has {data.column_names}")
    target = data.column(table.target)
    keep = pc.is_valid(target).to_numpy(zero_copy_only=False)
    lonlat = np.stack([numbers(data.column(c)) for c in (lon_col, lat_col)], axis=1)[keep]
    y = target.to_numpy(zero_copy_only=False)[keep]
    validate_lonlat(torch.from_numpy(lonlat), name=f"geography.tables {path} ({lon_col}, {lat_col})")
    task = table.task or _infer_task(y)
    if task not in ("regression", "classification"):
        raise ValueError(f"geography.tables: {path}: task must be 'regression' or 'classification', got {task!r}")
    if task == "regression":
        y = y.astype(np.float64)
    if len(y) > max_rows:
        rows = np.sort(np.random.default_rng(seed).choice(len(y), max_rows, replace=False))
        lonlat, y = lonlat[rows], y[rows]
    folds = {cv: fold_indices(lonlat, n_folds, cv=cv, seed=seed, cell_deg=cell_deg) for cv in CVS}
    return _Loaded(table.name or path.stem, task, lonlat, y, folds)


def _infer_task(y: np.ndarray) -> str:
    if y.dtype.kind in "OUSb" or (y.dtype.kind in "iu" and len(np.unique(y)) <= 20):
        return "classification"
    return "regression"


def tower_features(tower: torch.nn.Module, lonlat: np.ndarray, *, batch_size: int = 65536) -> np.ndarray:
    """(N, D) float64 embeddings of a location tower (a ``SatCLIP``'s ``location`` or a
    ``LocationEncoder``) for (N, 2) [lon, lat]: :func:`satclip.io.embed.embed_array` on the tower's device."""
    encoder = cast(LocationEncoder, getattr(tower, "location", tower))
    return embed_array(encoder, lonlat, batch_size=batch_size, device=next(encoder.parameters()).device, dtype=np.float64)


class GeographyMetrics(Callback):
    """Probe scores of the location tower, their untrained and plain-harmonics baselines, a world map
    and the validation share of wall time, logged at every validation (the module docstring has
    the metric names). ``enabled: false`` turns it off."""

    def __init__(
        self,
        tables: list[ProbeTable] | None = None,
        folds: int = 5,
        *,
        cell_deg: float = 10.0,
        max_rows: int = 5000,
        map_every_n_validations: int = 5,
        map_resolution: float = 2.0,
        seed: int = 0,
        enabled: bool = True,
    ) -> None:
        if folds < 2:
            raise ValueError(f"geography.folds must be >= 2, got {folds}")
        if map_every_n_validations < 0:
            raise ValueError(f"geography.map_every_n_validations must be >= 0 (0: no map), got {map_every_n_validations}")
        lonlat_grid(map_resolution)  # checks the resolution now, not at the first validation
        self.tables = list(tables or [])
        self.folds, self.cell_deg, self.max_rows, self.seed = folds, cell_deg, max_rows, seed
        self.map_every, self.map_resolution, self.enabled = map_every_n_validations, map_resolution, enabled
        self._loaded: list[_Loaded] = []
        self._baselines: dict[str, float] = {}
        self._validations = 0
        self._val_start = 0.0
        self._last_end: float | None = None

    # ------------------------------------------------------------------ set-up, once per run

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.enabled:
            return
        if trainer.is_global_zero:
            self._loaded = [read_probe_table(t, self.max_rows, n_folds=self.folds, cell_deg=self.cell_deg, seed=self.seed) for t in self.tables]
            self._baselines = self._baseline_scores(pl_module)
        self._last_end = time.perf_counter()

    def _baseline_scores(self, pl_module: L.LightningModule) -> dict[str, float]:
        """Scores of a fresh tower of the run's architecture (seeded, so equal on every run) and of SH of the same L."""
        kwargs: dict[str, Any] = getattr(pl_module, "satclip_kwargs")  # noqa: B009 (a SatCLIPModule's architecture)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            untrained = location_tower(kwargs["embed_dim"], kwargs["location"], location_dtype=kwargs["location_dtype"]).eval()
        degree = int(kwargs["location"].get("legendre_polys", 10))
        scores: dict[str, float] = {}
        for table in self._loaded:
            sets = {"untrained": tower_features(untrained, table.lonlat), "sh": spherical_harmonics(torch.from_numpy(table.lonlat), degree).numpy()}
            for label, feats in sets.items():
                for cv, folds in table.folds.items():
                    scores[f"geo/{table.name}/{cv}_{label}"] = float(np.mean(ridge_scores(feats, table.y, folds=folds, task=table.task)))
        return scores

    # ------------------------------------------------------------------ every validation

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._val_start = time.perf_counter()

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.enabled or trainer.sanity_checking:
            return
        start = time.perf_counter()
        metrics: dict[str, float] = {}
        image: np.ndarray | None = None
        draw = self.map_every > 0 and self._validations % self.map_every == 0
        if trainer.is_global_zero:
            metrics = self._scores(pl_module)
            image = self._world_map(pl_module) if draw else None
            now = time.perf_counter()
            metrics["perf/geography_s"] = now - start
            if self._last_end is not None and now > self._last_end:
                metrics["perf/val_fraction"] = (now - self._val_start) / (now - self._last_end)
        metrics = trainer.strategy.broadcast(metrics, src=0)  # rank 0's numbers on every rank
        self._validations += 1
        pl_module.log_dict(metrics, on_step=False, on_epoch=True)
        if draw:
            folder = Path(trainer.log_dir or trainer.default_root_dir) / "geography"  # log_dir is a collective: every rank asks
            if image is not None:
                self._log_image(trainer, image, folder=folder)
        self._last_end = time.perf_counter()

    def _scores(self, pl_module: L.LightningModule) -> dict[str, float]:
        metrics = dict(self._baselines)
        model = cast(torch.nn.Module, pl_module.model)
        for table in self._loaded:
            feats = tower_features(model, table.lonlat)
            for cv, folds in table.folds.items():
                score = float(np.mean(ridge_scores(feats, table.y, folds=folds, task=table.task)))
                metrics[f"geo/{table.name}/{cv}"] = score
                best = max(metrics[f"geo/{table.name}/{cv}_untrained"], metrics[f"geo/{table.name}/{cv}_sh"])
                metrics[f"geo/{table.name}/{cv}_gain"] = score - best
        return metrics

    def _world_map(self, pl_module: L.LightningModule) -> np.ndarray:
        """(H, W, 3) uint8: the first three principal components of the embeddings over the global grid."""
        lon, lat = lonlat_grid(self.map_resolution)
        grid = np.stack([a.ravel() for a in np.meshgrid(lon, lat)], axis=1)
        emb = tower_features(cast(torch.nn.Module, pl_module.model), grid)
        rgb = PCAColours(emb)(emb).reshape(len(lat), len(lon), 3)
        return np.round(rgb * 255).astype(np.uint8)

    def _log_image(self, trainer: L.Trainer, image: np.ndarray, *, folder: Path) -> None:
        """The map to each logger that takes images (TensorBoard, wandb) and as a PNG beside the logs."""
        step = trainer.global_step
        for logger in trainer.loggers:
            experiment = getattr(logger, "experiment", None)
            if experiment is not None and hasattr(experiment, "add_image"):  # TensorBoard's SummaryWriter
                experiment.add_image("geo/map", image, step, dataformats="HWC")
            elif hasattr(logger, "log_image"):  # lightning's WandbLogger
                logger.log_image(key="geo/map", images=[image], step=step)
        from PIL import Image

        with written_whole(folder / f"map-step={step}.png") as partial:
            Image.fromarray(image).save(partial, format="PNG")


__all__ = ["GeographyMetrics", "ProbeTable", "read_probe_table", "tower_features"]
