"""Symmetric InfoNCE (the CLIP loss) over the global batch of all processes.

Each process gathers the features of every rank WITH gradients and scores its own rows against the
whole global batch (labels offset by the rank's position), so that the mean of the per-rank losses
is the loss of one process on the concatenated batch, and DDP's gradient averaging gives exactly
that loss's gradients. (The reference SatCLIP scores each GPU's local batch only, which makes the
number of negatives per image the per-GPU batch size.)
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class _GatherRows(torch.autograd.Function):
    """Concatenate every rank's rows (sizes may differ); the backward sums the gradients of all
    ranks' losses with respect to the global tensor and returns this rank's slice.

    Implemented with all_gather + all_reduce only, so it works on every backend (gloo has neither
    reduce_scatter nor all_to_all on all platforms).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, sizes: list[int], rank: int) -> torch.Tensor:
        biggest = max(sizes)
        padded = x.new_zeros((biggest, *x.shape[1:]))
        padded[: x.shape[0]] = x
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded.contiguous())
        ctx.sizes, ctx.rank = sizes, rank
        return torch.cat([p[:n] for p, n in zip(parts, sizes)])

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start : start + ctx.sizes[ctx.rank]], None, None


def gather_rows(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """All ranks' rows of ``x`` concatenated in rank order, with gradients, and the offset of this
    rank's rows in the result. Without an initialised process group (or with one process) this is
    ``(x, 0)``. Ranks may hold different numbers of rows (e.g. a short last batch)."""
    if not _distributed():
        return x, 0
    rank, world = dist.get_rank(), dist.get_world_size()
    size = torch.tensor([x.shape[0]], device=x.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    counts = [int(s) for s in sizes]
    return _GatherRows.apply(x, counts, rank), sum(counts[:rank])


def info_nce(
    image: torch.Tensor,
    location: torch.Tensor,
    logit_scale: torch.Tensor,
    all_image: torch.Tensor | None = None,
    all_location: torch.Tensor | None = None,
    offset: int = 0,
) -> torch.Tensor:
    """Symmetric InfoNCE of local rows against a (possibly larger) global batch.

    ``image`` and ``location`` are this process's (b, d) L2-normalised features; ``all_image`` /
    ``all_location`` the (N, d) global ones (default: the local ones) in which the local rows start
    at ``offset``; ``logit_scale`` is the multiplier exp(t). Returns the mean over the local rows of
    (CE(image -> all locations) + CE(location -> all images)) / 2.
    """
    all_image = image if all_image is None else all_image
    all_location = location if all_location is None else all_location
    labels = torch.arange(image.shape[0], device=image.device) + offset
    logits_image = logit_scale * image @ all_location.T
    logits_location = logit_scale * location @ all_image.T
    return (F.cross_entropy(logits_image, labels) + F.cross_entropy(logits_location, labels)) / 2


class InfoNCELoss(nn.Module):
    """CLIP's symmetric InfoNCE over the global batch.

    ``loss(image, location, logit_scale)`` takes this process's (b, d) L2-normalised image and
    location features and the logit multiplier exp(t). With several processes (and
    ``gather=True``), the features of all ranks are gathered with gradients and this rank's rows are
    scored against all of them. Each rank's loss is weighted by its share of the global batch
    (a no-op for equal batches), so that the mean of the ranks' losses is the loss of one process
    on the concatenated batch and, after DDP averages the gradients, so are the gradients. Every rank must
    call it the same number of times (it communicates).
    """

    def __init__(self, gather: bool = True) -> None:
        super().__init__()
        self.gather = gather

    def forward(self, image: torch.Tensor, location: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
        if image.shape != location.shape or image.ndim != 2:
            raise ValueError(f"image and location features must both be (batch, dim); got {tuple(image.shape)} and {tuple(location.shape)}")
        if not self.gather:
            return info_nce(image, location, logit_scale)
        all_image, offset = gather_rows(image)
        all_location, _ = gather_rows(location)
        loss = info_nce(image, location, logit_scale, all_image, all_location, offset)
        if all_image.shape[0] == image.shape[0]:
            return loss
        # weight this rank's mean by its share of the global batch, so that the mean over ranks
        # (what DDP's gradient averaging differentiates) is the global mean even for uneven batches
        return loss * (dist.get_world_size() * image.shape[0] / all_image.shape[0])


__all__ = ["InfoNCELoss", "gather_rows", "info_nce"]
