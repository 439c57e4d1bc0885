"""Resumable ``satclip shards``: the run's progress, saved after every complete shard.

A set is written into ``.OUT.partial`` beside ``--out`` and moved into ``--out`` only when complete,
with its manifest last (the loader refuses a folder without one). After each shard is complete (its
tar closed), ``progress.json`` in the partial folder is replaced atomically (written aside, then
renamed) with the run's fingerprint (a hash of every argument that decides the output, not
``--workers``), the complete shards, the position in the tasks (every task before ``task`` written,
and the first ``sample`` samples of task ``task``) and the skip / filter counts of the tasks before it.

Started again with the same arguments, a run finds that record, deletes every shard it does not list
(the one being written when the run died, possibly half), restores the counts, skips the tasks
written and continues: the result is byte-identical to an uninterrupted run, whatever the point
(SIGKILL included) it was stopped at. Other arguments, or no record, start afresh. The inputs must be
unchanged (only the arguments are compared); one run per ``--out`` at a time.

A run that fails on its input (a :class:`~satclip.data.sources.ShardInputError` other than a
:class:`~satclip.data.remote.RemoteReadError` or a :class:`~satclip.data.sources.WorkerDiedError`)
removes its partial folder, as rerunning would fail again; an interrupted one (a signal, Ctrl-C,
SIGTERM, a network failure, a full disk, an encoding worker killed) keeps it to resume.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from .remote import RemoteReadError
from .sources import ShardInputError, WorkerDiedError

PROGRESS = "progress.json"


def partial_folder(out: Path) -> Path:
    """The hidden folder beside ``out`` a run writes into (same file system: renames are atomic)."""
    resolved = out.resolve()
    return resolved.parent / f".{resolved.name}.partial"


def fingerprint(arguments: dict) -> str:
    """A hash of the arguments that decide a shard set's bytes."""
    return hashlib.sha256(json.dumps(arguments, sort_keys=True, default=str).encode()).hexdigest()


def prepare(folder: Path, run: str) -> dict | None:
    """Make ``folder`` ready for run ``run`` (a fingerprint): the saved progress of the same run,
    with every file it does not list removed; else an empty folder and None."""
    state = None
    path = folder / PROGRESS
    if path.is_file():
        try:
            state = json.loads(path.read_text())
        except ValueError:
            state = None
        if not isinstance(state, dict) or state.get("fingerprint") != run:
            state = None
    keep = {PROGRESS, *(s["name"] for s in state["writer"]["shards"])} if state is not None else set()
    if folder.is_dir():
        for entry in folder.iterdir():
            if entry.name not in keep:
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    return state


def save(folder: Path, state: dict) -> None:
    """Replace ``folder/progress.json`` by ``state`` atomically."""
    aside = folder / f"{PROGRESS}.tmp"
    aside.write_text(json.dumps(state, indent=1) + "\n")
    os.replace(aside, folder / PROGRESS)


def keep_for(error: BaseException) -> bool:
    """Whether a run stopped by ``error`` keeps its partial folder to be resumed."""
    return not isinstance(error, ShardInputError) or isinstance(error, (RemoteReadError, WorkerDiedError))


__all__ = ["PROGRESS", "fingerprint", "keep_for", "partial_folder", "prepare", "save"]
