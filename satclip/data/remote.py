"""Inputs of ``satclip shards`` given as URLs: ``https://``, ``s3://``, ``gs://``, ``hf://datasets/...``.

Read through fsspec (the ``remote`` extra: fsspec's HTTP file system needs aiohttp; ``s3://`` needs
s3fs, ``gs://`` gcsfs, installed beside it; ``hf://`` is huggingface_hub's ``HfFileSystem``, in the
core). Credentials are the backends' own: AWS_* variables and ``~/.aws``, Google's application
default credentials, ``HF_TOKEN`` / ``hf auth login``; satclip takes none of its own.

Parquet is opened for range reads (:func:`parquet_file`: no read-ahead cache, so pyarrow fetches
the footer and then only the column chunks of the row groups it reads); a tar is read as a stream
(:func:`open_stream`). An HTTP connection or read that stalls fails after :data:`TIMEOUT_S`
seconds; any failure to reach or read a URL is a :class:`~satclip.data.sources.ShardInputError`
naming it (:class:`RemoteReadError` when it is not a missing file).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from ..extras import MissingExtraError, requires_extra
from .sources import ShardInputError

SCHEMES = ("http", "https", "s3", "gs", "gcs", "hf")
TIMEOUT_S = 5.0
"""Seconds an HTTP(S) connection or a read may stall before the run stops naming the URL."""
STREAM_BLOCK = 8 * 2**20
"""Read-ahead of a sequentially read remote file (tars)."""
_BACKEND = {"s3": "s3fs", "gs": "gcsfs", "gcs": "gcsfs"}
"""Backends the ``remote`` extra leaves out (install them beside it)."""


class RemoteReadError(ShardInputError):
    """A URL could not be reached or read (network, timeout, server error): a run stopped by it can
    be resumed (:mod:`satclip.data.resume`)."""


def is_url(location: str | Path) -> bool:
    """Whether ``location`` is a URL of one of :data:`SCHEMES` (a Path never is)."""
    return isinstance(location, str) and location.partition("://")[0].lower() in SCHEMES and "://" in location


def join(base: str, *names: str) -> str:
    """``base/name/...`` for a URL (or a local path as text)."""
    return "/".join([base.rstrip("/"), *names])


def name_of(location: str | Path) -> str:
    """The file name at the end of a path or URL."""
    return str(location).rstrip("/").rsplit("/", 1)[-1]


def options(url: str) -> dict[str, Any]:
    """The fsspec options satclip sets for ``url``'s file system: HTTP(S) :data:`TIMEOUT_S` timeouts."""
    if url.partition("://")[0].lower() not in ("http", "https"):
        return {}
    with requires_extra(f"satclip shards of {url}"):
        import aiohttp
    return {"client_kwargs": {"timeout": aiohttp.ClientTimeout(total=None, sock_connect=TIMEOUT_S, sock_read=TIMEOUT_S)}}


@contextlib.contextmanager
def backend(url: str) -> Iterator[None]:
    """Turn fsspec's ImportError for a missing backend (s3fs, gcsfs, aiohttp) into MissingExtraError naming it."""
    try:
        yield
    except ImportError as err:
        protocol = url.partition("://")[0].lower()
        name = _BACKEND.get(protocol, err.name or "its fsspec backend")
        hint = f'pip install "satclip[remote]" {name}' if protocol in _BACKEND else 'pip install "satclip[remote]"'
        raise MissingExtraError(f"satclip shards of {url} needs {name!r}, which satclip leaves out: {hint}", name=name) from err


def filesystem(url: str) -> tuple[Any, str]:
    """(fsspec file system, path in it) for ``url``, with :func:`options`."""
    with backend(url):
        import fsspec

        return fsspec.core.url_to_fs(url, **options(url))


@contextlib.contextmanager
def reading(location: str | Path) -> Iterator[None]:
    """Turn a failure to reach or read ``location``, a URL, into a ShardInputError naming it (a local
    path: errors pass unchanged, for the caller's own message)."""
    if not is_url(location):
        yield
        return
    try:
        yield
    except (ShardInputError, MissingExtraError):
        raise
    except Exception as err:  # noqa: BLE001 - aiohttp, botocore, httpx and pyarrow errors alike: name the URL and the cause
        if _missing(err):
            raise ShardInputError(f"{location} does not exist (or is not readable with the credentials in the environment)") from None
        why = err.__cause__ if isinstance(err, FileNotFoundError) and err.__cause__ is not None else err
        raise RemoteReadError(f"{location}: cannot be read ({type(why).__name__}: {why}); check the address, the network and the credentials") from err


def _missing(err: Exception) -> bool:
    """Whether ``err`` says the file is not there (fsspec's HTTP file system raises FileNotFoundError
    for any failure, with the reason as its cause: only a 403/404/410 reply means missing)."""
    cause = err.__cause__
    return isinstance(err, FileNotFoundError) and (cause is None or getattr(cause, "status", None) in (403, 404, 410))


def exists(url: str) -> bool:
    """Whether ``url`` is a file or folder; an unreachable URL raises (fsspec's own ``exists`` says False)."""
    fs, path = filesystem(url)
    try:
        with backend(url):
            fs.info(path)
    except Exception as err:  # noqa: BLE001 - see reading()
        if _missing(err):
            return False
        with reading(url):
            raise
    return True


def glob(pattern: str) -> list[str]:
    """The URLs matching a glob ``pattern``, sorted (not for HTTP(S), which cannot list a folder)."""
    fs, path = filesystem(pattern)
    protocol = pattern.partition("://")[0]
    with reading(pattern):
        found = fs.glob(path)
    return sorted(p if "://" in p else f"{protocol}://{p}" for p in found)


@contextlib.contextmanager
def open_ranges(url: str) -> Iterator[IO[bytes]]:
    """``url`` open for random access, each read one range request (no read-ahead)."""
    fs, path = filesystem(url)
    with reading(url):
        with fs.open(path, "rb", cache_type="none") as f:
            yield f


@contextlib.contextmanager
def open_stream(url: str) -> Iterator[IO[bytes]]:
    """``url`` open for reading front to back, with read-ahead."""
    fs, path = filesystem(url)
    with reading(url):
        with fs.open(path, "rb", block_size=STREAM_BLOCK, cache_type="readahead") as f:
            yield f


@contextlib.contextmanager
def parquet_file(location: str | Path) -> Iterator[Any]:
    """A ``pyarrow.parquet.ParquetFile`` of a local path or a URL (range reads: only what is read is
    fetched). Wrap its use in :func:`reading` for a URL's errors."""
    with requires_extra(f"reading Parquet ({location})"):
        import pyarrow.parquet as pq
    if not is_url(location):
        yield pq.ParquetFile(location)
        return
    with open_ranges(str(location)) as f, reading(location):
        yield pq.ParquetFile(f)


__all__ = [
    "SCHEMES",
    "TIMEOUT_S",
    "backend",
    "exists",
    "filesystem",
    "glob",
    "is_url",
    "join",
    "name_of",
    "open_ranges",
    "open_stream",
    "options",
    "parquet_file",
    "reading",
]
