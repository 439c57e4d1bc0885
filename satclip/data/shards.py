"""``satclip shards``: write WebDataset shards of Sentinel-2 patches with their coordinates.

Inputs, detected from what is given:

- an S2-100K folder: ``index.csv`` (columns ``fn``, ``lon``, ``lat`` in any order, extra columns
  ignored) and ``images/patch_N.tif``; ``--index`` names an index kept elsewhere;
- a folder of GeoTIFFs without an index: each patch's centre (lon, lat) comes from its own
  georeference (:func:`satclip.geo.lonlat_from_georeference`);
- S2-100K tar shards as published (tars of ``patch_N.tif``, members possibly under ``images/``),
  as files or a folder of them, with ``--index`` (without it, coordinates from georeference).

Output, in ``--out``: ``shard-000000.tar``, ... each sample holding ``__key__`` (the file stem,
e.g. ``patch_N``), the image under its payload extension (``tif``: original bytes; ``s2c``: see
:mod:`satclip.data.payload`) and ``json`` = {lon, lat, source, crs, bands, shape, dtype}; and
``manifest.json`` = {format, payload, dtype, bands, shards: [{name, samples}], samples}.
Every image is decoded once while writing, so a shard set never holds an unreadable sample.
Output is deterministic: the same inputs give byte-identical shards for any ``--workers``.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import math
import os
import shutil
import sys
import tarfile
import tempfile
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import TypeVar

from ..columns import CoordinateColumnsError, add_coordinate_arguments, find_coordinate_columns
from .payload import PAYLOAD_EXTENSIONS, decode_tif, encode_fast
from .shardlist import MANIFEST
from .transforms import S2_BANDS

MANIFEST_FORMAT = "satclip-shards/1"
TIF_SUFFIXES = (".tif", ".tiff")
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")
_MISSING_SHOWN = 5
T = TypeVar("T")
R = TypeVar("R")


class ShardInputError(ValueError):
    """The inputs of ``satclip shards`` are unusable: the message names the file and the problem."""


@dataclass(frozen=True)
class _Task:
    """One patch to write: ``data`` (bytes read from a tar) or ``path``; ``lonlat`` None = georeference."""

    key: str
    source: str
    path: str | None = None
    data: bytes | None = None
    lonlat: tuple[float, float] | None = None


# ---------------------------------------------------------------------------------------------
# reading the inputs


def read_index(path: str | Path, lon_col: str | None = None, lat_col: str | None = None, crs: str | None = None) -> dict[str, tuple[float, float]]:
    """Read an S2-100K style ``index.csv``: file name (basename of ``fn``) -> (lon, lat) degrees.

    Columns ``fn`` and the coordinates may come in any order among others; the coordinate columns are
    found by :func:`satclip.columns.find_coordinate_columns` (``lon``/``lat``, ``longitude``/``latitude``,
    ...) unless named. Raises :class:`ShardInputError` for a missing or ambiguous column, a value that
    is not a number, a duplicate file name, or coordinates that are non-finite or have |lat| > 90
    (longitudes are wrapped).
    """
    import torch

    from ..geo import validate_lonlat

    path = Path(path)
    if not path.is_file():
        raise ShardInputError(f"index {path} does not exist")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        fields = list(reader.fieldnames or [])
        if "fn" not in fields:
            raise ShardInputError(f"index {path}: missing column(s) ['fn']; found {fields}")
        try:
            lon, lat = find_coordinate_columns(fields, lon_col, lat_col, crs, where=f"index {path}")
        except CoordinateColumnsError as err:
            raise ShardInputError(str(err)) from None
        names, coords = [], []
        for line, row in enumerate(reader, start=2):
            try:
                coords.append((float(row[lon]), float(row[lat])))
            except (TypeError, ValueError):
                raise ShardInputError(f"index {path} line {line} ({row['fn']!r}): {lon}={row[lon]!r}, {lat}={row[lat]!r} are not numbers") from None
            names.append(os.path.basename(row["fn"]))
    if not names:
        raise ShardInputError(f"index {path} has no rows")
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ShardInputError(f"index {path}: file {name!r} is listed more than once")
        seen.add(name)
    try:
        lonlat = validate_lonlat(torch.tensor(coords, dtype=torch.float64), name=f"index {path} (data rows from 0)")
    except ValueError as err:
        raise ShardInputError(str(err)) from None
    return {name: (float(lon), float(lat)) for name, (lon, lat) in zip(names, lonlat.tolist())}


def _key(relative: str) -> str:
    """Sample key of a file: its path without the suffix; dots become '_' (WebDataset splits there)."""
    stem = relative.rsplit(".", 1)[0] if "." in os.path.basename(relative) else relative
    return stem.replace(".", "_")


def _folder_tasks(root: Path, index: dict[str, tuple[float, float]] | None) -> list[_Task]:
    """Tasks for an S2-100K folder (with an index) or a plain folder of GeoTIFFs (georeference)."""
    if index is None:
        files = sorted(p for p in root.rglob("*") if p.suffix.lower() in TIF_SUFFIXES and p.is_file())
        if not files:
            raise ShardInputError(f"{root}: no index.csv and no GeoTIFF (*.tif, *.tiff) files")
        return [_Task(_key(p.relative_to(root).as_posix()), p.relative_to(root).as_posix(), path=str(p)) for p in files]
    tasks, missing = [], []
    for name, lonlat in index.items():
        path = next((p for p in (root / "images" / name, root / name) if p.is_file()), None)
        if path is None:
            missing.append(name)
            continue
        tasks.append(_Task(_key(name), path.relative_to(root).as_posix(), path=str(path), lonlat=lonlat))
    if missing:
        raise ShardInputError(f"{root}: {len(missing)} of {len(index)} files in the index are missing under {root / 'images'}: {_first(missing)}")
    present = (p for folder in (root, root / "images") if folder.is_dir() for p in folder.iterdir())
    unlisted = sorted(p.name for p in present if p.suffix.lower() in TIF_SUFFIXES and p.is_file() and p.name not in index)
    if unlisted:
        raise ShardInputError(f"{root}: {len(unlisted)} GeoTIFFs are not in the index: {_first(unlisted)}; add them to the index or move them out")
    return tasks


def _first(names: Sequence[str]) -> str:
    return ", ".join(names[:_MISSING_SHOWN]) + (", ..." if len(names) > _MISSING_SHOWN else "")


def _tar_tasks(tars: Sequence[Path], index: dict[str, tuple[float, float]] | None) -> Iterator[_Task]:
    """Tasks streamed from S2-100K tar shards: every ``*.tif`` member; other members are ignored."""
    for tar_path in tars:
        try:
            with tarfile.open(tar_path, "r|*") as tar:
                for member in tar:
                    name = os.path.basename(member.name)
                    if not member.isfile() or not name.lower().endswith(TIF_SUFFIXES):
                        continue
                    lonlat = None
                    if index is not None:
                        if name not in index:
                            raise ShardInputError(f"{tar_path}: member {member.name!r} is not in the index")
                        lonlat = index[name]
                    extracted = tar.extractfile(member)
                    assert extracted is not None  # a regular file member
                    data = extracted.read()
                    yield _Task(_key(name), f"{tar_path.name}:{member.name}", data=data, lonlat=lonlat)
        except (tarfile.TarError, EOFError, OSError) as err:
            raise ShardInputError(f"{tar_path}: not a readable tar ({type(err).__name__}: {err})") from err


def collect_tasks(
    inputs: Sequence[str | Path], index: str | Path | None = None, index_columns: dict[str, str | None] | None = None
) -> tuple[Iterable[_Task], int | None]:
    """Work out the input layout; return the tasks and their number (None when streamed from tars)."""
    paths = [Path(p) for p in inputs]
    for p in paths:
        if not p.exists():
            raise ShardInputError(f"input {p} does not exist")
    if len(paths) == 1 and paths[0].is_dir():
        root = paths[0]
        tars = sorted(p for p in root.iterdir() if p.name.endswith(TAR_SUFFIXES))
        has_tifs = any(p.suffix.lower() in TIF_SUFFIXES for p in root.rglob("*"))
        if tars and not has_tifs:
            paths = tars
            if index is None and (root / "index.csv").is_file():
                index = root / "index.csv"
        else:
            index_path = Path(index) if index is not None else root / "index.csv"
            table = read_index(index_path, **(index_columns or {})) if index_path.is_file() or index is not None else None
            tasks = _folder_tasks(root, table)
            return tasks, len(tasks)
    not_tars = [str(p) for p in paths if not (p.is_file() and p.name.endswith(TAR_SUFFIXES))]
    if not_tars:
        raise ShardInputError(f"expected one folder or tar files ({', '.join(TAR_SUFFIXES)}); not usable: {not_tars}")
    table = read_index(index, **(index_columns or {})) if index is not None else None
    return _tar_tasks(paths, table), None


# ---------------------------------------------------------------------------------------------
# encoding one sample (runs in the worker processes)


def encode_sample(task: _Task, payload: str, bands: Sequence[str]) -> tuple[str, bytes, dict]:
    """Decode one GeoTIFF, check it, and return (key, payload bytes, JSON record)."""
    from rasterio.io import MemoryFile

    from ..geo import lonlat_from_georeference

    data = task.data if task.data is not None else Path(str(task.path)).read_bytes()
    try:
        array = decode_tif(data)
    except ValueError as err:
        raise ShardInputError(f"{task.source}: {err}") from None
    if array.shape[0] != len(bands):
        raise ShardInputError(f"{task.source}: {array.shape[0]} bands, but the band list names {len(bands)}: {list(bands)}")
    with MemoryFile(data) as memfile, memfile.open() as dataset:
        crs = dataset.crs.to_string() if dataset.crs else None
        if task.lonlat is None:
            try:
                lon, lat = lonlat_from_georeference(dataset)
            except ValueError as err:
                raise ShardInputError(f"{task.source}: coordinates needed from georeference: {err}") from None
        else:
            lon, lat = task.lonlat
    if not (math.isfinite(lon) and math.isfinite(lat) and abs(lat) <= 90):
        raise ShardInputError(f"{task.source}: invalid coordinates lon={lon!r}, lat={lat!r}")
    record = {
        "lon": lon,
        "lat": lat,
        "source": task.source,
        "crs": crs,
        "bands": list(bands),
        "shape": list(array.shape),
        "dtype": str(array.dtype),
    }
    blob = data if payload == "tif" else encode_fast(array)
    return task.key, blob, record


def _encode_star(job: tuple[_Task, str, tuple[str, ...]]) -> tuple[str, bytes, dict]:
    return encode_sample(*job)


# ---------------------------------------------------------------------------------------------
# writing


class _TarShards:
    """Writes samples into ``shard-%06d.tar`` files of ``per_shard`` samples in ``out``."""

    def __init__(self, out: Path, per_shard: int, payload: str) -> None:
        self.out, self.per_shard, self.payload = out, per_shard, payload
        self.shards: list[dict] = []
        self.dtype: str | None = None
        self.shape: list[int] | None = None
        self._tar: tarfile.TarFile | None = None
        self._keys: set[str] = set()

    def add(self, key: str, blob: bytes, record: dict) -> None:
        if key in self._keys:
            raise ShardInputError(f"two inputs give the same sample key {key!r} (second: {record['source']})")
        self._keys.add(key)
        if self.dtype is None:
            self.dtype, self.shape = record["dtype"], record["shape"]
        elif record["dtype"] != self.dtype:
            raise ShardInputError(f"{record['source']}: dtype {record['dtype']}, the other samples are {self.dtype}")
        elif record["shape"] != self.shape:
            raise ShardInputError(
                f"{record['source']}: shape {tuple(record['shape'])}, the other samples are {tuple(self.shape or ())} (one patch size per shard set)"
            )
        if self._tar is None:
            self.shards.append({"name": f"shard-{len(self.shards):06d}.tar", "samples": 0})
            self._tar = tarfile.open(self.out / self.shards[-1]["name"], "w", format=tarfile.USTAR_FORMAT)
        self._member(f"{key}.{self.payload}", blob)
        self._member(f"{key}.json", json.dumps(record, separators=(",", ":")).encode())
        self.shards[-1]["samples"] += 1
        if self.shards[-1]["samples"] == self.per_shard:
            self._finish()

    def close(self) -> None:
        if self._tar is not None:
            self._finish()

    def _member(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(data), 0o644, 0  # fixed metadata: reproducible shards
        assert self._tar is not None  # a shard is open
        self._tar.addfile(info, io.BytesIO(data))

    def _finish(self) -> None:
        assert self._tar is not None
        self._tar.close()
        self._tar = None


def encode_in_order(fn: Callable[[T], R], jobs: Iterable[T], workers: int, in_flight: int = 16) -> Generator[R, None, None]:
    """``map(fn, jobs)``, in ``workers`` spawned processes when > 1, results in input order with at
    most ``in_flight * workers`` jobs submitted ahead (bounds the bytes read ahead from tars).

    The first error, in a job, in reading ``jobs`` or a worker process dying, is raised here at
    once; pending jobs are cancelled and the workers stopped before it propagates. Close the
    generator (``contextlib.closing``) when leaving the loop early."""
    if workers <= 1:
        yield from map(fn, jobs)
        return
    pool = ProcessPoolExecutor(workers, mp_context=get_context("spawn"))
    window: deque[Future] = deque()
    done = 0
    try:
        for job in jobs:
            window.append(pool.submit(fn, job))
            if len(window) >= in_flight * workers:
                yield window.popleft().result()
                done += 1
        while window:
            yield window.popleft().result()
            done += 1
    except BrokenProcessPool:
        raise ShardInputError(
            f"an encoding worker process died after {done} samples (killed, out of memory, or a crash in the "
            "GeoTIFF reader); run with --workers 1 to find the input"
        ) from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _shard_set(folder: Path) -> list[Path]:
    """The shard set in ``folder``: its manifest first, then its shards."""
    if not folder.is_dir():
        return []
    manifest = [folder / MANIFEST] if (folder / MANIFEST).exists() else []
    return manifest + sorted(folder.glob("shard-*.tar"))


def _hidden_sibling(out: Path, tag: str) -> Path:
    """A new hidden folder beside ``out`` (same file system: renames between them are atomic)."""
    resolved = out.resolve()
    return Path(tempfile.mkdtemp(prefix=f".{resolved.name}.{tag}-", dir=resolved.parent))


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ShardInputError(f"--out {out} is a file, not a folder")
    old = _shard_set(out)
    if old and not overwrite:
        raise ShardInputError(f"{out} already holds shards ({old[0].name}, ...); pass --overwrite to replace them")


def _commit(temp: Path, out: Path) -> None:
    """Move the complete set written in ``temp`` into ``out``. The old set goes aside first, into a
    hidden sibling (only left behind if this few-renames step is interrupted), the manifest last:
    ``out`` never lists a shard it does not hold."""
    out.mkdir(exist_ok=True)
    old = _shard_set(out)
    aside = _hidden_sibling(out, "old") if old else None
    for path in old:
        assert aside is not None
        os.replace(path, aside / path.name)
    for path in sorted(temp.iterdir(), key=lambda p: p.name == MANIFEST):
        os.replace(path, out / path.name)
    temp.rmdir()
    if aside is not None:
        shutil.rmtree(aside)


def _write_set(
    tasks: Iterable[_Task],
    total: int | None,
    folder: Path,
    samples_per_shard: int,
    payload: str,
    bands: tuple[str, ...],
    workers: int,
    progress: bool,
    out: Path,
) -> dict:
    """Encode ``tasks`` into shards in ``folder``; return the manifest (``out`` names the progress bar)."""
    from tqdm import tqdm

    jobs = ((task, payload, bands) for task in tasks)
    writer = _TarShards(folder, samples_per_shard, payload)
    with tqdm(total=total, unit="patch", desc=f"shards -> {out}", disable=not progress) as bar:
        with contextlib.closing(encode_in_order(_encode_star, jobs, workers)) as results:
            for key, blob, record in results:
                writer.add(key, blob, record)
                bar.update()
        writer.close()
    return {
        "format": MANIFEST_FORMAT,
        "payload": payload,
        "dtype": writer.dtype,
        "bands": list(bands),
        "shards": writer.shards,
        "samples": sum(s["samples"] for s in writer.shards),
    }


def write_shards(
    inputs: Sequence[str | Path],
    out: str | Path,
    *,
    index: str | Path | None = None,
    samples_per_shard: int = 500,
    payload: str = "s2c",
    bands: Sequence[str] = S2_BANDS,
    workers: int = 1,
    overwrite: bool = False,
    progress: bool = True,
    index_columns: dict[str, str | None] | None = None,
) -> dict:
    """Write WebDataset shards and ``manifest.json`` into ``out``; return the manifest.

    ``index_columns``: ``lon_col`` / ``lat_col`` / ``crs`` for :func:`read_index` (default: found).

    The set is written into a hidden temporary sibling of ``out`` and moved in only once complete:
    a failure leaves ``out`` (and a set it held, with ``overwrite``) as it was."""
    if payload not in PAYLOAD_EXTENSIONS:
        raise ShardInputError(f"payload must be one of {PAYLOAD_EXTENSIONS}, got {payload!r}")
    if samples_per_shard < 1 or workers < 1:
        raise ShardInputError(f"--samples-per-shard and --workers must be >= 1, got {samples_per_shard} and {workers}")
    tasks, total = collect_tasks(inputs, index, index_columns)
    out = Path(out)
    _check_out(out, overwrite)
    out.resolve().parent.mkdir(parents=True, exist_ok=True)
    temp = _hidden_sibling(out, "partial")  # the old set stays in place until this one is complete
    try:
        manifest = _write_set(tasks, total, temp, samples_per_shard, payload, tuple(bands), workers, progress, out)
        if not manifest["shards"]:
            raise ShardInputError(f"no GeoTIFF found in {', '.join(map(str, inputs))}")
        (temp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        _commit(temp, out)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return manifest


# ---------------------------------------------------------------------------------------------
# command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "inputs",
        nargs="+",
        help="an S2-100K folder (index.csv + images/), a folder of GeoTIFFs, or S2-100K tar shards (files or their folder)",
    )
    parser.add_argument("--out", required=True, help="output folder for shard-NNNNNN.tar and manifest.json")
    parser.add_argument("--index", help="index.csv (fn, lon, lat) when it is not INPUT/index.csv; for tars: else georeference")
    add_coordinate_arguments(parser)
    parser.add_argument("--samples-per-shard", type=int, default=500, help="samples per tar (default 500)")
    parser.add_argument(
        "--payload",
        choices=PAYLOAD_EXTENSIONS,
        default="s2c",
        help="s2c: fast lossless Blosc arrays (default); tif: the original GeoTIFF bytes",
    )
    parser.add_argument("--bands", default=",".join(S2_BANDS), help="comma-separated band names in file order (default: S2-100K's 12)")
    parser.add_argument("--workers", type=int, default=1, help="encoding processes (default 1)")
    parser.add_argument("--overwrite", action="store_true", help="replace shards already in --out")


def run(args: argparse.Namespace) -> int:
    bands = [b.strip() for b in args.bands.split(",") if b.strip()]
    try:
        manifest = write_shards(
            args.inputs,
            args.out,
            index=args.index,
            samples_per_shard=args.samples_per_shard,
            payload=args.payload,
            bands=bands,
            workers=args.workers,
            overwrite=args.overwrite,
            index_columns={"lon_col": args.lon_col, "lat_col": args.lat_col, "crs": args.crs},
        )
    except ShardInputError as err:
        print(f"satclip shards: error: {err}", file=sys.stderr)
        return 2
    size = sum((Path(args.out) / s["name"]).stat().st_size for s in manifest["shards"]) / 2**20
    print(f"wrote {manifest['samples']} samples in {len(manifest['shards'])} shards ({size:.1f} MiB, payload {args.payload}) to {args.out}")
    return 0


__all__ = ["MANIFEST_FORMAT", "ShardInputError", "collect_tasks", "encode_in_order", "encode_sample", "read_index", "write_shards"]
