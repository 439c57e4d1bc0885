"""A tiny exported location tower for tests of the commands that take one."""

from __future__ import annotations

from pathlib import Path

import torch

from satclip.io.export import export_location_encoder
from satclip.location import build_location_encoder


def export_tiny_tower(out: Path, *, output_dim: int = 4, legendre_polys: int = 4, dim_hidden: int = 8, seed: int = 0) -> Path:
    """Export a seeded SH x Siren tower (one hidden layer) to ``out`` and return ``out``."""
    torch.manual_seed(seed)
    export_location_encoder(build_location_encoder(output_dim=output_dim, legendre_polys=legendre_polys, dim_hidden=dim_hidden, num_layers=1), out)
    return out
