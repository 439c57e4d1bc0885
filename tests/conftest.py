"""Shared fixtures: the read-only ../shared folder (skip with a reason when it is absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


@pytest.fixture(scope="session")
def shared() -> Path:
    """Path of ../shared; tests using it skip on a fresh clone without it."""
    if not SHARED.is_dir():
        pytest.skip("../shared (reference files and sample data) is not present beside the repository")
    return SHARED


@pytest.fixture(scope="session")
def reference(shared: Path) -> Path:
    return shared / "reference"


@pytest.fixture(scope="session")
def s2_sample(shared: Path) -> Path:
    return shared / "data" / "s2-sample"
