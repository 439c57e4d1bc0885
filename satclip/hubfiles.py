"""Files from the Hugging Face Hub through huggingface_hub's own cache: the one download mechanism.

Released checkpoints, exported towers (``satclip.io.hub``) and image-backbone initialisations
(``satclip.vision``) all come through ``fetch``: the cache first (``HF_HUB_CACHE``, ``HF_HOME``,
``XDG_CACHE_HOME`` and ``~`` mean what they mean to every Hugging Face library), then a download.
Offline (``HF_HUB_OFFLINE=1``, or the endpoint does not answer within 3 s through huggingface_hub's
own HTTP client, so ``HTTPS_PROXY`` and ``HF_ENDPOINT`` mirrors are honoured) a file that is not
cached fails at once with the URL to fetch and the folder to put it in, instead of ~25 s of retries.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from urllib.parse import urlparse

from .safeload import CheckpointReadError

_TRUE = {"1", "on", "yes", "true"}
HF_HUB_PREFIX = "hf-hub:"
"""The explicit Hub form of a source, ``hf-hub:owner/repo[/file]`` (timm's and open_clip's spelling)."""
PROBE_TIMEOUT_S = 3.0


def cache_dir() -> Path:
    """huggingface_hub's cache (``HF_HUB_CACHE``, else ``HF_HOME/hub``, else ``XDG_CACHE_HOME/huggingface/hub``, else ``~/.cache/huggingface/hub``)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def endpoint() -> str:
    """The Hub endpoint in use (``HF_ENDPOINT``, e.g. a mirror; else https://huggingface.co)."""
    from huggingface_hub import constants

    return str(constants.ENDPOINT).rstrip("/")


def is_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` is set truthy (now, or when huggingface_hub was imported)."""
    from huggingface_hub import constants

    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE or bool(constants.HF_HUB_OFFLINE)


def offline_reason(url: str | None = None) -> str | None:
    """Why ``url`` (default: the Hub endpoint) cannot be reached, or None when it answers.

    One HEAD request through huggingface_hub's HTTP session (its proxy settings, ``HF_ENDPOINT``),
    ``PROBE_TIMEOUT_S`` at most; any HTTP answer, even an error status, counts as reachable.
    """
    if is_offline():
        return "HF_HUB_OFFLINE is set"
    from huggingface_hub import get_session

    target = url or endpoint()
    parsed = urlparse(target)
    origin = f"{parsed.scheme}://{parsed.netloc}"
    try:
        get_session().head(origin, timeout=PROBE_TIMEOUT_S, follow_redirects=False)
    except Exception as err:  # the HTTP client's transport errors: DNS, refused, timeout, proxy
        return f"no answer from {origin} within {PROBE_TIMEOUT_S:g} s ({type(err).__name__}: {err})"
    return None


class MissingWeightsError(FileNotFoundError):
    """A weight file that is neither local nor cached and cannot be fetched now (or a path that does not exist)."""


def offline_error(what: str, fetch: str, *, place: str, reason: str) -> MissingWeightsError:
    """The one offline message: what is missing, why, which URL to fetch and where to put the file."""
    return MissingWeightsError(
        f"{what} is not in the local cache and {reason} (offline). "
        f"Fetch {fetch} on a machine with network access and put it at {place} "
        f"(or pass the downloaded file's path instead)."
    )


def verify_sha256(path: Path, sha256: str | None, *, source: str) -> Path:
    """``path`` when its sha256 starts with ``sha256`` (a full digest, or torch.hub's 8+ hex prefix); None: not checked."""
    if sha256 is None:
        return path
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    if not digest.hexdigest().startswith(sha256.lower()):
        raise CheckpointReadError(f"{source}: {str(path)!r} has sha256 {digest.hexdigest()}, expected {sha256} (a corrupt or different file)")
    return path


def _cached(repo_id: str, filename: str, *, revision: str | None) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename, revision=revision)
    return Path(found) if isinstance(found, str) else None


def fetch(repo_id: str, filenames: tuple[str, ...], *, revision: str | None = None, what: str | None = None) -> list[Path]:
    """Local paths of ``filenames`` of the model repository ``repo_id`` at ``revision``, cached or downloaded.

    ``what`` names the request in the offline error (default: the files and the repository).
    """
    paths = [_cached(repo_id, name, revision=revision) for name in filenames]
    missing = [name for name, path in zip(filenames, paths) if path is None]
    if not missing:
        return [p for p in paths if p is not None]
    reason = offline_reason()
    if reason is not None:
        folder = cache_dir() / f"models--{repo_id.replace('/', '--')}"
        rev = revision or "main"
        listed = ", ".join(map(repr, missing))
        raise offline_error(
            what or f"hub {'files' if len(missing) > 1 else 'file'} {listed} of repository {repo_id!r}",
            " and ".join(f"{endpoint()}/{repo_id}/resolve/{rev}/{name}" for name in missing),
            place=f"{folder}/snapshots/<revision>/ with {folder}/refs/main holding <revision> "
            f"(`hf download {repo_id} {' '.join(missing)}{' --revision ' + revision if revision else ''}` does this; "
            f"the cache is {cache_dir()})",
            reason=reason,
        )
    from huggingface_hub import hf_hub_download

    return [Path(hf_hub_download(repo_id, name, revision=revision)) for name in filenames]


def push_folder(folder: str | Path, repo_id: str, *, token: str | None = None, private: bool = False) -> str:
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
    return f"{endpoint()}/{repo_id}"


__all__ = [
    "HF_HUB_PREFIX",
    "MissingWeightsError",
    "cache_dir",
    "endpoint",
    "fetch",
    "is_offline",
    "offline_error",
    "offline_reason",
    "push_folder",
    "verify_sha256",
]
