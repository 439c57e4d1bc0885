"""Inputs of ``satclip shards`` given as URLs: ``https://``, ``s3://``, ``gs://``, ``hf://datasets/...``.

Read through fsspec (the ``remote`` extra: fsspec's HTTP file system needs aiohttp; ``s3://`` needs
s3fs, ``gs://`` gcsfs, installed beside it; ``hf://`` is huggingface_hub's ``HfFileSystem``, in the
core). Credentials are the backends' own: AWS_* variables and ``~/.aws``, Google's application
default credentials, ``HF_TOKEN`` / ``hf auth login``; satclip takes none of its own.

Parquet is opened for range reads (:func:`parquet_file`: no read-ahead cache, so pyarrow fetches
the footer and then only the column chunks of the row groups it reads); a tar is read as a stream
(:func:`open_stream`). An HTTP connection or read that stalls fails after :data:`TIMEOUT_S`
seconds; any failure to reach or read a URL is a :class:`~satclip.data.sources.ShardInputError`
naming it.
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


def is_url(location: str | Path) -> bool:
    """Whether ``location`` is a URL of one of :data:`SCHEMES` (a Path never is)."""
    return isinstance(location, str) and location.partition("://")[0].lower() in SCHEMES and "://" in location


def join(base: str, *names: str) -> str:
    """``base/name/...`` for a URL (or a local path as text)."""
    return "/".join([base.rstrip("/"), *names])


def name_of(location: str | Path) -> str:
    """The file name at the end of a path or URL."""
    return str(location).rstrip("/").rsplit("/", 1)[-1]


def filesystem(url: str) -> tuple[Any, str]:
    """(fsspec file system, path in it) for ``url``; HTTP(S) with :data:`TIMEOUT_S` timeouts."""
    protocol = url.partition("://")[0].lower()
    job = f"satclip shards of {url}"
    with requires_extra(job):
        import fsspec

        options: dict[str, Any] = {}
        if protocol in ("http", "https"):
            import aiohttp

            timeout = aiohttp.ClientTimeout(total=None, sock_connect=TIMEOUT_S, sock_read=TIMEOUT_S)
            options["client_kwargs"] = {"timeout": timeout}
    try:
        return fsspec.core.url_to_fs(url, **options)
    except ImportError as err:
        backend = _BACKEND.get(protocol, err.name or "its fsspec backend")
        raise MissingExtraError(f'{job} needs {backend!r}, which satclip leaves out: pip install "satclip[remote]" {backend}', name=backend) from err


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
        cause = err.__cause__  # fsspec's HTTP file system says FileNotFoundError for any failure, the reason below
        if isinstance(err, FileNotFoundError) and (cause is None or getattr(cause, "status", None) in (403, 404, 410)):
            raise ShardInputError(f"{location} does not exist (or is not readable with the credentials in the environment)") from None
        why = cause if isinstance(err, FileNotFoundError) and cause is not None else err
        raise ShardInputError(f"{location}: cannot be read ({type(why).__name__}: {why}); check the address, the network and the credentials") from err


def exists(url: str) -> bool:
    fs, path = filesystem(url)
    with reading(url):
        return bool(fs.exists(path))


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


__all__ = ["SCHEMES", "TIMEOUT_S", "exists", "filesystem", "glob", "is_url", "join", "name_of", "open_ranges", "open_stream", "parquet_file", "reading"]
