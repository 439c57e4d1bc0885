"""Named pretraining recipes: the loss and temperature settings a run starts from.

- ``cool`` (the default for new runs): InfoNCE at a fixed (not learned) logit multiplier that follows
  the number of negatives N per loss (``data.batch_size`` x ``model.accumulate_batches`` x ranks):
  ``batch_multiplier(N)`` = max(1, ln N / ln 128), i.e. 1 up to batch 128, 1.43 at 1,024, 1.86 at
  8,192; pairs of rows that hold the same patch left out of the negatives. With the released learned
  temperature the multiplier climbs to a sharp softmax and the location tower loses the strongest,
  smoothest signals of the images; a flat one keeps them, and at batch 8,192 a multiplier of 2-3
  learned the fine detail faster than 1 with the same climate and land scores
  (docs/benchmarks/pretrain-quality.md, "Evidence at scale").
- ``released``: the published SatCLIP recipe (Klemmer et al., 2023): InfoNCE with CLIP's learned
  temperature from 1/0.07 (SigLIP: 10), every negative kept. ``configs/released.yaml`` (the base of
  the six released variants) names it, so the published models stay reproducible.

A run names one with ``model.recipe``; any of ``model.loss``, ``model.logit_scale_init``,
``model.learn_logit_scale``, ``model.mask_duplicates`` given explicitly overrides the recipe's value
(an explicit ``logit_scale_init`` also turns the batch rule off).
"""

from __future__ import annotations

import math
from typing import Any

RECIPES: dict[str, dict[str, Any]] = {
    "cool": {"loss": "infonce", "logit_scale_init": 1.0, "learn_logit_scale": False, "mask_duplicates": True, "scale_with_batch": True},
    "released": {"loss": "infonce", "logit_scale_init": None, "learn_logit_scale": True, "mask_duplicates": False, "scale_with_batch": False},
}
"""Recipe name -> its settings (``logit_scale_init`` None: the loss's own start, 1/0.07 or 10;
``scale_with_batch``: the fixed multiplier follows ``batch_multiplier`` of the negatives per loss)."""
DEFAULT_RECIPE = "cool"
REFERENCE_BATCH = 128
"""The batch at which a multiplier of 1 was measured best (scripts/ablate_pretrain.py)."""


def batch_multiplier(negatives: int) -> float:
    """The ``cool`` recipe's fixed logit multiplier for ``negatives`` rows per loss: max(1, ln N / ln 128)."""
    if negatives < 1:
        raise ValueError(f"negatives must be >= 1, got {negatives}")
    return max(1.0, math.log(negatives) / math.log(REFERENCE_BATCH))


def resolve_recipe(name: str, **overrides: Any) -> dict[str, Any]:
    """The recipe's settings with the non-None ``overrides`` applied; an unknown name is an error listing the known ones."""
    if name not in RECIPES:
        raise ValueError(f"recipe must be one of {sorted(RECIPES)}, got {name!r}")
    unknown = set(overrides) - (set(RECIPES[name]) - {"scale_with_batch"})  # the batch rule follows logit_scale_init
    if unknown:
        raise TypeError(f"not recipe settings: {sorted(unknown)}")
    settings = {**RECIPES[name], **{k: v for k, v in overrides.items() if v is not None}}
    if overrides.get("logit_scale_init") is not None or settings["learn_logit_scale"]:
        settings["scale_with_batch"] = False  # an explicit or learned multiplier is the user's
    return settings


__all__ = ["DEFAULT_RECIPE", "RECIPES", "REFERENCE_BATCH", "batch_multiplier", "resolve_recipe"]
