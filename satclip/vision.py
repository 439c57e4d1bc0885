"""Image towers: timm models over Sentinel-2 bands, local pretrained weights, freezing."""

from __future__ import annotations

from pathlib import Path

import timm
from torch import nn

from .safeload import load_weights


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
    if not path.is_file():
        raise FileNotFoundError(f"pretrained image weights {str(path)!r}: no such file")
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
    embed_dim: int = 256,
    weights: str | Path | None = None,
    freeze_backbone: bool = False,
) -> nn.Module:
    """A timm model with ``in_chans`` input bands and an ``embed_dim`` head, optionally from local weights.

    ``freeze_backbone`` turns off gradients for everything but the classifier head.
    """
    model = timm.create_model(name, pretrained=False, in_chans=in_chans, num_classes=embed_dim)
    if weights is not None:
        load_backbone_weights(model, weights)
    if freeze_backbone:
        head = set(model.get_classifier().parameters())  # type: ignore[operator]
        for p in model.parameters():
            p.requires_grad_(p in head)
    return model
