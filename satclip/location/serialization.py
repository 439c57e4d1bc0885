"""The exported location tower's folder: ``config.json`` + ``model.safetensors``, written and read here only.

``satclip export`` (which adds TorchScript / ONNX files beside them), ``LocationEncoder.save_pretrained``
/ ``from_pretrained`` and ``satclip.load_location_encoder`` all use these functions, so the layout,
its names and its checks live in one place, inside the location package (which imports nothing above it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .. import __version__

if TYPE_CHECKING:
    from .encoder import LocationEncoder

EXPORT_CONFIG = "config.json"
EXPORT_WEIGHTS = "model.safetensors"
EXPORT_FILES = (EXPORT_CONFIG, EXPORT_WEIGHTS)
EXPORT_FORMAT = "satclip-location-encoder"


def architecture(encoder: LocationEncoder) -> dict[str, Any]:
    """``build_location_encoder`` keyword arguments (plain JSON types) that rebuild ``encoder``."""
    arch = dict(encoder.config)
    if not arch.get("pe") or not arch.get("nn"):
        raise ValueError("the location encoder has no architecture config (build it with build_location_encoder)")
    convention = getattr(encoder.posenc, "convention", None)
    if convention is not None:
        arch["convention"] = convention
    arch["output_dim"] = encoder.output_dim
    json.dumps(arch)  # fail early on non-JSON hyper-parameters
    return arch


def export_config(encoder: LocationEncoder, source: str | None = None) -> dict[str, Any]:
    """The ``config.json`` contents of ``encoder`` (its architecture, dtype, input, provenance)."""
    return {
        "format": EXPORT_FORMAT,
        "format_version": 1,
        "satclip_version": __version__,
        "torch_version": torch.__version__,
        "architecture": architecture(encoder),
        "output_dim": encoder.output_dim,
        "spherical_harmonics_convention": getattr(encoder.posenc, "convention", None),
        "dtype": str(encoder.dtype).removeprefix("torch."),
        "matryoshka_dims": encoder.matryoshka_dims,
        "input": ("(N, 3) [lon, lat, t]: degrees and Unix seconds UTC, t NaN where unknown" if encoder.takes_time else "(N, 2) [lon, lat] in degrees")
        + " (float64 for the TorchScript and ONNX graphs)",
        "input_columns": ["lon", "lat", "time"] if encoder.takes_time else ["lon", "lat"],
        "source": source,
        "files": {"weights": EXPORT_WEIGHTS},
    }


def write_weights(encoder: LocationEncoder, out_dir: str | Path) -> Path:
    """``out_dir/model.safetensors`` with ``encoder``'s state (created folder); returns the folder."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in encoder.state_dict().items()}, str(out / EXPORT_WEIGHTS))
    return out


def write_config(out_dir: str | Path, config: dict[str, Any]) -> None:
    """``out_dir/config.json``: written last, so a folder with it is complete."""
    (Path(out_dir) / EXPORT_CONFIG).write_text(json.dumps(config, indent=2) + "\n")


def as_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """``float32`` / ``float64`` (a name or a dtype); anything else is refused."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in ("float32", "float64"):
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    return getattr(torch, dtype)


def matryoshka_dims(dims: Any, where: str) -> list[int] | None:
    """The recorded Matryoshka prefixes (a list of positive ints) or None; anything else is refused."""
    if dims is None:
        return None
    if not isinstance(dims, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims):
        raise ValueError(f"{where}: matryoshka_dims must be a list of positive integers, got {dims!r}")
    return dims


def load_state(module: torch.nn.Module, state: dict[str, torch.Tensor], *, where: str) -> None:
    """Load ``state`` into ``module`` exactly: missing, unexpected or mis-shaped keys are named in the error."""
    own = module.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        raise ValueError(f"{where}: weights do not fit the architecture: missing {missing[:8]}, unexpected {unexpected[:8]}, shapes {shapes[:8]}")
    module.load_state_dict(state)


def read_export(directory: str | Path) -> LocationEncoder:
    """An exported location tower (``config.json`` + ``model.safetensors``), on CPU, in its saved dtype."""
    from safetensors.torch import load_file

    from .encoder import build_location_encoder

    directory = Path(directory)
    config_path, weights_path = directory / EXPORT_CONFIG, directory / EXPORT_WEIGHTS
    for required in (config_path, weights_path):
        if not required.is_file():
            raise FileNotFoundError(f"exported location tower {str(directory)!r}: missing {required.name}")
    config = json.loads(config_path.read_text())
    if config.get("format") != EXPORT_FORMAT or not isinstance(config.get("architecture"), dict):
        raise ValueError(f"{str(config_path)!r}: not a satclip location tower export (format {config.get('format')!r})")
    encoder = build_location_encoder(**config["architecture"], dtype=as_dtype(config.get("dtype", "float64")))
    load_state(encoder, load_file(str(weights_path)), where=str(directory))
    encoder.matryoshka_dims = matryoshka_dims(config.get("matryoshka_dims"), str(config_path))
    return encoder


__all__ = [
    "EXPORT_CONFIG",
    "EXPORT_FILES",
    "EXPORT_FORMAT",
    "EXPORT_WEIGHTS",
    "architecture",
    "as_dtype",
    "export_config",
    "load_state",
    "matryoshka_dims",
    "read_export",
    "write_config",
    "write_weights",
]
