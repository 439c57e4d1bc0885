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
    draws_a_bar = "tqdm" in inspect.getsource(module) or "iter_image_embeddings" in inspect.getsource(module)
    assert ("--no-progress" in options) == draws_a_bar, f"satclip {name}: tqdm bar {draws_a_bar}, --no-progress {'--no-progress' in options}"
