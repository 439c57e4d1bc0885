"""The time-aware location tower (``sphericalharmonics_time``): features, unknown time, validation,
pretraining input, export / load / embed round trips, and a supervised seasonal fit (locfit)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

import satclip
from satclip.acqtime import day_of_year, parse_time, year_phase
from satclip.eval.fitting import Split
from satclip.eval.locfit import fit_table
from satclip.eval.points import uniform_sphere
from satclip.eval.tables import read_table
from satclip.io.embed import embed_file
from satclip.io.export import export_location_encoder
from satclip.location import SphericalHarmonicsTime, build_location_encoder, spherical_harmonics
from satclip.testing.worlds import uniform_times

T0 = parse_time("2021-06-21T12:00:00Z")


def points() -> torch.Tensor:
    return torch.tensor([[10.0, 45.0, T0], [10.0, -45.0, T0], [200.0, 5.0, math.nan], [-170.0, -80.0, T0 + 1e7]], dtype=torch.float64)


def time_tower(**kwargs) -> satclip.LocationEncoder:
    torch.manual_seed(0)
    args = {"output_dim": 6, "legendre_polys": 4, "time_harmonics": 2, "dim_hidden": 16, **kwargs}
    return build_location_encoder("sphericalharmonics_time", "siren", **args).eval()


def test_features_are_harmonics_times_fourier_terms_and_unknown_time_leaves_the_static_block() -> None:
    enc = SphericalHarmonicsTime(legendre_polys=4, time_harmonics=2, time_dropout=0.0)
    x = points()
    feats = enc(x)
    assert feats.shape == (4, 16 * 5) == (4, enc.output_dim)
    sh = spherical_harmonics(x[:, :2], 4)
    assert torch.allclose(feats[:, :16], sh, atol=1e-12)
    phase = 2 * math.pi * year_phase(x[0, 2])
    terms = torch.tensor([math.cos(phase), math.sin(phase), math.cos(2 * phase), math.sin(2 * phase)], dtype=torch.float64)
    assert torch.allclose(feats[0, 16:].reshape(16, 4), sh[0][:, None] * terms, atol=1e-12)
    assert torch.all(feats[2, 16:] == 0)  # unknown time: only the static harmonics
    trend = SphericalHarmonicsTime(legendre_polys=2, time_harmonics=1, year_trend=True)
    assert trend.output_dim == 4 * 4 and trend.eval()(x).shape == (4, 16)


def test_time_dropout_only_in_training_mode() -> None:
    enc = SphericalHarmonicsTime(legendre_polys=2, time_harmonics=1, time_dropout=0.5)
    x = torch.cat([torch.zeros(2000, 2, dtype=torch.float64), torch.full((2000, 1), T0, dtype=torch.float64)], dim=1)
    torch.manual_seed(0)
    dropped = (enc.train()(x)[:, 4:] == 0).all(dim=1).float().mean()
    assert 0.45 < float(dropped) < 0.55
    assert not (enc.eval()(x)[:, 4:] == 0).all(dim=1).any()
    with pytest.raises(ValueError, match="time_dropout"):
        SphericalHarmonicsTime(time_dropout=1.0)


def test_one_validator_for_three_columns() -> None:
    tower = time_tower()
    assert tower.takes_time and tower.input_dim == 3
    out = tower(points())
    wrapped = points()
    wrapped[2, 0] = -160.0
    assert torch.allclose(out, tower(wrapped))
    bad = points()
    bad[1, 2] = math.inf
    with pytest.raises(ValueError, match=r"1 of 4 rows have an infinite time .* first bad row 1"):
        tower(bad)
    bad = points()
    bad[3, 1] = 91.0
    with pytest.raises(ValueError, match=r"not valid \[lon, lat\] degrees .* first bad row 3"):
        tower(bad)
    with pytest.raises(ValueError, match=r"expected shape \(N, 3\) .* this tower takes acquisition time"):
        tower(points()[:, :2])
    static = build_location_encoder("sphericalharmonics", "siren", output_dim=6, legendre_polys=4, dim_hidden=16)
    assert not static.takes_time and static.input_dim == 2
    with pytest.raises(ValueError, match=r"expected shape \(N, 2\) .* this tower takes no time"):
        static(points())


def test_the_tower_tells_the_hemispheres_seasons_apart() -> None:
    """Same place, half a year apart: the features differ; unknown time sits in between (static block only)."""
    enc = SphericalHarmonicsTime(legendre_polys=3, time_harmonics=1, time_dropout=0.0)
    half_year = 0.5 * 365.2425 * 86400
    x = torch.tensor([[0.0, 40.0, T0], [0.0, 40.0, T0 + half_year], [0.0, 40.0, math.nan]], dtype=torch.float64)
    f = enc(x)
    assert torch.allclose(f[:, :9], f[2:, :9].expand(3, 9))
    assert torch.allclose(f[0, 9:], -f[1, 9:], atol=1e-9)  # the first Fourier order flips over half a year


def test_satclip_feeds_batch_time_to_a_time_aware_tower_and_static_towers_ignore_it(tmp_path: Path) -> None:
    import lightning.pytorch as L

    from satclip.train.module import SatCLIPModule
    from satclip.train.synthetic import SyntheticDataModule, synthetic_batch

    loc = {"pe": "sphericalharmonics_time", "legendre_polys": 3, "time_harmonics": 1, "dim_hidden": 16, "time_dropout": 0.0}
    module = SatCLIPModule(vision="resnet18", embed_dim=8, location=loc).eval()
    batch = synthetic_batch(4, image_size=16)
    _, unknown = module.encode(batch)
    _, known = module.encode({**batch, "time": torch.full((4,), T0, dtype=torch.float64)})
    _, nan = module.encode({**batch, "time": torch.full((4,), math.nan, dtype=torch.float64)})
    assert torch.allclose(unknown, nan) and not torch.allclose(unknown, known)
    static = SatCLIPModule(vision="resnet18", embed_dim=8, location={"legendre_polys": 3, "dim_hidden": 16}).eval()
    a, b = static.model.encode_location(batch["lonlat"]), static.model.encode_location(batch["lonlat"], torch.full((4,), T0))
    assert torch.equal(a, b)
    # a short fit (accumulated micro-batches: GradCache) writes a checkpoint whose tower loads back time-aware
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
        max_steps=1,
        num_sanity_val_steps=0,
    )
    module = SatCLIPModule(vision="resnet18", embed_dim=8, location=loc, micro_batch_size=2)
    trainer.fit(module, SyntheticDataModule(batch_size=4, num_batches=2, val_batches=0, image_size=16))
    trainer.save_checkpoint(tmp_path / "time.ckpt")
    tower = satclip.load_location_encoder(tmp_path / "time.ckpt")
    assert tower.takes_time
    assert torch.allclose(tower(points()).float(), module.model.location.eval()(points()).float(), atol=1e-6)


def test_export_load_torchscript_and_onnx_take_three_columns(tmp_path: Path) -> None:
    onnxruntime = pytest.importorskip("onnxruntime")
    tower = time_tower()
    config = export_location_encoder(tower, tmp_path / "exp", onnx=True, torchscript=True)
    assert config["input_columns"] == ["lon", "lat", "time"] and config["architecture"]["pe"] == "sphericalharmonics_time"
    x = points()
    with torch.no_grad():
        ref = tower(x)
        assert torch.allclose(satclip.load_location_encoder(tmp_path / "exp")(x), ref, atol=0)
        assert torch.allclose(torch.jit.load(str(tmp_path / "exp" / "model.torchscript.pt"))(x), ref, atol=1e-12)
    session = onnxruntime.InferenceSession(str(tmp_path / "exp" / "model.onnx"))
    assert session.get_inputs()[0].name == "lonlat_time" and session.get_inputs()[0].shape[1] == 3
    assert np.allclose(session.run(None, {"lonlat_time": x.numpy()})[0], ref.numpy(), atol=1e-12)


def test_embed_time_column(tmp_path: Path) -> None:
    import pandas as pd

    tower = time_tower()
    table = tmp_path / "points.csv"
    table.write_text("id,lon,lat,when\na,10,45,2021-06-21T12:00:00Z\nb,10,-45,\nc,5,6,2021-06-21\nd,7,8,1624276800\n")
    out = tmp_path / "emb.csv"
    assert embed_file(tower, table, output=out, time_col="when", progress=False) == 4
    got = pd.read_csv(out)
    assert list(got.columns[:2]) == ["id", "when"]  # the time column is carried
    times = [T0, math.nan, parse_time("2021-06-21"), 1624276800.0]
    x = torch.tensor([[10, 45, times[0]], [10, -45, times[1]], [5, 6, times[2]], [7, 8, times[3]]], dtype=torch.float64)
    with torch.no_grad():
        assert np.allclose(got[[f"emb_{i}" for i in range(6)]].to_numpy(), tower(x).numpy(), atol=1e-12)
    static = build_location_encoder("sphericalharmonics", "siren", output_dim=6, legendre_polys=4, dim_hidden=16)
    with pytest.raises(ValueError, match="takes no time"):
        embed_file(static, table, output=tmp_path / "x.csv", time_col="when", progress=False)
    table.write_text("lon,lat,when\n10,45,2021-06-21\n10,-45,last summer\n")
    with pytest.raises(ValueError, match=r"column 'when' data row 1: 'last summer' is not an ISO 8601"):
        embed_file(tower, table, output=tmp_path / "y.csv", time_col="when", progress=False)
    assert not (tmp_path / "y.csv").exists()


def test_locfit_reads_times_and_a_time_aware_tower_fits_a_hemispheric_season(tmp_path: Path) -> None:
    """sin(2 pi doy / 365) sign(lat) on held-out (place, time) pairs: R^2 >= 0.95 with SH x Fourier, ~0 without time."""
    torch.set_num_threads(1)

    def split(n: int, seed: int) -> Split:
        lonlat, t = uniform_sphere(n, seed), uniform_times(n, seed + 1)
        doy = np.array([day_of_year(v) for v in t])
        return Split(lonlat, np.sin(2 * np.pi * doy / 365) * np.sign(lonlat[:, 1]), time=t)

    train, val, test = split(3000, 1), split(500, 3), split(1000, 5)
    scores = {}
    for pe, extra in (("sphericalharmonics_time", {"time_harmonics": 1}), ("sphericalharmonics", {})):
        _, report = fit_table(
            train,
            val,
            test=test,
            task="regression",
            pe=pe,
            nn_name="siren",
            max_epochs=150,
            patience=20,
            batch_size=500,
            overrides={"legendre_polys": 6, "dim_hidden": 64, "num_layers": 2, **extra},
        )
        scores[pe] = report["test"]["r2"]
    assert scores["sphericalharmonics_time"] >= 0.95
    assert abs(scores["sphericalharmonics"]) < 0.1
    table = tmp_path / "t.csv"
    table.write_text("lon,lat,y,when\n1,2,0.5,2021-06-21T12:00:00Z\n3,4,0.1,\n")
    read = read_table(table, "y", time_col="when")
    assert read.time is not None and read.time[0] == T0 and math.isnan(read.time[1])
    assert read.inputs(True).shape == (2, 3) and read.inputs(False).shape == (2, 2)
