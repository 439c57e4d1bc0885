"""The benchmark scripts' own arithmetic (their full runs are benchmarks, not tests)."""

from __future__ import annotations

import sys
from pathlib import Path

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
