"""Resolve remote checkpoint names to local files through huggingface_hub, cache first; https URLs too.

Hub names: a released model's name (``satclip-resnet18-l10``, see ``satclip.pretrained``),
``hf-hub:owner/repo/file`` (a file), ``hf-hub:owner/repo`` (an exported tower, ``config.json`` +
``model.safetensors``, or a released model's file) and the bare ``owner/Name`` alias
(``name.lower() + ".ckpt"``, the released naming) or ``owner/Name/file``. The cache is
huggingface_hub's own, so ``HF_HOME``, ``HF_HUB_CACHE``, ``XDG_CACHE_HOME``, ``HF_HUB_OFFLINE`` and
``~`` mean what they mean to every Hugging Face library (read when huggingface_hub is imported).

Offline (``HF_HUB_OFFLINE=1`` or no route to the host within 3 s) a name that is not cached fails
at once with a message naming the file to fetch and where to put it, instead of retrying DNS for ~20 s.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from ..pretrained import get_pretrained
from .layout import EXPORT_FILES

HUB_HOST = "huggingface.co"
HF_HUB_PREFIX = "hf-hub:"
_CHECKPOINT_SUFFIX = r"\.(ckpt|pt|pth|safetensors)"
_NAME = r"[\w.-]+"
_HUB_ID = re.compile(rf"^[A-Za-z0-9][\w.-]*/{_NAME}(/{_NAME}{_CHECKPOINT_SUFFIX})?$")
_EXPLICIT = re.compile(rf"^[A-Za-z0-9][\w.-]*/{_NAME}(/{_NAME})?$")
_LOCAL_LOOKING = re.compile(rf"^[^/]+/[^/]+{_CHECKPOINT_SUFFIX}$")  # dir/file.ckpt: a path, not a repository
_TRUE = {"1", "on", "yes", "true"}


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


def cache_dir() -> Path:
    """huggingface_hub's cache (``HF_HUB_CACHE``, else ``HF_HOME/hub``, else ``XDG_CACHE_HOME/huggingface/hub``, else ``~/.cache/huggingface/hub``)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def is_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` is set truthy (now, or when huggingface_hub was imported)."""
    from huggingface_hub import constants

    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE or bool(constants.HF_HUB_OFFLINE)


def host_reachable(host: str, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to ``host:443`` opens within ``timeout`` seconds (DNS included)."""
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, 443), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def offline_reason(host: str = HUB_HOST) -> str | None:
    """Why ``host`` cannot be reached (``HF_HUB_OFFLINE`` is set, or no connection within 3 s), or None when it can."""
    if is_offline():
        return "HF_HUB_OFFLINE is set"
    if not host_reachable(host):
        return f"no connection to {host} within 3 s"
    return None


def _offline_error(what: str, fetch: str, place: str, reason: str = "the network is unavailable") -> FileNotFoundError:
    return FileNotFoundError(
        f"{what} is not in the local cache and {reason} (offline). "
        f"Fetch {fetch} on a machine with network access and put it at {place} "
        f"(or pass the downloaded file's path instead)."
    )


def _verify(path: Path, sha256: str | None, source: str) -> Path:
    if sha256 is None:
        return path
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != sha256.lower():
        raise ValueError(f"{source}: {str(path)!r} has sha256 {digest.hexdigest()}, expected {sha256} (a corrupt or different file)")
    return path


def _cached(file: HubFile, filename: str) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(file.repo_id, filename, revision=file.revision)
    return Path(found) if isinstance(found, str) else None


def resolve_hub_id(source: str) -> Path:
    """Local path of a hub name (a file, or an export's folder), from the cache if present, else downloaded."""
    from huggingface_hub import hf_hub_download

    file = parse_hub_id(source)
    paths = [_cached(file, name) for name in file.filenames]
    missing = [name for name, path in zip(file.filenames, paths) if path is None]
    if missing:
        reason = offline_reason()
        if reason is not None:
            folder = cache_dir() / f"models--{file.repo_id.replace('/', '--')}"
            revision = file.revision or "main"
            raise _offline_error(
                f"hub {'files' if len(missing) > 1 else 'file'} {', '.join(map(repr, missing))} of repository {file.repo_id!r} "
                f"(for {source!r}; no local path of that name exists either)",
                " and ".join(f"https://{HUB_HOST}/{file.repo_id}/resolve/{revision}/{name}" for name in missing),
                f"{folder}/snapshots/<revision>/ with {folder}/refs/main holding <revision> "
                f"(`huggingface-cli download {file.repo_id} {' '.join(missing)}"
                f"{' --revision ' + file.revision if file.revision else ''}` does this; the cache is {cache_dir()})",
                reason,
            )
        paths = [Path(hf_hub_download(file.repo_id, name, revision=file.revision)) for name in file.filenames]
    located = [p for p in paths if p is not None]
    if file.filenames == EXPORT_FILES:
        return located[0].parent
    return _verify(located[0], file.sha256, source)


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
    reason = offline_reason(parsed.hostname or "")
    if reason is not None:
        raise _offline_error(f"checkpoint URL {url!r}", url, str(target), reason)
    cache.mkdir(parents=True, exist_ok=True)
    torch.hub.download_url_to_file(url, str(target), progress=True)
    return target


def push_folder(folder: str | Path, repo_id: str, token: str | None = None, private: bool = False) -> str:
    """Upload ``folder`` (an export) to the Hub model repository ``repo_id``, creating it; returns its URL."""
    from huggingface_hub import HfApi, get_token

    reason = offline_reason()
    if reason is not None:
        raise ConnectionError(f"cannot push {str(folder)!r} to {repo_id!r}: {reason} (offline); push it later with the same command")
    token = token or get_token()
    if token is None:
        raise PermissionError(f"pushing to {repo_id!r} needs a Hugging Face token: run `hf auth login` or set HF_TOKEN")
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message="satclip export")
    return f"https://{HUB_HOST}/{repo_id}"


__all__ = ["HubFile", "cache_dir", "host_reachable", "is_hub_id", "is_offline", "parse_hub_id", "push_folder", "resolve_hub_id", "resolve_url"]
