"""Pretraining: the LightningModule, accumulation keeping all negatives, callbacks and ``satclip fit``.

``SatCLIPModule`` (``satclip.train.module``) is the LightningModule; ``satclip.train.cli.main`` is
``satclip fit``. Names are imported lazily so that ``satclip.train.checkpoint_io`` alone stays light.
"""

from __future__ import annotations

from ..lazy import lazy_dir, lazy_getattr

_LAZY = {
    "SatCLIPModule": "satclip.train.module",
    "GradCache": "satclip.train.accumulate",
    "Throughput": "satclip.train.callbacks",
    "variant_checkpoints": "satclip.train.callbacks",
    "SyntheticDataModule": "satclip.train.synthetic",
}

__all__ = list(_LAZY)


__getattr__ = lazy_getattr(__name__, _LAZY)
__dir__ = lazy_dir(__name__, _LAZY)
