"""Pretraining you can watch: the numpy ridge probe, the recipes and their configs, and the
geography metrics that ``satclip fit`` logs at every validation (CSV, TensorBoard, 2 gloo ranks)."""

from __future__ import annotations

import csv
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from satclip.probes import fold_indices, ridge_scores
from satclip.train.cli import main
from satclip.train.geography import GeographyMetrics, ProbeTable, read_probe_table
from satclip.train.recipes import RECIPES, batch_multiplier, resolve_recipe

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = [f"satclip-{v}-l{L}" for v in ("resnet18", "resnet50", "vit16") for L in (10, 40)]
TINY = [
    "--model.vision", "test_resnet", "--model.embed_dim", "32", "--data.num_workers", "0", "--data.pin_memory", "false",
    "--model.location", '{"pe": "sphericalharmonics", "nn": "siren", "legendre_polys": 4, "dim_hidden": 32, "num_layers": 1}',
]  # fmt: skip


# ----------------------------------------------------------------------------- the probe


@pytest.mark.parametrize("cv", ["random", "spatial"])
def test_numpy_ridge_scores_equal_satclip_probes_scikit_learn_ridge(cv: str) -> None:
    from satclip.eval.probe import probe_features

    rng = np.random.default_rng(3)
    n = 500
    lonlat = np.stack([rng.uniform(-180, 180, n), np.degrees(np.arcsin(rng.uniform(-1, 1, n)))], axis=1)
    x = rng.normal(size=(n, 30))
    x[:, 4] = 2.0  # a constant column
    x[:, 5] = 3 * x[:, 6]  # and a collinear one
    folds = fold_indices(lonlat, 5, cv=cv, seed=1)
    y = 2 * x[:, 0] + np.sin(x[:, 1]) + 0.3 * rng.normal(size=n)
    ours = ridge_scores(x, y, folds=folds, task="regression")
    theirs = [r["r2"] for r in probe_features(x, y, folds=folds, task="regression")]
    np.testing.assert_allclose(ours, theirs, atol=1e-9)
    for labels in ((x[:, 0] > 0).astype(int), np.where(x[:, 1] > 0.5, "b", np.where(x[:, 0] > 0, "a", "c"))):
        ours = ridge_scores(x, labels, folds=folds, task="classification")
        theirs = [r["accuracy"] for r in probe_features(x, labels, folds=folds, task="classification")]
        assert ours == theirs


# ----------------------------------------------------------------------------- recipes


def test_recipes_resolve_with_explicit_settings_winning() -> None:
    cool = {"loss": "infonce", "logit_scale_init": 1.0, "learn_logit_scale": False, "mask_duplicates": True, "scale_with_batch": True}
    assert resolve_recipe("cool") == cool
    assert resolve_recipe("cool", logit_scale_init=1.5)["scale_with_batch"] is False  # an explicit multiplier is kept as given
    assert resolve_recipe("cool", learn_logit_scale=True)["scale_with_batch"] is False
    assert resolve_recipe("released", loss="siglip")["loss"] == "siglip"
    assert resolve_recipe("released", learn_logit_scale=None) == RECIPES["released"]
    with pytest.raises(ValueError, match=r"recipe must be one of \['cool', 'released'\], got 'hot'"):
        resolve_recipe("hot")
    with pytest.raises(TypeError, match="scale_with_batch"):
        resolve_recipe("cool", scale_with_batch=False)


def test_the_cool_multiplier_follows_the_negatives_per_loss() -> None:
    assert [batch_multiplier(n) for n in (1, 8, 128)] == [1.0, 1.0, 1.0]
    assert batch_multiplier(1024) == pytest.approx(10 / 7) and batch_multiplier(8192) == pytest.approx(13 / 7)
    with pytest.raises(ValueError, match="negatives must be >= 1"):
        batch_multiplier(0)


def test_a_cool_run_sets_its_multiplier_from_batch_and_accumulation(tmp_path: Path) -> None:
    import lightning as L

    from satclip.train.module import SatCLIPModule
    from satclip.train.synthetic import SyntheticDataModule

    location = {"legendre_polys": 4, "dim_hidden": 32}
    module = SatCLIPModule(vision="test_resnet", embed_dim=16, location=location, accumulate_batches=16, micro_batch_size=16)
    explicit = SatCLIPModule(vision="test_resnet", embed_dim=16, location=location, logit_scale_init=1.5)
    for m, batch in ((module, 16), (explicit, 4)):
        trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, default_root_dir=tmp_path)  # fmt: skip
        trainer.fit(m, SyntheticDataModule(batch_size=batch, num_batches=16, val_batches=0, image_size=16))
    assert float(module.temperature_scale()) == pytest.approx(8 / 7)  # 16 x 16 = 256 negatives: ln 256 / ln 128
    assert float(explicit.temperature_scale()) == pytest.approx(1.5)


def test_a_module_built_without_a_recipe_trains_with_the_recommended_one() -> None:
    from satclip.train.module import SatCLIPModule

    module = SatCLIPModule(vision="resnet18", embed_dim=16, location={"legendre_polys": 4, "dim_hidden": 32})
    hp = module.hparams
    assert (hp.recipe, hp.loss, hp.logit_scale_init, hp.learn_logit_scale, hp.mask_duplicates) == ("cool", "infonce", 1.0, False, True)
    assert float(module.temperature_scale()) == 1.0 and not module.model.logit_scale.requires_grad
    released = SatCLIPModule(vision="resnet18", embed_dim=16, location={"legendre_polys": 4, "dim_hidden": 32}, recipe="released", loss="siglip")
    assert released.model.logit_scale.requires_grad and float(released.temperature_scale()) == pytest.approx(10.0)


def _printed_config(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    with pytest.raises(SystemExit):
        main([*args, "--print_config"])
    return capsys.readouterr().out


@pytest.mark.parametrize("config", ["pretrain", "demo", *VARIANTS])
def test_new_runs_get_the_recommended_recipe_and_the_released_variants_the_published_one(capsys: pytest.CaptureFixture[str], config: str) -> None:
    import yaml

    printed = yaml.safe_load(_printed_config(capsys, "--config", str(ROOT / "configs" / f"{config}.yaml")))
    want = "released" if config in VARIANTS else "cool"
    assert printed["model"]["recipe"] == want
    assert all(printed["model"][k] is None for k in RECIPES[want] if k != "scale_with_batch")  # nothing overrides the recipe
    assert [t["path"] for t in printed["geography"]["tables"]] == ["data/probes/land-ocean.csv", "data/probes/air-temperature.csv"]
    if config == "pretrain":  # the released architecture and scale, only the recipe differs
        variant = yaml.safe_load(_printed_config(capsys, "--config", str(ROOT / "configs" / "satclip-resnet18-l10.yaml")))
        differs = {k for k in printed["model"] if printed["model"][k] != variant["model"][k]}
        assert differs == {"variant", "recipe"}
        assert printed["data"] == variant["data"]


def test_a_recipe_overlay_switches_a_released_variant(capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    args = ["--config", str(ROOT / "configs" / "satclip-resnet18-l10.yaml"), "--config", str(ROOT / "configs" / "recipes" / "cool.yaml")]
    assert yaml.safe_load(_printed_config(capsys, *args))["model"]["recipe"] == "cool"


# ----------------------------------------------------------------------------- tables


def test_probe_tables_are_read_checked_and_named_in_errors(tmp_path: Path) -> None:
    table = read_probe_table(ProbeTable("data/probes/land-ocean.csv", "land"), 500, n_folds=5, cell_deg=10.0, seed=0)
    assert (table.name, table.task, table.lonlat.shape, set(np.unique(table.y))) == ("land-ocean", "classification", (500, 2), {0, 1})
    assert read_probe_table(ProbeTable("data/probes/air-temperature.csv", "meanT"), 5000, n_folds=5, cell_deg=10.0, seed=0).task == "regression"
    with pytest.raises(FileNotFoundError, match=r"geography.tables: 'nowhere.csv' is not a file"):
        read_probe_table(ProbeTable("nowhere.csv", "y"), 100, n_folds=5, cell_deg=10.0, seed=0)
    with pytest.raises(ValueError, match=r"has no target column 'temp'; it has \['lon', 'lat', 'meanT', 'meanP'\]"):
        read_probe_table(ProbeTable("data/probes/air-temperature.csv", "temp"), 100, n_folds=5, cell_deg=10.0, seed=0)
    bad = tmp_path / "bad.csv"
    bad.write_text("lon,lat,y\n0,95,1\n1,2,3\n")
    with pytest.raises(ValueError, match="bad.csv"):
        read_probe_table(ProbeTable(str(bad), "y"), 100, n_folds=2, cell_deg=10.0, seed=0)
    with pytest.raises(ValueError, match="geography.map_every_n_validations must be >= 0"):
        GeographyMetrics(map_every_n_validations=-1)


# ----------------------------------------------------------------------------- during training


@pytest.fixture(scope="module")
def demo_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shards")
    cmd = [sys.executable, "-m", "satclip.cli", "shards", str(ROOT / "data" / "sample"), "--out", str(out), "--payload", "s2c",
           "--samples-per-shard", "4", "--overwrite"]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT)
    return out


def _fit_command(root: Path, shards: Path, devices: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "satclip.cli", "fit", "--config", str(ROOT / "configs" / "demo.yaml"), *TINY,
            "--data.train_urls", str(shards), "--data.val_urls", str(shards), "--data.epoch_length", "16", "--data.crop_size", "32",
            "--data.batch_size", str(8 // devices), "--trainer.devices", str(devices), "--trainer.max_steps", "4",
            "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(root), "--geography.max_rows", "600",
            "--geography.map_every_n_validations", "2", *extra]  # fmt: skip


def _geo_rows(root: Path) -> list[dict[str, float]]:
    rows = list(csv.DictReader((root / "csv" / "version_0" / "metrics.csv").open()))
    return [{k: float(v) for k, v in r.items() if v and k.startswith(("geo/", "val/", "step"))} for r in rows if r.get("geo/land-ocean/random")]


def test_fit_logs_geography_metrics_to_csv_and_the_map_to_tensorboard(tmp_path: Path, demo_shards: Path) -> None:
    done = subprocess.run(_fit_command(tmp_path, demo_shards, 1), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = _geo_rows(tmp_path)
    assert len(rows) == 2  # one per validation (2 epochs of 2 steps)
    for row in rows:
        for table in ("land-ocean", "air-temperature"):
            for cv in ("random", "spatial"):
                score, untrained, sh = (row[f"geo/{table}/{cv}{s}"] for s in ("", "_untrained", "_sh"))
                assert row[f"geo/{table}/{cv}_gain"] == pytest.approx(score - max(untrained, sh))
                assert 0.3 < sh <= 1.0  # the probe works: SH L=4 knows land / ocean and temperature
        assert (row["val/top1_chance"], row["val/top5_chance"]) == (1 / 8, 5 / 8) and row["val/median_km_chance"] > 1000
    assert rows[0]["geo/land-ocean/random_sh"] == rows[1]["geo/land-ocean/random_sh"]  # the baselines, computed once
    assert rows[0]["geo/land-ocean/random"] != rows[1]["geo/land-ocean/random"]  # the trained tower moved
    metrics = list(csv.DictReader((tmp_path / "csv" / "version_0" / "metrics.csv").open()))
    fractions = [float(r["perf/val_fraction"]) for r in metrics if r.get("perf/val_fraction")]
    assert len(fractions) == 2 and all(0 < f < 1 for f in fractions)

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = (tmp_path / "tensorboard").rglob("events.out.tfevents.*")
    accumulator = EventAccumulator(str(events), size_guidance={"images": 0})
    accumulator.Reload()
    (image,) = accumulator.Images("geo/map")  # at the first validation only (every 2nd: validations 0, 2, ...)
    assert (image.width, image.height) == (90, 45) and image.step == 2  # the demo config's 4-degree map
    assert "geo/air-temperature/spatial_gain" in accumulator.Tags()["scalars"]
    (png,) = (tmp_path / "csv" / "version_0" / "geography").glob("map-step=*.png")
    assert png.name == "map-step=2.png"


@pytest.mark.slow
def test_two_gloo_ranks_log_the_same_geography_metrics_as_one(tmp_path: Path, demo_shards: Path) -> None:
    """The numbers depend on the tower only (lr 0 keeps it the seeded one on 1 and on 2 ranks), not on the number of ranks."""
    logged = []
    for devices in (1, 2):
        root = tmp_path / f"ranks{devices}"
        extra = ["--model.lr", "0", "--trainer.strategy", "ddp" if devices == 2 else "auto"]
        done = subprocess.run(_fit_command(root, demo_shards, devices, *extra), cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        logged.append([{k: v for k, v in r.items() if k.startswith("geo/")} for r in _geo_rows(root)])
    (a, *_), (b, *_) = logged  # the first validation of each run (epoch_length counts per rank: 2 ranks, one epoch)
    assert len(a) == 16 and a.keys() == b.keys()
    assert all(math.isclose(a[k], b[k], abs_tol=1e-9) for k in a), {k: (a[k], b[k]) for k in a if a[k] != b[k]}
