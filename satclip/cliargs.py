"""Command-line options that several ``satclip`` subcommands share, declared once so they read the same everywhere."""

from __future__ import annotations

import argparse


def add_progress_argument(parser: argparse.ArgumentParser) -> None:
    """``--no-progress``: hide the progress bar (every command that draws one takes it)."""
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


__all__ = ["add_progress_argument"]
