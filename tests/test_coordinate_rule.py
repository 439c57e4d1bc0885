"""The one coordinate rule (docs/location.md#the-coordinate-rule): the same verdict on the edge values
from the function, a tower, ``satclip embed`` and ``satclip locfit``."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from towers import export_tiny_tower

import satclip
from satclip.cli import main as cli_main
from satclip.geo import lonlat_problem, valid_lonlat, validate_lonlat

# (lon, lat, valid)
EDGES = [
    (-180.0, 0.0, True),
    (180.0, 0.0, True),
    (180.0001, 0.0, True),  # wrapped to -179.9999
    (math.nan, 0.0, False),
    (0.0, math.nan, False),
    (0.0, 90.0, True),
    (0.0, -90.0, True),
    (0.0, 90.0001, False),
    (0.0, -90.0001, False),
    (math.inf, 0.0, False),
]
BAD_ROWS = [i for i, (_, _, ok) in enumerate(EDGES) if not ok]


@pytest.fixture(scope="module")
def tower(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_tiny_tower(tmp_path_factory.mktemp("tower"))


def test_one_verdict_for_floats_arrays_and_tensors() -> None:
    lonlat = np.array([(lon, lat) for lon, lat, _ in EDGES])
    expected = [ok for _, _, ok in EDGES]
    assert [bool(valid_lonlat(lon, lat)) for lon, lat, _ in EDGES] == expected
    assert valid_lonlat(lonlat[:, 0], lonlat[:, 1]).tolist() == expected
    assert valid_lonlat(torch.from_numpy(lonlat[:, 0]), torch.from_numpy(lonlat[:, 1])).tolist() == expected
    assert [lonlat_problem(lon, lat) is None for lon, lat, _ in EDGES] == expected
    assert "lat=90.0001" in str(lonlat_problem(0.0, 90.0001))
    with pytest.raises(ValueError, match=rf"{len(BAD_ROWS)} of {len(EDGES)} rows are not valid .*first bad row {BAD_ROWS[0]}"):
        validate_lonlat(torch.from_numpy(lonlat))
    good = torch.from_numpy(lonlat[[i for i in range(len(EDGES)) if i not in BAD_ROWS]])
    np.testing.assert_allclose(validate_lonlat(good)[:, 0].numpy(), [-180.0, 180.0, -179.9999, 0.0, 0.0], atol=1e-9)


def test_embed_refuses_exactly_the_invalid_rows_and_wraps_the_rest(tmp_path: Path, tower: Path) -> None:
    pd.DataFrame([(lon, lat) for lon, lat, _ in EDGES], columns=["lon", "lat"]).to_csv(tmp_path / "edges.csv", index=False)
    argv = ["embed", "--checkpoint", str(tower), "--input", str(tmp_path / "edges.csv"), "--output", str(tmp_path / "e.npy"), "--no-progress"]
    with pytest.raises(SystemExit) as err:
        cli_main(argv)
    shown = [int(r) for r in re.findall(r"(\d+) \(lon=", str(err.value))]
    assert shown == BAD_ROWS and not (tmp_path / "e.npy").exists()

    good = [(lon, lat) for lon, lat, ok in EDGES if ok]
    pd.DataFrame(good, columns=["lon", "lat"]).to_csv(tmp_path / "good.csv", index=False)
    assert cli_main([*argv[:4], str(tmp_path / "good.csv"), *argv[5:]]) == 0
    emb = np.load(tmp_path / "e.npy")
    with torch.no_grad():
        wrapped = satclip.load_location_encoder(tower)(torch.tensor([[-179.9999, 0.0]], dtype=torch.float64)).numpy()
    np.testing.assert_allclose(emb[2], wrapped[0], rtol=0, atol=1e-9)  # 180.0001 is -179.9999
    np.testing.assert_allclose(emb[0], emb[1], rtol=0, atol=1e-9)  # -180 and 180: one meridian


def test_locfit_refuses_the_same_rows(tmp_path: Path) -> None:
    rows = pd.DataFrame([(lon, lat, 1.0) for lon, lat, _ in EDGES], columns=["lon", "lat", "value"])
    rows.to_csv(tmp_path / "edges.csv", index=False)
    shown = ", ".join(map(str, BAD_ROWS))
    with pytest.raises(SystemExit, match=rf"edges.csv: {len(BAD_ROWS)} of {len(EDGES)} rows .*data rows {shown} "):
        cli_main(["locfit", "--train", str(tmp_path / "edges.csv"), "--val", str(tmp_path / "edges.csv"), "--target", "value", "--task", "regression"])
