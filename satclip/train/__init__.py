"""Pretraining: the LightningModule, accumulation keeping all negatives, callbacks and ``satclip fit``.

``SatCLIPModule`` (``satclip.train.module``) is the LightningModule; ``satclip.train.cli.main`` is
``satclip fit``. Names are imported lazily so that ``satclip.train.checkpoint_io`` alone stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "SatCLIPModule": "satclip.train.module",
    "GradCache": "satclip.train.accumulate",
    "Throughput": "satclip.train.callbacks",
    "variant_checkpoints": "satclip.train.callbacks",
    "SyntheticDataModule": "satclip.train.synthetic",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'satclip.train' has no attribute {name!r}")
