#!/usr/bin/env python
"""How often a training step holds the same patch twice (a false negative for the contrastive loss).

Replays the training stream's sampling exactly as ``satclip.data.pipeline.ShardStream`` does it
with ``resample=True`` (each worker draws shards with replacement and passes their samples through
its shuffle buffer; loader batches come from the workers in turn; a step is ``accumulate`` loader
batches), on sample keys only, so S2-100K-sized settings take seconds. Prints the share of steps
with at least one repeated patch and the mean number of repeated rows per step.

Usage: ``python scripts/bench_duplicates.py`` (the settings of the synthetic benchmark, the demo and
the released configs on S2-100K); ``--samples N --per-shard K --batch B --accumulate A --workers W
--buffer S`` for one setting of your own.
"""

from __future__ import annotations

import argparse
import itertools
import random
import sys
from collections.abc import Iterator

from satclip.data.seeds import seed_int
from satclip.data.shardplan import shuffled

SETTINGS = {  # name: (samples, samples per shard, loader batch, batches per step, workers, shuffle buffer)
    "bench_pretrain_quality (6,000 patches)": (6000, 1000, 128, 1, 1, 256),
    "demo (8 patches)": (8, 4, 8, 1, 1, 8),
    "released configs on S2-100K": (100_000, 500, 512, 16, 8, 256),
}


def worker_keys(shards: int, per_shard: int, buffer: int, seed: int) -> Iterator[tuple[int, int]]:
    """(shard, row) keys in the order one worker emits them."""
    rng = random.Random(seed)
    reads = (rng.randrange(shards) for _ in itertools.count())
    raws = ((s, i) for s in reads for i in range(per_shard))
    return shuffled(raws, buffer, rng=rng) if buffer > 1 else raws


def duplicate_rate(
    samples: int, per_shard: int, batch: int, accumulate: int, workers: int, buffer: int, steps: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """(share of steps with a repeated patch, mean repeated rows per step) over ``steps`` steps."""
    shards = max(1, samples // per_shard)
    streams = [worker_keys(shards, min(per_shard, samples), buffer, seed_int(seed, w)) for w in range(workers)]
    turn = itertools.cycle(range(workers))
    with_dup = repeated = 0
    for _ in range(steps):
        keys = [k for _ in range(accumulate) for k in itertools.islice(streams[next(turn)], batch)]
        extra = len(keys) - len(set(keys))
        with_dup += extra > 0
        repeated += extra
    return with_dup / steps, repeated / steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for flag in ("samples", "per-shard", "batch", "accumulate", "workers", "buffer"):
        parser.add_argument(f"--{flag}", type=int)
    parser.add_argument("--steps", type=int, default=2000)
    args = parser.parse_args(argv)
    own = [args.samples, args.per_shard, args.batch, args.accumulate, args.workers, args.buffer]
    settings = SETTINGS if all(v is None for v in own) else {"given": tuple(v if v is not None else d for v, d in zip(own, (100_000, 500, 512, 1, 1, 256)))}
    print("| setting | rows per step | steps with a repeated patch | repeated rows per step |\n|---|---|---|---|")
    for name, (n, k, b, a, w, s) in settings.items():
        share, rows = duplicate_rate(n, k, b, a, w, s, args.steps)
        print(f"| {name} | {b * a} | {share:.1%} | {rows:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
