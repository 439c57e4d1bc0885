"""Options that mean the same thing read the same on every subcommand."""

from __future__ import annotations

import argparse
import importlib
import inspect

import pytest

from satclip.cli import COMMANDS


@pytest.mark.parametrize("name", sorted(n for n in COMMANDS if n != "fit"))
def test_every_command_with_a_progress_bar_takes_no_progress(name: str) -> None:
    module = importlib.import_module(COMMANDS[name][0])
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    options = {s for action in parser._actions for s in action.option_strings}
    source = inspect.getsource(module)
    reports = "tqdm" in source or "iter_image_embeddings" in source or "progress=None if args.no_progress" in source
    assert ("--no-progress" in options) == reports, f"satclip {name}: reports progress {reports}, --no-progress {'--no-progress' in options}"


def test_fit_takes_no_progress_as_lightnings_flag() -> None:
    from satclip.train.cli import no_progress_flag

    assert no_progress_flag(["--config", "c.yaml", "--no-progress"]) == ["--config", "c.yaml", "--trainer.enable_progress_bar", "false"]
