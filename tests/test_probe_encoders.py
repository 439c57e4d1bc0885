"""``satclip probe --features NAME=file.npy`` and ``--encoder geoclip`` in the shared table."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

pytest.importorskip("sklearn")

from satclip.cli import main as cli_main
from satclip.eval import probe

N = 240


@pytest.fixture()
def table(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    lon, lat = rng.uniform(-180, 180, N), rng.uniform(-60, 60, N)
    path = tmp_path / "t.csv"
    pd.DataFrame({"lon": lon, "lat": lat, "y": np.sin(np.radians(lat)) * 10 + rng.normal(0, 0.1, N)}).to_csv(path, index=False)
    return path


def test_features_join_the_table(tmp_path: Path, table: Path, capsys: pytest.CaptureFixture) -> None:
    frame = pd.read_csv(table)
    np.save(tmp_path / "good.npy", np.stack([frame["y"], np.ones(N)], 1))  # an "encoder" that knows the target
    np.save(tmp_path / "noise.npy", np.random.default_rng(1).normal(size=(N, 4)))
    assert (
        cli_main(
            [
                "probe",
                "--data",
                str(table),
                "--target",
                "y",
                "--folds",
                "3",
                "--features",
                f"oracle={tmp_path / 'good.npy'}",
                "--features",
                f"noise={tmp_path / 'noise.npy'}",
                "--out",
                str(tmp_path / "out"),
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    assert {"oracle", "noise", "lon/lat", "sin/cos", "SH L=10 (untrained)"} <= set(rows)
    assert rows["oracle"].split("|")[2].strip().startswith(("0.99", "1.00"))
    folds = pd.read_csv(tmp_path / "out" / "probe_folds.csv")
    assert set(folds["features"]) >= {"oracle", "noise"} and folds.groupby("features").size().nunique() == 1  # same folds


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: f"x={d / 'short.npy'}", r"expected \(240, D\) rows"),
        (lambda d: f"{d / 'short.npy'}", "expected NAME=file.npy"),
        (lambda d: f"x={d / 'missing.npy'}", "no such file"),
    ],
)
def test_bad_features_are_named(tmp_path: Path, table: Path, make, message: str) -> None:
    np.save(tmp_path / "short.npy", np.zeros((N - 1, 3)))
    with pytest.raises(SystemExit, match=message):
        cli_main(["probe", "--data", str(table), "--target", "y", "--features", make(tmp_path)])


def test_features_of_the_whole_table_follow_drop_invalid(tmp_path: Path, table: Path) -> None:
    from satclip.eval.tables import read_table

    frame = pd.read_csv(table)
    frame.loc[[3, 7], "lat"] = np.nan  # two rows --drop-invalid leaves out
    frame.to_csv(table, index=False)
    split = read_table(table, "y", drop_invalid=True)
    assert split.dropped == 2 and split.kept is not None and split.kept.sum() == N - 2
    whole = np.arange(N, dtype=np.float64)[:, None] * [1.0, -1.0]  # row i's features: i, -i
    np.save(tmp_path / "whole.npy", whole)
    _, feats = probe.load_features(f"w={tmp_path / 'whole.npy'}", N - 2, kept=split.kept)
    np.testing.assert_array_equal(feats[:, 0], np.delete(np.arange(N), [3, 7]))  # the kept rows, in order
    np.save(tmp_path / "kept.npy", feats)
    np.testing.assert_array_equal(probe.load_features(f"k={tmp_path / 'kept.npy'}", N - 2, kept=split.kept)[1], feats)
    np.save(tmp_path / "odd.npy", whole[:100])
    with pytest.raises(ValueError, match=r"expected \(238, D\) rows in the table's order \(2 of its 240 rows were dropped by --drop-invalid"):
        probe.load_features(f"o={tmp_path / 'odd.npy'}", N - 2, kept=split.kept)


def test_geoclip_gets_lat_lon(tmp_path: Path, table: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    seen = []

    class FakeLocationEncoder(torch.nn.Module):
        def forward(self, latlon: torch.Tensor) -> torch.Tensor:
            seen.append(latlon)
            return torch.cat([torch.sin(torch.deg2rad(latlon)), torch.cos(torch.deg2rad(latlon))], dim=1)

    monkeypatch.setitem(sys.modules, "geoclip", types.SimpleNamespace(LocationEncoder=FakeLocationEncoder))
    assert cli_main(["probe", "--data", str(table), "--target", "y", "--folds", "3", "--encoder", "geoclip", "--no-baselines"]) == 0
    frame = pd.read_csv(table)
    np.testing.assert_allclose(torch.cat(seen).numpy(), frame[["lat", "lon"]].to_numpy(), rtol=1e-6)
    assert "| GeoCLIP |" in capsys.readouterr().out


def test_geoclip_missing_is_a_clear_error(table: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "geoclip", None)  # import fails
    with pytest.raises(SystemExit, match="needs the geoclip package"):
        cli_main(["probe", "--data", str(table), "--target", "y", "--encoder", "geoclip"])


def test_real_geoclip_embeddings() -> None:
    pytest.importorskip("geoclip")
    feats = probe.geoclip_features(np.array([[-74.006, 40.7128], [-118.2437, 34.0522], [-74.0, 40.72]]))  # NYC, LA, 1 km from NYC
    assert feats.shape == (3, 512) and np.isfinite(feats).all()
    from geoclip import LocationEncoder

    with torch.no_grad():  # GeoCLIP's own call takes [lat, lon]
        own = LocationEncoder().eval()(torch.tensor([[40.7128, -74.006], [34.0522, -118.2437], [40.72, -74.0]])).numpy()
    np.testing.assert_allclose(feats, own, rtol=1e-5, atol=1e-6)
    unit = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    assert unit[0] @ unit[2] > 0.9 > 0.5 > unit[0] @ unit[1]  # 1 km apart alike, 3,900 km apart not
