"""Named pretraining recipes: the loss and temperature settings a run starts from.

- ``cool`` (the default for new runs): InfoNCE at a fixed logit multiplier of 1 (not learned), pairs
  of rows that hold the same patch left out of the negatives. With the released learned temperature
  the multiplier climbs to a sharp softmax and the location tower loses the strongest, smoothest
  signals of the images (docs/benchmarks/pretrain-quality.md); a flat one keeps them.
- ``released``: the published SatCLIP recipe (Klemmer et al., 2023): InfoNCE with CLIP's learned
  temperature from 1/0.07 (SigLIP: 10), every negative kept. ``configs/released.yaml`` (the base of
  the six released variants) names it, so the published models stay reproducible.

A run names one with ``model.recipe``; any of ``model.loss``, ``model.logit_scale_init``,
``model.learn_logit_scale``, ``model.mask_duplicates`` given explicitly overrides the recipe's value.
"""

from __future__ import annotations

from typing import Any

RECIPES: dict[str, dict[str, Any]] = {
    "cool": {"loss": "infonce", "logit_scale_init": 1.0, "learn_logit_scale": False, "mask_duplicates": True},
    "released": {"loss": "infonce", "logit_scale_init": None, "learn_logit_scale": True, "mask_duplicates": False},
}
"""Recipe name -> its settings (``logit_scale_init`` None: the loss's own start, 1/0.07 or 10)."""
DEFAULT_RECIPE = "cool"


def resolve_recipe(name: str, **overrides: Any) -> dict[str, Any]:
    """The recipe's settings with the non-None ``overrides`` applied; an unknown name is an error listing the known ones."""
    if name not in RECIPES:
        raise ValueError(f"recipe must be one of {sorted(RECIPES)}, got {name!r}")
    unknown = set(overrides) - set(RECIPES[name])
    if unknown:
        raise TypeError(f"not recipe settings: {sorted(unknown)}")
    return {**RECIPES[name], **{k: v for k, v in overrides.items() if v is not None}}


__all__ = ["DEFAULT_RECIPE", "RECIPES", "resolve_recipe"]
