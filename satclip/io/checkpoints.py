"""Load SatCLIP models and location towers from released checkpoints, own checkpoints, exports and the hub.

One reader for every source:

- a released ``microsoft/SatCLIP-*`` Lightning checkpoint (``hyper_parameters`` in the reference's
  vocabulary, mapped here to this project's names);
- this project's Lightning checkpoints (``checkpoint["satclip"] = {"format": 1, "model": {SatCLIP kwargs}}``);
- an exported location tower directory (``config.json`` + ``model.safetensors``, see ``satclip export``);
- a released model's name (``satclip-vit16-l40``, ``satclip.list_pretrained()``), a Hugging Face
  Hub id (``hf-hub:owner/repo[/file]``; ``microsoft/SatCLIP-ResNet18-L10`` as an alias) or an
  https URL, cache first.

Checkpoints are read with ``torch.load(..., weights_only=True)`` only: a file holding any other
pickled object is refused before anything in it runs. Nothing is downloaded besides the named
checkpoint (no backbone weights), and loading a location tower imports neither timm nor lightning.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..extras import requires_extra
from ..location import NETWORKS, POSITIONAL_ENCODINGS, LocationEncoder, build_location_encoder, truncate_location_encoder
from ..location.registry import accepted_kwargs
from ..location.serialization import EXPORT_CONFIG, EXPORT_FORMAT, EXPORT_WEIGHTS, as_dtype, load_state, matryoshka_dims, read_export
from ..pretrained import list_pretrained
from ..safeload import load_weights
from . import hub

if TYPE_CHECKING:  # the model pulls in timm; imported only when a full model is loaded
    from ..model import SatCLIP

OWN_FORMAT_VERSION = 1

# reference ``vision_layers`` -> timm model name (the MoCo weights are not needed: the checkpoint has them)
VISION_LAYERS = {
    "moco_resnet18": "resnet18",
    "moco_resnet50": "resnet50",
    "moco_vit16": "vit_small_patch16_224",
}
# reference ``harmonics_calculation`` -> SphericalHarmonics convention
HARMONICS_CALCULATION = {"analytic": "satclip", "closed-form": "closed-form"}
# reference hyper-parameters that go to the positional encoding when it accepts them
_ENCODING_HPARAMS = ("legendre_polys", "frequency_num", "min_radius", "max_radius")


@dataclass
class ModelSpec:
    """What a checkpoint describes: ``SatCLIP(**kwargs)`` and its state dict (SatCLIP parameter names),
    and the Matryoshka prefixes it was trained with (None: standard training)."""

    kwargs: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    source: str
    matryoshka_dims: list[int] | None = None


def resolve_source(source: str | Path) -> Path:
    """Local path of ``source``: an existing file or directory, an https URL, a released model's name
    (``satclip-resnet18-l10``) or a hub id (``hf-hub:owner/repo[/file]``, ``owner/Name``), cache first."""
    text = str(source)
    path = Path(text).expanduser()
    if path.exists():
        return path
    if "://" in text:
        return hub.resolve_url(text)
    if hub.is_hub_id(text):
        return hub.resolve_hub_id(text)
    raise FileNotFoundError(
        f"checkpoint {text!r}: no such file or directory, and not a released model name "
        f"({', '.join(w.name for w in list_pretrained())}), a Hugging Face Hub id "
        f"(hf-hub:owner/repo[/file], or owner/Name, e.g. microsoft/SatCLIP-ResNet18-L10) or an https URL"
    )


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` on CPU, with clear errors for unsafe or unreadable files."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r}: no such file")
    obj = load_weights(path)
    if not isinstance(obj, dict):
        raise ValueError(f"checkpoint {str(path)!r}: expected a dict, got {type(obj).__name__}")
    return obj


def _require(hparams: dict[str, Any], keys: tuple[str, ...], *, where: str) -> None:
    missing = [k for k in keys if k not in hparams]
    if missing:
        raise ValueError(f"{where}: missing hyper-parameters {missing}")


def released_location_kwargs(hparams: dict[str, Any], where: str = "checkpoint") -> dict[str, Any]:
    """Location tower hyper-parameters (``build_location_encoder`` names) from a released checkpoint's ``hyper_parameters``."""
    _require(hparams, ("le_type", "pe_type"), where=where)
    pe, nn = hparams["le_type"], hparams["pe_type"]
    if pe not in POSITIONAL_ENCODINGS:
        raise ValueError(f"{where}: positional encoding le_type={pe!r} is not available; choose from {sorted(POSITIONAL_ENCODINGS)}")
    if nn not in NETWORKS:
        raise ValueError(f"{where}: network pe_type={nn!r} is not available; choose from {sorted(NETWORKS)}")
    loc: dict[str, Any] = {"pe": pe, "nn": nn}
    loc.update(accepted_kwargs(POSITIONAL_ENCODINGS[pe], {k: hparams[k] for k in _ENCODING_HPARAMS if k in hparams}))
    if pe == "sphericalharmonics":
        calc = hparams.get("harmonics_calculation", "analytic")
        if calc not in HARMONICS_CALCULATION:
            raise ValueError(f"{where}: harmonics_calculation={calc!r} is not supported; expected one of {sorted(HARMONICS_CALCULATION)}")
        loc["convention"] = HARMONICS_CALCULATION[calc]
    network = {"dim_hidden": hparams.get("capacity"), "num_layers": hparams.get("num_hidden_layers")}
    loc.update(accepted_kwargs(NETWORKS[nn], {k: v for k, v in network.items() if v is not None}))
    return loc


def released_model_kwargs(hparams: dict[str, Any], where: str = "checkpoint") -> dict[str, Any]:
    """``SatCLIP`` keyword arguments from a released checkpoint's ``hyper_parameters``."""
    _require(hparams, ("embed_dim", "vision_layers", "in_channels"), where=where)
    vision = hparams["vision_layers"]
    if vision not in VISION_LAYERS:
        raise ValueError(f"{where}: vision_layers={vision!r} is not supported; expected one of {sorted(VISION_LAYERS)}")
    return {
        "embed_dim": int(hparams["embed_dim"]),
        "vision": VISION_LAYERS[vision],
        "in_chans": int(hparams["in_channels"]),
        "location": released_location_kwargs(hparams, where),
        "location_dtype": "float64",
    }


def _model_state(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """SatCLIP names from a Lightning ``state_dict``: strip ``model.``; drop the released duplicate ``model.nnet.*``."""
    state = {k[len("model.") :]: v for k, v in state_dict.items() if k.startswith("model.")}
    if any(k.startswith("location.") for k in state):
        state = {k: v for k, v in state.items() if not k.startswith("nnet.")}
    return state


def checkpoint_spec(checkpoint: dict[str, Any], where: str = "checkpoint") -> ModelSpec:
    """Interpret a loaded Lightning checkpoint (released or this project's) as a ``ModelSpec``."""
    if not isinstance(checkpoint.get("state_dict"), dict):
        raise ValueError(f"{where}: not a SatCLIP Lightning checkpoint (no 'state_dict' entry; keys {sorted(checkpoint)[:10]})")
    state = _model_state(checkpoint["state_dict"])
    if not state:
        raise ValueError(f"{where}: its state_dict has no 'model.*' parameters")
    if "satclip" in checkpoint:
        meta = checkpoint["satclip"]
        if not isinstance(meta, dict) or meta.get("format") != OWN_FORMAT_VERSION or not isinstance(meta.get("model"), dict):
            raise ValueError(f"{where}: entry 'satclip' is not format {OWN_FORMAT_VERSION} with a 'model' dict: {meta!r}")
        kwargs = {**meta["model"], "vision_weights": None}  # the checkpoint already holds the backbone
        dims = meta.get("matryoshka_dims")
    elif isinstance(checkpoint.get("hyper_parameters"), dict) and "le_type" in checkpoint["hyper_parameters"]:
        kwargs, dims = released_model_kwargs(checkpoint["hyper_parameters"], where), None
    else:
        raise ValueError(
            f"{where}: unknown checkpoint format: neither this project's 'satclip' entry nor released SatCLIP "
            f"'hyper_parameters' (le_type, pe_type, vision_layers, ...)"
        )
    return ModelSpec(kwargs, state, where, matryoshka_dims(dims, where))


def location_encoder_from_spec(spec: ModelSpec) -> LocationEncoder:
    """The location tower of a ``ModelSpec`` alone (no image tower is built, timm is not imported)."""
    kwargs = spec.kwargs
    encoder = build_location_encoder(
        output_dim=int(kwargs.get("embed_dim", 256)),
        dtype=as_dtype(kwargs.get("location_dtype", "float64")),
        **dict(kwargs.get("location") or {}),
    )
    state = {k[len("location.") :]: v for k, v in spec.state_dict.items() if k.startswith("location.")}
    load_state(encoder, state, where=spec.source)
    encoder.matryoshka_dims = spec.matryoshka_dims
    return encoder


def read_spec(source: str | Path) -> ModelSpec:
    """Resolve ``source`` and read it as a checkpoint file."""
    path = resolve_source(source)
    if path.is_dir():
        raise ValueError(f"{str(path)!r} is a directory (an exported location tower?): it holds no image tower; use load_location_encoder")
    return checkpoint_spec(read_checkpoint(path), str(path))


def load(source: str | Path, device: str | torch.device = "cpu") -> SatCLIP:
    """A full SatCLIP model (image and location towers) in eval mode from a checkpoint file, hub id or URL."""
    with requires_extra("satclip.load (a full model: its image tower)"):
        from ..model import SatCLIP

    spec = read_spec(source)
    try:
        model = SatCLIP(**spec.kwargs)
    except TypeError as err:
        raise ValueError(f"{spec.source}: model arguments {sorted(spec.kwargs)} do not fit SatCLIP: {err}") from None
    load_state(model, spec.state_dict, where=spec.source)
    return model.to(device).eval()


def load_location_encoder(
    source: str | Path,
    device: str | torch.device = "cpu",
    *,
    dtype: str | torch.dtype | None = None,
    dim: int | None = None,
) -> LocationEncoder:
    """The location tower (eval mode) of a checkpoint file, hub id, URL or exported directory.

    ``dtype`` None keeps the stored precision (float64 for the released models); "float32" or
    "float64" converts. ``encoder(lonlat)`` maps (N, 2) [lon, lat] degrees to (N, embed_dim).
    ``dim`` keeps the first ``dim`` embedding dimensions (a Matryoshka-trained tower's prefixes
    stand alone; see ``satclip.location.truncate_location_encoder``: other dims warn, and the
    prefix is not re-normalised). ``encoder.matryoshka_dims`` holds the training prefixes.
    """
    path = resolve_source(source)
    if path.is_dir() or path.name == EXPORT_WEIGHTS:
        encoder = read_export(path if path.is_dir() else path.parent)
    else:
        encoder = location_encoder_from_spec(checkpoint_spec(read_checkpoint(path), str(path)))
    if dtype is not None:
        encoder = encoder.to(as_dtype(dtype))
    if dim is not None:
        encoder = truncate_location_encoder(encoder, dim)
    return encoder.to(device).eval()


__all__ = [
    "EXPORT_CONFIG",
    "EXPORT_FORMAT",
    "EXPORT_WEIGHTS",
    "ModelSpec",
    "checkpoint_spec",
    "load",
    "load_location_encoder",
    "read_checkpoint",
    "read_export",
    "read_spec",
    "released_location_kwargs",
    "released_model_kwargs",
    "resolve_source",
]
