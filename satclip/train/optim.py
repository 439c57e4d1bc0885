"""The optimizer's parts: AdamW parameter groups (what decays) and the warm-up + cosine learning-rate
schedule, kept as plain objects so that checkpoints stay ``weights_only``-loadable."""

from __future__ import annotations

import math
from typing import Any, cast

import torch


class WarmupCosine:
    """lr multiplier at optimizer step s: linear warm-up over ``warmup_steps``, then cosine from 1 to
    ``min_ratio`` at ``total_steps`` (constant afterwards). A plain object so checkpoints stay
    weights_only-loadable (LambdaLR saves its ``__dict__``)."""

    def __init__(self, warmup_steps: int, total_steps: int, *, min_ratio: float = 0.0) -> None:
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps)
        self.min_ratio = float(min_ratio)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class WarmupCosineLR(torch.optim.lr_scheduler.LambdaLR):
    """``LambdaLR`` over a :class:`WarmupCosine` whose restored state keeps only the position
    (step count, base rates): the schedule's shape (warm-up, total, floor) is always this run's.

    Resuming with another ``max_steps`` therefore continues on the new schedule: the rate at step
    ``s`` is what the new settings give at ``s``, as if the run had been planned that long (an
    extended run's cosine is re-stretched from where it stands). The optimizer's current rate is
    set to it at once, so the first resumed step already uses it."""

    def __init__(self, optimizer: torch.optim.Optimizer, schedule: WarmupCosine) -> None:
        super().__init__(optimizer, schedule)

    @property
    def schedule(self) -> WarmupCosine:
        return cast(WarmupCosine, self.lr_lambdas[0])

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        shape = dict(vars(self.schedule))
        super().load_state_dict(state_dict)
        vars(self.schedule).update(shape)
        self._last_lr = [base * schedule(self.last_epoch) for schedule, base in zip(self.lr_lambdas, self.base_lrs)]
        for group, lr in zip(self.optimizer.param_groups, self._last_lr):
            group["lr"] = lr


def parameter_groups(model: torch.nn.Module, weight_decay: float, *, location_lr: float | None = None) -> list[dict[str, Any]]:
    """AdamW groups: decay on weight matrices/kernels; none on 1-D parameters (biases, norms, the
    logit scale) nor on what a timm model lists in ``no_weight_decay()`` (ViT position embedding,
    class token). Frozen parameters are left out. With ``location_lr``, the parameters under
    ``location.`` (the location tower) are in two more groups with that learning rate."""
    skip: set[str] = set()
    for prefix, module in model.named_modules():
        if hasattr(module, "no_weight_decay") and callable(module.no_weight_decay):
            skip |= {f"{prefix}.{name}" if prefix else name for name in module.no_weight_decay()}
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    loc_decay: list[torch.nn.Parameter] = []
    loc_no_decay: list[torch.nn.Parameter] = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        own = location_lr is not None and name.startswith("location.")
        if p.ndim < 2 or name in skip:
            (loc_no_decay if own else no_decay).append(p)
        else:
            (loc_decay if own else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if location_lr is not None:
        groups += [{"params": loc_decay, "weight_decay": weight_decay, "lr": location_lr}, {"params": loc_no_decay, "weight_decay": 0.0, "lr": location_lr}]
    return groups


__all__ = ["WarmupCosine", "WarmupCosineLR", "parameter_groups"]
