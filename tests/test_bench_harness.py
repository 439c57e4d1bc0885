"""``satclip bench``: each protocol's split against its definition, resume, and the ridge numbers of ``satclip probe``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

pytest.importorskip("sklearn")

from satclip.cli import main as cli_main
from satclip.eval import bench_features, harness
from satclip.eval.bench_config import parse_config, read_config
from satclip.eval.points import uniform_sphere
from satclip.eval.splits import Protocol, budget_subset, protocol_folds, within_km
from satclip.geo import great_circle_km
from satclip.probes import spatial_cells

ROOT = Path(__file__).resolve().parents[1]


def _min_km(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance (km) from each row of ``a`` to its nearest row of ``b``, by satclip.geo's haversine."""
    ta, tb = torch.as_tensor(a), torch.as_tensor(b)
    pairs = great_circle_km(ta[:, None, :].expand(-1, len(tb), -1), tb[None, :, :].expand(len(ta), -1, -1))
    return pairs.min(dim=1).values.numpy()


@pytest.fixture(scope="module")
def lonlat() -> np.ndarray:
    return uniform_sphere(600, 3)


def test_random_folds_test_every_row_once(lonlat: np.ndarray) -> None:
    folds = protocol_folds(Protocol("r", "random", folds=4), lonlat, seed=1)
    tests = np.concatenate([test for _, test in folds])
    assert len(folds) == 4 and np.array_equal(np.sort(tests), np.arange(len(lonlat)))
    for train, test in folds:
        assert len(np.intersect1d(train, test)) == 0 and len(train) + len(test) == len(lonlat)


@pytest.mark.parametrize("block_deg", [15.0, 30.0])
def test_spatial_blocks_are_disjoint_between_train_and_test(lonlat: np.ndarray, block_deg: float) -> None:
    folds = protocol_folds(Protocol("s", "spatial", folds=5, block_deg=block_deg), lonlat, seed=0)
    blocks = spatial_cells(lonlat, block_deg)
    for train, test in folds:
        assert not set(blocks[train]) & set(blocks[test])
        assert len(train) + len(test) == len(lonlat)


@pytest.mark.parametrize("base", ["random", "spatial"])
@pytest.mark.parametrize("buffer_km", [300.0, 1500.0])
def test_buffered_exclusion_keeps_test_points_beyond_the_buffer(lonlat: np.ndarray, base: str, buffer_km: float) -> None:
    protocol = Protocol("b", "buffered", folds=5, buffer_km=buffer_km, base=base, block_deg=20.0)
    unbuffered = protocol_folds(Protocol("u", base, folds=5, block_deg=20.0), lonlat, seed=2)
    for (train, test), (all_train, same_test) in zip(protocol_folds(protocol, lonlat, seed=2), unbuffered):
        assert np.array_equal(test, same_test)
        assert _min_km(lonlat[test], lonlat[train]).min() > buffer_km  # every test point beyond the buffer of every training point
        dropped = np.setdiff1d(all_train, train)
        assert len(dropped) > 0 and set(train) <= set(all_train)
        assert (_min_km(lonlat[dropped], lonlat[test]) <= buffer_km).all()  # only the training points within the buffer are dropped


def test_within_km_matches_great_circle_distances(lonlat: np.ndarray) -> None:
    points, centres = lonlat[:200], lonlat[200:260]
    expected = _min_km(points, centres) <= 1000.0
    assert np.array_equal(within_km(points, centres, km=1000.0, chunk=37), expected) and 0 < expected.sum() < len(points)


def test_holdout_column_and_budgets() -> None:
    values = np.array(["train", "test", "train", "test", "train"])
    [(train, test)] = protocol_folds(Protocol("h", "holdout", column="split"), np.zeros((5, 2)), seed=0, column=values)
    assert train.tolist() == [0, 2, 4] and test.tolist() == [1, 3]
    with pytest.raises(ValueError, match="needs both test rows"):
        protocol_folds(Protocol("h", "holdout", column="split"), np.zeros((5, 2)), seed=0, column=np.array(["train"] * 5))
    rows = np.arange(100, 200)
    subset = budget_subset(rows, 30, rng=np.random.default_rng(5))
    assert len(subset) == 30 and set(subset) <= set(rows) and np.array_equal(subset, budget_subset(rows, 30, rng=np.random.default_rng(5)))
    assert budget_subset(rows, None, rng=np.random.default_rng(0)) is rows and budget_subset(rows, 500, rng=np.random.default_rng(0)) is rows


def _table(path: Path, n: int = 300, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    pts = uniform_sphere(n, seed)
    y = np.sin(np.radians(pts[:, 1])) * 10 + np.cos(np.radians(pts[:, 0])) + rng.normal(0, 0.1, n)
    split = np.where(pts[:, 0] > 90, "test", "train")
    pd.DataFrame({"lon": pts[:, 0], "lat": pts[:, 1], "y": y, "cls": (y > 0).astype(int), "split": split}).to_csv(path, index=False)
    return path


def _config(tmp_path: Path, **overrides) -> dict:
    table = _table(tmp_path / "t.csv")
    for task in ("t", "tc"):
        np.save(tmp_path / f"emb-{task}.npy", np.random.default_rng(1).normal(size=(300, 4)))
    config = {
        "encoders": ["lonlat", "sincos", "sh:3", f"noise={tmp_path / 'emb-{task}.npy'}"],
        "tasks": [
            {"name": "t", "path": str(table), "target": "y", "task": "regression"},
            {"name": "tc", "path": str(table), "target": "cls", "task": "classification", "protocols": ["random", "official"]},
        ],
        "protocols": [
            {"name": "random", "kind": "random", "folds": 3},
            {"name": "spatial", "kind": "spatial", "folds": 3, "block_deg": 30},
            {"name": "official", "kind": "holdout", "column": "split"},
        ],
        "budgets": [40, "all"],
        "probes": ["ridge", "knn", "logistic"],
        "seeds": 2,
    }
    config.update(overrides)
    return config


def test_resume_skips_rows_already_there(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = parse_config(_config(tmp_path, encoders=["lonlat", f"noise={tmp_path / 'emb-{task}.npy'}"]))
    calls: list[tuple] = []
    embedded: list[str] = []
    real_score, real_features = harness.probe_score, harness.encoder_features
    monkeypatch.setattr(harness, "probe_score", lambda *a, **k: calls.append(a) or real_score(*a, **k))
    monkeypatch.setattr(harness, "encoder_features", lambda spec, *a, **k: embedded.append(spec.name) or real_features(spec, *a, **k))
    out = tmp_path / "out"
    first = harness.run_suite(config, out, progress=None)
    # t: 3 protocols x 2 budgets x 2 probes (no logistic for regression) x 2 seeds; tc: 2 protocols x 2 x 3 x 2; per encoder
    assert len(first) == 2 * (24 + 24)
    folds_fit = len(calls)
    assert folds_fit == 2 * (2 * 2 * 2 * (3 + 3 + 1) + 2 * 3 * 2 * (3 + 1))
    calls.clear(), embedded.clear()
    again = harness.run_suite(config, out, resume=True, progress=None)
    assert calls == [] and embedded == [] and len(again) == len(first)
    kept = pd.read_csv(out / "results.csv")
    lost = (kept["encoder"] == "noise") & (kept["task"] == "t") & (kept["protocol"] == "spatial")
    kept[~lost].to_csv(out / "results.csv", index=False)
    resumed = harness.run_suite(config, out, resume=True, progress=None)
    assert embedded == ["noise"] and len(calls) == int(lost.sum()) * 3  # the lost rows only, 3 folds each
    assert len(resumed) == len(first) and len(pd.read_csv(out / "results.csv")) == len(first)
    merge = first.merge(resumed, on=list(harness.KEY), suffixes=("", "_again"))
    np.testing.assert_allclose(merge["score"], merge["score_again"], rtol=0, atol=1e-12)  # the same rows, the same numbers
    assert "### t: spatial (R²)" in (out / "summary.md").read_text() and (out / "bench.png").stat().st_size > 1000


def test_worker_processes_give_the_same_rows(tmp_path: Path) -> None:
    config = parse_config(_config(tmp_path, encoders=["sh:3", f"noise={tmp_path / 'emb-{task}.npy'}"], probes=["ridge", "knn", "mlp"], seeds=1))
    one = harness.run_suite(config, tmp_path / "one", progress=None)
    two = harness.run_suite(config, tmp_path / "two", progress=None, jobs=2)
    assert len(one) == len(two) == 2 * (3 * 2 * 3 + 2 * 2 * 3)
    pd.testing.assert_frame_equal(one.drop(columns="seconds"), two.drop(columns="seconds"))


@pytest.mark.parametrize("task, target", [("regression", "y"), ("classification", "cls")])
def test_ridge_numbers_equal_satclip_probe(tmp_path: Path, task: str, target: str) -> None:
    config = _config(tmp_path)
    config.update(
        tasks=[{"name": "t", "path": str(tmp_path / "t.csv"), "target": target, "task": task}],
        encoders=["lonlat", "sincos", "sh:10"],
        protocols=[{"name": "random", "kind": "random", "folds": 5}, {"name": "spatial", "kind": "spatial", "folds": 5, "block_deg": 20}],
        budgets=["all"],
        probes=["ridge"],
        seeds=1,
    )
    bench = harness.run_suite(parse_config(config), tmp_path / "bench", progress=None)
    argv = ["probe", "--data", str(tmp_path / "t.csv"), "--target", target, "--task", task, "--cv", "random", "spatial", "--cell-deg", "20"]
    assert cli_main([*argv, "--folds", "5", "--out", str(tmp_path / "probe")]) == 0
    metric = "r2" if task == "regression" else "accuracy"
    probe = pd.read_csv(tmp_path / "probe" / "probe_folds.csv").groupby(["features", "cv"])[metric].mean()
    names = {"lon/lat": "lon/lat", "sin/cos": "sin/cos", "SH L=10": "SH L=10 (untrained)"}
    assert len(bench) == 6
    for row in bench.itertuples():
        assert row.score == pytest.approx(probe[(names[row.encoder], row.protocol)], abs=1e-9)


def test_cli_refuses_to_overwrite_and_config_errors_name_the_entry(tmp_path: Path) -> None:
    import yaml

    config = _config(tmp_path, encoders=["lonlat"], probes=["ridge"], budgets=["all"], seeds=1)
    config["out"] = str(tmp_path / "out")
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(config))
    assert cli_main(["bench", "--config", str(path)]) == 0
    with pytest.raises(SystemExit, match="exists: --resume"):
        cli_main(["bench", "--config", str(path)])
    assert cli_main(["bench", "--config", str(path), "--resume"]) == 0
    assert len(pd.read_csv(tmp_path / "out" / "results.csv")) == 5  # t: 3 protocols, tc: 2
    for bad, message in [
        ({"budgets": [1]}, r"budgets: a label budget"),
        ({"protocols": [{"name": "b", "kind": "buffered"}]}, r"protocols\[0\]: a buffered protocol needs buffer_km"),
        ({"encoders": ["sh:x"]}, r"encoders\[0\]: 'sh:x'"),
        ({"probes": ["svm"]}, "probes must be"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_config({**config, **bad})


def test_default_config_parses() -> None:
    config = read_config(ROOT / "configs" / "bench" / "default.yaml")
    assert [e.kind for e in config.encoders] == ["checkpoint", "untrained", "geoclip", "lonlat", "sincos", "sh"]
    assert [t.name for t in config.tasks] == ["land-ocean", "air-temperature"] and config.budgets == [50, 200, 1000, None]


def test_untrained_tower_has_the_architecture_not_the_weights(tmp_path: Path) -> None:
    from satclip import load_location_encoder
    from satclip.location import build_location_encoder

    torch.manual_seed(5)
    build_location_encoder("sphericalharmonics", "siren", output_dim=8, legendre_polys=4, dim_hidden=16).float().save_pretrained(tmp_path / "tower")
    trained = load_location_encoder(tmp_path / "tower")
    fresh, again = bench_features.untrained_like(str(tmp_path / "tower")), bench_features.untrained_like(str(tmp_path / "tower"))
    assert fresh.config == trained.config and fresh.dtype == trained.dtype == torch.float32
    x = torch.tensor([[10.0, 20.0], [-70.0, -30.0]], dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(fresh(x), again(x)) and not torch.allclose(fresh(x), trained(x))


def test_geoclip_is_skipped_when_not_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "geoclip", None)  # import fails
    notes: list[str] = []
    config = parse_config(_config(tmp_path, encoders=["geoclip", "lonlat"], probes=["ridge"], budgets=["all"], seeds=1))
    rows = harness.run_suite(config, tmp_path / "out", progress=None, note=notes.append)
    assert set(rows["encoder"]) == {"lon/lat"} and any("GeoCLIP skipped: the geoclip package is not installed" in n for n in notes)


@pytest.mark.parametrize("probe", ["ridge", "logistic", "knn", "mlp"])
def test_every_probe_learns_an_informative_feature(probe: str) -> None:
    from satclip.eval.bench_probes import probe_score

    rng = np.random.default_rng(0)
    signal = rng.normal(size=400)
    features = np.stack([signal, rng.normal(size=400)], axis=1)
    train, test = np.arange(300), np.arange(300, 400)
    classes = np.where(signal > 0, "a", "b")
    assert probe_score(probe, "classification", features=features, y=classes, train=train, test=test, seed=0) > 0.9
    if probe != "logistic":
        assert probe_score(probe, "regression", features=features, y=3 * signal + 1, train=train, test=test, seed=0) > 0.8
    one_class = np.where(np.arange(400) < 300, "a", np.where(signal > 0, "a", "b"))  # training rows hold only "a"
    assert probe_score(probe, "classification", features=features, y=one_class, train=train, test=test, seed=0) == pytest.approx(
        np.mean(one_class[test] == "a")
    )


def test_parquet_results_round_trip_and_resume(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    config = parse_config(_config(tmp_path, encoders=["lonlat", "sh:3"], probes=["ridge"], budgets=[40, "all"], seeds=2, results="results.parquet"))
    first = harness.run_suite(config, tmp_path / "out", progress=None)
    stored = pd.read_parquet(tmp_path / "out" / "results.parquet")
    assert len(stored) == len(first) == 2 * (3 * 2 * 2 + 2 * 2 * 2) and set(stored["budget"]) == {"40", "all"}
    assert not list((tmp_path / "out").glob("*.partial"))  # written under a temporary name, then renamed
    again = harness.run_suite(config, tmp_path / "out", resume=True, progress=None)
    pd.testing.assert_frame_equal(again.reset_index(drop=True), harness.read_results(tmp_path / "out" / "results.parquet"))
    assert len(again) == len(first)
