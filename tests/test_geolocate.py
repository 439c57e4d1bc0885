"""``satclip locate``: streamed top-k over a gallery, great-circle errors, accuracies and chance."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from satclip.cli import main as cli_main
from satclip.eval import geolocate as gl
from satclip.geo import great_circle_km
from satclip.location import build_location_encoder

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"


@pytest.fixture(scope="module")
def encoder() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_location_encoder(output_dim=32, legendre_polys=8, dim_hidden=64, num_layers=1).eval()


def test_streamed_ranking_finds_the_truth_and_counts_chance_exactly(tmp_path: Path, encoder, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    points = np.stack([rng.uniform(-180, 180, 300), np.degrees(np.arcsin(rng.uniform(-1, 1, 300)))], axis=1)
    np.save(tmp_path / "gallery.npy", points)
    truth = torch.from_numpy(points[::7].copy())
    truth[3] = float("nan")  # an image whose location is unknown
    with torch.no_grad():
        images = encoder(torch.from_numpy(points[::7])).float()  # image embeddings that point at their own location
    monkeypatch.setattr(gl, "GALLERY_CHUNK", 37)  # several gallery chunks ...
    monkeypatch.setattr(gl, "IMAGE_CHUNK", 5)  # ... and image chunks
    ranking = gl.rank_gallery(images, truth, encoder=encoder, gallery=gl.Gallery.parse(str(tmp_path / "gallery.npy")), top_k=3, progress=False)
    assert ranking.gallery_size == 300 and ranking.scores.shape == (len(truth), 3)
    np.testing.assert_allclose(ranking.lonlat[:, 0].numpy(), points[::7], atol=1e-12)  # top-1 = the true point
    assert (ranking.scores[:, 0] > 0.9999).all() and (ranking.scores[:, :-1] >= ranking.scores[:, 1:]).all()
    full = torch.nn.functional.normalize(images, dim=-1) @ torch.nn.functional.normalize(encoder(torch.from_numpy(points)).float(), dim=-1).T
    np.testing.assert_allclose(ranking.scores.numpy(), full.topk(3, dim=1).values.detach().numpy(), atol=1e-6)
    summary = gl.summarise(ranking)
    assert summary["with_location"] == len(truth) - 1 and summary["median_km"] == pytest.approx(0, abs=1e-6)
    assert summary["acc_25km"] == 1.0
    known = ranking.known.numpy()
    dist = great_circle_km(truth[known][:, None, :].expand(-1, 300, -1).reshape(-1, 2), torch.from_numpy(points).repeat(int(known.sum()), 1))
    dist = dist.reshape(int(known.sum()), 300)
    for t in gl.THRESHOLDS_KM:
        assert summary[f"chance_acc_{t}km"] == pytest.approx(float((dist <= t).double().mean()), abs=1e-12)
    assert 5000 < summary["chance_median_km"] < 15000
    assert "| model | 0 | 100.0%" in gl.summary_text(summary)


@pytest.mark.parametrize("spec, message", [("grid:0", "grid:RES"), ("grid:1:sea", "grid:RES"), ("nowhere.csv", "no such file")])
def test_bad_galleries(spec: str, message: str) -> None:
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        gl.Gallery.parse(spec)


def test_an_absurd_grid_gallery_is_refused_at_once() -> None:
    with pytest.raises(
        ValueError,
        match=r"'grid:0.001': 6.48e\+10 places to embed and rank \(360000 x 180000; about 31.2 days at 24,000 points/s, one CPU thread\), above the limit of 1e\+09.*grid:0.01",
    ):
        gl.Gallery.parse("grid:0.001")
    assert gl.Gallery.parse("grid:0.001", max_places=1e11).resolution == 0.001  # the limit can be raised
    assert gl.Gallery.parse("grid:0.01").resolution == 0.01  # 6.5e8 places: allowed


def test_locate_refuses_an_absurd_gallery_before_loading_the_checkpoint(tmp_path: Path) -> None:
    argv = ["locate", "--checkpoint", str(tmp_path / "no-such.ckpt"), "--images", str(tmp_path), "--gallery", "grid:0.001", "--out", str(tmp_path / "g.csv")]
    start = time.perf_counter()
    with pytest.raises(SystemExit, match=r"^satclip locate: --gallery 'grid:0.001': 6.48e\+10 places .* raise the limit with --max-gallery$"):
        cli_main(argv)
    assert time.perf_counter() - start < 1.0 and list(tmp_path.iterdir()) == []
    with pytest.raises(SystemExit, match="no-such.ckpt"):  # confirmed with --max-gallery: on to the checkpoint
        cli_main([*argv, "--max-gallery", "1e11"])


def test_grid_gallery_covers_the_globe() -> None:
    chunks = list(gl.Gallery.parse("grid:10").chunks(100))
    points = np.concatenate(chunks)
    assert len(points) == 36 * 18 and len(chunks) > 1
    assert points[:, 1].max() == 85 and points[:, 0].min() == -175


def test_land_gallery_keeps_land_only() -> None:
    pytest.importorskip("global_land_mask")
    from satclip.eval.points import is_land

    land = np.concatenate(list(gl.Gallery.parse("grid:5:land").chunks()))
    assert 0.2 * 72 * 36 < len(land) < 0.4 * 72 * 36 and is_land(land).all()


def test_locate_cli(tmp_path: Path) -> None:
    from test_embed_images import save_checkpoint

    ckpt = save_checkpoint(tmp_path / "tiny.ckpt")
    out = tmp_path / "guesses.csv"
    assert (
        cli_main(["locate", "--checkpoint", str(ckpt), "--images", str(SAMPLE), "--gallery", "grid:15", "--top-k", "2", "--output", str(out), "--no-progress"])
        == 0
    )
    guesses = pd.read_csv(out)
    assert list(guesses.columns) == ["key", "lon", "lat", "lon_1", "lat_1", "score_1", "lon_2", "lat_2", "score_2", "error_km"]
    assert len(guesses) == 8 and (guesses["score_1"] >= guesses["score_2"]).all()
    np.testing.assert_allclose(
        guesses["error_km"], great_circle_km(torch.tensor(guesses[["lon_1", "lat_1"]].to_numpy()), torch.tensor(guesses[["lon", "lat"]].to_numpy())).numpy()
    )
    summary = json.loads((tmp_path / "guesses.summary.json").read_text())
    assert summary["images"] == 8 and summary["gallery"] == 24 * 12 and "acc_2500km" in summary
    # precomputed embeddings give the same guesses
    assert cli_main(["embed-images", "--checkpoint", str(ckpt), "--input", str(SAMPLE), "--output", str(tmp_path / "e.parquet"), "--no-progress"]) == 0
    assert (
        cli_main(
            [
                "locate",
                "--checkpoint",
                str(ckpt),
                "--images",
                str(tmp_path / "e.parquet"),
                "--gallery",
                "grid:15",
                "--top-k",
                "2",
                "--output",
                str(tmp_path / "again.csv"),
                "--no-progress",
            ]
        )
        == 0
    )
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "again.csv"), guesses)
    with pytest.raises(SystemExit, match="name it .csv"):
        cli_main(["locate", "--checkpoint", str(ckpt), "--images", str(SAMPLE), "--output", str(tmp_path / "g.parquet")])
