"""Split rows into one contiguous part per thread, each part run single-threaded in its own Python thread.

Why: on CPU, every torch operation on several threads is an OpenMP parallel region, and many short
regions stall at their barriers when the cores are oversubscribed (other processes, data-loader
workers): each waits for the other threads to be scheduled. A part per Python thread, with one
torch (and sphericart) thread there, keeps each core on its own rows and its own cache; the
matrix products, the sines and sphericart release the GIL. See docs/speed.md.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch


def run_in_parts(n: int, parts: int, *, work: Callable[[int, int], None]) -> None:
    """``work(start, stop)`` over ``parts`` contiguous parts of rows 0..n-1, each in its own Python thread
    with one torch thread (a per-thread setting); the process's torch thread count is restored after."""
    threads = torch.get_num_threads()
    bounds = [n * i // parts for i in range(parts + 1)]

    def single_threaded(start: int, stop: int) -> None:
        torch.set_num_threads(1)  # this Python thread's own OpenMP/MKL setting
        with torch.inference_mode():
            work(start, stop)

    try:
        with ThreadPoolExecutor(parts) as pool:
            for done in [pool.submit(single_threaded, a, b) for a, b in zip(bounds, bounds[1:])]:
                done.result()
    finally:
        torch.set_num_threads(threads)  # the process default, which a worker's setting also moved
