"""Acquisition time: the one parser and the one numeric convention for the time of a sample.

Everywhere in satclip a time is a float64 count of **seconds since 1970-01-01T00:00:00 UTC** (Unix
time), NaN where unknown: in shard JSON records (``"time"`` as ISO 8601 UTC text, plus ``"doy"``),
in batches (``batch["time"]``, shape (B,)), and as the third input column of a time-aware location
tower ((N, 3) [lon, lat, t]). Text is parsed here and nowhere else, so errors read the same.

Seasonal phase is the fraction of a mean Gregorian year (365.2425 days) since the epoch: it drifts
from the calendar's 1 January by less than two days over the leap cycle, which is far below the
resolution of any seasonal signal, and it needs no calendar arithmetic inside a network.
"""

from __future__ import annotations

import datetime as _dt
import math
from typing import Any

SECONDS_PER_DAY = 86400.0
SECONDS_PER_YEAR = 365.2425 * SECONDS_PER_DAY
"""A mean Gregorian year in seconds: the period of the seasonal terms."""

_UTC = _dt.timezone.utc
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_UTC)


def parse_time(text: str, name: str = "time") -> float:
    """ISO 8601 text -> Unix seconds (UTC).

    Accepts a date (``2021-06-01``), a date-time with ``Z`` or an offset, a naive date-time (read as
    UTC), Sentinel-2's compact ``20210601T102031`` form, and a bare number of Unix seconds. Empty text
    or ``NaN`` gives NaN (unknown). Anything else raises ``ValueError`` naming ``name`` and the text.
    """
    raw = str(text).strip()
    if raw == "" or raw.lower() in {"nan", "none", "null", "nat"}:
        return math.nan
    try:
        return float(raw)
    except ValueError:
        pass
    candidate = raw[:-1] + "+00:00" if raw.endswith(("Z", "z")) else raw
    try:
        moment = _dt.datetime.fromisoformat(candidate)
    except ValueError:
        try:
            moment = _dt.datetime.strptime(raw, "%Y%m%dT%H%M%S")
        except ValueError:
            raise ValueError(f"{name}: {raw!r} is not an ISO 8601 date or date-time (e.g. 2021-06-01T10:20:31Z)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_UTC)
    return (moment - _EPOCH).total_seconds()


def iso_utc(seconds: float) -> str:
    """Unix seconds -> ISO 8601 UTC text with a ``Z`` (whole seconds unless a fraction is present)."""
    moment = _EPOCH + _dt.timedelta(seconds=float(seconds))
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += f".{moment.microsecond:06d}".rstrip("0")
    return text + "Z"


def day_of_year(seconds: float) -> int:
    """Unix seconds -> the calendar day of year in UTC, 1 ..366."""
    return int((_EPOCH + _dt.timedelta(seconds=float(seconds))).timetuple().tm_yday)


def time_record(seconds: float) -> dict[str, object]:
    """The JSON fields a shard sample carries for a known time: ``{"time": ISO UTC, "doy": int}``;
    ``{}`` for NaN (unknown), so a record without time has neither field."""
    if not math.isfinite(seconds):
        return {}
    return {"time": iso_utc(seconds), "doy": day_of_year(seconds)}


def year_phase(seconds: Any) -> Any:
    """Fraction of the mean year elapsed since the epoch, in [0, 1); works on floats, numpy arrays and
    torch tensors alike (NaN stays NaN)."""
    years = seconds / SECONDS_PER_YEAR
    return years - (years // 1)


def decimal_year(seconds: Any) -> Any:
    """Unix seconds -> years AD as a float (1970.0 at the epoch), for slow trends."""
    return 1970.0 + seconds / SECONDS_PER_YEAR


__all__ = [
    "SECONDS_PER_DAY",
    "SECONDS_PER_YEAR",
    "day_of_year",
    "decimal_year",
    "iso_utc",
    "parse_time",
    "time_record",
    "year_phase",
]
