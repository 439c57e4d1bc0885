"""Keyed seeds: one integer from (seed, rank, worker, epoch, index, ...), the same on every machine."""

from __future__ import annotations

import numpy as np


def seed_int(*parts: int) -> int:
    """A 32-bit seed drawn from ``parts`` by numpy's SeedSequence (order matters, no collisions by addition)."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


__all__ = ["seed_int"]
