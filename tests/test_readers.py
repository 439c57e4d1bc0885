"""The corpus readers' one interface (satclip.data.sources.Reader) and its registry
(satclip.data.inputs.READERS): a corpus added as one reader is written, split and resumed like the
others, and inputs no reader takes are refused naming them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from corpora import read_shards

from satclip.data import inputs
from satclip.data.cellselect import CellFilters
from satclip.data.combine import combine_parts
from satclip.data.partition import Part, Units
from satclip.data.payload import decode
from satclip.data.shards import ShardInputError, write_shards
from satclip.data.sources import Collected, Encoded, Location, Reader, ReadOptions, payload_bytes, sample_key, sample_record

BANDS = ("B02", "B03")


@dataclass(frozen=True)
class NpyTask:
    path: str
    lonlat: tuple[float, float]

    def encode(self, payload: str, bands: tuple[str, ...] | None) -> Encoded:
        array = np.load(self.path)
        record = sample_record(*self.lonlat, seconds=float("nan"), source=Path(self.path).name, crs=None, bands=bands or BANDS, array=array)
        return Encoded(samples=[(sample_key(Path(self.path).stem), payload_bytes(array, payload, source=self.path), record)])


class NpyReader(Reader):
    """A toy corpus: ``*.npy`` arrays, the coordinates in the name (``lon_lat.npy``)."""

    name = "NumPy .npy files"
    suffixes = (".npy",)
    in_folder_url = ".npy files"

    def detect(self, location: Location) -> bool:
        return str(location).endswith(".npy")

    def collect(self, given: Sequence[Location], options: ReadOptions) -> Collected:
        tasks = [NpyTask(str(p), tuple(float(v) for v in Path(p).stem.split("_"))) for p in given]  # type: ignore[arg-type]
        return Collected(tasks, len(tasks), units=Units("files", len(tasks), lambda a, b: Collected(tasks[a:b], b - a)))


def _arrays(folder: Path) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for lon, lat in ((10.5, 45.25), (-70.0, -33.5), (139.75, 35.5)):
        paths.append(folder / f"{lon}_{lat}.npy")
        np.save(paths[-1], rng.integers(0, 10000, (2, 8, 8), dtype=np.uint16))
    return paths


def test_a_reader_in_the_registry_is_written_split_and_combined(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inputs, "READERS", (*inputs.READERS, NpyReader()))
    paths = _arrays(tmp_path)
    whole = write_shards(paths, tmp_path / "all", samples_per_shard=2, bands=list(BANDS), progress=False)
    manifest, samples = read_shards(tmp_path / "all")
    assert manifest["samples"] == 3 and [s["samples"] for s in manifest["shards"]] == [2, 1] and whole["bands"] == list(BANDS)
    for p in paths:
        sample = samples[p.stem.replace(".", "_")]
        assert np.array_equal(decode("s2c", sample["s2c"]), np.load(p))
        record = json.loads(sample["json"])
        assert (record["lon"], record["lat"]) == tuple(float(v) for v in p.stem.split("_"))
    parts = [tmp_path / f"part{i}" for i in range(2)]
    for i, out in enumerate(parts):
        split = write_shards(paths, out, samples_per_shard=2, bands=list(BANDS), progress=False, part=Part(i, 2))
        assert split["part"]["unit"] == "files" and split["part"]["units"] == [[0, 1], [1, 3]][i]
    combine_parts(parts, tmp_path / "combined")
    assert read_shards(tmp_path / "combined")[1] == samples


def test_inputs_no_reader_takes_are_named(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ShardInputError, match=rf"^{empty}: no index.csv and no GeoTIFF \(\*.tif, \*.tiff\) files$"):
        write_shards([empty], tmp_path / "out", progress=False)
    with pytest.raises(ShardInputError, match=rf"^{empty}: row selection \(--bbox, --cells, ...\) is for Major TOM parts; this folder has none$"):
        write_shards([empty], tmp_path / "out", progress=False, select=CellFilters(sample=1))
    stray = tmp_path / "notes.txt"
    stray.write_text("x")
    expected = (
        "expected one folder, Major TOM Parquet parts or its metadata.parquet, SSL4EO-S12 .zarr.zip files, or tar files (.tar, .tar.gz, .tgz) "
        f"(paths or URLs; a GeoTIFF folder: a local path), one kind at a time; not usable: {stray}"
    )
    with pytest.raises(ShardInputError) as err:
        write_shards([stray], tmp_path / "out", progress=False)
    assert str(err.value) == expected
    with pytest.raises(ShardInputError, match=r"^row selection \(--bbox, .*\) is for Major TOM parts$"):
        write_shards([stray], tmp_path / "out", progress=False, select=CellFilters(sample=1))
