"""The exported location tower's folder layout (``satclip export``, ``save_pretrained``): one place for its names."""

EXPORT_CONFIG = "config.json"
EXPORT_WEIGHTS = "model.safetensors"
EXPORT_FILES = (EXPORT_CONFIG, EXPORT_WEIGHTS)
EXPORT_FORMAT = "satclip-location-encoder"

__all__ = ["EXPORT_CONFIG", "EXPORT_FILES", "EXPORT_FORMAT", "EXPORT_WEIGHTS"]
