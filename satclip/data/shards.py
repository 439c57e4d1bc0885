"""``satclip shards``: write WebDataset shards of Sentinel-2 patches with their coordinates and time.

Inputs, detected from what is given (docs/data.md has the schemas and what was verified):

- an S2-100K folder: an index (``index.csv``, or ``metadata.parquet`` as S2-100K is published now;
  columns ``fn``, ``lon``, ``lat`` in any order, an optional acquisition-time column (``time``,
  ``datetime``, ``timestamp``, ...: it wins over the GeoTIFF's tags), extra columns ignored) and
  ``images/patch_N.tif``;
  ``--index`` names an index kept elsewhere;
- a folder of GeoTIFFs without an index: each patch's centre (lon, lat) comes from its own
  georeference (:func:`satclip.geo.lonlat_from_georeference`);
- S2-100K tar shards as published (tars of ``patch_N.tif``, members possibly under ``images/``),
  as files or a folder of them, with ``--index`` (without it: the folder's ``index.csv`` or
  ``metadata.parquet``, else coordinates from georeference);
- Major TOM Core-S2L2A / Core-S2L1C Parquet parts (files, or a folder with ``images/*.parquet``):
  each cell cut into ``--patch-size`` patches (:mod:`satclip.data.majortom`);
- SSL4EO-S12 v1.1 ``*.zarr.zip`` files (files or a folder): one sample per location and timestamp
  (:mod:`satclip.data.ssl4eo`).

All but the GeoTIFF folders may be URLs (:mod:`satclip.data.remote`); Major TOM rows may be selected
on its ``metadata.parquet`` before reading (:mod:`satclip.data.cellselect`).

Output, in ``--out``: ``shard-000000.tar``, ... each sample holding ``__key__`` (the file stem,
e.g. ``patch_N``), the image under its payload extension (``tif``: original bytes; ``s2c``: see
:mod:`satclip.data.payload`) and ``json`` = {lon, lat, time, doy, source, crs, bands, shape, dtype}
(``time``/``doy`` when the source has the acquisition time, :func:`satclip.acqtime.time_record`);
and ``manifest.json`` = {format, version, payload, dtype, bands, shards: [{name, samples}], samples,
with_time, skipped, filtered[, selection][, part]} (``selection``: what was chosen on a Major TOM index, and
how; ``part``: which part of a split run, ``--part I/N``, :mod:`satclip.data.partition`). Every image is decoded once while writing, so a shard set never holds an unreadable sample.
A corrupt GeoTIFF stops the run naming it; a corrupt Major TOM row or SSL4EO timestamp is skipped
and counted by kind (``skipped``), patches over ``--max-cloud`` are counted in ``filtered``. Output
is deterministic: the same inputs give byte-identical shards for any ``--workers``, and a killed
run resumes to the same bytes (:mod:`satclip.data.resume`).

The parts, one job each: :mod:`.inputs` (which layout: the registry of readers, one per layout), :mod:`.s2index` (S2-100K indexes),
:mod:`.geotiffs` (GeoTIFF tasks and their encoding), :mod:`.majortom` and :mod:`.ssl4eo`,
:mod:`.tarwriter` (the tars), :mod:`.shardset` (replacing a set atomically); this module runs them and
is the command line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import shutil
import sys
from collections.abc import Callable, Generator, Iterable, Sequence
from pathlib import Path
from typing import TypeVar

from ..cliargs import add_progress_argument
from ..columns import add_coordinate_arguments
from . import resume
from .bands import S2_BANDS
from .cellselect import CellFilters
from .geotiffs import encode_sample, time_from_tags
from .inputs import collect_tasks
from .ordered_pool import WorkerDied, ordered_map
from .partition import Part, parse_part
from .payload import PAYLOAD_EXTENSIONS
from .s2index import IndexTable, read_index, read_index_table
from .shardlist import MANIFEST, MANIFEST_VERSION
from .shardset import check_out, commit
from .sources import SHOWN_PER_KIND, Collected, Encoded, ShardInputError, WorkerDiedError
from .tarwriter import TarShards

MANIFEST_FORMAT = f"satclip-shards/{MANIFEST_VERSION}"
T = TypeVar("T")
R = TypeVar("R")
log = logging.getLogger("satclip.data")


def _encode_star(job: tuple) -> Encoded:
    task, payload, bands = job
    return task.encode(payload, bands)


def encode_in_order(fn: Callable[[T], R], jobs: Iterable[T], *, workers: int, in_flight: int = 16) -> Generator[R, None, None]:
    """``map(fn, jobs)``, in ``workers`` spawned processes when > 1 (:func:`.ordered_pool.ordered_map`:
    results in input order, at most ``in_flight * workers`` jobs ahead, which bounds the bytes read
    ahead from tars). The first error, in a job, in reading ``jobs`` or a worker dying in any phase
    (:class:`~.sources.WorkerDiedError`), is raised at once, the workers killed first. Close the generator (``contextlib.closing``) when
    leaving the loop early."""
    if workers <= 1:
        yield from map(fn, jobs)
        return
    try:
        yield from ordered_map(fn, jobs, workers=workers, ahead=in_flight)
    except WorkerDied as err:
        raise WorkerDiedError(
            f"an encoding worker process ({err.pid}) died ({err.how}) after {err.done} inputs were encoded: killed, out of memory, "
            "or a crash in the GeoTIFF reader; run with --workers 1 to find the input"
        ) from None


def _write_set(
    collected: Collected,
    folder: Path,
    *,
    samples_per_shard: int,
    payload: str,
    bands: tuple[str, ...] | None,
    workers: int,
    progress: bool,
    out: Path,
    run: str,
    state: dict | None,
) -> dict:
    """Encode the tasks into shards in ``folder``, saving the progress of run ``run`` after every
    complete shard and continuing a saved ``state`` (:mod:`satclip.data.resume`); return the
    manifest (``out`` names the progress bar)."""
    from tqdm import tqdm

    writer = TarShards(folder, samples_per_shard, payload=payload)
    first_task, first_sample, skipped, filtered = 0, 0, {}, {}
    if state is not None:
        writer.restore(state["writer"])
        first_task, first_sample, skipped, filtered = state["task"], state["sample"], dict(state["skipped"]), dict(state["filtered"])
        log.warning("satclip shards: resuming %s after %d complete shards (%d %ss done)", out, len(writer.shards), first_task, collected.unit)
    jobs = ((task, payload, bands) for task in collected.tasks_after(first_task))
    with tqdm(total=collected.total, initial=first_task, unit=collected.unit, desc=f"shards -> {out}", disable=not progress) as bar:
        with contextlib.closing(encode_in_order(_encode_star, jobs, workers=workers, in_flight=collected.in_flight)) as results:
            for task, encoded in enumerate(results, start=first_task):
                done = first_sample if task == first_task else 0
                for sample, (key, blob, record) in enumerate(encoded.samples[done:], start=done + 1):
                    if writer.add(key, blob, record=record):
                        saved = {"task": task, "sample": sample, "skipped": skipped, "filtered": filtered, "writer": writer.state()}
                        resume.save(folder, {"fingerprint": run, **saved})
                for kind, source, cause in encoded.skipped:
                    skipped[kind] = skipped.get(kind, 0) + 1
                    if skipped[kind] <= SHOWN_PER_KIND:
                        log.warning("satclip shards: skipped (%s) %s: %s", kind, source, cause)
                for kind, n in encoded.filtered.items():
                    filtered[kind] = filtered.get(kind, 0) + n
                bar.update()
                if skipped or filtered:
                    bar.set_postfix(samples=sum(s["samples"] for s in writer.shards), skipped=sum(skipped.values()), filtered=sum(filtered.values()))
        writer.close()
    return {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "payload": payload,
        "dtype": writer.dtype,
        "bands": writer.bands if writer.bands is not None else list(bands or S2_BANDS),
        "shards": writer.shards,
        "samples": sum(s["samples"] for s in writer.shards),
        "with_time": writer.with_time,
        "skipped": dict(sorted(skipped.items())),
        "filtered": dict(sorted(filtered.items())),
    }


def write_shards(
    inputs: Sequence[str | Path],
    out: str | Path,
    *,
    index: str | Path | None = None,
    samples_per_shard: int = 500,
    payload: str = "s2c",
    bands: Sequence[str] | None = None,
    workers: int = 1,
    overwrite: bool = False,
    progress: bool = True,
    index_columns: dict[str, str | None] | None = None,
    patch_size: int = 256,
    max_cloud: float | None = None,
    season: int | None = None,
    select: CellFilters | None = None,
    part: Part | None = None,
) -> dict:
    """Write WebDataset shards and ``manifest.json`` into ``out``; return the manifest.

    ``bands``: the band names in file order for GeoTIFFs (default S2-100K's 12), the bands to take
    for Major TOM and SSL4EO-S12 (default all the source has). ``index_columns``: ``lon_col`` /
    ``lat_col`` / ``crs`` / ``time_col`` for :func:`read_index_table` (default: found). ``patch_size`` / ``max_cloud``:
    Major TOM cutting and cloud filter; ``season`` (1-4): SSL4EO-S12 timestamps of that quarter only;
    ``select``: Major TOM rows chosen on the metadata index before reading
    (:mod:`satclip.data.cellselect`; recorded as the manifest's ``selection``). Inputs may be URLs
    (:mod:`satclip.data.remote`). ``part``: write only this part of the run
    (:mod:`satclip.data.partition`), a complete set of its own (possibly empty) whose manifest says
    which (``part``), for :func:`satclip.data.combine.combine_parts`.

    The set is written into the hidden sibling ``.OUT.partial`` and moved in only once complete:
    a failure leaves ``out`` (and a set it held, with ``overwrite``) as it was. A run stopped at any
    point (SIGKILL included) and started again with the same arguments continues after its last
    complete shard, to the same bytes (:mod:`satclip.data.resume`)."""
    if payload not in PAYLOAD_EXTENSIONS:
        raise ShardInputError(f"payload must be one of {PAYLOAD_EXTENSIONS}, got {payload!r}")
    if samples_per_shard < 1 or workers < 1 or patch_size < 1:
        raise ShardInputError(f"--samples-per-shard, --workers and --patch-size must be >= 1, got {samples_per_shard}, {workers} and {patch_size}")
    if season is not None and season not in (1, 2, 3, 4):
        raise ShardInputError(f"--season is a quarter of the year, 1 to 4; got {season}")
    collected = collect_tasks(inputs, index, index_columns=index_columns, bands=bands, patch_size=patch_size, max_cloud=max_cloud, season=season, select=select)
    out = Path(out)
    check_out(out, overwrite)
    from .. import __version__

    decides: dict[str, object] = {"inputs": list(map(str, inputs)), "index": index, "index_columns": index_columns, "samples_per_shard": samples_per_shard}
    decides |= {
        "payload": payload,
        "bands": bands,
        "patch_size": patch_size,
        "max_cloud": max_cloud,
        "season": season,
        "select": select,
        "satclip": __version__,
    }
    run = resume.fingerprint(decides)
    split = None
    if part is not None:
        assert collected.units is not None  # every input splits
        start, stop = part.bounds(collected.units.count)
        split = {"index": part.index, "count": part.count, "run": run, "unit": collected.units.name, "units": [start, stop], "of": collected.units.count}
        collected = collected.units.tasks_of(start, stop)
        run = resume.fingerprint({**decides, "part": str(part)})
    temp = resume.partial_folder(out)  # the old set stays in place until this one is complete
    state = resume.prepare(temp, run)
    try:
        manifest = _write_set(
            collected,
            temp,
            samples_per_shard=samples_per_shard,
            payload=payload,
            bands=tuple(bands) if bands else None,
            workers=workers,
            progress=progress,
            out=out,
            run=run,
            state=state,
        )
        if split is not None:
            manifest["part"] = split
        elif not manifest["shards"]:
            counts = ", ".join(f"{k}={n}" for k, n in {**manifest["skipped"], **manifest["filtered"]}.items())
            raise ShardInputError(f"no sample written from {', '.join(map(str, inputs))}" + (f" (skipped/filtered: {counts})" if counts else ""))
        if collected.selection is not None:
            manifest["selection"] = collected.selection
        (temp / resume.PROGRESS).unlink(missing_ok=True)
        (temp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        commit(temp, out)
    except BaseException as err:
        if resume.keep_for(err):
            log.warning("satclip shards: stopped (%s); the complete shards stay in %s: run the same command again to resume", type(err).__name__, temp)
        else:
            shutil.rmtree(temp, ignore_errors=True)
        raise
    return manifest


# ---------------------------------------------------------------------------------------------
# command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "inputs",
        nargs="+",
        help="an S2-100K folder (index.csv or metadata.parquet + images/), a folder of GeoTIFFs, S2-100K tar shards (files or their "
        "folder), Major TOM Core-S2L2A/L1C Parquet parts (files, the dataset folder, or its metadata.parquet), or SSL4EO-S12 v1.1 "
        "*.zarr.zip files (files or a folder); tars, Major TOM and --index may be URLs (https://, s3://, gs://, hf://datasets/...)",
    )
    parser.add_argument("--out", required=True, help="output folder for shard-NNNNNN.tar and manifest.json")
    parser.add_argument(
        "--index", help="index.csv or metadata.parquet (fn, lon, lat) when not in INPUT; for tars: else georeference; Major TOM: its metadata.parquet"
    )
    add_coordinate_arguments(parser)
    parser.add_argument("--time-col", default=None, help="the index's acquisition-time column (default: found: time, datetime, timestamp, date, ...)")
    parser.add_argument("--samples-per-shard", type=int, default=500, help="samples per tar (default 500)")
    parser.add_argument(
        "--payload",
        choices=PAYLOAD_EXTENSIONS,
        default="s2c",
        help="s2c: fast lossless Blosc arrays (default); tif: the original GeoTIFF bytes",
    )
    parser.add_argument(
        "--bands",
        help="comma-separated band names: GeoTIFFs' file order (default: S2-100K's 12); for Major TOM and "
        "SSL4EO-S12 the bands to take, in this order (default: all the source has)",
    )
    parser.add_argument("--patch-size", type=int, default=256, help="Major TOM: side of the patches cut from each cell, px at 10 m (default 256)")
    parser.add_argument("--max-cloud", type=float, help="Major TOM: leave out patches whose cloud-mask fraction is above this (0-1)")
    select = parser.add_argument_group("Major TOM: select rows on metadata.parquet before reading (only the selected rows are fetched)")
    select.add_argument("--bbox", type=float, nargs=4, metavar=("W", "S", "E", "N"), help="cell centres in this box, degrees (W > E crosses the antimeridian)")
    select.add_argument("--region", metavar="GEOJSON", help="cell centres in this (multi)polygon, a GeoJSON file or URL")
    select.add_argument("--start", help="timestamp on or after this date / date-time (ISO 8601)")
    select.add_argument("--end", help="timestamp on or before this date (the whole day) / date-time")
    select.add_argument("--max-cloud-cover", type=float, metavar="PCT", help="the index's cloud_cover (percent of the cell) at most this")
    select.add_argument("--cells", metavar="FILE", help="only these grid cells (a file: one per line, or comma / space separated)")
    select.add_argument("--sample", type=int, metavar="N", help="then N of the selected rows, uniformly at random")
    select.add_argument("--seed", type=int, default=0, help="the seed of --sample (default 0)")
    parser.add_argument("--season", type=int, choices=(1, 2, 3, 4), help="SSL4EO-S12: only timestamps in this quarter (1: Jan-Mar ... 4: Oct-Dec)")
    parser.add_argument(
        "--part",
        type=_part,
        metavar="I/N",
        help="write only part I (0 to N-1) of N of the run, into --out, for `satclip combine-shards`; slurm/N: this SLURM array task's part "
        "(SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN)",
    )
    parser.add_argument("--workers", type=int, default=1, help="encoding processes (default 1)")
    parser.add_argument("--overwrite", action="store_true", help="replace shards already in --out")
    add_progress_argument(parser)


def _part(text: str) -> Part:
    try:
        return parse_part(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err).removeprefix(f"--part {text!r}: ")) from None


def run(args: argparse.Namespace) -> int:
    bands = [b.strip() for b in args.bands.split(",") if b.strip()] if args.bands else None
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
            index_columns={"lon_col": args.lon_col, "lat_col": args.lat_col, "crs": args.crs, "time_col": args.time_col},
            patch_size=args.patch_size,
            max_cloud=args.max_cloud,
            season=args.season,
            select=CellFilters(
                bbox=tuple(args.bbox) if args.bbox else None,
                region=args.region,
                start=args.start,
                end=args.end,
                max_cloud_cover=args.max_cloud_cover,
                cells=args.cells,
                sample=args.sample,
                seed=args.seed,
            ),
            progress=not args.no_progress,
            part=args.part,
        )
    except ShardInputError as err:
        print(f"satclip shards: error: {err}", file=sys.stderr)
        return 2
    size = sum((Path(args.out) / s["name"]).stat().st_size for s in manifest["shards"]) / 2**20
    print(
        f"wrote {manifest['samples']} samples in {len(manifest['shards'])} shards ({size:.1f} MiB, payload {args.payload}) to {args.out}; "
        f"{manifest['with_time']} with acquisition time"
    )
    if "part" in manifest:
        split = manifest["part"]
        start, stop = split["units"]
        took = (
            f"{split['unit']} {start} to {stop - 1} of {split['of']}" if stop > start else f"none of the {split['of']} {split['unit']} (more parts than those)"
        )
        print(f"part {args.part}: {took}; combine the parts with `satclip combine-shards`")
    if "selection" in manifest:
        chosen = manifest["selection"]
        print(f"selected {chosen['rows_selected']} of {chosen['rows_in_index']} rows of {chosen['index']} in {chosen['parts']} parts")
    for label, counts in (("skipped (corrupt)", manifest["skipped"]), ("filtered", manifest["filtered"])):
        if counts:
            print(f"{label}: {sum(counts.values())} ({', '.join(f'{k}={n}' for k, n in counts.items())})")
    return 0


__all__ = [
    "MANIFEST_FORMAT",
    "Collected",
    "ShardInputError",
    "collect_tasks",
    "encode_in_order",
    "encode_sample",
    "IndexTable",
    "read_index",
    "read_index_table",
    "time_from_tags",
    "write_shards",
]
