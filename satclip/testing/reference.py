"""The reference checkpoint's image tower and image inputs in a few MB (data/reference), rebuilt exactly.

../shared's reference checkpoint holds a 45 MB timm resnet18 (13 bands, 256 outputs) that the reference
implementation created after ``torch.manual_seed(0)`` and trained for three steps with a frozen
backbone: its convolutions and batch-norm affine weights are that initialisation bit for bit; only the
batch-norm running statistics and the ``fc`` head moved (141k of 11.3M values). So the bundle keeps
those tensors and the sha256 of the whole tower, and :func:`rebuild_visual` adds the initialisation
back. The image inputs are kept as their uint16 digital numbers; :func:`model_input` redoes the
reference's evaluation preprocessing (DN / 10000 in float32, B10 as zeros at index 10), which gives
``img_input_224.npy`` back byte for byte.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

VISUAL = "model.visual."
"""The image tower's key prefix in a released checkpoint."""


def initial_visual() -> dict[str, torch.Tensor]:
    """The released ``moco_resnet18`` tower as timm creates it after ``torch.manual_seed(0)`` (the
    caller's random state is left as it was)."""
    import timm

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return timm.create_model("resnet18", pretrained=False, in_chans=13, num_classes=256).state_dict()


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 over each tensor's name, dtype, shape and bytes, in name order: equal digests, equal weights."""
    digest = hashlib.sha256()
    for name in sorted(state):
        value = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{value.dtype}|{tuple(value.shape)}|".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()


def trained_part(visual: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors of ``visual`` (keys without the prefix) that differ from :func:`initial_visual`."""
    init = initial_visual()
    if sorted(init) != sorted(visual):
        raise ValueError("the image tower's keys are not those of timm's resnet18 with 13 bands and 256 outputs")
    return {name: value.clone() for name, value in visual.items() if not torch.equal(value, init[name])}


def rebuild_visual(trained: dict[str, torch.Tensor], digest: str) -> dict[str, torch.Tensor]:
    """:func:`initial_visual` with ``trained`` laid over it; ``ValueError`` unless the result's
    :func:`state_digest` is ``digest`` (e.g. a timm or torch whose initialisation draws differently)."""
    import timm

    visual = {**initial_visual(), **trained}
    if state_digest(visual) != digest:
        raise ValueError(
            f"the image tower rebuilt from data/reference is not the reference's (timm {timm.__version__}, torch "
            f"{torch.__version__} initialise resnet18 differently from the versions that wrote it): rerun "
            "scripts/make_test_reference.py with ../shared"
        )
    return visual


def digital_numbers(model_input: np.ndarray) -> np.ndarray:
    """``img_input_224.npy`` (N, 13, H, W float32) back to its (N, 12, H, W) uint16 digital numbers."""
    dn = np.rint(np.delete(model_input, 10, axis=1).astype(np.float64) * 10000)
    if dn.min() < 0 or dn.max() > np.iinfo(np.uint16).max:
        raise ValueError("the image input is not uint16 reflectance x 10000")
    return dn.astype(np.uint16)


def model_input(dn: np.ndarray) -> np.ndarray:
    """(N, 12, H, W) uint16 -> the reference's (N, 13, H, W) float32 input: DN / 10000, B10 as zeros at index 10."""
    return np.insert(dn.astype(np.float32) / np.float32(10000), 10, np.float32(0), axis=1)


__all__ = ["VISUAL", "digital_numbers", "initial_visual", "model_input", "rebuild_visual", "state_digest", "trained_part"]
