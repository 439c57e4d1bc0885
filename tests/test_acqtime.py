"""The one time convention: ISO 8601 parsing, Unix seconds, day of year and seasonal phase."""

import math

import numpy as np
import pytest
import torch

from satclip.acqtime import SECONDS_PER_YEAR, day_of_year, decimal_year, iso_utc, parse_time, time_record, year_phase


@pytest.mark.parametrize(
    "text, expected",
    [
        ("1970-01-01", 0.0),
        ("2021-06-01T10:20:31Z", 1622542831.0),
        ("2021-06-01T12:20:31+02:00", 1622542831.0),
        ("2021-06-01T10:20:31", 1622542831.0),
        ("20210601T102031", 1622542831.0),
        ("1622542831", 1622542831.0),
        ("2021-06-01T10:20:31.250000Z", 1622542831.25),
    ],
)
def test_parse_time_forms(text, expected):
    assert parse_time(text) == expected


@pytest.mark.parametrize("text", ["", "NaN", "none"])
def test_unknown_time_is_nan(text):
    assert math.isnan(parse_time(text))
    assert time_record(parse_time(text)) == {}


def test_bad_time_names_input():
    with pytest.raises(ValueError, match=r"product_datetime: '2021-13-45' is not an ISO 8601"):
        parse_time("2021-13-45", name="product_datetime")


def test_round_trip_and_day_of_year():
    t = parse_time("2020-12-31T23:59:59Z")
    assert iso_utc(t) == "2020-12-31T23:59:59Z"
    assert day_of_year(t) == 366  # a leap year
    assert time_record(parse_time("2021-02-01T00:00:00.5Z")) == {"time": "2021-02-01T00:00:00.5Z", "doy": 32}


def test_phase_and_decimal_year_on_arrays_and_tensors():
    seconds = np.array([0.0, SECONDS_PER_YEAR * 2.25, np.nan])
    np.testing.assert_allclose(year_phase(seconds)[:2], [0.0, 0.25])
    assert np.isnan(year_phase(seconds)[2])
    t = torch.tensor([parse_time("2021-07-02T12:00:00Z")], dtype=torch.float64)
    assert abs(float(year_phase(t)) - 0.5) < 2 / 365  # within the documented two-day drift
    assert abs(float(decimal_year(t)) - 2021.5) < 2 / 365
