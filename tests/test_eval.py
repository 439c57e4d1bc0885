"""Evaluation: locfit (and fine-tuning), locbench tables, probe folds, embedding maps, synthetic point sets."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from satclip.cli import main
from satclip.eval import points
from satclip.eval.fitting import Split
from satclip.eval.locbench import run_bench
from satclip.eval.locfit import fit_table, resolve_settings, tuned_hparams
from satclip.eval.plots import plot_embedding_map
from satclip.eval.probe import run_probe, summary_table
from satclip.location import build_location_encoder
from satclip.probes import fold_indices, spatial_cells
from satclip.testing import worlds


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The networks here are tiny: one thread is fastest and leaves the other cores alone."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _table(n: int, seed: int) -> pd.DataFrame:
    pts = points.uniform_sphere(n, seed)
    field = worlds.smooth_random_field(pts, seed=7, degree=4)
    return pd.DataFrame({"lon": pts[:, 0], "lat": pts[:, 1], "value": 10 * worlds.climate_gradient(pts) + field, "label": np.where(field > 0, "wet", "dry")})


@pytest.fixture(scope="module")
def tables(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tables")
    paths = {}
    for name, n, seed in (("train", 800, 0), ("val", 300, 1), ("test", 400, 2)):
        paths[name] = root / f"{name}.csv"
        _table(n, seed).to_csv(paths[name], index=False)
    return paths


def _locfit(tables: dict[str, Path], out: Path, *extra: str) -> dict:
    argv = [
        "locfit",
        "--train",
        str(tables["train"]),
        "--val",
        str(tables["val"]),
        "--test",
        str(tables["test"]),
        "--max-epochs",
        "60",
        "--patience",
        "10",
        "--out",
        str(out),
        *extra,
    ]
    assert main(argv) == 0
    return json.loads((out / "metrics.json").read_text())


def test_locfit_classification_beats_majority_and_exports(tables, tmp_path):
    from satclip import load_location_encoder

    report = _locfit(tables, tmp_path, "--target", "label", "--task", "classification", "--nn", "siren")
    test = pd.read_csv(tables["test"])
    majority = test["label"].value_counts(normalize=True).max()
    assert report["kind"] == "binary" and report["settings"]["source"] == "tuned:landocean"
    assert report["test"]["accuracy"] > majority + 0.15
    assert report["settings"]["classes"] == ["dry", "wet"]
    # the export is the whole predictor: logit > 0 <=> "wet"
    encoder = load_location_encoder(report["model"]["path"])
    logits = encoder(torch.as_tensor(test[["lon", "lat"]].to_numpy()))
    accuracy = np.mean(np.where(logits[:, 0].detach().numpy() > 0, "wet", "dry") == test["label"].to_numpy())
    assert accuracy == pytest.approx(report["test"]["accuracy"])


def test_locfit_regression_beats_constant_and_plots(tables, tmp_path):
    report = _locfit(tables, tmp_path, "--target", "value", "--task", "regression", "--nn", "mlp", "--lr", "3e-3", "--plot")
    assert report["kind"] == "regression" and report["settings"]["lr"] == 3e-3
    test = report["test"]
    assert test["r2"] > 0.8  # a constant predictor has R^2 <= 0
    assert test["mae"] < np.sqrt(test["mse"]) + 1e-9
    assert (tmp_path / "prediction.png").stat().st_size > 10_000


def test_locfit_multiclass_and_bad_input(tmp_path):
    pts = points.uniform_sphere(1500, 0)
    labels = points.checkerboard_classes(pts, n_support=12, n_classes=4)
    split = lambda s: Split(pts[s], labels[s])  # noqa: E731
    model, report = fit_table(
        split(slice(0, 1000)),
        split(slice(1000, 1250)),
        test=split(slice(1250, None)),
        task="classification",
        nn_name="linear",
        overrides={"legendre_polys": 6, "lr": 0.05},
        max_epochs=80,
        patience=10,
    )
    assert report["kind"] == "multiclass" and model.tower.output_dim == 4
    assert report["test"]["accuracy"] > 0.6  # chance is 0.25
    _table(10, 0).to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(SystemExit, match="^satclip locfit: .*missing column"):
        main(["locfit", "--train", str(tmp_path / "t.csv"), "--val", str(tmp_path / "t.csv"), "--target", "nope", "--task", "regression"])
    bad = _table(10, 0).assign(lat=lambda d: d["lat"].where(d.index != 3, 95.0))
    bad.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(SystemExit, match=r"^satclip locfit: .*bad.csv: 1 of 10 rows have .*breaking the rule.*: data rows 3 "):
        main(["locfit", "--train", str(tmp_path / "bad.csv"), "--val", str(tmp_path / "t.csv"), "--target", "value", "--task", "regression"])


def test_read_table_refuses_bad_rows_unless_dropped_and_names_bad_files(tmp_path):
    from satclip.eval.tables import read_table

    table = _table(10, 0)
    table.loc[2, "lon"], table.loc[5, "value"] = np.nan, np.nan
    table.to_csv(tmp_path / "nan.csv", index=False)
    with pytest.raises(ValueError, match=r"nan.csv: 2 of 10 rows have a missing.* or no value: data rows 2, 5 "):
        read_table(tmp_path / "nan.csv", "value")
    kept = read_table(tmp_path / "nan.csv", "value", drop_invalid=True)
    assert len(kept.y) == 8 and kept.dropped == 2
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "header.csv").write_text("lon,lat,value\n")
    with pytest.raises(ValueError, match=r"empty.csv: the file is empty"):
        read_table(tmp_path / "empty.csv", "value")
    with pytest.raises(ValueError, match=r"header.csv: no data rows"):
        read_table(tmp_path / "header.csv", "value")
    with pytest.raises(ValueError, match=r"latitude columns are both 'lat'"):
        read_table(tmp_path / "nan.csv", "value", lon_col="lat")
    n = 300_000
    labels = np.array(["7"] * n, dtype=object)
    labels[-5:] = "seven"  # numbers that turn to text after the first pandas chunk
    pd.DataFrame({"lon": np.zeros(n), "lat": np.zeros(n), "label": labels}).to_csv(tmp_path / "late.csv", index=False)
    late = read_table(tmp_path / "late.csv", "label")
    assert {type(v) for v in late.y} == {str} and set(late.y) == {"7", "seven"}


def test_read_table_finds_coordinate_columns_and_checks_their_rows(tmp_path):
    from satclip.eval.tables import read_table

    table = _table(10, 0).rename(columns={"lon": "Longitude", "lat": "LAT"})
    table.loc[4, "LAT"] = 120.0
    table.to_csv(tmp_path / "named.csv", index=False)
    with pytest.raises(ValueError, match=r"named.csv: 1 of 10 rows have .* Longitude/LAT, coordinates breaking the rule.*: data rows 4 "):
        read_table(tmp_path / "named.csv", "value")
    kept = read_table(tmp_path / "named.csv", "value", drop_invalid=True)
    assert len(kept.y) == 9 and kept.dropped == 1
    with pytest.raises(ValueError, match=r"latitude columns are both 'LAT'"):
        read_table(tmp_path / "named.csv", "value", lon_col="LAT")
    table.rename(columns={"Longitude": "x", "LAT": "y"}).to_csv(tmp_path / "xy.csv", index=False)
    with pytest.raises(ValueError, match=r"pass --crs EPSG:4326"):
        read_table(tmp_path / "xy.csv", "value")
    assert read_table(tmp_path / "xy.csv", "value", crs="EPSG:4326", drop_invalid=True).dropped == 1


@pytest.mark.parametrize(
    "argv",
    [
        ["probe", "--data", "missing.csv", "--target", "y"],
        ["locfit", "--train", "missing.csv", "--val", "missing.csv", "--target", "y", "--task", "regression"],
        ["plot-embeddings", "--checkpoint", "missing.ckpt"],
    ],
)
def test_commands_end_with_a_one_line_error(argv):
    with pytest.raises(SystemExit, match=rf"^satclip {argv[0]}: .*missing"):
        main(argv)


def test_tuned_hparams_from_the_authors_table():
    row = tuned_hparams("landocean", "sphericalharmonics", nn_name="siren")
    assert row == {
        "legendre_polys": 10,
        "dim_hidden": 64,
        "num_layers": 2,
        "lr": pytest.approx(0.0001421671897373),
        "weight_decay": pytest.approx(0.0036709986823345),
    }
    assert tuned_hparams("checkerboard", "spherec+", nn_name="siren")["frequency_num"] == 16  # spelled spherecplus in the table
    assert tuned_hparams("landocean", "sphericalharmonics", nn_name="nope") is None
    assert resolve_settings("multiclass", "sphericalharmonics", nn_name="siren")["hparams"]["legendre_polys"] == 15
    reg = resolve_settings("regression", "sphericalharmonics", nn_name="siren", overrides={"legendre_polys": 12, "lr": None})
    assert reg["source"] == "defaults" and reg["hparams"] == {"legendre_polys": 12} and reg["lr"] == 1e-3


def test_finetune_reference_tower_frozen_and_unfrozen(reference, tables, tmp_path):
    from satclip import load_location_encoder

    ckpt = str(reference / "satclip-resnet18-l10.ckpt")
    before = load_location_encoder(ckpt)
    frozen = _locfit(tables, tmp_path / "frozen", "--target", "value", "--task", "regression", "--init-from", ckpt, "--freeze-tower")
    unfrozen = _locfit(
        tables, tmp_path / "unfrozen", "--target", "value", "--task", "regression", "--init-from", ckpt, "--max-epochs", "15", "--dtype", "float64"
    )
    assert frozen["test"]["r2"] > 0.5 and unfrozen["test"]["r2"] > 0.5
    assert frozen["settings"]["freeze_tower"] and frozen["settings"]["lr"] == 1e-3
    exported = load_location_encoder(unfrozen["model"]["path"])
    assert exported.output_dim == 1 and exported.config["legendre_polys"] == 10
    # fine-tuning moved the tower's hidden weights away from the checkpoint's
    assert not torch.allclose(exported.nnet.layers[0].weight, before.nnet.layers[0].weight.to(exported.dtype))


def test_locbench_tiny_budget_writes_well_formed_tables(tmp_path):
    runs = run_bench("checkerboard", ["sphericalharmonics", "wrap"], networks=["linear", "siren"], seeds=1, out=tmp_path, max_epochs=2, progress=False)
    assert len(runs) == 4 and all(0 <= float(r["accuracy"]) <= 100 for r in runs)
    with (tmp_path / "table.csv").open() as f:
        table = list(csv.reader(f))
    assert table[0] == ["pe", "linear_mean", "linear_std", "linear_n", "siren_mean", "siren_std", "siren_n"]
    assert [row[0] for row in table[1:]] == ["wrap", "sphericalharmonics"]  # the paper's row order
    assert all(row[3] == "1" and row[6] == "1" for row in table[1:])
    md = (tmp_path / "table.md").read_text().splitlines()
    assert md[2] == "| encoding | linear | siren |" and len(md) == 6
    # a second call resumes: nothing new is run
    assert (
        len(run_bench("checkerboard", ["sphericalharmonics", "wrap"], networks=["linear", "siren"], seeds=1, out=tmp_path, max_epochs=2, progress=False)) == 4
    )


@pytest.mark.parametrize("cv", ["random", "spatial"])
def test_probe_folds_are_disjoint_and_spatial_folds_hold_out_whole_cells(cv):
    lonlat = points.uniform_sphere(2000, 3)
    folds = fold_indices(lonlat, 5, cv=cv, seed=0)
    tests = np.concatenate([t for _, t in folds])
    assert len(folds) == 5 and np.array_equal(np.sort(tests), np.arange(2000))  # each row tested exactly once
    for train, test in folds:
        assert len(np.intersect1d(train, test)) == 0 and len(train) + len(test) == 2000
        assert 250 < len(test) < 550  # roughly balanced
        if cv == "spatial":
            cells = spatial_cells(lonlat, 10.0)
            assert not set(cells[train]) & set(cells[test])
    with pytest.raises(ValueError, match="cells hold points"):
        fold_indices(np.array([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]]), 3, cv="spatial")


def test_probe_table_and_smooth_target_prefers_harmonics():
    from satclip.eval.probe import baseline_features

    lonlat = points.uniform_sphere(600, 4)
    y = worlds.smooth_random_field(lonlat, seed=1, degree=5)
    rows = run_probe(baseline_features(lonlat), lonlat, y=y, task="regression", kind="ridge", cvs=["random"], n_folds=3)
    r2 = {name: np.mean([r["r2"] for r in rows if r["features"] == name]) for name in ("lon/lat", "SH L=10 (untrained)")}
    assert r2["SH L=10 (untrained)"] > 0.95 > r2["lon/lat"]
    table = summary_table(rows, "regression").splitlines()
    assert table[0] == "| features | random R² | random MSE |" and len(table) == 5


def test_embedding_map_png_size_and_colours(tmp_path):
    import matplotlib.image as mpimg

    torch.manual_seed(0)
    encoder = build_location_encoder("sphericalharmonics", "siren", output_dim=16, legendre_polys=4, dim_hidden=32)
    with pytest.raises(ValueError, match=r"--resolution 0.01: the map is 1200 px wide .* 6.48e\+08 embeddings \(82.9 GB\) in memory; use --resolution 0.25"):
        plot_embedding_map(encoder, tmp_path / "map.png", title="test", resolution=0.01, coastline=False)
    assert not (tmp_path / "map.png").exists()
    path = plot_embedding_map(encoder, tmp_path / "map.png", title="test", resolution=5.0, coastline=False)
    image = mpimg.imread(path)
    assert image.shape[:2] == (600, 1200)
    assert len(np.unique(image[100:500, 200:1000, :3].reshape(-1, 3), axis=0)) > 100
    globe = mpimg.imread(plot_embedding_map(encoder, tmp_path / "globe.png", title="t", resolution=10.0, globe=True, coastline=False))
    assert globe.shape[:2] == (600, 1800)


def test_plot_embeddings_cli_on_reference_checkpoint(reference, tmp_path):
    import matplotlib.image as mpimg

    out = tmp_path / "ref.png"
    assert main(["plot-embeddings", "--checkpoint", str(reference / "satclip-resnet18-l10.ckpt"), "--out", str(out), "--resolution", "4"]) == 0
    image = mpimg.imread(out)
    assert image.shape[:2] == (600, 1200) and image[..., :3].std() > 0.05


def test_point_sets_and_equal_area_grid():
    grid = points.ease2_grid(100_000.0)
    assert grid.shape == (347 * 146, 2)
    assert np.allclose(np.sort(grid[:, 1]), -np.sort(grid[:, 1])[::-1])  # symmetric about the equator
    assert np.abs(points.ease2_inverse(points.ease2_forward(grid)) - grid).max() < 1e-7
    # equal area: cell rows near the equator and near the poles stand for the same area, so the
    # grid's latitudes follow the sphere's area distribution (roughly sin(lat) is uniform)
    assert abs(np.mean(np.abs(np.sin(np.radians(grid[:, 1])))) - 0.5 * 0.99) < 0.02
    fib = points.fibonacci_lattice(1000)
    assert abs(fib[:, 1].mean()) < 0.1 and np.abs(fib).max(0)[1] < 90
    labels = points.checkerboard_classes(points.fibonacci_lattice(200))
    assert np.array_equal(labels, np.arange(200) % 16)  # each support point is its own nearest
