"""Resolve remote checkpoint names to local files: Hugging Face Hub ids and https URLs, cache first.

Offline (``HF_HUB_OFFLINE=1`` or no route to the host) a name that is not cached fails at once with
a message naming the file to fetch and where to put it, instead of retrying DNS for ~20 s.
"""

from __future__ import annotations

import os
import re
import socket
import threading
from pathlib import Path
from urllib.parse import urlparse

HUB_HOST = "huggingface.co"
_CHECKPOINT_SUFFIX = r"\.(ckpt|pt|pth|safetensors)"
_HUB_ID = re.compile(rf"^[A-Za-z0-9][\w.-]*/[\w.-]+(/[\w.-]+{_CHECKPOINT_SUFFIX})?$")
_LOCAL_LOOKING = re.compile(rf"^[^/]+/[^/]+{_CHECKPOINT_SUFFIX}$")  # dir/file.ckpt: a path, not a repository
_TRUE = {"1", "on", "yes", "true"}


def is_hub_id(source: str) -> bool:
    """``owner/name`` (file ``name.lower() + '.ckpt'``) or ``owner/name/file.ckpt``."""
    return bool(_HUB_ID.match(source)) and not _LOCAL_LOOKING.match(source)


def hub_filename(repo_id: str) -> str:
    """The released checkpoints' naming: ``microsoft/SatCLIP-ResNet18-L10`` -> ``satclip-resnet18-l10.ckpt``."""
    return repo_id.split("/")[1].lower() + ".ckpt"


def hub_cache_dir() -> Path:
    """The hub cache in use: ``HF_HUB_CACHE``, else ``HF_HOME/hub``, else ``~/.cache/huggingface/hub`` (read at call time)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    return Path.home() / ".cache" / "huggingface" / "hub"


def is_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` is set truthy."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


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


def _offline_error(what: str, fetch: str, place: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"{what} is not in the local cache and the network is unavailable (offline). "
        f"Fetch {fetch} on a machine with network access and put it at {place} "
        f"(or pass the downloaded file's path instead)."
    )


def resolve_hub_id(source: str, cache_dir: str | Path | None = None) -> Path:
    """Local path of a hub checkpoint, from the cache if present, else downloaded (when online)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    parts = source.split("/")
    repo_id, filename = "/".join(parts[:2]), (parts[2] if len(parts) == 3 else hub_filename(source))
    cache = Path(cache_dir) if cache_dir is not None else hub_cache_dir()
    try:
        return Path(hf_hub_download(repo_id, filename, cache_dir=cache, local_files_only=True))
    except LocalEntryNotFoundError:
        pass
    if is_offline() or not host_reachable(HUB_HOST):
        folder = cache / f"models--{repo_id.replace('/', '--')}"
        raise _offline_error(
            f"hub checkpoint {source!r} (file {filename!r} of repository {repo_id!r}; no local path of that name exists either)",
            f"https://{HUB_HOST}/{repo_id}/resolve/main/{filename}",
            f"{folder}/snapshots/<revision>/{filename} with {folder}/refs/main holding <revision> "
            f"(`huggingface-cli download {repo_id} {filename} --cache-dir {cache}` does this)",
        )
    return Path(hf_hub_download(repo_id, filename, cache_dir=cache))


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
    if is_offline() or not host_reachable(parsed.hostname or ""):
        raise _offline_error(f"checkpoint URL {url!r}", url, str(target))
    cache.mkdir(parents=True, exist_ok=True)
    torch.hub.download_url_to_file(url, str(target), progress=True)
    return target
