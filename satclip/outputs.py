"""Writing an output: whole or not at all, and never over an existing one unless asked.

Every command that writes a file or folder goes through :func:`refuse_existing` (an existing output
is kept unless ``--overwrite``) and :func:`written_whole` (the output is written under a temporary
``NAME.partial`` beside it and renamed into place only when complete; an error, Ctrl-C or SIGTERM
removes the partial). Checkpoints (``satclip.train.checkpoint_io``: fsync, unique temporary names for
concurrent writers) and resumable shard sets (``satclip.data.resume``) have their own.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class OutputExistsError(ValueError):
    """An output is already there and ``--overwrite`` was not given."""


def partial_path(path: Path) -> Path:
    """The temporary name an output is written under before it is renamed into place."""
    return path.with_name(path.name + ".partial")


def remove(path: Path) -> None:
    """Remove a file or a directory tree, if present."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def move_into_place(partial: Path, path: Path) -> None:
    """Rename a finished ``partial`` (file or directory) to ``path``, replacing what was there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    os.replace(partial, path)


def refuse_existing(*paths: str | Path | None, overwrite: bool, flag: str = "--overwrite") -> None:
    """Raise :class:`OutputExistsError` for the first of ``paths`` that exists, unless ``overwrite``."""
    if overwrite:
        return
    for path in paths:
        if path is not None and (Path(path).exists() or Path(path).is_symlink()):
            raise OutputExistsError(f"{path} already exists; pass {flag} to replace it")


@contextmanager
def written_whole(path: str | Path) -> Iterator[Path]:
    """Yield the temporary path to write ``path`` under; rename it into place when the block ends
    without an error, remove it otherwise (``BaseException``: Ctrl-C and SIGTERM included)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(path)
    remove(partial)  # left by a killed run
    try:
        yield partial
    except BaseException:
        remove(partial)
        raise
    move_into_place(partial, path)


__all__ = ["OutputExistsError", "move_into_place", "partial_path", "refuse_existing", "remove", "written_whole"]
