"""Bad-data accounting for the streaming loader: skip counts by kind, rate-limited warnings.

A multi-day run must not die of one bad sample, but bad data must not pass silently either.
Every skipped sample (or unreadable rest of a shard) is counted under one of :data:`SKIP_KINDS`
and logged with its shard and key and the real cause. Counts travel from the DataLoader workers
to the main process inside the batches (see :class:`satclip.data.loader.StreamLoader`).
"""

from __future__ import annotations

import logging
import time

log = logging.getLogger("satclip.data")

SKIP_KINDS = ("shard", "incomplete", "decode", "shape", "coords", "time")
"""What can be skipped:

- ``shard``: a shard could not be opened or read to its end (missing, truncated, garbage tar,
  I/O error); the rest of that shard is skipped and counted once.
- ``incomplete``: a sample without an image payload, or with a JSON record that does not parse.
- ``decode``: the image payload could not be decoded (truncated, not a TIFF, corrupt).
- ``shape``: wrong band count, or an image smaller than the crop or than its record says.
- ``coords``: coordinates missing or breaking :data:`satclip.geo.LONLAT_RULE` (non-finite, |lat| > 90).
- ``time``: the record's acquisition time is not ISO 8601 text (a missing time is NaN, not a skip).
"""


class EmptyStreamError(RuntimeError):
    """A stream yielded no sample at all; the message says why (shards, skip counts)."""


class ResumeError(ValueError):
    """A checkpoint's data position that this loader cannot continue from (another number of workers)."""


class SkipCounter:
    """Counts skips by kind and logs them: the first ``first`` of each kind, then one summary
    line per kind at most every ``interval`` seconds (a corrupt shard can hold thousands)."""

    def __init__(self, where: str = "", first: int = 5, *, interval: float = 60.0) -> None:
        self.where = where
        self.first = first
        self.interval = interval
        self.counts = dict.fromkeys(SKIP_KINDS, 0)
        self._last_log = dict.fromkeys(SKIP_KINDS, 0.0)
        self._unlogged = dict.fromkeys(SKIP_KINDS, 0)

    def record(self, kind: str, url: str, *, key: str | None, cause: object) -> None:
        """Count one skip of ``kind`` in shard ``url`` (sample ``key``, None for a whole shard)."""
        if kind not in self.counts:
            raise ValueError(f"unknown skip kind {kind!r}; expected one of {SKIP_KINDS}")
        self.counts[kind] += 1
        now = time.monotonic()
        if self.counts[kind] > self.first and now - self._last_log[kind] < self.interval:
            self._unlogged[kind] += 1
            return
        where = f"{url}" + (f" sample {key!r}" if key is not None else "")
        more = f" ({self._unlogged[kind]} more '{kind}' skips not shown)" if self._unlogged[kind] else ""
        log.warning("%sskipped (%s) %s: %s%s", self.where, kind, where, cause, more)
        self._last_log[kind] = now
        self._unlogged[kind] = 0

    def snapshot(self) -> dict[str, int]:
        """A copy of the counts, safe to put into a batch."""
        return dict(self.counts)


def add_counts(total: dict[str, int], counts: dict[str, int]) -> dict[str, int]:
    """Element-wise sum of two skip-count dicts (missing kinds count as 0)."""
    return {kind: total.get(kind, 0) + counts.get(kind, 0) for kind in SKIP_KINDS}


def format_counts(counts: dict[str, int]) -> str:
    """``"decode=3, coords=1"`` (non-zero kinds only), or ``"none"``."""
    return ", ".join(f"{kind}={n}" for kind, n in counts.items() if n) or "none"


__all__ = ["SKIP_KINDS", "EmptyStreamError", "SkipCounter", "add_counts", "format_counts"]
