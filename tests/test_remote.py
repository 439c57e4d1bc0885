"""``satclip shards`` from URLs, selecting Major TOM rows before reading: a real HTTP server with range
requests (started here, counting the bytes it sends) serves Major TOM parts and a ``metadata.parquet``
with the published columns, built from the real sample patches (tests/corpora.py), and S2-100K tars."""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
from collections import Counter
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from corpora import majortom_row, read_shards, sample_patches, write_majortom, write_s2_100k_published, write_ssl4eo

from satclip.cli import main
from satclip.data import remote
from satclip.data.cellselect import CellFilters, select
from satclip.data.shards import ShardInputError, write_shards
from satclip.extras import MissingExtraError

pytest.importorskip("aiohttp")
CLOUD_SIDES = (0.0, 0.3, 0.5, 0.7, 0.9, 0.2)
"""Cloud mask squares of the six cells: cloud_cover 0, 9, 25, 49, 81, 4 percent."""


class RangeHandler(SimpleHTTPRequestHandler):
    """http.server's file handler with ``Range: bytes=a-b`` (206 replies); counts the body bytes sent per path."""

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass

    def send_head(self):  # type: ignore[override]
        path = self.translate_path(self.path)
        self._left = -1
        if os.path.isdir(path):
            return super().send_head()  # an HTML listing of the folder's links
        if not os.path.isfile(path):
            self.send_error(404, "not found")
            return None
        size = os.path.getsize(path)
        start, end, status = 0, size - 1, 200
        wanted = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", "").strip())
        if wanted:
            first, last = wanted.groups()
            start, end = (size - int(last), size - 1) if first == "" else (int(first), min(int(last), size - 1) if last else size - 1)
            if start >= size:
                self.send_error(416, "range not satisfiable")
                return None
            status = 206
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        f = open(path, "rb")  # noqa: SIM115 - closed by the base class after copyfile
        f.seek(start)
        self._left = end - start + 1
        return f

    def copyfile(self, source, outputfile) -> None:  # type: ignore[override]
        data = source.read(self._left)
        outputfile.write(data)
        with self.server.lock:  # type: ignore[attr-defined]
            self.server.sent[self.path.split("?")[0]] += len(data)  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    """(server, base URL, root folder): a Major TOM L2A folder (6 cells, 2 parts) and S2-100K as published."""
    root = tmp_path_factory.mktemp("served")
    server = ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: RangeHandler(*a, directory=str(root)))
    server.sent, server.lock = Counter(), threading.Lock()  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    patches = sample_patches()
    rows = [majortom_row(patches[i], f"{i}U_{10 + i}R", when=f"2020{1 + i:02d}15T101031", cloud_side=side) for i, side in enumerate(CLOUD_SIDES)]
    write_majortom(root / "Core-S2L2A", [rows[:3], rows[3:]], url_base=f"{base}/Core-S2L2A/images/")
    write_s2_100k_published(root / "s2")
    write_ssl4eo(root / "ssl4eo" / "S2L2A" / "ssl4eo_000001.zarr.zip", patches[:2])
    yield server, base, root
    server.shutdown()


def _sent(server, prefix: str) -> int:
    return sum(n for path, n in server.sent.items() if path.startswith(prefix))


def _index(root: Path) -> dict[str, np.ndarray]:
    table = pq.read_table(root / "Core-S2L2A" / "metadata.parquet")
    return {c: np.asarray(table.column(c).to_pylist()) for c in table.column_names}


def test_one_cell_of_six_fetches_only_its_row_group(served, tmp_path):
    server, base, root = served
    cells = tmp_path / "cells.txt"
    cells.write_text("# wanted\n4U_14R\n")
    server.sent.clear()
    manifest = write_shards([f"{base}/Core-S2L2A"], tmp_path / "remote", select=CellFilters(cells=str(cells)), progress=False)
    assert manifest["samples"] == 4 and manifest["with_time"] == 4
    assert manifest["selection"] == {
        "index": f"{base}/Core-S2L2A/metadata.parquet",
        "filters": {"cells": str(cells)},
        "rows_in_index": 6,
        "cells_listed": 1,
        "rows_after": {"cells": 1},
        "rows_selected": 1,
        "parts": 1,
    }
    samples = read_shards(tmp_path / "remote")[1]
    assert {json.loads(s["json"])["cell"] for s in samples.values()} == {"4U_14R"}
    assert {json.loads(s["json"])["source"].split(" patch")[0] for s in samples.values()} == {"part_00002.parquet:row 1"}
    # measured, not assumed: the other part is never touched, and of part 2 little more than the row's bands
    images = root / "Core-S2L2A" / "images"
    group = pq.ParquetFile(images / "part_00002.parquet").metadata.row_group(1)
    bands = sum(group.column(c).total_compressed_size for c in range(group.num_columns) if group.column(c).path_in_schema != "thumbnail")
    fetched = _sent(server, "/Core-S2L2A/images/part_00002.parquet")
    assert _sent(server, "/Core-S2L2A/images/part_00001.parquet") == 0
    assert bands <= fetched <= bands + 128 * 1024, (fetched, bands)  # + the footer (pyarrow reads its last 64 KiB first)
    assert fetched < (images / "part_00002.parquet").stat().st_size / 2.5
    # the same bytes as selecting on the local folder
    local = write_shards([root / "Core-S2L2A"], tmp_path / "local", select=CellFilters(cells=str(cells)), progress=False)
    assert local["selection"]["rows_selected"] == 1 and local["selection"]["index"] == str(root / "Core-S2L2A" / "metadata.parquet")
    for shard in manifest["shards"]:
        assert (tmp_path / "remote" / shard["name"]).read_bytes() == (tmp_path / "local" / shard["name"]).read_bytes()


def test_every_filter_selects_exactly_the_expected_cells(served, tmp_path):
    server, base, root = served
    meta = _index(root)
    lon, lat, cell = meta["centre_lon"], meta["centre_lat"], list(meta["grid_cell"])
    assert [round(c) for c in meta["cloud_cover"]] == [0, 9, 25, 49, 81, 4]
    url = f"{base}/Core-S2L2A"

    by_row = {(remote.name_of(u), int(r)): c for u, r, c in zip(meta["parquet_url"], meta["parquet_row"], cell)}

    def chosen(**kw) -> list[str]:
        parts, record = select(f"{url}/metadata.parquet", CellFilters(**kw), part_location=lambda u: u)
        picked = [by_row[(remote.name_of(p.location), g)] for p in parts for g in p.row_groups or ()]
        assert record["rows_selected"] == len(picked)
        return sorted(picked)

    i = 2
    assert chosen(bbox=(lon[i] - 0.01, lat[i] - 0.01, lon[i] + 0.01, lat[i] + 0.01)) == [cell[i]]
    west, east = float(lon.min()), float(lon.max())
    assert chosen(bbox=(east - 1e-6, -90, west + 1e-6, 90)) == sorted([cell[int(lon.argmin())], cell[int(lon.argmax())]])  # across the antimeridian
    squares = [
        [
            [
                [lon[k] - 0.01, lat[k] - 0.01],
                [lon[k] + 0.01, lat[k] - 0.01],
                [lon[k] + 0.01, lat[k] + 0.01],
                [lon[k] - 0.01, lat[k] + 0.01],
                [lon[k] - 0.01, lat[k] - 0.01],
            ]
        ]
        for k in (1, 3)
    ]
    region = tmp_path / "region.geojson"
    region.write_text(
        json.dumps(
            {"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {}, "geometry": {"type": "MultiPolygon", "coordinates": squares}}]}
        )
    )
    assert chosen(region=str(region)) == [cell[1], cell[3]]
    assert chosen(start="2020-02-01", end="2020-04-15") == [cell[1], cell[2], cell[3]]  # a date as end: that whole day
    assert chosen(start="2020-02-01", end="2020-04-15T10:00:00Z") == [cell[1], cell[2]]
    assert chosen(max_cloud_cover=10) == [cell[0], cell[1], cell[5]]
    assert chosen(max_cloud_cover=10, start="2020-02-01") == [cell[1], cell[5]]
    listed = tmp_path / "cells.txt"
    listed.write_text(f"{cell[0]}, {cell[4]} 99U_99R\n")
    parts, record = select(f"{url}/metadata.parquet", CellFilters(cells=str(listed)), part_location=lambda u: u)
    assert record["cells_not_in_index"] == {"count": 1, "first": ["99U_99R"]} and record["rows_selected"] == 2
    one = chosen(sample=3, seed=7)
    assert len(one) == 3 and chosen(sample=3, seed=7) == one and set(one) <= set(cell)
    assert {tuple(chosen(sample=3, seed=s)) for s in range(8)} != {tuple(one)}  # the seed matters
    assert chosen(sample=2, seed=1, max_cloud_cover=10) != [] and set(chosen(sample=2, seed=1, max_cloud_cover=10)) <= {cell[0], cell[1], cell[5]}
    _, record = select(f"{url}/metadata.parquet", CellFilters(max_cloud_cover=30, sample=2, seed=3), part_location=lambda u: u)
    assert record["filters"] == {"max_cloud_cover": 30, "sample": 2, "seed": 3} and record["rows_after"] == {"max_cloud_cover": 4, "sample": 2}


def test_selection_through_the_cli_from_the_metadata_url(served, tmp_path, capsys):
    server, base, root = served
    meta = _index(root)
    i = 5
    box = [meta["centre_lon"][i] - 0.01, meta["centre_lat"][i] - 0.01, meta["centre_lon"][i] + 0.01, meta["centre_lat"][i] + 0.01]
    server.sent.clear()
    args = ["shards", f"{base}/Core-S2L2A/metadata.parquet", "--bbox", *map(str, box), "--max-cloud-cover", "50", "--out", str(tmp_path / "out")]
    assert main(args) == 0
    assert f"selected 1 of 6 rows of {base}/Core-S2L2A/metadata.parquet in 1 parts" in capsys.readouterr().out
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["selection"]["filters"] == {"bbox": box, "max_cloud_cover": 50.0} and manifest["selection"]["rows_after"] == {
        "bbox": 1,
        "max_cloud_cover": 1,
    }
    assert {json.loads(s["json"])["cell"] for s in read_shards(tmp_path / "out")[1].values()} == {meta["grid_cell"][i]}
    assert _sent(server, "/Core-S2L2A/images/part_00001.parquet") == 0
    assert main(["shards", f"{base}/Core-S2L2A", "--max-cloud-cover", "0.5", "--start", "2021-01-01", "--out", str(tmp_path / "none")]) == 2
    assert "the selection keeps no row" in capsys.readouterr().err


def test_remote_tars_and_index_give_the_local_bytes_with_the_index_time(served, tmp_path):
    server, base, root = served
    table = pq.read_table(root / "s2" / "metadata.parquet")
    times = [f"2019-{1 + k % 12:02d}-03T09:08:07Z" for k in range(table.num_rows)]
    pq.write_table(table.append_column("time", [times]), root / "s2" / "timed.parquet")
    tar = f"{base}/s2/data/shard-00000.tar"
    remote_set = write_shards([tar], tmp_path / "remote", index=f"{base}/s2/timed.parquet", progress=False)
    local_set = write_shards([root / "s2" / "data" / "shard-00000.tar"], tmp_path / "local", index=root / "s2" / "timed.parquet", progress=False)
    assert {k: v for k, v in remote_set.items() if local_set[k] != v} == {}
    assert remote_set["samples"] == table.num_rows == remote_set["with_time"]
    for shard in remote_set["shards"]:
        assert (tmp_path / "remote" / shard["name"]).read_bytes() == (tmp_path / "local" / shard["name"]).read_bytes()
    by_fn = dict(zip(table.column("fn").to_pylist(), times))
    for key, sample in read_shards(tmp_path / "remote")[1].items():
        assert json.loads(sample["json"])["time"] == by_fn[f"{key}.tif"]


def test_remote_csv_index_reads_as_the_local_one_and_a_bad_one_names_the_url(served):
    from satclip.data.shards import read_index_table

    server, base, root = served
    table = pq.read_table(root / "s2" / "metadata.parquet")
    with (root / "s2" / "index.csv").open("w") as f:
        f.write("lat,fn,lon\n" + "".join(f"{la},{fn},{lo}\n" for fn, lo, la in zip(*(table.column(c).to_pylist() for c in ("fn", "lon", "lat")))))
    assert read_index_table(f"{base}/s2/index.csv") == read_index_table(root / "s2" / "metadata.parquet")
    (root / "s2" / "broken.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(ShardInputError, match=rf"^index {re.escape(base)}/s2/broken.parquet: not a readable Parquet file") as caught:
        read_index_table(f"{base}/s2/broken.parquet")
    assert "satclip-index-" not in str(caught.value)


def test_remote_ssl4eo_and_s2_100k_folders_give_the_local_bytes(served, tmp_path):
    """Folder URLs listed over HTTP (the server's HTML links), SSL4EO-S12 read by the spawned workers from the URL."""
    server, base, root = served
    for name, workers in (("ssl4eo", 2), ("s2", 1)):
        server.sent.clear()
        remote_set = write_shards([f"{base}/{name}"], tmp_path / f"{name}-remote", workers=workers, progress=False)
        local_set = write_shards([root / name], tmp_path / f"{name}-local", progress=False)
        assert remote_set == local_set and remote_set["samples"] == {"ssl4eo": 8, "s2": 8}[name]
        for shard in remote_set["shards"]:
            assert (tmp_path / f"{name}-remote" / shard["name"]).read_bytes() == (tmp_path / f"{name}-local" / shard["name"]).read_bytes()
        assert _sent(server, f"/{name}/") > 0


def test_unreachable_missing_and_stalled_urls_fail_fast_naming_the_url(served, tmp_path, monkeypatch):
    server, base, root = served
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}/Core-S2L2A"
    began = time.monotonic()
    with pytest.raises(ShardInputError, match=re.escape(f"{closed}/metadata.parquet: cannot be read")):
        write_shards([closed], tmp_path / "a", progress=False)
    assert time.monotonic() - began < 5
    with pytest.raises(ShardInputError, match=re.escape(f"{base}/nowhere.parquet does not exist")):
        write_shards([f"{base}/nowhere.parquet"], tmp_path / "b", progress=False)
    with pytest.raises(ShardInputError, match=re.escape(f"{base}/s2/data/shard-00009.tar does not exist")):
        write_shards([f"{base}/s2/data/shard-00009.tar"], tmp_path / "b", progress=False)
    (root / "nothing").mkdir(exist_ok=True)
    found = "no Major TOM metadata.parquet, SSL4EO-S12 .zarr.zip files or tars found (a server that lists no folder: give the files)"
    with pytest.raises(ShardInputError, match=f"^{re.escape(f'{base}/nothing: {found}')}$"):
        write_shards([f"{base}/nothing"], tmp_path / "b", progress=False)
    monkeypatch.setattr(remote, "TIMEOUT_S", 1.0)
    with socket.socket() as silent:  # accepts connections (the backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        stalled = f"http://127.0.0.1:{silent.getsockname()[1]}/s2/data/shard-00000.tar"
        began = time.monotonic()
        with pytest.raises(ShardInputError, match=re.escape(stalled)):
            write_shards([stalled], tmp_path / "c", progress=False)
        assert time.monotonic() - began < 8
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()


def test_a_missing_backend_names_what_to_install(monkeypatch):
    import importlib.util

    if importlib.util.find_spec("s3fs") is not None:
        pytest.skip("s3fs is installed here")
    with pytest.raises(MissingExtraError, match=re.escape("needs 's3fs', which satclip leaves out: pip install \"satclip[remote]\" s3fs")):
        write_shards(["s3://bucket/Core-S2L2A"], "unused", progress=False)


def test_parts_given_with_an_index_select_among_them(served, tmp_path):
    server, base, root = served
    index = root / "Core-S2L2A" / "metadata.parquet"
    manifest = write_shards(
        [f"{base}/Core-S2L2A/images/part_00002.parquet"], tmp_path / "out", index=index, select=CellFilters(max_cloud_cover=50), progress=False
    )
    assert manifest["selection"]["rows_after"] == {"max_cloud_cover": 5, "among_inputs": 2} and manifest["selection"]["rows_selected"] == 2
    assert {json.loads(s["json"])["cell"] for s in read_shards(tmp_path / "out")[1].values()} == {"3U_13R", "5U_15R"}
    with pytest.raises(ShardInputError, match="needs its metadata.parquet: give the dataset folder or --index"):
        write_shards([f"{base}/Core-S2L2A/images/part_00002.parquet"], tmp_path / "none", select=CellFilters(sample=1), progress=False)
