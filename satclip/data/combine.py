"""``satclip combine-shards``: the parts of one split ``satclip shards`` run as one shard set.

Every part (``satclip shards ... --part I/N``, :mod:`satclip.data.partition`) is a complete set whose
manifest says which part it is of which run (a hash of the arguments that decide the bytes). The
parts are checked (all finished, all from the same run, each of 0 to N-1 exactly once, one band list,
dtype and patch shape, no sample key twice) and their shards linked (hard links; a copy across file
systems) into ``--out`` in part order, renamed to the one-run names ``shard-000000.tar``, ...: the
samples, their bytes and their order are those of one run over everything; only the shard boundaries
differ (each part's last shard may be short). The combined manifest sums the counts and lists the
parts; like ``satclip shards``, the set is assembled in a hidden sibling and moved in complete.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tarfile
from collections.abc import Sequence
from pathlib import Path

from . import resume
from .shardlist import MANIFEST, check_manifest_version
from .shardset import check_out, commit, hidden_sibling
from .sources import ShardInputError
from .tarwriter import shard_name


def _read_part(folder: Path) -> dict:
    """A finished part's manifest; unfinished, missing or not a part: a clear error naming ``folder``."""
    if folder.exists() and not folder.is_dir():
        raise ShardInputError(f"part {folder} is a file, not a shard folder")
    if not (folder / MANIFEST).is_file():
        partial = resume.partial_folder(folder)
        if partial.is_dir():
            raise ShardInputError(f"part {folder} is unfinished (its shards so far are in {partial}): run its command again to finish it")
        raise ShardInputError(
            f"part {folder} has no {MANIFEST}: not a finished part of `satclip shards --part`" if folder.exists() else f"part {folder} does not exist"
        )
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        check_manifest_version(manifest, folder / MANIFEST)
    except ValueError as err:
        raise ShardInputError(f"part {folder}: unreadable {MANIFEST} ({err})") from None
    if "part" not in manifest:
        raise ShardInputError(f"{folder} was written without --part: combine-shards takes the parts of one `satclip shards --part I/N` run")
    for shard in manifest["shards"]:
        if not (folder / shard["name"]).is_file():
            raise ShardInputError(f"part {folder}: {shard['name']}, listed in its {MANIFEST}, is missing")
    return manifest


def _first_record(folder: Path, shard: str) -> dict:
    """The JSON record of the first sample of a shard."""
    with tarfile.open(folder / shard) as tar:
        for member in tar:
            if member.name.endswith(".json"):
                extracted = tar.extractfile(member)
                assert extracted is not None  # a regular file member
                return json.loads(extracted.read())
    raise ShardInputError(f"{folder / shard}: no sample record (.json member)")


def _check_parts(manifests: dict[Path, dict]) -> list[tuple[Path, dict]]:
    """The parts in order, after checking they are the whole of one run and one kind of sample."""
    (first, head), *_ = manifests.items()
    by_index: dict[int, Path] = {}
    for folder, manifest in manifests.items():
        split, ref = manifest["part"], head["part"]
        if split["count"] != ref["count"]:
            raise ShardInputError(f"{folder} is part {split['index']}/{split['count']}, {first} part {ref['index']}/{ref['count']}: parts of different splits")
        if split["run"] != ref["run"] or split["of"] != ref["of"]:
            raise ShardInputError(
                f"{folder} (part {split['index']}/{split['count']}) was written from other inputs or arguments than {first} "
                f"(part {ref['index']}/{ref['count']}); the parts of a run differ only in --part (and --out, --workers)"
            )
        if split["index"] in by_index:
            raise ShardInputError(f"part {split['index']}/{split['count']} is given twice: {by_index[split['index']]} and {folder}")
        by_index[split["index"]] = folder
    count = head["part"]["count"]
    missing = [f"{i}/{count}" for i in range(count) if i not in by_index]
    if missing:
        raise ShardInputError(f"part(s) {', '.join(missing)} missing: {len(by_index)} of {count} given ({', '.join(map(str, manifests))})")
    ordered = [(by_index[i], manifests[by_index[i]]) for i in range(count)]
    kind: tuple[Path, tuple] | None = None
    for folder, manifest in ordered:
        if not manifest["shards"]:
            continue
        shape = _first_record(folder, manifest["shards"][0]["name"])["shape"]
        this = (manifest["dtype"], manifest["bands"], shape)
        if kind is None:
            kind = (folder, this)
        elif this != kind[1]:
            raise ShardInputError(
                f"{folder}: samples of dtype {this[0]}, bands {this[1]}, shape {this[2]}; {kind[0]} has {kind[1][0]}, {kind[1][1]}, {kind[1][2]} "
                "(one run would have refused the mix)"
            )
    return ordered


def _check_keys(ordered: Sequence[tuple[Path, dict]]) -> None:
    """No sample key in two parts (one run refuses a key given twice)."""
    seen: dict[str, Path] = {}
    for folder, manifest in ordered:
        for shard in manifest["shards"]:
            path = folder / shard["name"]
            with tarfile.open(path) as tar:
                keys = {name.split(".", 1)[0] for name in tar.getnames()}
            for key in keys:
                if seen.setdefault(key, path) != path:
                    raise ShardInputError(f"sample key {key!r} is in two parts: {seen[key]} and {path}")


def _link(source: Path, target: Path) -> None:
    """``target`` as a hard link to ``source``; a copy where the file system refuses one."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _sum(counts: Sequence[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for count in counts:
        for kind, n in count.items():
            total[kind] = total.get(kind, 0) + n
    return dict(sorted(total.items()))


def combine_parts(folders: Sequence[str | Path], out: str | Path, *, overwrite: bool = False) -> dict:
    """Combine the finished parts of one split run (in any order) into one shard set in ``out``; return its manifest."""
    if not folders:
        raise ShardInputError("no part given")
    out = Path(out)
    paths = [Path(f) for f in folders]
    for path in paths:
        if path.resolve() == out.resolve():
            raise ShardInputError(f"--out {out} is one of the parts; combine into a new folder")
    check_out(out, overwrite)
    manifests = {path: _read_part(path) for path in paths}
    ordered = _check_parts(manifests)
    _check_keys(ordered)
    parts: list[dict] = []
    shards: list[dict] = []
    out.resolve().parent.mkdir(parents=True, exist_ok=True)
    temp = hidden_sibling(out, "combining")
    try:
        for folder, manifest in ordered:
            parts.append({**manifest["part"], "folder": str(folder), "first_shard": len(shards), "shards": len(manifest["shards"])})
            for shard in manifest["shards"]:
                shards.append({"name": shard_name(len(shards)), "samples": shard["samples"]})
                _link(folder / shard["name"], temp / shards[-1]["name"])
        full = [m for _, m in ordered if m["shards"]]
        if not full:
            counts = _sum([m["skipped"] for _, m in ordered] + [m["filtered"] for _, m in ordered])
            raise ShardInputError(
                f"no sample in any of the {len(ordered)} parts" + (f" (skipped/filtered: {', '.join(f'{k}={n}' for k, n in counts.items())})" if counts else "")
            )
        head = full[0]
        manifest = {key: head[key] for key in ("format", "version", "payload", "dtype", "bands")}
        manifest |= {
            "shards": shards,
            "samples": sum(s["samples"] for s in shards),
            "with_time": sum(m["with_time"] for _, m in ordered),
            "skipped": _sum([m["skipped"] for _, m in ordered]),
            "filtered": _sum([m["filtered"] for _, m in ordered]),
        }
        if "selection" in head:
            manifest["selection"] = head["selection"]
        manifest["parts"] = parts
        (temp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        commit(temp, out)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return manifest


# ---------------------------------------------------------------------------------------------
# command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("parts", nargs="+", help="the --out folders of every part (0 to N-1) of one `satclip shards --part I/N` run, any order")
    parser.add_argument("--out", required=True, help="output folder of the combined shard-NNNNNN.tar and manifest.json")
    parser.add_argument("--overwrite", action="store_true", help="replace shards already in --out")


def run(args: argparse.Namespace) -> int:
    try:
        manifest = combine_parts(args.parts, args.out, overwrite=args.overwrite)
    except ShardInputError as err:
        print(f"satclip combine-shards: error: {err}", file=sys.stderr)
        return 2
    print(f"combined {len(manifest['parts'])} parts: {manifest['samples']} samples in {len(manifest['shards'])} shards in {args.out}")
    return 0


__all__ = ["combine_parts"]
