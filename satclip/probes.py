"""Linear probes of location embeddings, in numpy: the cross-validation folds (random, or whole
lon/lat cells for spatial CV) and the ridge probe with the CoordBench alpha search.

``ridge_scores`` is the estimator of ``satclip probe --probe ridge`` (scikit-learn's ``RidgeCV`` /
``RidgeClassifierCV`` over ``ALPHAS`` behind a ``StandardScaler``, the regression target standardised
too), computed from one eigendecomposition per fold, so that the training-time probes of
:class:`satclip.train.geography.GeographyMetrics` need no scikit-learn; a test checks that both give
the same scores.
"""

from __future__ import annotations

import math

import numpy as np

ALPHAS = np.logspace(-4, 4, 17)


def fold_indices(lonlat: np.ndarray, n_folds: int, *, cv: str, seed: int = 0, cell_deg: float = 10.0) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, test) index pairs. ``random``: shuffled k-fold. ``spatial``: whole lon/lat cells per fold.

    Spatial folds are balanced by size: cells are shuffled, then assigned largest first to the fold
    with the fewest points so far.
    """
    n = len(lonlat)
    if n_folds < 2 or n_folds > n:
        raise ValueError(f"folds must be between 2 and the number of rows ({n}), got {n_folds}")
    rng = np.random.default_rng(seed)
    if cv == "random":
        fold_of = np.empty(n, dtype=np.int64)
        fold_of[rng.permutation(n)] = np.arange(n) % n_folds
    elif cv == "spatial":
        cells = spatial_cells(lonlat, cell_deg)
        unique, inverse, counts = np.unique(cells, return_inverse=True, return_counts=True)
        if len(unique) < n_folds:
            raise ValueError(f"spatial CV: only {len(unique)} {cell_deg}-degree cells hold points, fewer than {n_folds} folds")
        order = rng.permutation(len(unique))
        order = order[np.argsort(-counts[order], kind="stable")]
        sizes = np.zeros(n_folds, dtype=np.int64)
        cell_fold = np.empty(len(unique), dtype=np.int64)
        for c in order:
            cell_fold[c] = int(np.argmin(sizes))
            sizes[cell_fold[c]] += counts[c]
        fold_of = cell_fold[inverse]
    else:
        raise ValueError(f"cv must be 'random' or 'spatial', got {cv!r}")
    return [(np.flatnonzero(fold_of != k), np.flatnonzero(fold_of == k)) for k in range(n_folds)]


def spatial_cells(lonlat: np.ndarray, cell_deg: float = 10.0) -> np.ndarray:
    """Integer id of the ``cell_deg`` lon/lat cell holding each point."""
    ncol = int(math.ceil(360 / cell_deg))
    col = np.clip(np.floor((lonlat[:, 0] + 180) / cell_deg), 0, ncol - 1).astype(np.int64)
    row = np.clip(np.floor((lonlat[:, 1] + 90) / cell_deg), 0, math.ceil(180 / cell_deg) - 1).astype(np.int64)
    return row * ncol + col


def _standardise(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scale both by the training rows' mean and std (constant columns: scale 1, as StandardScaler)."""
    mean = train.mean(0)
    std = train.std(0)
    std = np.where(std > 0, std, 1.0)
    return (train - mean) / std, (test - mean) / std


def ridge_predict(x_train: np.ndarray, y_train: np.ndarray, *, x_test: np.ndarray, alphas: np.ndarray = ALPHAS) -> tuple[np.ndarray, float]:
    """Ridge regression of (n, k) targets with an unpenalised intercept, alpha picked from ``alphas``
    by the exact leave-one-out squared error on the training rows (first of equal minima); returns
    the test predictions and the alpha. Inputs are used as given (standardise them first)."""
    x_mean, y_mean = x_train.mean(0), y_train.mean(0)
    xc = x_train - x_mean
    # the thin SVD of xc from the eigenvectors of its Gram matrix (p x p): 5-10x faster than an SVD
    # for n >> p; directions with eigenvalues below 1e-12 of the largest (s below 1e-6 of the largest)
    # are dropped, where ridge's shrinkage s^2 / (s^2 + alpha) is ~0 for every alpha of the grid
    eigenvalues, v = np.linalg.eigh(xc.T @ xc)
    keep = eigenvalues > eigenvalues.max(initial=0.0) * 1e-12
    s, vt = np.sqrt(eigenvalues[keep]), v[:, keep].T
    u = (xc @ vt.T) / s
    yc = y_train - y_mean
    uty = u.T @ yc
    n = len(x_train)
    u2 = u**2
    best: tuple[float, float] = (math.inf, float(alphas[0]))
    for alpha in alphas:
        shrink = s**2 / (s**2 + alpha)
        fitted = u @ (shrink[:, None] * uty)
        leverage = 1.0 / n + u2 @ shrink
        loo = (yc - fitted) / (1.0 - leverage)[:, None]
        error = float(np.mean(loo**2))
        if error < best[0]:
            best = (error, float(alpha))
    alpha = best[1]
    coef = vt.T @ ((s / (s**2 + alpha))[:, None] * uty)
    return (x_test - x_mean) @ coef + y_mean, alpha


def ridge_scores(features: np.ndarray, y: np.ndarray, *, folds: list[tuple[np.ndarray, np.ndarray]], task: str) -> list[float]:
    """Per-fold test score of the ridge probe: R² for ``task="regression"`` (1 - MSE / variance of the
    test targets), accuracy for ``"classification"`` (one-vs-rest ridge on -1/+1 targets; two classes:
    one column, the sign decides)."""
    if task not in ("regression", "classification"):
        raise ValueError(f"task must be 'regression' or 'classification', got {task!r}")
    features = np.asarray(features, dtype=np.float64)
    scores = []
    for train_idx, test_idx in folds:
        x_train, x_test = _standardise(features[train_idx], features[test_idx])
        if task == "regression":
            target = y[train_idx].astype(np.float64)
            mean, std = target.mean(), target.std() or 1.0
            pred, _ = ridge_predict(x_train, ((target - mean) / std)[:, None], x_test=x_test)
            truth = y[test_idx].astype(np.float64)
            scores.append(1.0 - float(np.mean((pred[:, 0] * std + mean - truth) ** 2)) / float(np.var(truth)))
        else:
            classes, codes = np.unique(y[train_idx], return_inverse=True)
            onehot = np.where(codes[:, None] == np.arange(len(classes)), 1.0, -1.0)
            pred, _ = ridge_predict(x_train, onehot[:, 1:] if len(classes) == 2 else onehot, x_test=x_test)
            chosen = (pred[:, 0] > 0).astype(np.int64) if len(classes) == 2 else pred.argmax(1)
            scores.append(float(np.mean(classes[chosen] == y[test_idx])))
    return scores


__all__ = ["ALPHAS", "fold_indices", "ridge_predict", "ridge_scores", "spatial_cells"]
