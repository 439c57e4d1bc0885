"""Atomic checkpoint writing and weights-only reading for Lightning.

A run killed while ``last.ckpt`` is being written must still find the previous ``last.ckpt``
intact. ``AtomicCheckpointIO`` writes to a hidden temporary file in the target's directory,
flushes and fsyncs it, renames it over the target with ``os.replace`` (atomic on POSIX) and fsyncs
the directory so the rename itself survives a power loss. Every ModelCheckpoint file, including
``last.ckpt`` with ``save_last=True`` (saved through ``trainer.save_checkpoint``), goes through it;
``save_last="link"`` (delete, then symlink) bypasses it and is refused by ``Preemption``.
Reading always uses ``torch.load(weights_only=True)``: a checkpoint that would run code when
unpickled is refused.
"""

from __future__ import annotations

import glob
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.plugins.io import TorchCheckpointIO
from typing_extensions import override

from ..safeload import CheckpointReadError, UnsafeCheckpointError, load_weights, unsafe_checkpoint_error

__all__ = [
    "AtomicCheckpointIO",
    "CheckpointReadError",
    "UnsafeCheckpointError",
    "atomic_torch_save",
    "is_local",
    "resumable_checkpoint",
    "safe_torch_load",
    "unsafe_checkpoint_error",
]

_TMP_SUFFIX = ".tmp"
_PATH = str | Path


def is_local(path: _PATH) -> bool:
    """Whether ``path`` is on the local file system (a plain path or ``file://``), not an fsspec URL."""
    return isinstance(get_filesystem(path), LocalFileSystem)


def _temp_prefix(path: str) -> str:
    # Hidden and not ending in .ckpt, so ModelCheckpoint's "last" lookup never picks it up.
    return "." + os.path.basename(path) + "."


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_stale_temps(path: str) -> None:
    """Delete temporaries of ``path`` left behind by writers that were killed (SIGKILL)."""
    directory = os.path.dirname(path) or "."
    pattern = os.path.join(glob.escape(directory), glob.escape(_temp_prefix(path)) + "*" + _TMP_SUFFIX)
    for stale in glob.glob(pattern):
        try:
            os.remove(stale)
        except FileNotFoundError:
            pass


def atomic_torch_save(obj: Any, path: _PATH) -> None:
    """``torch.save`` to a local ``path`` so that readers see either the old or the new file, whole."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, _temp_prefix(path) + secrets.token_hex(6) + _TMP_SUFFIX)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, as for torch.save
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(directory)
    _remove_stale_temps(path)


def safe_torch_load(path: _PATH, map_location: Any = "cpu", *, mmap: bool = False) -> Any:
    """``torch.load(path, weights_only=True)`` (local or fsspec URL) with clear errors (see
    :mod:`satclip.safeload`): pickled code refused, an empty, corrupt or foreign file named so.

    ``mmap``: memory-map a local file (its tensors are not read until used)."""

    if is_local(path):
        return load_weights(os.fspath(path).removeprefix("file://"), map_location=map_location, mmap=mmap)
    return load_weights(path, map_location=map_location, opener=lambda: get_filesystem(path).open(path, "rb"))


def resumable_checkpoint(checkpoint: Any, path: _PATH) -> dict[str, Any]:
    """``checkpoint`` if it is a Lightning training checkpoint (``state_dict``, ``global_step``), else a
    :class:`CheckpointReadError` saying what it is instead."""
    if not isinstance(checkpoint, dict):
        raise CheckpointReadError(f"{os.fspath(path)!r} is not a satclip/Lightning checkpoint: it holds a {type(checkpoint).__name__}")
    missing = [k for k in ("state_dict", "global_step") if k not in checkpoint]
    if missing:
        raise CheckpointReadError(
            f"{os.fspath(path)!r} is not a satclip/Lightning checkpoint: no {missing} entry (keys: {sorted(map(str, checkpoint))[:8]}); "
            "to start from a model's weights use --model.init_from"
        )
    return checkpoint


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning ``CheckpointIO``: atomic local writes (temp + fsync + rename), weights-only reads.

    Remote URLs (``s3://``, ``gs://``...) use Lightning's upload, which object stores make atomic.
    Use as ``Trainer(plugins=[AtomicCheckpointIO()])`` or, in a LightningCLI config,
    ``trainer.plugins: [{class_path: satclip.train.checkpoint_io.AtomicCheckpointIO}]``.
    """

    @override
    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        if storage_options is not None or not is_local(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        atomic_torch_save(checkpoint, path)

    @override
    def load_checkpoint(
        self,
        path: _PATH,
        map_location: Callable | None = lambda storage, loc: storage,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        """Load with ``weights_only=True`` whatever the caller asks (resuming never runs pickled code);
        refuse a file that is not a Lightning training checkpoint."""
        if not get_filesystem(path).exists(path):
            raise FileNotFoundError(f"Checkpoint file not found: {path}")
        return resumable_checkpoint(safe_torch_load(path, map_location=map_location), path)
