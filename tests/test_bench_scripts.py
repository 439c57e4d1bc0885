"""The benchmark scripts' own arithmetic (their full runs are benchmarks, not tests)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import bench_duplicates  # noqa: E402


def test_duplicate_rate_counts_repeated_patches_per_step() -> None:
    # one shard of 4 samples, steps of 8 rows: each step reads the shard twice, 4 rows repeat
    assert bench_duplicates.duplicate_rate(4, 4, 8, 1, 1, 0, steps=10) == (1.0, 4.0)
    # one shard of 1,000 read in order, steps of 100 rows: never a repeat within a step
    assert bench_duplicates.duplicate_rate(1000, 1000, 100, 1, 1, 0, steps=30) == (0.0, 0.0)
    # many shards drawn with replacement: repeats appear once a step spans several shard reads
    share, rows = bench_duplicates.duplicate_rate(2000, 10, 64, 4, 2, 16, steps=200)
    assert 0.5 < share <= 1.0 and rows > 0


def test_embed_device_benchmark_checks_outputs_against_the_cpu(capsys) -> None:
    """gpu_check.sh's location part: bench_embed's device benchmark, run on the CPU as a stand-in device."""
    import argparse

    import bench_embed

    args = argparse.Namespace(device="cpu:0", points=64, batch_size=32, degrees=[2], compile=False)
    bench_embed.device_bench(args)  # exits non-zero when an output differs from the CPU's beyond the limit
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| 2 |")]
    assert [r.split(" | ")[1:3] for r in rows[:3]] == [
        ["float64", "GEMM bound"],
        ["float64", "tower"],
        ["float64", "embed_array, 64 points from and to host memory"],
    ]
    assert len(rows) == 6 and all("e-" in r.split(" | ")[5] or r.split(" | ")[5] in ("-", "0.0e+00") for r in rows)


def _table(out: str, title: str = "") -> dict[str, list[float]]:
    """The rows of the first Markdown table after ``title`` in an ablation report: variant -> its numbers."""
    lines = out[out.index(title) :].splitlines() if title else out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| variant |"))
    rows = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = [float(c) for c in cells[3:]]
    return rows


def test_ablation_sections_average_the_seeds_and_report_their_spread(capsys) -> None:
    import ablate_pretrain

    tiny = ["--steps", "2", "--batch-sizes", "16", "--n-train", "64", "--variants", "fixed 1 (cool)"]
    singles = []
    for seed in (0, 1):
        assert ablate_pretrain.main([*tiny, "--seeds", str(seed)]) == 0
        out = capsys.readouterr().out
        assert "standard deviation" not in out and "2 steps of batch 16, 128 training locations" in out  # at least 8 batches
        singles.append(_table(out))
    assert ablate_pretrain.main([*tiny, "--seeds", "0", "1"]) == 0
    out = capsys.readouterr().out
    mean, spread = _table(out), _table(out, "standard deviation over 2 seeds")
    for name in ("same tower, untrained", "SH L=10", "fixed 1 (cool)"):
        both = np.array([singles[0][name], singles[1][name]])
        np.testing.assert_allclose(mean[name], both.mean(0), atol=1e-3)
        np.testing.assert_allclose(spread[name], both.std(0), atol=1e-3)


def test_ablation_refuses_a_step_count_per_batch_size_that_does_not_match() -> None:
    import ablate_pretrain

    with pytest.raises(SystemExit):
        ablate_pretrain.main(["--batch-sizes", "16", "32", "--steps", "1", "2", "3"])


def _tiny_embed_args(**kw):
    import argparse

    base = dict(points=256, ref_points=64, rounds=2, batch_size=64, no_reference=True, compile=False, peak_size=64, degrees=[2], features_only=False)
    return argparse.Namespace(**{**base, **kw})


@pytest.fixture
def one_torch_thread():
    """One torch thread, as the benchmark's own process runs with --threads 1 (and --profile)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_embed_benchmark_reports_the_peak_fraction_and_the_sphericart_ratio_per_cell(capsys, one_torch_thread) -> None:
    import bench_embed

    assert bench_embed.tower_flops(10) == 888_832  # 2 x (100 x 512 + 512 x 512 + 512 x 256): the 0.89 MFLOP of docs/speed.md
    rates = bench_embed.bench_degree(2, _tiny_embed_args())
    rows = bench_embed.report(2, rates, threads=1)
    out = capsys.readouterr().out
    for name in ("peak matmul float64", "peak matmul float32", "features only: sphericart float32", "satclip tower call float64"):
        assert name in out
    assert [r["dtype"] for r in rows] == ["float64", "float32"]
    for r in rows:
        # fractions of the peak are the rates times the FLOPs per point over the peak FLOP rate, measured in the same run
        d = r["dtype"]
        assert r["satclip"] == pytest.approx(rates[f"satclip {d}"] * bench_embed.tower_flops(2) / rates[f"peak matmul {d}"])
        assert r["harmonics"] == pytest.approx(rates[f"features only: satclip {d}"] / rates[f"features only: sphericart {d}"])
        assert all(float(r[k]) > 0 for k in bench_embed.SUMMARY_COLUMNS)
    bench_embed.summary(rows)
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 2 |")]
    assert len(table) == 2 and len(table[0].split("|")) == 3 + len(bench_embed.SUMMARY_COLUMNS) + 2


def test_embed_benchmark_features_only_times_the_harmonics_against_sphericart(one_torch_thread) -> None:
    import bench_embed

    rates = bench_embed.bench_degree(3, _tiny_embed_args(features_only=True))
    assert {k for k in rates if not k.startswith("spread")} == {f"features only: {w} {d}" for w in ("satclip", "sphericart") for d in ("float64", "float32")}
    rows = bench_embed.report(3, rates, threads=1)
    assert [set(r) for r in rows] == [{"L", "dtype", "threads", "harmonics"}] * 2 and all(float(r["harmonics"]) > 0 for r in rows)


def test_embed_profile_times_every_stage_of_the_pipeline(capsys, one_torch_thread) -> None:
    import bench_embed

    bench_embed.profile(_tiny_embed_args(points=1100, rounds=1, batch_size=600))  # a short last batch and chunk
    rows = [line.strip("|").split("|") for line in capsys.readouterr().out.splitlines() if line.startswith("| 2 |")]
    assert [r[1].strip() for r in rows] == ["float64", "float32"]
    for r in rows:
        tower = float(r[2])
        stages = [float(c.split("(")[0]) for c in r[3:8]]  # validation, harmonics, products, sines, result copy
        assert tower > 0 and all(s > 0 for s in stages) and float(r[9]) > 0 and float(r[10]) > 0


def test_end_to_end_embed_benchmark_runs_the_cli_and_measures_each_child(capsys) -> None:
    import bench_embed_e2e

    argv = ["--rows", "300", "--repeats", "1", "--inputs", "csv", "--outputs", "npy", "geoparquet", "--degree", "2", "--threads", "1"]
    assert bench_embed_e2e.main(argv) == 0
    out = capsys.readouterr().out
    rows = {line.split("|")[2].strip(): line.split("|") for line in out.splitlines() if line.startswith("| 300 |")}
    assert set(rows) == {"tower alone", "csv -> npy", "csv -> geoparquet"}
    for cells in rows.values():
        assert float(cells[3]) > 0 and float(cells[5].replace(",", "")) > 0 and 50 < float(cells[9]) < 4000  # seconds, points/s, MiB
    assert "one-row CSV (start-up)" in out
