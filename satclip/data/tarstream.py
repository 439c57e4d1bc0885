"""Reading one shard: a tar stream (local file, ``http(s)://`` or ``pipe:`` via WebDataset's
``gopen``) -> raw samples ``{"__key__", "__url__", ext: bytes}``.

The tar reader is our own so that a truncated or garbage tar is detected and named exactly
(Python's ``tarfile`` in stream mode ends silently at a bad header); an unreadable rest of a
shard is counted once as a ``shard`` skip and the stream goes on.
"""

from __future__ import annotations

import gzip
import logging
from collections.abc import Iterator

from .errors import SkipCounter

log = logging.getLogger("satclip.data")


class ShardError(Exception):
    """A shard is truncated, is not a tar, or could not be read; ``member``: the file being read."""

    def __init__(self, message: str, member: str | None = None) -> None:
        super().__init__(message)
        self.member = member


_BLOCK = 512
_ZERO_BLOCK = bytes(_BLOCK)


def _read_exact(stream, n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        chunk = stream.read(n - got)
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _header_number(field: bytes) -> int:
    if field[0] & 0x80:  # GNU base-256 for large values
        return int.from_bytes(field[1:], "big")
    text = field.split(b"\0", 1)[0].strip()
    return int(text, 8) if text else 0


def _parse_pax(data: bytes) -> dict[str, str]:
    records, pos = {}, 0
    while pos < len(data):
        space = data.index(b" ", pos)
        length = int(data[pos:space])
        key, _, value = data[space + 1 : pos + length - 1].partition(b"=")
        records[key.decode("utf-8")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return records


def iter_tar(stream) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of each regular file in a tar stream, in order (ustar, pax and GNU long names).

    Raises :class:`ShardError` naming the byte offset when the stream ends before the
    end-of-archive marker (truncated) or a header is invalid (garbage)."""
    offset = 0
    long_name: str | None = None
    pax: dict[str, str] = {}
    while True:
        header = _read_exact(stream, _BLOCK)
        if not header and offset == 0:
            raise ShardError("empty: no data at all")
        if len(header) < _BLOCK:
            where = "at a member boundary" if not header else "inside a header"
            raise ShardError(f"truncated tar: the data ends {where} at byte {offset + len(header)}, before the end-of-archive marker")
        if header == _ZERO_BLOCK:
            return
        try:
            stored = _header_number(header[148:156])
            size = int(pax["size"]) if "size" in pax else _header_number(header[124:136])
        except (ValueError, KeyError) as exn:
            raise ShardError(f"not a tar archive: invalid header at byte {offset} ({exn})") from None
        unsigned = sum(header[:148]) + 8 * 32 + sum(header[156:])
        if stored != unsigned and stored != unsigned - 256 * sum(b > 127 for b in header[:148] + header[156:]):
            raise ShardError(f"not a tar archive: header checksum mismatch at byte {offset}")
        kind = header[156:157]
        name = header[:100].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        prefix = header[345:500].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        if header[257:262] == b"ustar" and prefix:
            name = f"{prefix}/{name}"
        name = pax.get("path", long_name or name)
        padded = size + (-size) % _BLOCK
        data = _read_exact(stream, padded)
        if len(data) < padded:
            raise ShardError(f"truncated tar: member {name!r} at byte {offset} needs {padded} bytes, only {len(data)} left", name)
        data = data[:size]
        offset += _BLOCK + padded
        if kind == b"x":
            pax = _parse_pax(data)
            continue
        if kind == b"L":
            long_name = data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            continue
        long_name, pax = None, {}
        if kind in (b"0", b"\0", b"7"):
            yield name, data


def _split_name(name: str) -> tuple[str, str] | None:
    """WebDataset's key/extension split: key up to the first dot of the base name."""
    directory, _, base = name.rpartition("/")
    if base.startswith("__") and base.endswith("__"):
        return None
    stem, dot, ext = base.partition(".")
    if not dot or not stem:
        return None
    return (f"{directory}/{stem}" if directory else stem), ext.lower()


def iter_shard(url: str, counter: SkipCounter) -> Iterator[dict]:
    """Raw samples ``{"__key__", "__url__", ext: bytes, ...}`` of one shard. An unreadable rest
    of the shard (open failure, truncation, garbage) is counted once as a ``shard`` skip."""
    from webdataset.gopen import gopen

    key = None
    try:
        source = gopen(url, "rb")
    except Exception as exn:  # noqa: BLE001 - any failure to open a shard is data, not a bug
        counter.record("shard", url, key=None, cause=f"cannot open: {exn!r}")
        return
    stream = gzip.GzipFile(fileobj=source) if url.endswith((".gz", ".tgz")) else source
    current: dict | None = None
    closed = False
    try:
        for name, data in iter_tar(stream):
            split = _split_name(name)
            if split is None:
                continue
            key, ext = split
            if current is not None and key != current["__key__"]:
                yield current
                current = None
            if current is None:
                current = {"__key__": key, "__url__": url}
            current[ext] = data
        if current is not None:
            yield current
    except Exception as exn:  # noqa: BLE001 - truncated, garbage, network or pipe errors
        failed = _split_name(exn.member) if isinstance(exn, ShardError) and exn.member else None
        complete = current if current is not None and failed and failed[0] != current["__key__"] else None
        closing, closed = _close(source), True
        cause = f"{exn}" + (f"; {closing}" if closing else "")
        counter.record("shard", url, key=failed[0] if failed and complete else key, cause=f"{cause} (rest of shard skipped)")
        if complete is not None:
            yield complete  # the truncation hit the next sample's first member: this one is whole
    finally:
        if not closed and (closing := _close(source)):
            log.debug("%s: %s", url, closing)


def _close(stream) -> str | None:
    """Close a shard stream; a ``pipe:`` command's failure (its exit status) is returned as text."""
    try:
        stream.close()
    except Exception as exn:  # noqa: BLE001 - e.g. "exit 1" of the pipe's command
        return f"closing the stream: {exn}"
    return None


__all__ = ["ShardError", "iter_shard", "iter_tar"]
