"""Contrastive losses over the global batch of all processes: symmetric InfoNCE (CLIP) and the
pairwise sigmoid loss (SigLIP).

Each process gathers the features of every rank WITH gradients and scores its own rows against the
whole global batch (labels offset by the rank's position), so that the mean of the per-rank losses
is the loss of one process on the concatenated batch, and DDP's gradient averaging gives exactly
that loss's gradients. (The reference SatCLIP scores each GPU's local batch only, which makes the
number of negatives per image the per-GPU batch size.)

Both losses take optional per-row sample ids: a pair of different rows with the same id (one patch
drawn twice into a batch) is then not used as a negative (it is a false negative).

:class:`MatryoshkaLoss` wraps either loss to train nested prefixes of the embeddings.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from typing_extensions import override


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class _GatherRows(torch.autograd.Function):
    """Concatenate every rank's rows (sizes may differ); the backward sums the gradients of all
    ranks' losses with respect to the global tensor and returns this rank's slice.

    Implemented with all_gather + all_reduce only, so it works on every backend (gloo has neither
    reduce_scatter nor all_to_all on all platforms).
    """

    @staticmethod
    @override
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


def false_negatives(ids: torch.Tensor | None, all_ids: torch.Tensor | None, *, offset: int) -> torch.Tensor | None:
    """(b, N) boolean mask of the pairs (local row i, global row j != i + offset) with the same id,
    or None when there are no ids or no such pair."""
    if ids is None:
        return None
    all_ids = ids if all_ids is None else all_ids
    same = ids[:, None] == all_ids[None, :]
    rows = torch.arange(len(ids), device=same.device)
    same[rows, rows + offset] = False
    return same if bool(same.any()) else None


def info_nce(
    image: torch.Tensor,
    location: torch.Tensor,
    *,
    logit_scale: torch.Tensor,
    all_image: torch.Tensor | None = None,
    all_location: torch.Tensor | None = None,
    offset: int = 0,
    ids: torch.Tensor | None = None,
    all_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric InfoNCE of local rows against a (possibly larger) global batch.

    ``image`` and ``location`` are this process's (b, d) L2-normalised features; ``all_image`` /
    ``all_location`` the (N, d) global ones (default: the local ones) in which the local rows start
    at ``offset``; ``logit_scale`` is the multiplier exp(t). Returns the mean over the local rows of
    (CE(image -> all locations) + CE(location -> all images)) / 2. With ``ids`` (b,) and
    ``all_ids`` (N,), pairs of different rows with the same id are left out of the denominators.
    """
    all_image = image if all_image is None else all_image
    all_location = location if all_location is None else all_location
    labels = torch.arange(image.shape[0], device=image.device) + offset
    logits_image = logit_scale * image @ all_location.T
    logits_location = logit_scale * location @ all_image.T
    mask = false_negatives(ids, all_ids, offset=offset)
    if mask is not None:
        logits_image = logits_image.masked_fill(mask, float("-inf"))
        logits_location = logits_location.masked_fill(mask, float("-inf"))
    return (F.cross_entropy(logits_image, labels) + F.cross_entropy(logits_location, labels)) / 2


def sigmoid_pairs(
    image: torch.Tensor,
    location: torch.Tensor,
    *,
    logit_scale: torch.Tensor,
    logit_bias: torch.Tensor,
    all_location: torch.Tensor | None = None,
    offset: int = 0,
    ids: torch.Tensor | None = None,
    all_ids: torch.Tensor | None = None,
    total: int | None = None,
) -> torch.Tensor:
    """SigLIP's pairwise sigmoid loss of the local image rows against every (global) location row.

    Each pair (i, j) is a binary problem, positive when j is i's own location: the sum over pairs of
    -log sigmoid(z_ij (scale x_i . y_j + bias)), z_ij = +1 / -1, divided by the global batch size
    ``total`` (default: the number of location rows). Summed over ranks this covers every pair of the
    global batch once. Pairs flagged by ``ids`` (same id, different rows) are left out.
    """
    all_location = location if all_location is None else all_location
    logits = logit_scale * image @ all_location.T + logit_bias
    rows = torch.arange(image.shape[0], device=image.device)
    sign = torch.full_like(logits, -1.0)
    sign[rows, rows + offset] = 1.0
    terms = F.logsigmoid(sign * logits)
    mask = false_negatives(ids, all_ids, offset=offset)
    if mask is not None:
        terms = terms.masked_fill(mask, 0.0)
    return -terms.sum() / (all_location.shape[0] if total is None else total)


def _gather_ids(ids: torch.Tensor | None) -> torch.Tensor | None:
    return None if ids is None else gather_rows(ids)[0]


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

    @override
    def forward(self, image: torch.Tensor, location: torch.Tensor, logit_scale: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        _check_features(image, location, ids=ids)
        if not self.gather:
            return info_nce(image, location, logit_scale=logit_scale, ids=ids)
        all_image, offset = gather_rows(image)
        all_location, _ = gather_rows(location)
        loss = info_nce(
            image, location, logit_scale=logit_scale, all_image=all_image, all_location=all_location, offset=offset, ids=ids, all_ids=_gather_ids(ids)
        )
        if all_image.shape[0] == image.shape[0]:
            return loss
        # weight this rank's mean by its share of the global batch, so that the mean over ranks
        # (what DDP's gradient averaging differentiates) is the global mean even for uneven batches
        return loss * (dist.get_world_size() * image.shape[0] / all_image.shape[0])


class SigLIPLoss(nn.Module):
    """SigLIP's pairwise sigmoid loss (Zhai et al., 2023) over the global batch, with its learnable
    bias (initialised at -10, with the logit multiplier at 10, as in the paper).

    ``loss(image, location, logit_scale)`` as :class:`InfoNCELoss`. With several processes, every
    rank gathers the location features of all ranks (with gradients) and scores its own image rows
    against all of them, so the ranks together cover every pair of the global batch once; each
    rank's loss is scaled so that the mean over ranks is the one-process loss.
    """

    def __init__(self, gather: bool = True, bias_init: float = -10.0) -> None:
        super().__init__()
        self.gather = gather
        self.logit_bias = nn.Parameter(torch.tensor(float(bias_init)))

    @override
    def forward(self, image: torch.Tensor, location: torch.Tensor, logit_scale: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        _check_features(image, location, ids=ids)
        bias = self.logit_bias.to(image.dtype)
        if not self.gather:
            return sigmoid_pairs(image, location, logit_scale=logit_scale, logit_bias=bias, ids=ids)
        all_location, offset = gather_rows(location)
        loss = sigmoid_pairs(
            image, location, logit_scale=logit_scale, logit_bias=bias, all_location=all_location, offset=offset, ids=ids, all_ids=_gather_ids(ids)
        )
        if all_location.shape[0] == image.shape[0]:
            return loss
        return loss * dist.get_world_size()


class MatryoshkaLoss(nn.Module):
    """Nested (Matryoshka) training: a contrastive loss applied to leading prefixes of the features.

    ``loss(image, location, logit_scale, ids)`` computes, for every ``d`` in ``dims``, the wrapped
    ``base`` loss (:class:`InfoNCELoss` or :class:`SigLIPLoss`, with its global negatives) on the
    first ``d`` dimensions of both towers' features, each prefix L2-normalised on its own, and returns
    the sum of those losses weighted by ``weights`` (default 1 each). The first ``d`` dimensions of a
    tower so trained are an embedding on their own (Kusupati et al., 2022). Include the full
    dimension in ``dims`` to train the full embedding too.
    """

    def __init__(self, base: nn.Module, dims: list[int] | tuple[int, ...], *, weights: list[float] | tuple[float, ...] | None = None) -> None:
        super().__init__()
        dims = [int(d) for d in dims]
        if not dims or any(d < 1 for d in dims) or any(a >= b for a, b in zip(dims, dims[1:])):
            raise ValueError(f"matryoshka_dims must be increasing positive integers, e.g. [16, 32, 64]; got {dims}")
        weights = [1.0] * len(dims) if weights is None else [float(w) for w in weights]
        if len(weights) != len(dims) or any(not w >= 0 for w in weights) or not sum(weights) > 0:
            raise ValueError(f"matryoshka_weights must be one non-negative weight per dimension of {dims} (not all 0); got {weights}")
        self.base = base
        self.dims, self.weights = dims, weights

    @override
    def forward(self, image: torch.Tensor, location: torch.Tensor, logit_scale: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        _check_features(image, location, ids=ids)
        if self.dims[-1] > image.shape[1]:
            raise ValueError(f"matryoshka_dims {self.dims} go beyond the features' {image.shape[1]} dimensions")
        terms = [
            w * self.base(F.normalize(image[:, :d], dim=-1), F.normalize(location[:, :d], dim=-1), logit_scale, ids) for d, w in zip(self.dims, self.weights)
        ]
        return torch.stack(terms).sum()


def _check_features(image: torch.Tensor, location: torch.Tensor, *, ids: torch.Tensor | None) -> None:
    if image.shape != location.shape or image.ndim != 2:
        raise ValueError(f"image and location features must both be (batch, dim); got {tuple(image.shape)} and {tuple(location.shape)}")
    if ids is not None and tuple(ids.shape) != (image.shape[0],):
        raise ValueError(f"ids must be one per row, shape ({image.shape[0]},); got {tuple(ids.shape)}")


LOSSES: dict[str, type[nn.Module]] = {"infonce": InfoNCELoss, "siglip": SigLIPLoss}
"""Contrastive losses by name (``SatCLIPModule(loss=...)``)."""


__all__ = ["LOSSES", "InfoNCELoss", "MatryoshkaLoss", "SigLIPLoss", "false_negatives", "gather_rows", "info_nce", "sigmoid_pairs"]
