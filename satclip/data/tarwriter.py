"""Tar shards of a fixed number of samples, written reproducibly (fixed member metadata), with the
checks that keep one shard set uniform (unique keys, one band list, dtype and shape)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

from .sources import ShardInputError

_COPY_BUFFER = 1 << 24
"""Bytes tarfile copies a member's data in at a time: a payload in one write (its default, 16 KiB, is a write per 16 KiB)."""


def shard_name(number: int) -> str:
    """The name of a set's ``number``-th shard (from 0)."""
    return f"shard-{number:06d}.tar"


class TarShards:
    """Writes samples into ``shard-%06d.tar`` files of ``per_shard`` samples in ``out``."""

    def __init__(self, out: Path, per_shard: int, *, payload: str) -> None:
        self.out, self.per_shard, self.payload = out, per_shard, payload
        self.shards: list[dict] = []
        self.dtype: str | None = None
        self.shape: list[int] | None = None
        self.bands: list[str] | None = None
        self.with_time = 0
        self._tar: tarfile.TarFile | None = None
        self._keys: set[str] = set()

    def add(self, key: str, blob: bytes, *, record: dict) -> bool:
        """Write one sample; True when it completed a shard."""
        if key in self._keys:
            raise ShardInputError(f"two inputs give the same sample key {key!r} (second: {record['source']})")
        self._keys.add(key)
        if self.dtype is None:
            self.dtype, self.shape, self.bands = record["dtype"], record["shape"], record["bands"]
        elif record["bands"] != self.bands:
            raise ShardInputError(f"{record['source']}: bands {record['bands']}, the other samples have {self.bands} (one band list per shard set)")
        elif record["dtype"] != self.dtype:
            raise ShardInputError(f"{record['source']}: dtype {record['dtype']}, the other samples are {self.dtype}")
        elif record["shape"] != self.shape:
            raise ShardInputError(
                f"{record['source']}: shape {tuple(record['shape'])}, the other samples are {tuple(self.shape or ())} (one patch size per shard set)"
            )
        if self._tar is None:
            self.shards.append({"name": shard_name(len(self.shards)), "samples": 0})
            self._tar = tarfile.TarFile(self.out / self.shards[-1]["name"], "w", format=tarfile.USTAR_FORMAT, copybufsize=_COPY_BUFFER)
        self._member(f"{key}.{self.payload}", blob)
        self._member(f"{key}.json", json.dumps(record, separators=(",", ":")).encode())
        self.shards[-1]["samples"] += 1
        self.with_time += "time" in record
        if self.shards[-1]["samples"] == self.per_shard:
            self._finish()
            return True
        return False

    def state(self) -> dict:
        """What :meth:`restore` needs to continue after the complete shards."""
        return {"shards": [dict(s) for s in self.shards], "dtype": self.dtype, "shape": self.shape, "bands": self.bands, "with_time": self.with_time}

    def restore(self, state: dict) -> None:
        """Continue after the complete shards of a saved :meth:`state` (their keys read back from the tars)."""
        self.shards = [dict(s) for s in state["shards"]]
        self.dtype, self.shape, self.bands, self.with_time = state["dtype"], state["shape"], state["bands"], state["with_time"]
        for shard in self.shards:
            with tarfile.open(self.out / shard["name"]) as tar:
                self._keys.update(name.rsplit(".", 1)[0] for name in tar.getnames())

    def close(self) -> None:
        if self._tar is not None:
            self._finish()

    def _member(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(data), 0o644, 0  # fixed metadata: reproducible shards
        assert self._tar is not None  # a shard is open
        self._tar.addfile(info, io.BytesIO(data))

    def _finish(self) -> None:
        assert self._tar is not None
        self._tar.close()
        self._tar = None


__all__ = ["TarShards", "shard_name"]
