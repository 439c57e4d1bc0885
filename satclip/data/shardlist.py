"""Shard lists: a directory (its ``manifest.json``), brace patterns, lists, ``http(s)://`` and
``pipe:`` URLs -> the shard URLs to read, and the manifest's sample counts and band order."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

MANIFEST = "manifest.json"
MANIFEST_VERSION = 2
"""The manifest format ``satclip shards`` writes. 1 (no ``version`` field): format, payload, dtype,
bands, shards, samples. 2 adds ``version``, ``with_time`` (samples whose record has a time),
``skipped`` and ``filtered`` (counts by kind). Optional: ``selection`` (Major TOM rows chosen),
``part`` (one part of a split run) and ``parts`` (a combined set, :mod:`satclip.data.combine`).
Readers take any version up to this one."""


def _is_local(url: str) -> bool:
    return urlparse(url).scheme in ("", "file")


def _local_path(url: str) -> Path:
    return Path(urlparse(url).path if url.startswith("file:") else url)


def expand_urls(urls: str | Sequence[str]) -> list[str]:
    """Shard URLs from a directory (the shards its ``manifest.json`` lists), a brace pattern,
    a ``::``-separated string or a list of any of these. Local shards must exist; ``http(s)://``
    and ``pipe:`` URLs are passed through untouched."""
    from webdataset.shardlists import expand_urls as wds_expand

    items = [urls] if isinstance(urls, (str, os.PathLike)) else list(urls)
    out: list[str] = []
    for item in map(str, items):
        if _is_local(item) and _local_path(item).is_dir():
            out += _directory_shards(_local_path(item))
        else:
            out += wds_expand(item)
    if not out:
        raise ValueError(f"no shards matched {urls!r}")
    missing = [u for u in out if _is_local(u) and not _local_path(u).is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} of {len(out)} shards of {urls!r} do not exist; first: {missing[0]}")
    return out


def _directory_shards(directory: Path) -> list[str]:
    """The shards a directory's ``manifest.json`` lists; a directory without one is refused (it may
    hold an interrupted write), unless the shards are named explicitly (a pattern or a list)."""
    manifest = directory / MANIFEST
    if manifest.is_file():
        return [str(directory / s["name"]) for s in json.loads(manifest.read_text())["shards"]]
    shards = sorted(p.name for p in directory.iterdir() if p.name.endswith((".tar", ".tar.gz", ".tgz")))
    if not shards:
        raise ValueError(f"{directory}: a directory of shards needs a {MANIFEST} (written by `satclip shards`); it has neither that nor *.tar files")
    raise ValueError(
        f"{directory} has {len(shards)} tar files ({shards[0]}, ...) but no {MANIFEST}: not a complete shard set "
        f"(`satclip shards` writes the manifest last). Name the shards explicitly to read them anyway: a brace "
        f"pattern such as '{directory}/shard-{{000000..000009}}.tar' or a list of files"
    )


def read_manifest(urls: Sequence[str]) -> tuple[dict[str, int] | None, tuple[str, ...] | None]:
    """Sample count per shard and band order from the ``manifest.json`` beside local shards.

    Returns (None, None) where unknown (remote shards, no manifest, a shard not listed)."""
    counts: dict[str, int] = {}
    bands = None
    manifests: dict[Path, dict] = {}
    for url in urls:
        if not _is_local(url):
            return None, None
        path = _local_path(url)
        if path.parent not in manifests:
            file = path.parent / MANIFEST
            manifests[path.parent] = json.loads(file.read_text()) if file.is_file() else {}
        manifest = manifests[path.parent]
        check_manifest_version(manifest, path.parent / MANIFEST)
        listed = {s["name"]: int(s["samples"]) for s in manifest.get("shards", [])}
        if path.name not in listed:
            return None, None
        counts[url] = listed[path.name]
        bands = bands or tuple(manifest.get("bands") or ()) or None
    return counts, bands


def check_manifest_version(manifest: dict, where: object) -> int:
    """The manifest's format version (1 when it has no ``version``: sets written before time was
    carried); a newer one than this satclip reads is refused with a clear error."""
    version = int(manifest.get("version", 1))
    if version > MANIFEST_VERSION:
        raise ValueError(f"{where}: manifest version {version} is newer than this satclip reads ({MANIFEST_VERSION}); upgrade satclip")
    return version


__all__ = ["MANIFEST", "MANIFEST_VERSION", "check_manifest_version", "expand_urls", "read_manifest"]
