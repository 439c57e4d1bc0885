"""``satclip shards`` killed with SIGKILL at chosen points (right after a shard's progress is saved, in
the middle of writing a shard) and started again with the same arguments ends with the bytes of an
uninterrupted run; nothing half-written is ever shown as a set; other arguments start afresh."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from corpora import majortom_row, sample_patches, write_majortom

from satclip.cli import main
from satclip.data import resume
from satclip.data.shardlist import expand_urls
from satclip.data.shards import write_shards

ROOT = Path(__file__).resolve().parents[1]
KILLER = """
import os, signal, sys
from satclip.data import resume, tarwriter

point, after = sys.argv[1], int(sys.argv[2])
if point == "saved":  # right after the progress of the after-th complete shard is saved
    save = resume.save

    def dying(folder, state):
        save(folder, state)
        if len(state["writer"]["shards"]) == after:
            os.kill(os.getpid(), signal.SIGKILL)

    resume.save = dying
else:  # in the middle of a shard: after the after-th tar member of the run
    member, written = tarwriter.TarShards._member, [0]

    def dying(self, name, data):
        member(self, name, data)
        written[0] += 1
        if written[0] == after:
            os.kill(os.getpid(), signal.SIGKILL)

    tarwriter.TarShards._member = dying
from satclip.cli import main

sys.exit(main(sys.argv[3:]))
"""


@pytest.fixture(scope="module")
def cells(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 Major TOM cells of 4 patches: with 5 samples per shard, shards end in the middle of a cell."""
    patches = sample_patches()
    rows = [majortom_row(patches[i], f"{i}U_{20 + i}R") for i in range(3)]
    return write_majortom(tmp_path_factory.mktemp("resume-majortom"), [rows[:2], rows[2:]])


def _killed(point: str, after: int, args: list[str]) -> int:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", KILLER, point, str(after), "shards", *args], env=env, capture_output=True, text=True, timeout=300)
    return done.returncode


def _same_set(a: Path, b: Path) -> None:
    manifest = json.loads((a / "manifest.json").read_text())
    assert manifest == json.loads((b / "manifest.json").read_text())
    assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())
    for shard in manifest["shards"]:
        assert (a / shard["name"]).read_bytes() == (b / shard["name"]).read_bytes()


@pytest.mark.parametrize(
    ("point", "after", "workers"),
    [("saved", 1, 1), ("saved", 2, 2), ("member", 13, 1)],
    ids=["after-shard-0", "after-shard-1-resumed-by-2-workers", "inside-shard-1"],
)
def test_killed_and_started_again_ends_with_the_uninterrupted_bytes(cells, tmp_path, caplog, point, after, workers):
    reference = tmp_path / "reference"
    assert write_shards([cells], reference, samples_per_shard=5, progress=False)["samples"] == 12  # shards of 5, 5, 2
    out = tmp_path / "out"
    args = [str(cells), "--out", str(out), "--samples-per-shard", "5"]
    assert _killed(point, after, args) == -signal.SIGKILL
    assert not out.exists()  # nothing half-written shown as a set
    partial = resume.partial_folder(out)
    progress = json.loads((partial / resume.PROGRESS).read_text())
    assert [s["name"] for s in progress["writer"]["shards"]] == [f"shard-{i:06d}.tar" for i in range({"saved": after, "member": 1}[point])]
    if point == "member":
        assert (partial / "shard-000001.tar").is_file()  # the half-written one, not in the progress
        assert (progress["task"], progress["sample"]) == (1, 1)  # 5 samples: cell 0's 4 and the first of cell 1
        (out / "shard-000000.tar").parent.mkdir()
        os.replace(partial / "shard-000001.tar", out / "shard-000001.tar")  # a set without manifest: the loader refuses it
        with pytest.raises(ValueError, match="no manifest.json: not a complete shard set"):
            expand_urls(str(out))
        os.replace(out / "shard-000001.tar", partial / "shard-000001.tar")
        out.rmdir()
    with caplog.at_level(logging.WARNING, logger="satclip.data"):
        assert main(["shards", *args, "--workers", str(workers)]) == 0
    assert "resuming" in caplog.text
    _same_set(out, reference)
    assert not partial.exists()


def test_other_arguments_start_afresh(cells, tmp_path):
    out = tmp_path / "out"
    assert _killed("saved", 1, [str(cells), "--out", str(out), "--samples-per-shard", "5"]) == -signal.SIGKILL
    assert resume.partial_folder(out).is_dir()
    write_shards([cells], out, samples_per_shard=4, progress=False)
    write_shards([cells], tmp_path / "fresh", samples_per_shard=4, progress=False)
    _same_set(out, tmp_path / "fresh")
    assert not resume.partial_folder(out).exists()


def test_a_resumed_major_tom_run_does_not_read_the_cells_written(cells, monkeypatch):
    import pyarrow.parquet as pq

    from satclip.data.cellselect import PartRows
    from satclip.data.majortom import cell_tasks, parts_in

    parts = [PartRows(str(p)) for p in parts_in(cells)]
    every = list(cell_tasks(parts, None, patch_size=256, max_cloud=None))
    read = []
    original = pq.ParquetFile.read_row_group
    monkeypatch.setattr(pq.ParquetFile, "read_row_group", lambda self, group, **kw: read.append(group) or original(self, group, **kw))
    for skip in range(len(every) + 1):
        read.clear()
        assert list(cell_tasks(parts, None, patch_size=256, max_cloud=None, skip=skip)) == every[skip:]
        assert len(read) == len(every) - skip  # one row per row group: only the rows not yet written are read


def test_a_resumed_run_still_knows_the_rows_it_skipped_for_duplicates(cells, tmp_path, monkeypatch):
    """A row repeating a grid_cell + product_id written before the resume point is still a duplicate
    (the keys of the skipped row groups come from the parts' footers: no row group is read)."""
    import pyarrow.parquet as pq

    from satclip.data.cellselect import PartRows
    from satclip.data.majortom import cell_tasks, parts_in

    patches = sample_patches()
    rows = [majortom_row(patches[i], f"{i}U_{20 + i}R") for i in range(2)]
    root = write_majortom(tmp_path / "dup", [rows, [rows[0]]])  # part 2 repeats part 1's first row
    parts = [PartRows(str(p)) for p in parts_in(root)]
    every = list(cell_tasks(parts, None, patch_size=256, max_cloud=None))
    assert [t.duplicate_of for t in every] == [None, None, "part_00001.parquet:row 0"]
    read = []
    original = pq.ParquetFile.read_row_group
    monkeypatch.setattr(pq.ParquetFile, "read_row_group", lambda self, group, **kw: read.append(group) or original(self, group, **kw))
    monkeypatch.setattr(pq.ParquetFile, "read_row_groups", lambda self, groups, **kw: read.extend(groups) or original(self, groups[0], **kw))
    assert list(cell_tasks(parts, None, patch_size=256, max_cloud=None, skip=2)) == every[2:] and len(read) == 1
