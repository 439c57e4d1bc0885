"""What every input reader of ``satclip shards`` shares: its error, the result of encoding one task
(samples, plus rows skipped as corrupt and patches filtered out, by kind), and the JSON record.

A task (one GeoTIFF, one Major TOM cell, one SSL4EO-S12 location) is encoded in a worker process by
its ``encode(payload, bands)`` method and gives an :class:`Encoded`; the writer adds the samples in
task order (output is the same for any number of workers) and sums the counts into the manifest.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..acqtime import time_record
from .payload import encode_fast

SHOWN_PER_KIND = 5
"""How many skipped rows of each kind the writer names in its log; the rest are only counted."""


class ShardInputError(ValueError):
    """The inputs of ``satclip shards`` are unusable: the message names the file and the problem."""


class WorkerDiedError(ShardInputError):
    """An encoding worker process of ``satclip shards`` died (killed, out of memory, a crash in a
    reader): a run stopped by it can be resumed (:mod:`satclip.data.resume`)."""


@dataclass
class Encoded:
    """A task's output: ``samples`` (key, payload bytes, JSON record) in order; ``skipped``: corrupt
    input counted by kind with (source, cause) of each; ``filtered``: patches left out on purpose
    (``cloud``: over ``--max-cloud``), counted by kind."""

    samples: list[tuple[str, bytes, dict]] = field(default_factory=list)
    skipped: list[tuple[str, str, str]] = field(default_factory=list)
    filtered: dict[str, int] = field(default_factory=dict)

    @classmethod
    def skip(cls, kind: str, source: str, cause: str) -> Encoded:
        return cls(skipped=[(kind, source, cause)])


def sample_key(text: str) -> str:
    """A WebDataset sample key: dots become '_' (WebDataset splits the extension at the first dot)."""
    return text.replace(".", "_")


def sample_record(lon: float, lat: float, seconds: float, source: str, crs: str | None, bands: tuple[str, ...], array: np.ndarray, **extra: object) -> dict:
    """The JSON record of one sample: {lon, lat, [time, doy], source, crs, bands, shape, dtype, **extra}."""
    return {
        "lon": lon,
        "lat": lat,
        **time_record(seconds),
        "source": source,
        "crs": crs,
        "bands": list(bands),
        "shape": list(array.shape),
        "dtype": str(array.dtype),
        **extra,
    }


def payload_bytes(array: np.ndarray, payload: str, source: str) -> bytes:
    """``array`` as a payload: ``s2c`` always works; ``tif`` is only possible where the source is one GeoTIFF."""
    if payload != "s2c":
        raise ShardInputError(f"{source}: payload {payload!r} keeps a source GeoTIFF's bytes; this input is assembled from several, use --payload s2c")
    return encode_fast(array)


__all__ = ["SHOWN_PER_KIND", "Encoded", "ShardInputError", "WorkerDiedError", "payload_bytes", "sample_key", "sample_record"]
