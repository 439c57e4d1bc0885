"""Embeddings of a task's coordinates by one ``satclip bench`` encoder, computed once and cached.

Tower outputs (checkpoints, exports, untrained towers, GeoCLIP) are cached as
``<cache>/<key>.npy``; the key hashes the encoder, its source file's size and modification time
and the task's coordinates, so a changed checkpoint or table is embedded again. The baselines and
precomputed features are cheap to compute or already on disk and are not cached.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from ..outputs import written_whole
from .bench_config import EncoderSpec
from .fitting import Split
from .probe import ENCODERS, load_features, lonlat_features, sh_features, sincos_features

UNTRAINED_SEED = 0


class EncoderUnavailable(Exception):
    """An optional encoder (GeoCLIP without its package) that the suite skips."""


def geoclip_available() -> bool:
    """Whether the ``geoclip`` package imports."""
    try:
        import geoclip  # noqa: F401
    except ImportError:
        return False
    return True


def untrained_like(source: str) -> torch.nn.Module:
    """A freshly initialised (seed ``UNTRAINED_SEED``) tower of the architecture and dtype of ``source``'s tower."""
    from .. import load_location_encoder
    from ..location import build_location_encoder

    trained = load_location_encoder(source)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(UNTRAINED_SEED)
        return build_location_encoder(**trained.config, dtype=trained.dtype).eval()


def _compute(spec: EncoderSpec, task_name: str, *, split: Split) -> np.ndarray:
    from .. import load_location_encoder
    from ..io.embed import embed_array

    if spec.kind == "lonlat":
        return lonlat_features(split.lonlat)
    if spec.kind == "sincos":
        return sincos_features(split.lonlat)
    if spec.kind == "sh":
        return sh_features(split.lonlat, spec.degree)
    if spec.kind == "features":
        return load_features(f"{spec.name}={str(spec.source).replace('{task}', task_name)}", len(split.y))[1]
    if spec.kind == "geoclip":
        if not geoclip_available():
            raise EncoderUnavailable("the geoclip package is not installed (pip install geoclip)")
        return ENCODERS["geoclip"][1](split.lonlat)
    if spec.kind not in ("checkpoint", "untrained"):
        raise ValueError(f"encoder {spec.name!r}: unknown kind {spec.kind!r}")
    tower = untrained_like(str(spec.source)) if spec.kind == "untrained" else load_location_encoder(str(spec.source))
    return embed_array(tower, split.inputs(tower.takes_time), dtype=np.float64)  # type: ignore[arg-type]


def cache_key(spec: EncoderSpec, split: Split) -> str:
    """A hash of the encoder (and its local source file's size and mtime) and the task's inputs."""
    digest = hashlib.sha256(json.dumps([spec.kind, spec.source, spec.degree, UNTRAINED_SEED]).encode())
    source = Path(str(spec.source)) if spec.source else None
    if source is not None and source.exists():
        stat = source.stat()
        digest.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
    digest.update(np.ascontiguousarray(split.lonlat).tobytes())
    if split.time is not None:
        digest.update(np.ascontiguousarray(split.time).tobytes())
    return digest.hexdigest()[:20]


def encoder_features(spec: EncoderSpec, task_name: str, *, split: Split, cache: Path | None) -> np.ndarray:
    """(rows, D) float64 features of ``split`` by ``spec``; tower outputs are read from / written to ``cache``."""
    if cache is None or spec.kind not in ("checkpoint", "untrained", "geoclip"):
        return _compute(spec, task_name, split=split)
    path = cache / f"{cache_key(spec, split)}.npy"
    if path.is_file():
        return np.load(path)
    feats = _compute(spec, task_name, split=split)
    with written_whole(path) as partial, partial.open("wb") as f:
        np.save(f, feats)
    return feats


__all__ = ["EncoderUnavailable", "cache_key", "encoder_features", "geoclip_available", "untrained_like"]
