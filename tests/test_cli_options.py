"""Options that mean the same thing read the same on every subcommand."""

from __future__ import annotations

import argparse
import importlib

import pytest

from satclip.cli import COMMANDS

REPORTS_PROGRESS = {
    "shards": True,  # samples written, per part
    "embed": True,  # rows embedded
    "embed-grid": True,  # grid rows
    "embed-images": True,  # images embedded
    "locbench": True,  # runs of the grid
    "locate": True,  # gallery and queries
    "probe": True,  # the encoders' embeddings
    "bench": True,  # tasks x encoders
    "list": False,  # prints the registry at once
    "combine-shards": False,  # links files; one summary line
    "export": False,  # seconds; one summary line
    "locfit": False,  # one summary line
    "plot-embeddings": False,  # one line: the figure's path
}
"""Every subcommand but ``fit`` (Lightning's own bar: ``--trainer.enable_progress_bar``): whether it
reports progress while it works, and so takes ``--no-progress``; the others print one result at the end."""


def test_every_command_is_classified() -> None:
    assert sorted(REPORTS_PROGRESS) == sorted(n for n in COMMANDS if n != "fit"), "a new subcommand: say whether it reports progress"


@pytest.mark.parametrize("name", sorted(REPORTS_PROGRESS))
def test_every_command_with_a_progress_bar_takes_no_progress(name: str) -> None:
    module = importlib.import_module(COMMANDS[name][0])
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    options = {s for action in parser._actions for s in action.option_strings}
    assert ("--no-progress" in options) == REPORTS_PROGRESS[name], (
        f"satclip {name}: reports progress {REPORTS_PROGRESS[name]}, --no-progress {'--no-progress' in options}"
    )


def test_fit_takes_no_progress_as_lightnings_flag() -> None:
    from satclip.train.cli import no_progress_flag

    assert no_progress_flag(["--config", "c.yaml", "--no-progress"]) == ["--config", "c.yaml", "--trainer.enable_progress_bar", "false"]
