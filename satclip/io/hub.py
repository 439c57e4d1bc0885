"""Resolve remote checkpoint names to local files through huggingface_hub, cache first; https URLs too.

Hub names: a released model's name (``satclip-resnet18-l10``, see ``satclip.pretrained``),
``hf-hub:owner/repo/file`` (a file), ``hf-hub:owner/repo`` (an exported tower, ``config.json`` +
``model.safetensors``, or a released model's file) and the bare ``owner/Name`` alias
(``name.lower() + ".ckpt"``, the released naming) or ``owner/Name/file``. The cache is
huggingface_hub's own, so ``HF_HOME``, ``HF_HUB_CACHE``, ``XDG_CACHE_HOME``, ``HF_HUB_OFFLINE`` and
``~`` mean what they mean to every Hugging Face library (read when huggingface_hub is imported).

Downloads, the cache and the offline check are ``satclip.hubfiles``'s (huggingface_hub's own HTTP
client, so proxies and ``HF_ENDPOINT`` mirrors work): offline, a name that is not cached fails at once
with a message naming the file to fetch and where to put it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from ..hubfiles import HF_HUB_PREFIX, cache_dir, fetch, is_offline, offline_error, offline_reason, push_folder, verify_sha256
from ..location.serialization import EXPORT_FILES
from ..pretrained import get_pretrained

_CHECKPOINT_SUFFIX = r"\.(ckpt|pt|pth|safetensors)"
_NAME = r"[\w.-]+"
_HUB_ID = re.compile(rf"^[A-Za-z0-9][\w.-]*/{_NAME}(/{_NAME}{_CHECKPOINT_SUFFIX})?$")
_EXPLICIT = re.compile(rf"^[A-Za-z0-9][\w.-]*/{_NAME}(/{_NAME})?$")
_LOCAL_LOOKING = re.compile(rf"^[^/]+/[^/]+{_CHECKPOINT_SUFFIX}$")  # dir/file.ckpt: a path, not a repository


@dataclass(frozen=True)
class HubFile:
    """What a hub name points at: files of one repository (at a revision, with a sha256 where known)."""

    repo_id: str
    filenames: tuple[str, ...]  # one checkpoint, or an export's EXPORT_FILES
    revision: str | None = None
    sha256: str | None = None


def is_hub_id(source: str) -> bool:
    """A registered name, ``hf-hub:owner/repo[/file]``, or ``owner/name[/file.ckpt]``."""
    if get_pretrained(source) is not None and "/" not in source:
        return True
    if source.startswith(HF_HUB_PREFIX):
        return bool(_EXPLICIT.match(source[len(HF_HUB_PREFIX) :]))
    return bool(_HUB_ID.match(source)) and not _LOCAL_LOOKING.match(source)


def hub_filename(repo_id: str) -> str:
    """The released checkpoints' naming: ``microsoft/SatCLIP-ResNet18-L10`` -> ``satclip-resnet18-l10.ckpt``."""
    return repo_id.split("/")[1].lower() + ".ckpt"


def parse_hub_id(source: str) -> HubFile:
    """The repository, files, revision and sha256 a hub name points at (see the module docstring)."""
    if "/" not in source:
        weights = get_pretrained(source)
        if weights is None:
            raise ValueError(f"{source!r} is not a released model name; choose from satclip.list_pretrained()")
        return HubFile(weights.repo_id, (weights.filename,), weights.revision, weights.sha256)
    explicit = source.startswith(HF_HUB_PREFIX)
    parts = source.removeprefix(HF_HUB_PREFIX).split("/")
    repo_id = "/".join(parts[:2])
    weights = get_pretrained(repo_id)
    if len(parts) == 3:
        filename = parts[2]
        if weights is not None and filename == weights.filename:
            return HubFile(weights.repo_id, (filename,), weights.revision, weights.sha256)
        return HubFile(repo_id, (filename,))
    if weights is not None:
        return HubFile(weights.repo_id, (weights.filename,), weights.revision, weights.sha256)
    return HubFile(repo_id, EXPORT_FILES if explicit else (hub_filename(repo_id),))


def resolve_hub_id(source: str) -> Path:
    """Local path of a hub name (a file, or an export's folder), from the cache if present, else downloaded."""
    file = parse_hub_id(source)
    listed = ", ".join(map(repr, file.filenames))
    what = f"hub {'files' if len(file.filenames) > 1 else 'file'} {listed} of repository {file.repo_id!r} (for {source!r}; no local path of that name exists either)"
    paths = fetch(file.repo_id, file.filenames, revision=file.revision, what=what)
    if file.filenames == EXPORT_FILES:
        return paths[0].parent
    return verify_sha256(paths[0], file.sha256, source=source)


def resolve_url(url: str, cache_dir: str | Path | None = None) -> Path:
    """Local copy of an https checkpoint URL (kept under ``<torch hub dir>/checkpoints``); only https is accepted."""
    parsed = urlparse(url)
    if parsed.scheme != "https":
        raise ValueError(f"checkpoint URL {url!r}: only https URLs are accepted")
    import torch.hub

    cache = Path(cache_dir) if cache_dir is not None else Path(torch.hub.get_dir()) / "checkpoints"
    target = cache / Path(parsed.path).name
    if target.is_file():
        return target
    reason = offline_reason(url)
    if reason is not None:
        raise offline_error(f"checkpoint URL {url!r}", url, place=str(target), reason=reason)
    cache.mkdir(parents=True, exist_ok=True)
    torch.hub.download_url_to_file(url, str(target), progress=True)
    return target


__all__ = ["HubFile", "cache_dir", "is_hub_id", "is_offline", "parse_hub_id", "push_folder", "resolve_hub_id", "resolve_url"]
