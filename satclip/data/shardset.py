"""A shard set's folder: what it holds, and replacing it atomically by a complete new set."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from .shardlist import MANIFEST
from .sources import ShardInputError


def shard_set(folder: Path) -> list[Path]:
    """The shard set in ``folder``: its manifest first, then its shards."""
    if not folder.is_dir():
        return []
    manifest = [folder / MANIFEST] if (folder / MANIFEST).exists() else []
    return manifest + sorted(folder.glob("shard-*.tar"))


def hidden_sibling(out: Path, tag: str) -> Path:
    """A new hidden folder beside ``out`` (same file system: renames between them are atomic)."""
    resolved = out.resolve()
    return Path(tempfile.mkdtemp(prefix=f".{resolved.name}.{tag}-", dir=resolved.parent))


def check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ShardInputError(f"--out {out} is a file, not a folder")
    old = shard_set(out)
    if old and not overwrite:
        raise ShardInputError(f"{out} already holds shards ({old[0].name}, ...); pass --overwrite to replace them")


def commit(temp: Path, out: Path) -> None:
    """Move the complete set written in ``temp`` into ``out``. The old set goes aside first, into a
    hidden sibling (only left behind if this few-renames step is interrupted), the manifest last:
    ``out`` never lists a shard it does not hold."""
    out.mkdir(exist_ok=True)
    old = shard_set(out)
    aside = hidden_sibling(out, "old") if old else None
    for path in old:
        assert aside is not None
        os.replace(path, aside / path.name)
    for path in sorted(temp.iterdir(), key=lambda p: p.name == MANIFEST):
        os.replace(path, out / path.name)
    temp.rmdir()
    if aside is not None:
        shutil.rmtree(aside)


__all__ = ["check_out", "commit", "hidden_sibling", "shard_set"]
