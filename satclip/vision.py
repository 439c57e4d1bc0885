"""Image towers: timm models over Sentinel-2 bands, pretrained weights by name or path, freezing."""

from __future__ import annotations

from pathlib import Path

import timm
from torch import nn

from .hubfiles import HF_HUB_PREFIX, MissingWeightsError, fetch, verify_sha256
from .pretrained import BACKBONES, get_backbone
from .safeload import load_weights


def resolve_image_weights(source: str | Path) -> Path:
    """The local file of image-backbone weights named by ``source``, nothing guessed.

    A registry name (``resnet18_sentinel2_all_moco``, see ``satclip list``) comes from the Hub cache at
    the publisher's pinned revision, downloaded if missing and checked against its sha256; an
    explicit ``hf-hub:owner/repo/file`` likewise (no check); anything else is a local path.
    """
    text = str(source)
    entry = get_backbone(text)
    if entry is not None:
        what = f"image-backbone weights {entry.name!r} (file {entry.filename!r} of {entry.repo_id!r} at revision {entry.revision})"
        (path,) = fetch(entry.repo_id, (entry.filename,), revision=entry.revision, what=what)
        return verify_sha256(path, entry.sha256, source=f"image-backbone weights {entry.name!r}")
    if text.startswith(HF_HUB_PREFIX):
        parts = text.removeprefix(HF_HUB_PREFIX).split("/")
        if len(parts) != 3 or not all(parts):
            raise ValueError(f"pretrained image weights {text!r}: an hf-hub id names one file, hf-hub:owner/repo/file")
        (path,) = fetch("/".join(parts[:2]), (parts[2],))
        return path
    path = Path(text)
    if not path.is_file():
        raise MissingWeightsError(
            f"pretrained image weights {text!r}: no such file, and not a registry name (one of {sorted(BACKBONES)}) or an hf-hub:owner/repo/file id"
        )
    return path


def _head_names(model: nn.Module) -> set[str]:
    """State-dict names of the classifier head (``fc.*`` for ResNets, ``head.*`` for ViTs)."""
    head: nn.Module = model.get_classifier()  # type: ignore[operator]  # timm models define it
    prefix = next(name for name, mod in model.named_modules() if mod is head)
    return {f"{prefix}.{k}" for k in head.state_dict()}


def load_backbone_weights(model: nn.Module, path: str | Path) -> None:
    """Load a local state dict (``.pth``/``.pt``/``.ckpt`` via weights_only, or ``.safetensors``) into ``model``.

    All backbone keys must match exactly; the classifier head is left as initialised (its size is the
    embedding dimension, not the pretraining task's). Raises ``ValueError`` naming missing and
    unexpected keys, or shape mismatches.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = load_weights(path)
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"pretrained image weights {str(path)!r}: expected a state dict, got {type(state).__name__}")
    head = _head_names(model)
    own = {k: v for k, v in model.state_dict().items() if k not in head}
    given = {k: v for k, v in state.items() if k not in head}
    missing, unexpected = sorted(set(own) - set(given)), sorted(set(given) - set(own))
    shapes = [f"{k}: file {tuple(given[k].shape)} vs model {tuple(own[k].shape)}" for k in own if k in given and given[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        raise ValueError(
            f"pretrained image weights {str(path)!r} do not fit the model: "
            f"missing keys {missing[:10]}{' ...' if len(missing) > 10 else ''}; "
            f"unexpected keys {unexpected[:10]}{' ...' if len(unexpected) > 10 else ''}; "
            f"shape mismatches {shapes[:10]}"
        )
    model.load_state_dict(given, strict=False)


def build_image_encoder(
    name: str = "resnet18",
    in_chans: int = 13,
    *,
    embed_dim: int = 256,
    weights: str | Path | None = None,
    freeze_backbone: bool = False,
) -> nn.Module:
    """A timm model with ``in_chans`` input bands and an ``embed_dim`` head, optionally from pretrained weights.

    ``weights``: a registry name, an ``hf-hub:`` file or a local path (``resolve_image_weights``).
    ``freeze_backbone`` turns off gradients for everything but the classifier head.
    """
    model = timm.create_model(name, pretrained=False, in_chans=in_chans, num_classes=embed_dim)
    if weights is not None:
        load_backbone_weights(model, resolve_image_weights(weights))
    if freeze_backbone:
        head = set(model.get_classifier().parameters())  # type: ignore[operator]
        for p in model.parameters():
            p.requires_grad_(p in head)
    return model
