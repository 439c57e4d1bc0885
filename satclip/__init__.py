"""satclip: contrastive pretraining of Sentinel-2 images against location, and location encoders.

Public names are imported lazily so that ``import satclip`` (and loading an exported location
tower) pulls in only torch, not lightning, timm or rasterio.
"""

from __future__ import annotations

from .lazy import lazy_dir, lazy_getattr

__version__ = "0.1.0"

_LAZY = {
    "load": "satclip.io.checkpoints",
    "load_location_encoder": "satclip.io.checkpoints",
    "create_model_and_transforms": "satclip.io.models",
    "SatCLIP": "satclip.model",
    "build_location_encoder": "satclip.location",
    "LocationEncoder": "satclip.location",
    "SphericalHarmonics": "satclip.location",
    "list_pretrained": "satclip.pretrained",
}

__all__ = ["__version__", *_LAZY]


__getattr__ = lazy_getattr(__name__, _LAZY)
__dir__ = lazy_dir(__name__, _LAZY)
