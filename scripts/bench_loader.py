#!/usr/bin/env python
"""Loader throughput: WebDataset shards (``tif`` and ``s2c`` payloads) through the streaming loader
against the reference's approach, measured in the same run.

Paths, each producing batches of 64 crops 224 x 224 with 13 bands (zero B10) and (lon, lat):

- reference: a map-style Dataset opening one GeoTIFF per sample with rasterio, then per sample,
  as the reference SatCLIP does: float32 / 10000, zero B10 inserted, torchvision RandomCrop,
  horizontal and vertical flips, GaussianBlur(3), coordinate jitter;
- files uint16: the same file reading with the crop and band order only (no float, no
  augmentation): the data path alone;
- shards ``tif`` / ``s2c``, ``aug``: the streaming loader doing the same work as the reference in
  its workers (float reflectance, flips, blur, jitter);
- shards ``tif`` / ``s2c``, ``u16``: the streaming loader with ``keep_uint16``: workers decode, crop
  and order bands, leaving out the zero B10; its insertion, conversion and augmentation run on the
  GPU after transfer (12/26 of the bytes of float32 with B10).

The streaming loader's workers fill reused shared-memory batch buffers (the consumer here drops
each batch; see :mod:`satclip.data.sharedring`), allocated with public torch API.

``--private-apis`` measures instead, in one run with interleaved repeats, what two private
mechanisms would add to the ``u16`` shard paths with workers: torch's
``UntypedStorage._new_shared`` for those buffers (no copy at allocation), and glibc ``mallopt``
in each worker keeping freed heap memory (no fresh zero-filled pages per sample). The library
uses them only if this shows a gain of at least 10%.

"Per core" is samples per CPU-second of the main process plus its DataLoader workers (getrusage),
which holds on a busy machine; wall-clock samples/s are shown too. Ratios: against the reference,
and against the baseline doing the same work (reference for ``aug``, files uint16 for ``u16``).

    python scripts/bench_loader.py                  # 20 copies of ../shared/data/s2-sample, workers 0 1 2
    python scripts/bench_loader.py --samples 2000 --workers 0 4
    python scripts/bench_loader.py --private-apis --workers 1 2 --repeats 3 [--payloads s2c]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import ctypes
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from satclip.data import sharedring
from satclip.data.payload import decode, encode_fast
from satclip.data.shards import read_index, write_shards
from satclip.data.stream import StreamLoader, build_pipeline
from satclip.data.transforms import S2_BANDS, band_indices, crop, crop_offsets, select_bands, target_bands

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT.parent / "shared" / "data" / "s2-sample"
CROP = 224
BATCH = 64


class ReferenceFiles(Dataset):
    """One GeoTIFF opened and read per sample with rasterio; ``augment``: the reference's per-sample
    float pipeline, else the crop and band order only (uint16)."""

    def __init__(self, files: list[Path], lonlat: list[tuple[float, float]], augment: bool) -> None:
        self.files, self.lonlat, self.augment = files, lonlat, augment
        self.bands = band_indices(S2_BANDS, target_bands(S2_BANDS, insert_b10=True))
        self.per_sample = T.Compose([T.RandomCrop(CROP), T.RandomHorizontalFlip(), T.RandomVerticalFlip(), T.GaussianBlur(3)])
        self.rng = np.random.default_rng(0)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        with rasterio.open(self.files[i]) as dataset:
            image = dataset.read()
        lonlat = torch.tensor(self.lonlat[i], dtype=torch.float64)
        if not self.augment:
            top, left = crop_offsets(image.shape[1], image.shape[2], size=CROP, rng=self.rng)
            image = np.ascontiguousarray(select_bands(crop(image, CROP, top=top, left=left), self.bands))
            return {"image": torch.from_numpy(image), "lonlat": lonlat}
        image = image.astype(np.float32) / 10000.0
        image = np.concatenate([image[:10], np.zeros_like(image[:1]), image[10:]])
        jitter = 0.01 * (2 * torch.rand(2, dtype=torch.float64) - 1)
        return {"image": self.per_sample(torch.from_numpy(image)), "lonlat": lonlat + jitter}


def _cpu_seconds() -> float:
    """CPU time of this process and its reaped children (finished DataLoader workers)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def measure(batches) -> tuple[int, float, float]:
    """(samples, wall seconds, CPU seconds) to drain an iterable of batches; workers end inside."""
    cpu0, wall0 = _cpu_seconds(), time.perf_counter()
    n = sum(len(batch["image"]) for batch in batches)
    return n, time.perf_counter() - wall0, _cpu_seconds() - cpu0


def files(paths, lonlat, samples: int, workers: int, augment: bool):
    dataset = ReferenceFiles(paths, lonlat, augment)
    sampler = torch.utils.data.RandomSampler(dataset, replacement=True, num_samples=samples)
    return measure(DataLoader(dataset, batch_size=BATCH, sampler=sampler, num_workers=workers))


def stream(shards: Path, samples: int, workers: int, augment: bool, worker_init_fn=None):
    pipeline = build_pipeline(
        str(shards),
        batch_size=BATCH,
        train=True,
        resample=True,
        epoch_length=samples,
        crop_size=CROP,
        insert_b10=True,
        keep_uint16=not augment,
        shuffle_buffer=64,
        seed=0,
        rank=0,
        world_size=1,
    )
    return measure(StreamLoader(pipeline, num_workers=workers, persistent_workers=False, worker_init_fn=worker_init_fn))


# ----------------------------------------------------------------- the private mechanisms, measured only


def _private_shared_storage(nbytes: int) -> torch.UntypedStorage:
    return torch.UntypedStorage._new_shared(nbytes)  # private torch API: a new segment without a copy


def _mallopt_keep_freed_memory(worker_id: int) -> None:
    """glibc: blocks up to 32 MiB from the heap, and the heap not trimmed below 1 GiB free."""
    libc = ctypes.CDLL("libc.so.6")
    libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD
    libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD


@contextlib.contextmanager
def _allocator(private: bool):
    public = sharedring.shared_storage
    sharedring.shared_storage = _private_shared_storage if private else public  # workers fork after this
    try:
        yield
    finally:
        sharedring.shared_storage = public


def private_apis(tmp: Path, samples: int, workers_list: list[int], repeats: int, payloads: list[str]) -> None:
    """Samples per CPU-second of the u16 shard paths with each private mechanism on and off, interleaved."""
    variants = {
        "public (library)": (False, False),
        "+ _new_shared": (True, False),
        "+ mallopt": (False, True),
        "+ both": (True, True),
    }
    print(f"private APIs on/off: u16 shard paths, {samples} samples per run, median of {repeats} interleaved repeats\n")
    header = f"{'payload':<8} {'workers':>7} " + " ".join(f"{name:>17}" for name in variants)
    print(header + "\n" + "-" * len(header))
    for payload in payloads:
        for workers in [w for w in workers_list if w > 0]:
            per_core: dict[str, list[float]] = {name: [] for name in variants}
            for _ in range(repeats):
                for name, (new_shared, mallopt) in variants.items():
                    with _allocator(new_shared):
                        n, _, cpu = stream(tmp / payload, samples, workers, augment=False, worker_init_fn=_mallopt_keep_freed_memory if mallopt else None)
                    per_core[name].append(n / cpu)
            base = statistics.median(per_core["public (library)"])
            cells = [f"{statistics.median(v):>8.1f} ({statistics.median(v) / base:.2f}x)" for v in per_core.values()]
            print(f"{payload:<8} {workers:>7} " + " ".join(f"{c:>17}" for c in cells), flush=True)


def decode_only(files: list[Path]) -> tuple[float, float, float]:
    """Per-core decode ms of one patch as LZW GeoTIFF and as s2c, and the s2c / tif size ratio."""
    tifs = [f.read_bytes() for f in files]
    fast = [encode_fast(decode("tif", b)) for b in tifs]
    times = []
    for ext, blobs in (("tif", tifs), ("s2c", fast)):
        t0 = time.process_time()
        for _ in range(3):
            for blob in blobs:
                decode(ext, blob)
        times.append((time.process_time() - t0) / (3 * len(blobs)) * 1e3)
    return times[0], times[1], sum(map(len, fast)) / sum(map(len, tifs))


def replicate(sample: Path, folder: Path, copies: int) -> Path:
    """An S2-100K folder of ``copies`` x the sample's patches (symlinks) with its index.csv."""
    index = read_index(sample / "index.csv")
    (folder / "images").mkdir(parents=True)
    with open(folder / "index.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["fn", "lon", "lat"])
        for copy in range(copies):
            for name, (lon, lat) in index.items():
                new = f"{name[:-4]}_{copy:03d}.tif"
                os.symlink(sample / "images" / name, folder / "images" / new)
                writer.writerow([new, lon, lat])
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sample", type=Path, default=SAMPLE, help="an S2-100K folder (default ../shared/data/s2-sample)")
    parser.add_argument("--copies", type=int, default=20, help="replicas of each patch in the shard set (default 20)")
    parser.add_argument("--samples", type=int, default=1000, help="samples read per measurement (default 1000)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--private-apis", action="store_true", help="measure the private torch/glibc mechanisms on and off instead")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats for --private-apis (default 3)")
    parser.add_argument("--payloads", nargs="+", default=["tif", "s2c"], choices=("tif", "s2c"), help="shard payloads for --private-apis")
    args = parser.parse_args()
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory(prefix="satclip-bench-") as tmp:
        folder = replicate(args.sample, Path(tmp) / "s2", args.copies)
        index = read_index(folder / "index.csv")
        paths, lonlat = [folder / "images" / name for name in index], list(index.values())
        for payload in ("tif", "s2c"):
            write_shards([folder], Path(tmp) / payload, payload=payload, samples_per_shard=100, workers=2, progress=False)

        if args.private_apis:
            private_apis(Path(tmp), args.samples, args.workers, args.repeats, args.payloads)
            return
        tif_ms, s2c_ms, size = decode_only(sorted((args.sample / "images").glob("*.tif")))
        print(f"decode only, one core: tif {tif_ms:.2f} ms, s2c {s2c_ms:.2f} ms per patch ({tif_ms / s2c_ms:.1f}x); s2c size {size:.3f} x tif")
        print(f"{len(paths)} patches (shards of 100), {args.samples} samples per run, batch {BATCH}, crop {CROP}, torch threads 1\n")
        runs = {
            "reference (files)": lambda w: files(paths, lonlat, args.samples, w, augment=True),
            "files uint16": lambda w: files(paths, lonlat, args.samples, w, augment=False),
            "shards tif aug": lambda w: stream(Path(tmp) / "tif", args.samples, w, augment=True),
            "shards s2c aug": lambda w: stream(Path(tmp) / "s2c", args.samples, w, augment=True),
            "shards tif u16": lambda w: stream(Path(tmp) / "tif", args.samples, w, augment=False),
            "shards s2c u16": lambda w: stream(Path(tmp) / "s2c", args.samples, w, augment=False),
        }
        same_work = {"aug": "reference (files)", "u16": "files uint16"}
        header = f"{'path':<18} {'workers':>7} {'samples/s':>10} {'per core':>9} {'x ref/core':>10} {'x same/core':>11} {'x ref wall':>10}"
        print(header + "\n" + "-" * len(header))
        for workers in args.workers:
            done: dict[str, tuple[float, float]] = {}
            for name, run in runs.items():
                n, wall, cpu = run(workers)
                done[name] = (n / wall, n / cpu)
                ref = done["reference (files)"]
                same = done[same_work.get(name[-3:], name)]
                print(
                    f"{name:<18} {workers:>7} {n / wall:>10.1f} {n / cpu:>9.1f} {n / cpu / ref[1]:>9.2f}x "
                    f"{n / cpu / same[1]:>10.2f}x {n / wall / ref[0]:>9.2f}x",
                    flush=True,
                )
            print()


if __name__ == "__main__":
    main()
