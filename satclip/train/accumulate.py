"""Gradient accumulation that keeps every negative of the accumulated batch (GradCache).

Plain accumulation averages the losses of separate small batches: each image then only meets the
negatives of its own micro-batch. Here the loss is the one of the whole accumulated batch:

1. every micro-batch is embedded without gradients and the features are cached;
2. the contrastive loss of the whole cache is computed and differentiated with respect to the cached
   features (and the logit scale) only, which is cheap;
3. each micro-batch is embedded again, with gradients, and back-propagated with its slice of those
   feature gradients (and, once, the logit scale's), so that the parameter gradients summed over
   micro-batches are exactly those of the full-batch loss, with one micro-batch of activations in
   memory at a time.

The random state is replayed for step 3 so that dropout draws the same masks as in step 1.
BatchNorm layers in training mode see every micro-batch twice (their running statistics move twice
per step; a frozen backbone keeps its BatchNorms in eval mode, see ``SatCLIP``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

Features = tuple[torch.Tensor, torch.Tensor]


@contextlib.contextmanager
def _replay_rng(state: dict[str, Any]) -> Iterator[None]:
    """Run the block with the CPU/CUDA random state of ``state`` (from :func:`_rng_state`), then restore the current one."""
    current = _rng_state()
    torch.set_rng_state(state["cpu"])
    if state["cuda"] is not None:
        torch.cuda.set_rng_state_all(state["cuda"])
    try:
        yield
    finally:
        torch.set_rng_state(current["cpu"])
        if current["cuda"] is not None:
            torch.cuda.set_rng_state_all(current["cuda"])


def _rng_state() -> dict[str, Any]:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    return {"cpu": torch.get_rng_state(), "cuda": cuda}


class GradCache:
    """One optimizer step's worth of micro-batches, with the full-batch contrastive loss.

    ``encode(micro_batch) -> (image_features, location_features)`` must return L2-normalised
    features with gradients (when enabled); ``logit_scale()`` the logit multiplier (a tensor with
    gradients); ``loss_fn(image, location, scale)`` the contrastive loss (e.g. ``InfoNCELoss``,
    which also gathers the other ranks' features); ``loss_params`` the loss's own parameters (e.g.
    SigLIP's bias), whose gradients join the logit scale's in the last, synchronised pass.

    ``loss = cache.forward(micro_batches)`` runs steps 1-2 (the returned loss is detached; check it
    is finite before going on), ``cache.backward()`` runs step 3.
    """

    def __init__(
        self,
        encode: Callable[[Any], Features],
        logit_scale: Callable[[], torch.Tensor],
        *,
        loss_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
        loss_params: Sequence[torch.nn.Parameter] = (),
    ) -> None:
        self.encode = encode
        self.logit_scale = logit_scale
        self.loss_fn = loss_fn
        self.loss_params = list(loss_params)
        self._micro: Sequence[Any] = ()
        self._rng: list[dict[str, Any]] = []
        self._grads: tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]] | None = None

    def forward(self, micro_batches: Sequence[Any]) -> torch.Tensor:
        """Cache the features of all micro-batches (no gradients) and return the full-batch loss (detached)."""
        if not micro_batches:
            raise ValueError("GradCache.forward: no micro-batches given")
        self._micro, self._rng = micro_batches, []
        images, locations = [], []
        with torch.no_grad():
            for micro in micro_batches:
                self._rng.append(_rng_state())
                img, loc = self.encode(micro)
                images.append(img)
                locations.append(loc)
        sizes = [len(img) for img in images]
        image = torch.cat(images).requires_grad_()
        location = torch.cat(locations).requires_grad_()
        scale = self.logit_scale().detach().requires_grad_()
        with torch.enable_grad():
            loss = self.loss_fn(image, location, scale)
            g_image, g_location, *g_scalars = torch.autograd.grad(loss, [image, location, scale, *self.loss_params])
        self._grads = (list(g_image.split(sizes)), list(g_location.split(sizes)), g_scalars)
        return loss.detach()

    def backward(
        self,
        backward: Callable[[torch.Tensor], None] = torch.Tensor.backward,
        no_sync: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
    ) -> None:
        """Re-embed each micro-batch with gradients and back-propagate its cached feature gradients.

        ``backward`` runs a backward pass (``LightningModule.manual_backward`` under Lightning);
        ``no_sync`` is a context that holds back DDP's gradient all-reduce, used for every
        micro-batch but the last (e.g. ``strategy.block_backward_sync``)."""
        if self._grads is None:
            raise RuntimeError("GradCache.backward called before GradCache.forward")
        g_images, g_locations, (g_scale, *g_params) = self._grads
        last = len(self._micro) - 1
        for i, micro in enumerate(self._micro):
            with no_sync() if i < last else contextlib.nullcontext():
                with _replay_rng(self._rng[i]):
                    img, loc = self.encode(micro)
                surrogate = (img * g_images[i]).sum() + (loc * g_locations[i]).sum()
                if i == last:  # the logit scale's (and the loss's) gradients, once, in the synchronised pass
                    surrogate = surrogate + (self.logit_scale() * g_scale).sum()
                    for p, g in zip(self.loss_params, g_params):
                        surrogate = surrogate + (p * g).sum()
                backward(surrogate)
        self._grads, self._micro, self._rng = None, (), []


def split_batch(batch: dict[str, Any], size: int) -> list[dict[str, Any]]:
    """Split a batch dict into micro-batches of ``size`` rows (tensors and lists are split; other
    entries, e.g. skip counters, are kept in the first micro-batch only)."""
    if size <= 0:
        raise ValueError(f"micro-batch size must be positive, got {size}")
    rows = len(batch["lonlat"])
    out = []
    for start in range(0, rows, size):
        micro: dict[str, Any] = {}
        for key, value in batch.items():
            if isinstance(value, (torch.Tensor, list, tuple)) and len(value) == rows:
                micro[key] = value[start : start + size]
            elif start == 0:
                micro[key] = value
        out.append(micro)
    return out


def concat_batches(batches: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Concatenate the ``image``, ``lonlat`` and ``time`` rows (and ``key`` lists) of several batches (the loader's batches of one step)."""
    if len(batches) == 1:
        return batches[0]
    out: dict[str, Any] = {"image": torch.cat([b["image"] for b in batches]), "lonlat": torch.cat([b["lonlat"] for b in batches])}
    if all("time" in b for b in batches):
        out["time"] = torch.cat([b["time"] for b in batches])
    if all("key" in b for b in batches):
        out["key"] = [k for b in batches for k in b["key"]]
    return out


__all__ = ["GradCache", "concat_batches", "split_batch"]
