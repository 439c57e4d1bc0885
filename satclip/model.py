"""SatCLIP: an image tower and a location tower trained to agree, plus a learnable temperature.

Parameter names follow the released checkpoints (``visual.*``, ``location.nnet.*``,
``logit_scale``), so those load without a remapping table.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from typing_extensions import override

from .location import LocationEncoder, build_location_encoder
from .location.encoder import with_time_column
from .vision import build_image_encoder

MAX_LOGIT_SCALE = math.log(100.0)
DEFAULT_LOCATION: dict[str, Any] = {"pe": "sphericalharmonics", "nn": "siren", "legendre_polys": 10, "dim_hidden": 512, "num_layers": 2}
"""The released Siren(SH) L=10 tower; a ``location`` dict overrides these keys."""


def location_tower(embed_dim: int = 256, location: dict[str, Any] | None = None, *, location_dtype: str = "float64") -> LocationEncoder:
    """A freshly initialised location tower of ``SatCLIP``'s architecture (``DEFAULT_LOCATION`` updated with ``location``)."""
    return build_location_encoder(output_dim=embed_dim, dtype=getattr(torch, location_dtype), **{**DEFAULT_LOCATION, **(location or {})})


class SatCLIP(nn.Module):
    """Dual encoder. ``location`` holds the location tower's hyper-parameters (see
    ``satclip.location.build_location_encoder``); the default is the released Siren(SH) L=10.

    ``location_dtype`` ("float64" as released, or "float32") is the location tower's precision.
    ``freeze_backbone`` trains only the image head; frozen BatchNorm layers then stay in eval mode
    (their running statistics are kept) unless ``frozen_bn_drift=True``, which reproduces the
    reference, whose frozen backbone stays in train mode and lets the statistics drift.
    """

    def __init__(
        self,
        embed_dim: int = 256,
        vision: str = "resnet18",
        *,
        in_chans: int = 13,
        vision_weights: str | Path | None = None,
        freeze_backbone: bool = False,
        frozen_bn_drift: bool = False,
        location: dict[str, Any] | None = None,
        location_dtype: str = "float64",
    ) -> None:
        super().__init__()
        self.freeze_backbone = freeze_backbone
        self.frozen_bn_drift = frozen_bn_drift
        self.visual = build_image_encoder(vision, in_chans, embed_dim=embed_dim, weights=vision_weights, freeze_backbone=freeze_backbone)
        self.location = location_tower(embed_dim, location, location_dtype=location_dtype)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def train(self, mode: bool = True) -> SatCLIP:
        super().train(mode)
        if mode and self.freeze_backbone and not self.frozen_bn_drift:
            for module in self.visual.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) reflectances -> (B, embed_dim) image embeddings (not normalised)."""
        return self.visual(image)

    def encode_location(self, lonlat: torch.Tensor, time: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 2) [lon, lat] degrees -> (B, embed_dim) location embeddings (not normalised), in the tower's dtype.

        ``time`` (B,) Unix seconds UTC (NaN unknown; None: all unknown) goes to a time-aware tower as
        its third input column; a static tower ignores it."""
        if self.location.takes_time:
            lonlat = with_time_column(lonlat, time)
        return self.location(lonlat)

    def temperature_scale(self) -> torch.Tensor:
        """exp(logit_scale), clamped at 100 as in CLIP."""
        return self.logit_scale.clamp(max=MAX_LOGIT_SCALE).exp()

    @override
    def forward(self, image: torch.Tensor, lonlat: torch.Tensor, time: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """L2-normalised image and location embeddings (float32) and the logit scale."""
        img = F.normalize(self.encode_image(image).float(), dim=-1)
        loc = F.normalize(self.encode_location(lonlat, time).float(), dim=-1)
        return img, loc, self.temperature_scale()
