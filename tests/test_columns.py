"""Coordinate columns found without flags when unambiguous, the same for embed, probe, locfit and shards."""

from __future__ import annotations

import pytest

from satclip.columns import CoordinateColumnsError, find_coordinate_columns


@pytest.mark.parametrize(
    "columns, expected",
    [
        (["id", "lon", "lat"], ("lon", "lat")),
        (["Lat", "Lon", "target"], ("Lon", "Lat")),
        (["longitude", "latitude"], ("longitude", "latitude")),
        (["LATITUDE", "lng"], ("lng", "LATITUDE")),
        (["long", "lat"], ("long", "lat")),
    ],
)
def test_unambiguous_columns_are_found(columns: list[str], expected: tuple[str, str]) -> None:
    assert find_coordinate_columns(columns) == expected


def test_xy_only_with_degrees_crs() -> None:
    with pytest.raises(CoordinateColumnsError, match=r"no longitude column.*\['x', 'y'\] may be degrees: pass --crs EPSG:4326"):
        find_coordinate_columns(["x", "y", "v"])
    assert find_coordinate_columns(["x", "y", "v"], crs="EPSG:4326") == ("x", "y")
    assert find_coordinate_columns(["X", "Y"], crs="epsg:4326") == ("X", "Y")
    with pytest.raises(CoordinateColumnsError, match="EPSG:3857.*not supported"):
        find_coordinate_columns(["x", "y"], crs="EPSG:3857")


def test_ambiguous_missing_and_explicit() -> None:
    with pytest.raises(CoordinateColumnsError, match=r"t.csv: more than one longitude column: \['lon', 'longitude'\]; choose one with --lon-col"):
        find_coordinate_columns(["lon", "longitude", "lat"], where="t.csv")
    with pytest.raises(CoordinateColumnsError, match=r"more than one latitude column: \['lat', 'y'\]"):
        find_coordinate_columns(["lon", "lat", "y"], crs="EPSG:4326")
    with pytest.raises(CoordinateColumnsError, match=r"no latitude column found among \['lon', 'v'\].*--lat-col"):
        find_coordinate_columns(["lon", "v"])
    assert find_coordinate_columns(["lon", "longitude", "lat"], lon_col="longitude") == ("longitude", "lat")
    with pytest.raises(CoordinateColumnsError, match="no column 'LON'"):
        find_coordinate_columns(["lon", "lat"], lon_col="LON")
