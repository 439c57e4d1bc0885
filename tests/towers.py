"""A tiny exported location tower for tests of the commands that take one."""

from __future__ import annotations

from pathlib import Path

import torch

from satclip.io.export import export_location_encoder
from satclip.location import build_location_encoder


def export_tiny_tower(out: Path) -> Path:
    """Export a seeded 4-dimensional SH(L=4) x Siren tower to ``out`` and return ``out``."""
    torch.manual_seed(0)
    export_location_encoder(build_location_encoder(output_dim=4, legendre_polys=4, dim_hidden=8, num_layers=1), out)
    return out
