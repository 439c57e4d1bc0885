"""The probes of ``satclip bench``: one test score of one probe fit on one (train, test) split.

``ridge`` is :func:`satclip.probes.ridge_scores` (``satclip probe --probe ridge``'s estimator with
CoordBench's alpha search over :data:`satclip.probes.ALPHAS`, in numpy); ``logistic``, ``knn`` and
``mlp`` are the scikit-learn estimators of :func:`satclip.eval.probe.make_probe` (inputs
standardised; ``mlp`` one hidden layer of 64 here, a small probe; an iterative probe that reaches
its iteration cap is scored as it stands, without scikit-learn's ConvergenceWarning). Scores: R² for
regression (1 - MSE / variance of the test targets), accuracy for classification.
"""

from __future__ import annotations

import warnings

import numpy as np

from ..probes import ridge_scores
from .probe import PROBE_KINDS, make_probe

MLP_HIDDEN = (64,)
NEIGHBOURS = 10


def applies(kind: str, task: str) -> bool:
    """Whether probe ``kind`` fits ``task`` (logistic regression is for classes only)."""
    return not (kind == "logistic" and task == "regression")


def probe_score(kind: str, task: str, *, features: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray, seed: int) -> float:
    """Test score of probe ``kind`` fit on rows ``train`` of ``features`` and scored on rows ``test``."""
    if kind not in PROBE_KINDS:
        raise ValueError(f"probe must be one of {PROBE_KINDS}, got {kind!r}")
    if kind == "ridge":
        return ridge_scores(features, y, folds=[(train, test)], task=task)[0]
    if task == "classification" and len(np.unique(y[train])) < 2:  # a small budget drew one class: predict it
        pred = np.full(len(test), y[train][0])
    else:
        from sklearn.exceptions import ConvergenceWarning

        model = make_probe(kind, task, seed=seed, hidden=MLP_HIDDEN, neighbours=min(NEIGHBOURS, len(train)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(features[train], y[train])
        pred = model.predict(features[test])
    truth = y[test]
    if task == "regression":
        return 1.0 - float(np.mean((pred - truth) ** 2)) / float(np.var(truth))
    return float(np.mean(pred == truth))


__all__ = ["MLP_HIDDEN", "NEIGHBOURS", "applies", "probe_score"]
