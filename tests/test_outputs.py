"""Outputs: no command replaces an existing output without ``--overwrite`` (and says so before it loads
anything), ``--out`` / ``--output`` are one option, and what is written appears whole or not at all."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from towers import export_tiny_tower

from satclip.cli import main as cli_main
from satclip.outputs import OutputExistsError, partial_path, refuse_existing, written_whole

MISSING = "no-such-checkpoint.ckpt"


def _commands(tmp: Path) -> dict[str, tuple[list[str], Path]]:
    """command -> (argv without the output, the existing file that must survive)."""
    return {
        "embed": (["embed", "--checkpoint", MISSING, "--input", "x.csv", "--out", str(tmp / "e.npy")], tmp / "e.npy"),
        "embed-grid": (["embed-grid", "--checkpoint", MISSING, "--bbox", "0", "0", "4", "4", "--resolution", "1", "--out", str(tmp / "g.tif")], tmp / "g.tif"),
        "embed-images": (["embed-images", "--checkpoint", MISSING, "--input", str(tmp), "--out", str(tmp / "i.parquet")], tmp / "i.parquet"),
        "export": (["export", "--checkpoint", MISSING, "--out", str(tmp / "exp")], tmp / "exp" / "config.json"),
        "locate": (["locate", "--checkpoint", MISSING, "--images", str(tmp), "--out", str(tmp / "guesses.csv")], tmp / "guesses.summary.json"),
        "probe": (["probe", "--data", "nowhere.csv", "--target", "y", "--out", str(tmp / "probe")], tmp / "probe" / "probe.md"),
        "locfit": (
            ["locfit", "--train", "a.csv", "--val", "b.csv", "--target", "y", "--task", "regression", "--out", str(tmp / "fit")],
            tmp / "fit" / "metrics.json",
        ),
        "plot-embeddings": (["plot-embeddings", "--checkpoint", MISSING, "--out", str(tmp / "map.png")], tmp / "map.png"),
    }


@pytest.mark.parametrize("command", ["embed", "embed-grid", "embed-images", "export", "locate", "probe", "locfit", "plot-embeddings"])
def test_every_writing_command_refuses_an_existing_output(tmp_path: Path, command: str) -> None:
    argv, existing = _commands(tmp_path)[command]
    existing.parent.mkdir(parents=True, exist_ok=True)
    existing.write_bytes(b"keep me")
    with pytest.raises(SystemExit, match=rf"^satclip {command}: {existing} already exists; pass --overwrite to replace it$"):
        cli_main(argv)
    assert existing.read_bytes() == b"keep me"
    # with --overwrite the command goes on to its inputs (here: missing, so it fails on them, not on the output)
    with pytest.raises(SystemExit) as err:
        cli_main([*argv, "--overwrite"])
    assert "already exists" not in str(err.value)
    assert existing.read_bytes() == b"keep me"


@pytest.fixture(scope="module")
def tower(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_tiny_tower(tmp_path_factory.mktemp("tower"))


def test_overwrite_replaces_and_the_old_spelling_is_the_same_option(tmp_path: Path, tower: Path) -> None:
    pd.DataFrame({"lon": [0.0, 10.0], "lat": [0.0, 20.0]}).to_csv(tmp_path / "c.csv", index=False)
    (tmp_path / "e.npy").write_bytes(b"old")
    argv = ["embed", "--checkpoint", str(tower), "--input", str(tmp_path / "c.csv"), "--output", str(tmp_path / "e.npy"), "--no-progress"]
    with pytest.raises(SystemExit, match="already exists"):
        cli_main(argv)
    assert cli_main([*argv, "--overwrite", "--tower-dtype", "float32", "--dim", "2"]) == 0
    emb = np.load(tmp_path / "e.npy")
    assert emb.shape == (2, 2) and emb.dtype == np.float32
    assert not partial_path(tmp_path / "e.npy").exists()
    assert cli_main([*argv, "--overwrite", "--dtype", "float64"]) == 0  # --dtype: the old spelling of --tower-dtype
    assert np.load(tmp_path / "e.npy").dtype == np.float64


def test_written_whole_renames_on_success_and_removes_on_error(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "out.txt"
    with written_whole(target) as partial:
        partial.write_text("new")
        assert not target.exists()
    assert target.read_text() == "new" and not partial_path(target).exists()
    with pytest.raises(KeyboardInterrupt), written_whole(target) as partial:
        partial.write_text("half")
        raise KeyboardInterrupt
    assert target.read_text() == "new" and not partial_path(target).exists()
    with pytest.raises(OutputExistsError, match=r"out.txt already exists; pass --overwrite"):
        refuse_existing(None, target, overwrite=False)
    refuse_existing(target, overwrite=True)
