"""One error style: every ``satclip`` subcommand given a bad input ends with one line naming it, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from satclip.cli import COMMANDS, main

MISSING = "nowhere.ckpt"
BAD_INPUTS: dict[str, tuple[list[str], str]] = {
    "list": (["--bogus"], "satclip list: error: unrecognized arguments: --bogus"),
    "fit": (["--ckpt_path", MISSING], f"satclip fit: --ckpt_path '{MISSING}': no such file"),
    "shards": (["nowhere-folder", "--out", "OUT"], "satclip shards: error: input nowhere-folder does not exist"),
    "combine-shards": (["nowhere-part", "--out", "OUT"], "satclip combine-shards: error: part nowhere-part does not exist"),
    "embed": (["--checkpoint", MISSING, "--input", "t.csv", "--output", "OUT.parquet"], f"satclip embed: checkpoint '{MISSING}': no such file"),
    "embed-grid": (
        ["--checkpoint", MISSING, "--bbox", "10", "50", "-10", "40", "--resolution", "1", "--output", "OUT.tif"],
        "satclip embed-grid: bbox (west=10.0, south=50.0, east=-10.0, north=40.0): south > north",
    ),
    "embed-images": (["--input", "nowhere", "--output", "OUT.parquet", "--checkpoint", MISSING], f"satclip embed-images: checkpoint '{MISSING}'"),
    "export": (["--checkpoint", MISSING, "--out", "OUT"], f"satclip export: checkpoint '{MISSING}': no such file"),
    "locfit": (["--train", "nowhere.csv", "--val", "nowhere.csv", "--target", "y", "--task", "regression"], "satclip locfit: table nowhere.csv does not exist"),
    "locbench": (["--task", "landocean", "--seeds", "0"], "satclip locbench: --seeds must be >= 1, got 0"),
    "locate": (
        ["--checkpoint", MISSING, "--images", "nowhere", "--gallery", "grid:0.001", "--output", "OUT.csv"],
        "satclip locate: --gallery 'grid:0.001': 6.48e+10 places",
    ),
    "bench": (["--config", "nowhere.yaml", "--out", "OUT"], "satclip bench: config 'nowhere.yaml': no such file"),
    "probe": (["--checkpoint", MISSING, "--data", "nowhere.csv", "--target", "y"], "satclip probe: table nowhere.csv does not exist"),
    "plot-embeddings": (["--checkpoint", MISSING, "--out", "OUT.png"], f"satclip plot-embeddings: checkpoint '{MISSING}': no such file"),
}


def test_every_command_is_covered() -> None:
    assert set(BAD_INPUTS) == set(COMMANDS)


@pytest.mark.parametrize("command", sorted(BAD_INPUTS))
def test_a_bad_input_is_one_line(command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.csv").write_text("lon,lat,y\n1,2,3\n")
    args, message = BAD_INPUTS[command]
    try:
        status = main([command, *args])
        printed = capsys.readouterr().err.strip().splitlines()[-1]
    except SystemExit as stop:  # how most commands (and argparse) end with their message
        status = stop.code if isinstance(stop.code, int) else 1
        printed = stop.code if isinstance(stop.code, str) else capsys.readouterr().err.strip().splitlines()[-1]
    assert status in (1, 2) and printed.startswith(message) and "\n" not in printed, printed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv"]  # nothing written
