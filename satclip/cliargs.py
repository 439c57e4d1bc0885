"""Command-line options that several ``satclip`` subcommands share, declared once so they read the same everywhere.

One name per meaning: ``--out`` is what a command writes (a file or a folder; ``--output`` is its
old, deprecated spelling), ``--overwrite`` lets it replace an existing one, ``--device`` is where
the model runs, ``--tower-dtype`` is the location tower's precision (``--dtype``, its deprecated
spelling where it meant that), ``--dim`` keeps the first embedding dimensions, ``--no-progress``
hides the progress bar.
"""

from __future__ import annotations

import argparse
from typing import Any


def add_progress_argument(parser: argparse.ArgumentParser) -> None:
    """``--no-progress``: hide the progress bar (every command that draws one takes it)."""
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def add_output_arguments(parser: argparse.ArgumentParser, *, help: str, required: bool = True, default: str | None = None) -> None:
    """``--out`` (alias ``--output``, deprecated) and ``--overwrite``: an existing output is kept unless it is given."""
    parser.add_argument("--out", "--output", dest="out", required=required, default=default, help=f"{help} (--output: old spelling)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output (without it an existing output is an error)")


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    """``--device``: where the model runs (checked by :func:`check_device` before anything is loaded)."""
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps (default: cpu)")


def check_device(device: str) -> None:
    """Raise ``ValueError`` when ``device`` cannot hold a tensor here (no driver, not built in, unknown)."""
    import torch

    try:
        torch.empty(1, device=device)
    except (RuntimeError, AssertionError, NotImplementedError) as err:
        lines = str(err).strip().splitlines()
        raise ValueError(f"--device {device}: not available here ({lines[0] if lines else type(err).__name__}); use --device cpu") from None


def add_tower_dtype_argument(parser: argparse.ArgumentParser, *, help: str, default: str | None = None, old_spelling: bool = True) -> None:
    """``--tower-dtype`` float32 / float64 (alias ``--dtype``, deprecated, where it meant the tower's precision)."""
    names = ("--tower-dtype", "--dtype") if old_spelling else ("--tower-dtype",)
    parser.add_argument(
        *names, dest="tower_dtype", choices=("float32", "float64"), default=default, help=help + (" (--dtype: old spelling)" if old_spelling else "")
    )


def add_dim_argument(parser: argparse.ArgumentParser, *, old_spelling: bool = False, group: Any = None) -> None:
    """``--dim K``: keep the first K embedding dimensions (``--dims``, deprecated, where it was spelled so)."""
    names = ("--dim", "--dims") if old_spelling else ("--dim",)
    help = "keep the first K embedding dimensions (Matryoshka-trained towers; docs/matryoshka.md)" + ("; --dims: old spelling" if old_spelling else "")
    (group or parser).add_argument(*names, dest="dim", type=int, default=None, metavar="K", help=help)


__all__ = ["add_device_argument", "add_dim_argument", "add_output_arguments", "add_progress_argument", "add_tower_dtype_argument", "check_device"]
