"""The one weights-only reader of PyTorch files, with errors that say what is wrong with the file.

Every ``.ckpt`` / ``.pt`` / ``.pth`` that satclip reads (released and training checkpoints, resumed
runs, image-tower weights) goes through :func:`load_weights`. ``torch.load(weights_only=True)``
reports a hostile pickle, a corrupt zip, an empty file and a text file alike as unpickling, runtime,
EOF or key errors; :func:`checked_load` sorts them: pickled code is an :class:`UnsafeCheckpointError`
(nothing in the file ran), anything else a :class:`CheckpointReadError` ("not a readable PyTorch
checkpoint"). Imports only torch: the lowest floor, usable from every other.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from typing import IO, Any

import torch


class UnsafeCheckpointError(pickle.UnpicklingError, ValueError):
    """A checkpoint holds objects that ``torch.load(weights_only=True)`` refuses to build."""


class CheckpointReadError(ValueError):
    """A file that is not a readable PyTorch checkpoint, or not the kind of checkpoint needed."""


def unsafe_checkpoint_error(path: str | os.PathLike, err: Exception) -> UnsafeCheckpointError:
    """The error for a file that ``torch.load(weights_only=True)`` refused: what, why, and that nothing ran."""
    lines = str(err).strip().splitlines()
    culprit = next((line.strip() for line in lines if "GLOBAL" in line), lines[0].strip() if lines else "")
    return UnsafeCheckpointError(
        f"refusing to load {os.fspath(path)!r}: it contains objects that plain-weights loading "
        f"(torch.load weights_only=True) does not allow, and unpickling them could run code; nothing in "
        f"the file was run. Only load it with weights_only=False if you made it yourself. {culprit}"
    )


def _unreadable(path: str | os.PathLike, err: Exception) -> CheckpointReadError:
    path = os.fspath(path)
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        why = "an empty file"
    elif isinstance(err, pickle.UnpicklingError):
        why = "unpickling failed"
    else:
        lines = str(err).strip().splitlines()
        why = f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__
    return CheckpointReadError(f"{path!r} is not a readable PyTorch checkpoint ({why}): corrupt, truncated or another kind of file")


def checked_load(load: Callable[[], Any], path: str | os.PathLike) -> Any:
    """``load()`` (a weights-only ``torch.load`` of ``path``) with the errors sorted as above;
    missing files and permissions keep their own errors."""
    try:
        return load()
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        raise
    except pickle.UnpicklingError as err:
        if "Unsupported global" in str(err):
            raise unsafe_checkpoint_error(path, err) from None
        raise _unreadable(path, err) from None
    except Exception as err:  # noqa: BLE001 - torch reports a bad file as RuntimeError, EOFError, KeyError, ...
        raise _unreadable(path, err) from None


def load_weights(path: str | os.PathLike, map_location: Any = "cpu", *, mmap: bool = False, opener: Callable[[], IO[bytes]] | None = None) -> Any:
    """``torch.load(path, weights_only=True)`` with the errors sorted as above.

    ``mmap`` memory-maps a local file (tensors are read when used); ``opener`` gives a binary file
    object instead of opening ``path`` (remote URLs; ``path`` then only names it in errors)."""

    def load() -> Any:
        if opener is not None:
            with opener() as f:
                return torch.load(f, map_location=map_location, weights_only=True)
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)

    return checked_load(load, path)


__all__ = ["CheckpointReadError", "UnsafeCheckpointError", "checked_load", "load_weights", "unsafe_checkpoint_error"]
