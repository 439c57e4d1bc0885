"""A ``satclip shards`` run split into N parts (``--part I/N``) and put back together by
``satclip combine-shards`` holds the samples of one run over everything, byte for byte and in its
order (real Major TOM parts, S2-100K folders and tars, SSL4EO-S12 files); unfinished, foreign,
missing and repeated parts are refused with one line naming them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from corpora import majortom_row, read_shards, sample_patches, write_majortom, write_s2_100k_folder, write_ssl4eo

from satclip.cli import main
from satclip.data import resume
from satclip.data.combine import combine_parts
from satclip.data.partition import Part, parse_part
from satclip.data.shardlist import expand_urls
from satclip.data.shards import ShardInputError, write_shards
from satclip.data.stream import StreamLoader, build_pipeline

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cells(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 Major TOM rows in 2 parts, the last repeating the first (a ``duplicate`` across the parts' boundary):
    3 cells of 4 patches, some over the cloud limit."""
    patches = sample_patches()
    rows = [majortom_row(patches[i], f"{i}U_{20 + i}R") for i in range(3)]
    return write_majortom(tmp_path_factory.mktemp("split-majortom"), [rows[:2], [rows[2], rows[0]]])


@pytest.fixture(scope="module")
def s2_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_s2_100k_folder(tmp_path_factory.mktemp("split-s2") / "s2", n=10)


@pytest.fixture(scope="module")
def s2_tars(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 8 sample patches in 3 S2-100K tars (3, 3, 2 members under ``images/``) with their index.csv."""
    root = tmp_path_factory.mktemp("split-tars")
    patches = sample_patches()
    for t, start in enumerate((0, 3, 6)):
        with tarfile.open(root / f"shard-{t:05d}.tar", "w") as tar:
            for patch in patches[start : start + 3]:
                tar.add(patch, arcname=f"images/{patch.name}")
    shutil.copy(patches[0].parents[1] / "index.csv", root / "index.csv")
    return root


@pytest.fixture(scope="module")
def ssl4eo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("split-ssl4eo")
    patches = sample_patches()
    write_ssl4eo(root / "a.zarr.zip", patches[:3], first_id=0, size=64)
    write_ssl4eo(root / "b.zarr.zip", patches[3:5], first_id=100, size=64)
    return root


CORPORA = {
    "majortom": ("cells", {"samples_per_shard": 5, "max_cloud": 0.2}),
    "s2-100k": ("s2_folder", {"samples_per_shard": 3, "payload": "tif"}),
    "s2-100k-tars": ("s2_tars", {"samples_per_shard": 2}),
    "ssl4eo": ("ssl4eo", {"samples_per_shard": 3, "season": 2}),
}


def _parts(source: Path, tmp_path: Path, n: int, **kw) -> list[Path]:
    folders = [tmp_path / f"part-{i}" for i in range(n)]
    for i, folder in enumerate(folders):
        write_shards([source], folder, part=Part(i, n), progress=False, **kw)
    return folders


def _same_samples(one: Path, combined: Path) -> dict:
    """The combined set holds one run's samples, bytes and order; its counts are the run's."""
    single, expected = read_shards(one)
    manifest, samples = read_shards(combined)
    assert list(samples) == list(expected)  # the same keys in the same order
    for key, members in expected.items():
        assert samples[key] == members, key  # every member's bytes
    for field in ("format", "version", "payload", "dtype", "bands", "samples", "with_time", "skipped", "filtered"):
        assert manifest[field] == single[field], field
    assert [s["name"] for s in manifest["shards"]] == [f"shard-{i:06d}.tar" for i in range(len(manifest["shards"]))]
    assert sorted(p.name for p in combined.iterdir()) == sorted([*(s["name"] for s in manifest["shards"]), "manifest.json"])
    return manifest


@pytest.mark.parametrize("corpus", sorted(CORPORA))
def test_combined_parts_hold_the_bytes_of_one_run(corpus, request, tmp_path):
    fixture, kw = CORPORA[corpus]
    source = request.getfixturevalue(fixture)
    one = tmp_path / "one"
    whole = write_shards([source], one, progress=False, **kw)
    if corpus == "majortom":
        assert whole["skipped"] == {"duplicate": 1} and whole["filtered"]  # counts that the parts must sum
    sizes, n = [1, 2, 3], 0
    while sizes:
        n = sizes.pop(0)
        folders = _parts(source, tmp_path / f"n{n}", n, **kw)
        records = [json.loads((f / "manifest.json").read_text())["part"] for f in folders]
        assert [r["index"] for r in records] == list(range(n)) and len({r["run"] for r in records}) == 1
        units = records[0]["of"]
        if n == 3:
            sizes.append(units + 2)  # more parts than units: some parts are empty
        assert [r["units"] for r in records] == [[units * i // n, units * (i + 1) // n] for i in range(n)]
        combined = tmp_path / f"combined-{n}"
        manifest = combine_parts(folders[::-1], combined)  # the order given does not matter
        _same_samples(one, combined)
        assert [p["index"] for p in manifest["parts"]] == list(range(n))
        assert [p["folder"] for p in manifest["parts"]] == list(map(str, folders))
        assert sum(p["shards"] for p in manifest["parts"]) == len(manifest["shards"])
    assert n > units


def test_parts_are_deterministic_and_resumable(cells, tmp_path):
    """The same part written twice is the same bytes; a part resumes like a whole run (its own progress)."""
    a = _parts(cells, tmp_path / "a", 2, samples_per_shard=2)
    b = _parts(cells, tmp_path / "b", 2, samples_per_shard=2)
    for x, y in zip(a, b):
        assert (x / "manifest.json").read_bytes() == (y / "manifest.json").read_bytes()
        for shard in json.loads((x / "manifest.json").read_text())["shards"]:
            assert (x / shard["name"]).read_bytes() == (y / shard["name"]).read_bytes()
    # a part stopped after its first shard: the loader and combine-shards refuse it, the same command finishes it
    out = tmp_path / "stopped"
    save = resume.save

    def stop(folder, state):
        save(folder, state)
        raise KeyboardInterrupt

    resume.save = stop
    try:
        with pytest.raises(KeyboardInterrupt):
            write_shards([cells], out, part=Part(1, 2), samples_per_shard=2, progress=False)
    finally:
        resume.save = save
    partial = resume.partial_folder(out)
    assert not out.exists() and (partial / resume.PROGRESS).is_file()
    with pytest.raises(ValueError, match="no manifest.json: not a complete shard set"):
        expand_urls(str(partial))
    with pytest.raises(ShardInputError, match=f"part {out} is unfinished"):
        combine_parts([a[0], out], tmp_path / "never")
    assert not (tmp_path / "never").exists()
    write_shards([cells], out, part=Part(1, 2), samples_per_shard=2, progress=False)
    assert (out / "manifest.json").read_bytes() == (a[1] / "manifest.json").read_bytes()
    combine_parts([a[0], out], tmp_path / "combined")
    write_shards([cells], tmp_path / "one", samples_per_shard=2, progress=False)
    _same_samples(tmp_path / "one", tmp_path / "combined")


def test_the_loader_reads_a_combined_set(s2_folder, tmp_path):
    write_shards([s2_folder], tmp_path / "one", samples_per_shard=4, progress=False)
    combine_parts(_parts(s2_folder, tmp_path, 3, samples_per_shard=4), tmp_path / "combined")
    keys = []
    for out in ("one", "combined"):
        stream = build_pipeline(str(tmp_path / out), batch_size=4, train=False, crop_size=None, shuffle_buffer=4, rank=0, world_size=1)
        keys.append([k for batch in StreamLoader(stream) for k in batch["key"]])
    assert keys[0] == keys[1] and len(keys[0]) == 10


def test_bad_parts_are_refused_naming_them(cells, s2_folder, tmp_path):
    parts = _parts(cells, tmp_path / "three", 3, samples_per_shard=5)

    def refused(folders, match, out=tmp_path / "out"):
        with pytest.raises(ShardInputError, match=match):
            combine_parts(folders, out)
        assert not (tmp_path / "out").exists()

    refused([parts[0], parts[2]], r"part\(s\) 1/3 missing: 2 of 3 given")
    copy = tmp_path / "copy-of-1"
    shutil.copytree(parts[1], copy)
    refused([*parts, copy], f"part 1/3 is given twice: {parts[1]} and {copy}")
    other = _parts(cells, tmp_path / "other", 3, samples_per_shard=4)  # other arguments
    refused([parts[0], other[1], parts[2]], f"{other[1]} \\(part 1/3\\) was written from other inputs or arguments than {parts[0]}")
    two = _parts(cells, tmp_path / "two", 2, samples_per_shard=5)
    refused([parts[0], two[1]], f"{two[1]} is part 1/2, {parts[0]} part 0/3: parts of different splits")
    write_shards([s2_folder], tmp_path / "whole", progress=False)
    refused([tmp_path / "whole"], "was written without --part")
    refused([tmp_path / "nowhere"], f"part {tmp_path / 'nowhere'} does not exist")
    (tmp_path / "no-manifest").mkdir()
    refused([tmp_path / "no-manifest"], "has no manifest.json: not a finished part")
    refused(parts, "is one of the parts", out=parts[0])
    gone = tmp_path / "gone"
    shutil.copytree(parts[0], gone)
    (gone / "shard-000000.tar").unlink()
    refused([gone, *parts[1:]], "shard-000000.tar, listed in its manifest.json, is missing")


def test_a_sample_key_in_two_parts_is_refused(tmp_path):
    """Two tars holding the same patch: one run refuses the key given twice, and so does combining the parts."""
    patch = sample_patches()[0]
    for t in range(2):
        with tarfile.open(tmp_path / f"t{t}.tar", "w") as tar:
            tar.add(patch, arcname=patch.name)
    tars = [tmp_path / "t0.tar", tmp_path / "t1.tar"]
    with pytest.raises(ShardInputError, match="same sample key"):
        write_shards(tars, tmp_path / "one", progress=False)
    folders = [tmp_path / f"p{i}" for i in range(2)]
    for i, folder in enumerate(folders):
        write_shards(tars, folder, part=Part(i, 2), progress=False)
    with pytest.raises(ShardInputError, match=f"sample key '{patch.stem}' is in two parts"):
        combine_parts(folders, tmp_path / "out")


def test_parse_part():
    assert parse_part("0/1") == Part(0, 1) and parse_part("2/3") == Part(2, 3)
    assert parse_part("slurm/4", {"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_MIN": "5"}) == Part(2, 4)
    assert parse_part("slurm/4", {"SLURM_ARRAY_TASK_ID": "3"}) == Part(3, 4)
    for text, message in [
        ("3/3", "part 3 is not in 0 to 2"),
        ("1", "expected I/N"),
        ("a/2", "expected I/N"),
        ("0/0", "expected I/N"),
        ("slurm/2", "SLURM_ARRAY_TASK_ID is not set"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_part(text, {})
    with pytest.raises(ValueError, match=r"part 4 \(SLURM array task 4, first 0\) is not in 0 to 3"):
        parse_part("slurm/4", {"SLURM_ARRAY_TASK_ID": "4"})


def test_cli(s2_folder, tmp_path, capsys, monkeypatch):
    for i in range(2):
        monkeypatch.setenv("SLURM_ARRAY_TASK_ID", str(i + 1))
        monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "1")
        assert main(["shards", str(s2_folder), "--out", str(tmp_path / f"p{i}"), "--part", "slurm/2", "--samples-per-shard", "4", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "part 0/2: patches 0 to 4 of 10" in printed and "part 1/2: patches 5 to 9 of 10" in printed
    assert main(["combine-shards", str(tmp_path / "p1"), str(tmp_path / "p0"), "--out", str(tmp_path / "all")]) == 0
    assert "combined 2 parts: 10 samples in 4 shards" in capsys.readouterr().out
    assert main(["combine-shards", str(tmp_path / "p1"), "--out", str(tmp_path / "again")]) == 2
    assert capsys.readouterr().err.strip() == f"satclip combine-shards: error: part(s) 0/2 missing: 1 of 2 given ({tmp_path / 'p1'})"
    with pytest.raises(SystemExit):
        main(["shards", str(s2_folder), "--out", str(tmp_path / "x"), "--part", "2/2"])
    assert "argument --part: part 2 is not in 0 to 1" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_the_sbatch_array_writes_parts_and_combines_them(cells, tmp_path):
    """scripts/slurm/shards-array.sbatch run as SLURM would: array tasks 1-3 (any order), then the combine job."""
    script = ROOT / "scripts" / "slurm" / "shards-array.sbatch"
    subprocess.run(["bash", "-n", str(script)], check=True)
    if shutil.which("shellcheck"):
        subprocess.run(["shellcheck", str(script)], check=True)
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "PARTS": str(tmp_path / "parts"),
        "SATCLIP_ACTIVATE": "/nonexistent",
        "SLURM_ARRAY_TASK_COUNT": "3",
        "SLURM_ARRAY_TASK_MIN": "1",
        "SLURM_CPUS_PER_TASK": "1",
    }

    def job(*args: str, task: str | None = None) -> subprocess.CompletedProcess:
        extra = {"SLURM_ARRAY_TASK_ID": task} if task is not None else {}
        return subprocess.run(["bash", str(script), *args], cwd=tmp_path, env={**env, **extra}, capture_output=True, text=True, timeout=300)

    for task in ("3", "1", "2"):
        done = job(str(cells), "--samples-per-shard", "5", task=task)
        assert done.returncode == 0, done.stderr[-2000:]
        assert f"part {int(task) - 1}/3: cells" in done.stdout
    assert sorted(p.name for p in (tmp_path / "parts").iterdir()) == ["part-00001", "part-00002", "part-00003"]
    done = job("--combine", str(tmp_path / "all"))
    assert done.returncode == 0 and "combined 3 parts" in done.stdout, done.stderr[-2000:]
    write_shards([cells], tmp_path / "one", samples_per_shard=5, progress=False)
    _same_samples(tmp_path / "one", tmp_path / "all")
    not_array = job(str(cells))
    assert not_array.returncode != 0 and "not an array task" in not_array.stderr
