"""Two-process gloo run of the contrastive losses, launched by tests/test_loss.py as a subprocess.

Usage: python tests/_dist_loss_worker.py OUT_DIR SIZES [SIZES ...] (e.g. "4,4" "5,3": rows per rank,
the same number of ranks in each). For each loss of ``satclip.loss.LOSSES``, with and without sample
ids (:func:`global_ids`: one id shared by rows on different ranks), and each SIZES, alone and
wrapped in :class:`satclip.loss.MatryoshkaLoss` (names ``matryoshka-<loss>``, :data:`NAMES`), each rank takes
its rows of a fixed global batch, runs tiny DDP-wrapped towers and the loss, and saves its loss, the
(DDP averaged) parameter gradients and its feature gradients to OUT_DIR/<loss>-<ids>/<SIZES>/rank{r}.pt.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from satclip.loss import LOSSES, MatryoshkaLoss

DIM_IN, DIM_OUT = 6, 4
NAMES = [*LOSSES, *(f"matryoshka-{n}" for n in LOSSES)]
"""The losses of the run: each of LOSSES, alone and on the nested prefixes of 2 and 4 dimensions."""


def global_batch(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The same global batch in every process (and in the test)."""
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, DIM_IN, generator=g, dtype=torch.float64), torch.randn(n, DIM_IN, generator=g, dtype=torch.float64)


def global_ids(n: int) -> torch.Tensor:
    """Sample ids of the global batch: rows 0 and n - 1 (on different ranks) are the same sample."""
    ids = torch.arange(n)
    ids[n - 1] = 0
    return ids


def make_loss(name: str) -> nn.Module:
    """The loss by name (of NAMES), with its own parameters (SigLIP's bias) at a fixed value."""
    torch.manual_seed(2)
    base = name.removeprefix("matryoshka-")
    if base != name:
        return MatryoshkaLoss(LOSSES[base](), dims=[2, DIM_OUT], weights=[0.5, 1.0]).double()
    return LOSSES[name]().double()


class Towers(nn.Module):
    """Two linear towers and a learnable temperature, deterministic (no BN, no dropout)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.image = nn.Linear(DIM_IN, DIM_OUT).double()
        self.location = nn.Linear(DIM_IN, DIM_OUT).double()
        self.logit_scale = nn.Parameter(torch.tensor(2.0, dtype=torch.float64))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return F.normalize(self.image(x), dim=-1), F.normalize(self.location(y), dim=-1), self.logit_scale.exp()


def _run(rank: int, world: int, init: str, out: str, runs: list[list[int]]) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        for name, with_ids, sizes in ((n, i, s) for n in NAMES for i in (False, True) for s in runs):
            x, y = global_batch(sum(sizes))
            start = sum(sizes[:rank])
            rows = slice(start, start + sizes[rank])
            model = nn.parallel.DistributedDataParallel(Towers())
            loss_fn = nn.parallel.DistributedDataParallel(make_loss(name)) if list(make_loss(name).parameters()) else make_loss(name)
            img, loc, scale = model(x[rows], y[rows])
            img.retain_grad()
            loc.retain_grad()
            ids = global_ids(sum(sizes))[rows] if with_ids else None
            loss = loss_fn(img, loc, scale, ids)
            loss.backward()
            grads = {n: p.grad for n, p in model.module.named_parameters()}
            grads.update({f"loss.{n}": p.grad for n, p in getattr(loss_fn, "module", loss_fn).named_parameters()})
            folder = Path(out) / f"{name}-{'ids' if with_ids else 'noids'}" / ",".join(map(str, sizes))
            folder.mkdir(parents=True, exist_ok=True)
            torch.save({"loss": loss.detach(), "grads": grads, "img_grad": img.grad, "loc_grad": loc.grad}, folder / f"rank{rank}.pt")
        dist.barrier()  # neither rank tears down while the other still talks to it
    finally:
        dist.destroy_process_group()


def main() -> None:
    out = sys.argv[1]
    runs = [[int(s) for s in spec.split(",")] for spec in sys.argv[2:]]
    world = len(runs[0])
    if any(len(r) != world for r in runs):
        raise SystemExit(f"every SIZES needs {world} entries (one per rank): {sys.argv[2:]}")
    init = f"file://{Path(out).resolve() / 'rendezvous'}"
    mp.spawn(_run, args=(world, init, out, runs), nprocs=world, join=True)


if __name__ == "__main__":
    main()
