"""Supervised fitting of a location tower (plus an optional head) to (lon, lat) -> target.

The loop is plain torch: Adam with (coupled) weight decay as in the Siren(SH) experiments,
minibatches, early stopping on the validation loss with the best weights restored. Whatever does
not train is computed once up front: the positional encoding (it has no parameters) and, for a
frozen pretrained tower, the whole tower, so a fit costs only the trainable part.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..geo import validate_lonlat
from ..location import LocationEncoder
from ..location.encoder import with_time_column

KINDS = ("binary", "multiclass", "regression")


def in_batches(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, *, batch_size: int) -> torch.Tensor:
    """``fn`` over the rows of ``x``, ``batch_size`` at a time, concatenated: the batched loop of models
    that are not location towers (predictors, frozen prefixes, GeoCLIP); a tower's is
    :func:`satclip.io.embed.embed_array`."""
    return torch.cat([fn(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


@dataclass
class Split:
    """Coordinates (N, 2) [lon, lat] degrees and targets (N,) of one split; ``dropped``: rows of its
    source table left out as invalid (``read_table(drop_invalid=True)``); ``time``: (N,) acquisition
    times in Unix seconds UTC (NaN unknown) for a time-aware tower, or None (all unknown)."""

    lonlat: np.ndarray
    y: np.ndarray
    dropped: int = 0
    time: np.ndarray | None = None
    kept: np.ndarray | None = None
    """With ``dropped``, the (rows of the source table,) boolean mask of the rows kept."""

    def __post_init__(self) -> None:
        # one validator for coordinates everywhere: bad rows raise, longitudes are wrapped
        self.lonlat = validate_lonlat(torch.as_tensor(np.asarray(self.lonlat, dtype=np.float64))).numpy()
        self.y = np.asarray(self.y)
        if self.y.shape != (self.lonlat.shape[0],):
            raise ValueError(f"targets must have shape ({self.lonlat.shape[0]},), got {self.y.shape}")
        if self.time is not None:
            self.time = np.asarray(self.time, dtype=np.float64)
            if self.time.shape != (self.lonlat.shape[0],):
                raise ValueError(f"times must have shape ({self.lonlat.shape[0]},), got {self.time.shape}")
            validate_lonlat(torch.as_tensor(self.inputs(True)), "lonlat_time", with_time=True)

    def inputs(self, with_time: bool) -> np.ndarray:
        """The tower's input: (N, 2) [lon, lat], or with ``with_time`` (N, 3) [lon, lat, t] (t NaN when unknown)."""
        if not with_time:
            return self.lonlat
        t = self.time if self.time is not None else np.full(len(self.lonlat), np.nan)
        return np.concatenate([self.lonlat, t[:, None]], axis=1)


class LocationPredictor(nn.Module):
    """A location tower followed by a head; maps [lon, lat] to logits or a (standardised) value.

    ``predict`` turns outputs into class labels (``classes``) or values on the target's scale.
    """

    def __init__(
        self, tower: LocationEncoder, head: nn.Module, *, kind: str, classes: list[Any] | None = None, y_mean: float = 0.0, y_std: float = 1.0
    ) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if kind != "regression" and len(classes or []) < 2:
            raise ValueError(f"a {kind} predictor needs the list of its classes, got {classes!r}")
        self.tower, self.head, self.kind = tower, head, kind
        self.classes = list(classes or [])
        self.y_mean, self.y_std = float(y_mean), float(y_std)

    def forward(self, lonlat: torch.Tensor) -> torch.Tensor:
        return self.head(self.tower(lonlat))

    @torch.no_grad()
    def predict(self, lonlat: np.ndarray, batch_size: int = 65536) -> np.ndarray:
        """Class labels or target values for (N, 2) [lon, lat] degrees (a time-aware tower: (N, 3)
        [lon, lat, t], or (N, 2) for unknown time)."""
        was_training = self.training
        self.eval()
        x = torch.as_tensor(np.asarray(lonlat, dtype=np.float64))
        if self.tower.takes_time and x.shape[1:] == (2,):
            x = with_time_column(x, None)
        out = in_batches(self, x, batch_size=batch_size).double()
        self.train(was_training)
        return self._decode(out)

    def _decode(self, out: torch.Tensor) -> np.ndarray:
        if self.kind == "regression":
            return (out[:, 0] * self.y_std + self.y_mean).numpy()
        index = (out[:, 0] > 0).long() if self.kind == "binary" else out.argmax(1)
        return np.asarray(self.classes)[index.numpy()]


def infer_kind(task: str, y: np.ndarray) -> str:
    """ "classification" -> "binary" (two distinct labels) or "multiclass"; "regression" stays."""
    if task == "regression":
        if not np.issubdtype(np.asarray(y).dtype, np.number):
            raise ValueError(f"regression needs a numeric target, got values like {y[:3].tolist()}")
        return "regression"
    if task != "classification":
        raise ValueError(f"task must be 'classification' or 'regression', got {task!r}")
    n = len(np.unique(y))
    if n < 2:
        raise ValueError(f"classification needs at least two distinct labels in the training targets, got {n}")
    return "binary" if n == 2 else "multiclass"


def _encode_targets(kind: str, y: np.ndarray, *, classes: list[Any], y_mean: float, y_std: float, name: str) -> torch.Tensor:
    if kind == "regression":
        return torch.as_tensor((y.astype(np.float64) - y_mean) / y_std)
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted({v for v in y.tolist() if v not in index}, key=str)
    if unknown:
        raise ValueError(f"{name} split has labels not seen in training: {unknown[:5]}")
    return torch.as_tensor([index[v] for v in y.tolist()], dtype=torch.long)


def _loss_fn(kind: str):
    if kind == "binary":
        return lambda out, t: nn.functional.binary_cross_entropy_with_logits(out[:, 0], t.to(out.dtype))
    if kind == "multiclass":
        return nn.functional.cross_entropy
    return lambda out, t: nn.functional.mse_loss(out[:, 0], t.to(out.dtype))


@dataclass
class FitHistory:
    """What the loop did: epochs run, the best epoch and its validation loss, per-epoch losses."""

    epochs: int = 0
    best_epoch: int = 0
    best_val_loss: float = math.inf
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)


def _split_frozen(model: LocationPredictor, freeze_tower: bool) -> tuple[nn.Module, nn.Module]:
    """(fixed prefix computed once, trainable rest) of ``model``."""
    tower = model.tower
    if freeze_tower:
        for p in tower.parameters():
            p.requires_grad_(False)
        return tower, model.head
    if any(True for _ in tower.posenc.parameters()):
        return nn.Identity(), model
    return _Encoding(tower), nn.Sequential(tower.nnet, model.head)


class _Encoding(nn.Module):
    """The positional-encoding half of a tower (float64 in, the network's dtype out)."""

    def __init__(self, tower: LocationEncoder) -> None:
        super().__init__()
        self.posenc, self.dtype = tower.posenc, tower.dtype

    def forward(self, lonlat: torch.Tensor) -> torch.Tensor:
        return self.posenc(lonlat.to(torch.float64)).to(self.dtype)


def _prefix(module: nn.Module, lonlat: np.ndarray, *, batch_size: int = 65536) -> torch.Tensor:
    x = torch.as_tensor(lonlat, dtype=torch.float64)
    if isinstance(module, nn.Identity):
        return x
    module.eval()
    with torch.no_grad():
        return in_batches(module, x, batch_size=batch_size)


def train_predictor(
    model: LocationPredictor,
    train: Split,
    *,
    val: Split,
    lr: float,
    weight_decay: float = 0.0,
    batch_size: int = 2000,
    max_epochs: int = 500,
    patience: int = 30,
    freeze_tower: bool = False,
    seed: int = 0,
) -> FitHistory:
    """Fit ``model`` on ``train`` with early stopping on ``val`` loss; the best weights are restored in place."""
    kind = model.kind
    t_train = _encode_targets(kind, train.y, classes=model.classes, y_mean=model.y_mean, y_std=model.y_std, name="train")
    t_val = _encode_targets(kind, val.y, classes=model.classes, y_mean=model.y_mean, y_std=model.y_std, name="validation")
    prefix, trainable = _split_frozen(model, freeze_tower)
    with_time = model.tower.takes_time
    x_train, x_val = _prefix(prefix, train.inputs(with_time)), _prefix(prefix, val.inputs(with_time))
    params = [p for p in trainable.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    loss_fn = _loss_fn(kind)
    gen = torch.Generator().manual_seed(seed)
    history = FitHistory()
    best_state = copy.deepcopy(trainable.state_dict())
    n = len(x_train)
    for epoch in range(1, max_epochs + 1):
        trainable.train()
        total = 0.0
        for idx in torch.randperm(n, generator=gen).split(batch_size):
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(trainable(x_train[idx]), t_train[idx])
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite training loss at epoch {epoch}; lower the learning rate (lr={lr})")
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(idx)
        trainable.eval()
        with torch.no_grad():
            val_loss = float(loss_fn(trainable(x_val), t_val))
        history.train_loss.append(total / n)
        history.val_loss.append(val_loss)
        history.epochs = epoch
        if val_loss < history.best_val_loss:
            history.best_val_loss, history.best_epoch = val_loss, epoch
            best_state = copy.deepcopy(trainable.state_dict())
        elif epoch - history.best_epoch >= patience:
            break
    trainable.load_state_dict(best_state)
    model.eval()
    return history


def evaluate(model: LocationPredictor, split: Split) -> dict[str, float]:
    """Accuracy for classification; MSE, MAE and R^2 for regression (on the target's own scale)."""
    pred = model.predict(split.inputs(model.tower.takes_time))
    if model.kind == "regression":
        y = split.y.astype(np.float64)
        err = pred - y
        mse = float(np.mean(err**2))
        return {"mse": mse, "mae": float(np.mean(np.abs(err))), "r2": float(1 - mse / np.var(y)) if np.var(y) > 0 else math.nan}
    return {"accuracy": float(np.mean(pred == split.y))}
