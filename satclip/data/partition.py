"""Splitting one ``satclip shards`` run into N parts that machines or SLURM array tasks write apart.

The inputs' tasks are cut into units (GeoTIFFs, Major TOM rows, SSL4EO-S12 locations, S2-100K tar
files: :attr:`Units.name`), numbered in the order one run writes them; part ``I`` of ``N`` takes the
contiguous units ``[U*I // N, U*(I+1) // N)`` of ``U``. The same inputs and N give the same parts on
any machine, and the parts one after the other are the one run's tasks in its order
(:mod:`satclip.data.combine` puts them back together).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

SLURM = "slurm"
"""``--part slurm/N``: the part is this SLURM array task's (``SLURM_ARRAY_TASK_ID`` - ``SLURM_ARRAY_TASK_MIN``)."""


@dataclass(frozen=True)
class Part:
    """Part ``index`` (from 0) of ``count``."""

    index: int
    count: int

    def bounds(self, units: int) -> tuple[int, int]:
        """The units ``[start, stop)`` of ``units`` that this part writes."""
        return units * self.index // self.count, units * (self.index + 1) // self.count

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


@dataclass(frozen=True)
class Units:
    """What a run is split by: ``count`` units, ``name`` (plural: "cells"); ``tasks_of(start, stop)`` gives the
    tasks of units ``[start, stop)`` (a :class:`~satclip.data.sources.Collected`)."""

    name: str
    count: int
    tasks_of: Callable[[int, int], Any]


def parse_part(text: str, environ: Mapping[str, str] = os.environ) -> Part:
    """``I/N`` (I from 0 to N-1), or ``slurm/N``: I from the SLURM array task. Raises ValueError saying what is wrong."""
    index, sep, count = text.partition("/")
    if not sep or not count.strip().isdigit() or int(count) < 1:
        raise ValueError(f"--part {text!r}: expected I/N (part I of N, I from 0 to N-1) or {SLURM}/N")
    n = int(count)
    if index.strip() == SLURM:
        task = environ.get("SLURM_ARRAY_TASK_ID")
        if task is None or not task.isdigit():
            raise ValueError(f"--part {text!r}: SLURM_ARRAY_TASK_ID is not set (not a SLURM array task); give the part as I/{n}")
        i = int(task) - int(environ.get("SLURM_ARRAY_TASK_MIN", "0"))
        where = f" (SLURM array task {task}, first {environ.get('SLURM_ARRAY_TASK_MIN', '0')})"
    elif index.strip().isdigit():
        i, where = int(index), ""
    else:
        raise ValueError(f"--part {text!r}: expected I/N (part I of N, I from 0 to N-1) or {SLURM}/N")
    if not 0 <= i < n:
        raise ValueError(f"--part {text!r}: part {i}{where} is not in 0 to {n - 1}")
    return Part(i, n)


__all__ = ["SLURM", "Part", "Units", "parse_part"]
