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
