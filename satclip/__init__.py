"""satclip: contrastive pretraining of Sentinel-2 images against location, and location encoders.

Public names are imported lazily so that ``import satclip`` (and loading an exported location
tower) pulls in only torch, not lightning, timm or rasterio.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "load": "satclip.io.checkpoints",
    "load_location_encoder": "satclip.io.checkpoints",
    "SatCLIP": "satclip.model",
    "build_location_encoder": "satclip.location",
    "LocationEncoder": "satclip.location",
    "SphericalHarmonics": "satclip.location",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'satclip' has no attribute {name!r}")
