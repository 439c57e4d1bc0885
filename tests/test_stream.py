"""The streaming loader: exact decoding, complete and disjoint splits, ranks in step, bad data counted."""

from __future__ import annotations

import gc
import io
import json
import logging
import math
import tarfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from satclip.data.errors import SKIP_KINDS, EmptyStreamError
from satclip.data.payload import encode_fast
from satclip.data.shards import read_index, write_shards
from satclip.data.sharedring import SharedBatchRing, new_shared
from satclip.data.stream import (
    SatCLIPDataModule,
    StreamLoader,
    build_pipeline,
    expand_urls,
    iter_tar,
    skip_metrics,
)

SMALL = dict(shuffle_buffer=4, rank=0, world_size=1)  # keep the tests fast: no big shuffle buffer


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def keys_of(loader) -> list[str]:
    return [k for batch in loader for k in batch["key"]]


@pytest.fixture(scope="module")
def shards(s2_sample, tmp_path_factory) -> dict[str, Path]:
    """The 20 sample patches as 5 shards of 4, in both payload formats."""
    out = {}
    for payload in ("s2c", "tif"):
        out[payload] = tmp_path_factory.mktemp(payload)
        write_shards([s2_sample], out[payload], samples_per_shard=4, payload=payload, progress=False)
    return out


@pytest.fixture(scope="module")
def index(s2_sample):
    return read_index(s2_sample / "index.csv")


@pytest.fixture(scope="module")
def s2c_sample(shards) -> tuple[bytes, bytes]:
    """One good (s2c payload, json record) pair to build corrupt shards around."""
    members = dict(iter_tar(open(shards["s2c"] / "shard-000000.tar", "rb")))
    key = next(iter(members)).split(".")[0]
    return members[f"{key}.s2c"], members[f"{key}.json"]


@pytest.mark.parametrize("payload", ["s2c", "tif"])
def test_one_pass_is_complete_and_bit_exact(shards, s2_sample, index, payload):
    stream = build_pipeline(shards[payload], batch_size=6, train=False, crop_size=None, insert_b10=False, keep_uint16=True, **SMALL)
    loader = StreamLoader(stream)
    assert len(loader) == 4  # 20 samples in batches of 6
    batches = list(loader)
    keys = [k for b in batches for k in b["key"]]
    assert sorted(keys) == sorted(name[:-4] for name in index)
    for batch in batches:
        assert batch["image"].dtype == torch.uint16 and batch["lonlat"].dtype == torch.float64
        for key, image, lonlat in zip(batch["key"], batch["image"], batch["lonlat"]):
            with rasterio.open(s2_sample / "images" / f"{key}.tif") as src:
                np.testing.assert_array_equal(image.numpy(), src.read())
            assert tuple(lonlat.tolist()) == index[f"{key}.tif"]
    assert batches[-1]["skipped"] == dict.fromkeys(SKIP_KINDS, 0)


def test_batch_dict_for_training(shards):
    stream = build_pipeline(shards["s2c"], batch_size=4, epoch_length=8, **SMALL)
    batch = next(iter(StreamLoader(stream)))
    assert set(batch) == {"image", "lonlat", "time", "key", "skipped"}
    assert batch["image"].shape == (4, 13, 224, 224) and batch["image"].dtype == torch.float32
    assert (batch["image"][:, 10] == 0).all() and 0 < batch["image"].max() < 6.6  # /10000, B10 zero
    assert batch["lonlat"].shape == (4, 2) and batch["lonlat"].dtype == torch.float64
    assert batch["time"].shape == (4,) and torch.isnan(batch["time"]).all()  # the sample patches carry no time
    assert len(batch["key"]) == 4 and all(isinstance(k, str) for k in batch["key"])
    assert skip_metrics(batch) == {f"data/skipped_{kind}": 0.0 for kind in SKIP_KINDS}


def test_published_tars_with_index_or_georeference(s2_sample, index, tmp_path):
    names = sorted(index)
    for i in range(2):
        write_tar(tmp_path / f"s2-100k-{i}.tar", [(f"images/{n}", (s2_sample / "images" / n).read_bytes()) for n in names[i::2]])
    urls = str(tmp_path / "s2-100k-{0..1}.tar")
    with_index = build_pipeline(urls, batch_size=20, train=False, index_csv=s2_sample / "index.csv", **SMALL)
    (batch,) = list(StreamLoader(with_index))
    assert sorted(batch["key"]) == sorted(f"images/{n[:-4]}" for n in names)
    for key, lonlat in zip(batch["key"], batch["lonlat"].tolist()):
        assert tuple(lonlat) == index[key.split("/")[1] + ".tif"]
    georef = build_pipeline(urls, batch_size=20, train=False, **SMALL)
    (batch,) = list(StreamLoader(georef))
    expected = torch.tensor([index[k.split("/")[1] + ".tif"] for k in batch["key"]], dtype=torch.float64)
    assert (batch["lonlat"] - expected).abs().max() < 1e-5


def test_url_forms(shards):
    directory = shards["s2c"]
    listed = expand_urls(directory)
    assert listed == [str(directory / f"shard-{i:06d}.tar") for i in range(5)]
    assert expand_urls(str(directory / "shard-{000000..000004}.tar")) == listed
    assert expand_urls([listed[0], str(directory / "shard-{000001..000002}.tar")]) == listed[:3]
    piped = build_pipeline([f"pipe:cat {u}" for u in listed[:2]], batch_size=8, train=False, **SMALL)
    assert len(keys_of(StreamLoader(piped))) == 8
    with pytest.raises(FileNotFoundError, match="1 of 6 shards"):
        expand_urls(str(directory / "shard-{000000..000005}.tar"))
    with pytest.raises(ValueError, match="needs a manifest.json"):
        expand_urls(directory.parent)


def test_a_shard_folder_without_manifest_is_refused_unless_listed(shards, tmp_path):
    partial = tmp_path / "partial"
    partial.mkdir()
    for name in ("shard-000000.tar", "shard-000001.tar"):
        (partial / name).symlink_to(shards["s2c"] / name)
    with pytest.raises(ValueError, match=r"has 2 tar files \(shard-000000.tar, ...\) but no manifest.json: not a complete shard set"):
        expand_urls(partial)
    with pytest.raises(ValueError, match="no manifest.json"):
        build_pipeline(partial, batch_size=4, epoch_length=8, **SMALL)
    assert expand_urls(str(partial / "shard-{000000..000001}.tar")) == [str(partial / f"shard-00000{i}.tar") for i in range(2)]


def test_two_ranks_two_workers_disjoint_and_complete(shards):
    seen = []
    for rank in range(2):
        stream = build_pipeline(shards["s2c"], batch_size=3, train=False, rank=rank, world_size=2)
        loader = StreamLoader(stream, num_workers=2)
        keys = keys_of(loader)
        assert len(keys) == len(set(keys)) == (12, 8)[rank]  # shards 0,2,4 and 1,3
        seen.append(set(keys))
    assert not seen[0] & seen[1] and len(seen[0] | seen[1]) == 20


@pytest.mark.parametrize("resample", [True, False])
def test_uneven_ranks_run_the_same_steps(shards, resample):
    steps = []
    for rank in range(2):  # 5 shards: rank 0 reads 3 of them, rank 1 reads 2
        stream = build_pipeline(shards["s2c"], batch_size=3, epoch_length=10, resample=resample, shuffle_buffer=4, rank=rank, world_size=2)
        loader = StreamLoader(stream, num_workers=2)
        batches = list(loader)
        assert all(len(b["key"]) == 3 for b in batches)
        steps.append((len(loader), len(batches)))
    assert steps == [(4, 4), (4, 4)]  # ceil(10 / (3 * 2)) = 2 batches per worker, 2 workers


def test_cycling_needs_a_shard_per_worker(shards):
    stream = build_pipeline(shards["s2c"], batch_size=3, epoch_length=10, resample=False, rank=0, world_size=2)
    with pytest.raises(ValueError, match="5 shards for 6 workers"):
        StreamLoader(stream, num_workers=3)


def test_seeds_are_reproducible_and_differ_by_rank_and_epoch(shards):
    def run(rank: int, epoch: int = 0):
        stream = build_pipeline(shards["s2c"], batch_size=4, epoch_length=8, seed=7, shuffle_buffer=4, rank=rank, world_size=2)
        loader = StreamLoader(stream)
        loader.sampler.set_epoch(epoch)  # what Lightning calls at each epoch start
        batches = list(loader)
        return [k for b in batches for k in b["key"]], torch.cat([b["image"] for b in batches]), torch.cat([b["lonlat"] for b in batches])

    keys, images, lonlat = run(0)
    again = run(0)
    assert keys == again[0] and torch.equal(images, again[1]) and torch.equal(lonlat, again[2])
    assert run(1)[0] != keys
    other_epoch = run(0, epoch=1)
    assert other_epoch[0] != keys or not torch.equal(other_epoch[1], images)


def test_every_kind_of_corruption_is_counted(s2c_sample, tmp_path, caplog):
    good, record = s2c_sample
    meta = json.loads(record)

    def js(**changes) -> bytes:
        return json.dumps({**meta, **changes}).encode()

    small = encode_fast(np.ones((12, 100, 100), dtype=np.uint16))
    three_bands = encode_fast(np.ones((3, 256, 256), dtype=np.uint16))
    no_coords = {k: v for k, v in meta.items() if k not in ("lon", "lat")}
    write_tar(
        tmp_path / "shard-000000.tar",
        [
            ("a.s2c", good),
            ("a.json", record),
            ("notiff.tif", b"this is not a tiff at all"),
            ("notiff.json", record),  # decode
            ("cut.s2c", good[: len(good) // 2]),
            ("cut.json", record),  # decode
            ("bands.s2c", three_bands),
            ("bands.json", record),  # shape
            ("small.s2c", small),
            ("small.json", js(shape=None)),  # shape
            ("b.s2c", good),
            ("b.json", record),
            ("nocoords.s2c", good),
            ("nocoords.json", json.dumps(no_coords).encode()),  # coords
            ("nan.s2c", good),
            ("nan.json", js(lon=math.nan)),  # coords
            ("north.s2c", good),
            ("north.json", js(lat=95.0)),  # coords
            ("utm.s2c", good),
            ("utm.json", js(lon=500000.0, lat=4649776.0)),  # coords
            ("nopayload.json", record),  # incomplete
            ("badjson.s2c", good),
            ("badjson.json", b"{not json"),  # incomplete
            ("badtime.s2c", good),
            ("badtime.json", js(time="2021-13-45")),  # time
            ("c.s2c", good),
            ("c.json", js(time="2021-06-01T10:20:31Z", doy=152)),
        ],
    )
    whole = write_tar(tmp_path / "whole.tar", [(f"{k}.{e}", d) for k in "pqr" for e, d in (("s2c", good), ("json", record))])
    data = whole.read_bytes()
    (tmp_path / "shard-000001.tar").write_bytes(data[: len(data) - 2048 - len(good) // 2])  # inside r.s2c: p, q kept
    boundary = 512 + len(good) + (-len(good)) % 512 + 512 + len(record) + (-len(record)) % 512
    (tmp_path / "shard-000002.tar").write_bytes(data[:boundary])  # after p's members, no end marker: p is dropped too
    (tmp_path / "shard-000003.tar").write_bytes(np.random.default_rng(0).bytes(5000))  # garbage
    whole.unlink()
    urls = [str(tmp_path / f"shard-00000{i}.tar") for i in range(4)] + [f"pipe:cat {tmp_path}/missing.tar"]
    with caplog.at_level(logging.WARNING, logger="satclip.data"):
        loader = StreamLoader(build_pipeline(urls, batch_size=4, train=False, **SMALL))
        keys = keys_of(loader)
    assert sorted(keys) == ["a", "b", "c", "p", "q"]
    assert loader.skipped == {"shard": 4, "incomplete": 2, "decode": 2, "shape": 2, "coords": 4, "time": 1}
    text = caplog.text
    assert "'2021-13-45' is not an ISO 8601" in text
    assert "shard-000000.tar sample 'notiff'" in text and "not a TIFF" in text
    assert "truncated tar" in text and "not a tar archive" in text and "missing.tar" in text and "exit 1" in text
    assert "coordinates out of range lon=500000.0" in text and "smaller than the crop 224" in text


def test_batches_carry_acquisition_time(s2c_sample, tmp_path):
    """``time`` is float64 Unix seconds from the record's ISO 8601 text, NaN where the record has none,
    and survives concatenation of a step's batches."""
    from satclip.train.accumulate import concat_batches

    good, record = s2c_sample
    meta = json.loads(record)
    dated = json.dumps({**meta, "time": "2021-06-01T10:20:31Z", "doy": 152}).encode()
    write_tar(tmp_path / "shard-000000.tar", [("a.s2c", good), ("a.json", dated), ("b.s2c", good), ("b.json", record)])
    batches = list(StreamLoader(build_pipeline([str(tmp_path / "shard-000000.tar")], batch_size=1, train=False, **SMALL)))
    times = {b["key"][0]: b["time"] for b in batches}
    assert times["a"].dtype == torch.float64 and times["a"].tolist() == [1622542831.0]
    assert math.isnan(float(times["b"][0]))
    joined = concat_batches(batches)
    assert joined["time"].shape == (2,) and int(torch.isnan(joined["time"]).sum()) == 1


def test_a_rare_valid_sample_in_a_shuffled_resampled_stream_is_found(s2c_sample, tmp_path):
    good, record = s2c_sample
    bad = [(f"bad{i}.s2c", good[:100]) for i in range(5)] + [(f"bad{i}.json", record) for i in range(5)]
    shard = write_tar(tmp_path / "shard.tar", bad[:3] + [("ok.s2c", good), ("ok.json", record)] + bad[3:])
    # the valid sample can wait in the shuffle buffer while whole reads of its shard fail: not dead
    stream = build_pipeline(str(shard), batch_size=2, epoch_length=4, shuffle_buffer=16, rank=0, world_size=1)
    loader = StreamLoader(stream)
    assert keys_of(loader) == ["ok"] * 4 and loader.skipped["decode"] > 5


def test_samples_left_in_the_shuffle_buffer_are_not_decoded(shards):
    stream = build_pipeline(shards["s2c"], batch_size=4, epoch_length=8, shuffle_buffer=16, rank=0, world_size=1)
    decode, calls = stream.decoder, []
    stream.decoder = lambda raw, rng: calls.append(raw["__key__"]) or decode(raw, rng)
    assert len(keys_of(StreamLoader(stream))) == 8 and len(calls) == 8


def test_workers_reuse_shared_memory_only_for_dropped_batches(shards):
    def pass_of(**loader_args):
        stream = build_pipeline(shards["s2c"], batch_size=2, train=False, crop_size=None, insert_b10=False, keep_uint16=True, **SMALL)
        return StreamLoader(stream, **loader_args)

    expected = {k: img.clone() for b in pass_of() for k, img in zip(b["key"], b["image"])}
    kept = list(pass_of(num_workers=2))  # the consumer holds every batch: no slot may be rewritten
    assert {k: img for b in kept for k, img in zip(b["key"], b["image"])}.keys() == expected.keys()
    for batch in kept:
        for key, image in zip(batch["key"], batch["image"]):
            assert torch.equal(image, expected[key])
    dropped = pass_of(num_workers=2)
    for batch in dropped:  # the consumer drops each batch: slots are freed and reused
        for key, image in zip(batch["key"], batch["image"]):
            assert torch.equal(image, expected[key])
    assert sum(dropped.ring._busy) <= 2  # only the slots of batches still referenced (the last one)


def test_a_stream_with_nothing_in_it_says_why(tmp_path):
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(b"\x01" * 4096)
    with pytest.raises(EmptyStreamError, match=r"no sample from 1 shards .*skipped: shard=1"):
        list(StreamLoader(build_pipeline(str(garbage), batch_size=2, train=False, **SMALL)))
    empty = write_tar(tmp_path / "empty.tar", [("x.json", b"{}")])
    stream = build_pipeline([str(garbage), str(empty)], batch_size=2, epoch_length=4, **SMALL)
    with pytest.raises(EmptyStreamError, match=r"none of the 2 shards .* shard=\d+, incomplete=\d+"):
        list(StreamLoader(stream))
    with pytest.raises(ValueError, match="no shards matched"):
        expand_urls([])


def test_datamodule_uint16_on_device_and_lightning_epochs(shards):
    import lightning.pytorch as pl

    dm = SatCLIPDataModule(
        train_urls=str(shards["s2c"]), val_urls=str(shards["s2c"]), batch_size=4, num_workers=0, epoch_length=8, shuffle_buffer=4, keep_uint16=True, seed=3
    )
    val = dm.val_dataloader()
    raw = next(iter(val))
    assert raw["image"].dtype == torch.uint16 and raw["image"].shape == (4, 12, 224, 224)  # B10 left out
    assert raw["zero_bands"] == [10]
    ready = dm.on_after_batch_transfer(dict(raw), 0)
    assert ready["image"].shape == (4, 13, 224, 224) and "zero_bands" not in ready
    torch.testing.assert_close(ready["image"][:, [*range(10), 11, 12]], raw["image"].float() / 10000)
    assert (ready["image"][:, 10] == 0).all()

    class Probe(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(13, 1)
            self.seen: list[list[str]] = []

        def training_step(self, batch, _):
            assert batch["image"].dtype == torch.float32  # converted and augmented after transfer
            self.seen[-1] += batch["key"]
            return self.layer(batch["image"].mean(dim=(2, 3))).mean()

        def on_train_epoch_start(self):
            self.seen.append([])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)

    model = Probe()
    trainer = pl.Trainer(
        max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0
    )
    trainer.fit(model, datamodule=dm)
    assert trainer.num_training_batches == 2 and [len(s) for s in model.seen] == [8, 8]
    assert model.seen[0] != model.seen[1]  # Lightning's set_epoch reached the stream


def test_datamodule_from_a_lightningcli_config():
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_class_arguments(SatCLIPDataModule, "data")
    cfg = parser.parse_object(
        {
            "data": {
                "train_urls": ["a/shard-{000000..000009}.tar"],
                "jitter_mode": "reference",
                "bands": ["B02", "B03", "B04"],
                "insert_b10": False,
                "keep_uint16": True,
            }
        }
    )
    dm = SatCLIPDataModule(**cfg.data.as_dict())
    assert dm.augment.jitter_mode == "reference" and dm.hparams.bands == ["B02", "B03", "B04"]


def test_a_slot_is_reused_only_after_its_batch_is_dropped():
    ring = SharedBatchRing(num_workers=1, slots=2)
    first, a = ring.take(0, (2, 3), dtype=torch.uint16)
    second, b = ring.take(0, (2, 3), dtype=torch.uint16)
    assert {a, b} == {0, 1} and first.is_shared() and first.dtype == torch.uint16
    extra, none = ring.take(0, (2, 3), dtype=torch.uint16)  # both busy: a new segment, not a slot
    assert none is None and extra.is_shared() and extra.data_ptr() not in (first.data_ptr(), second.data_ptr())
    arrived = first.clone()  # the main process's own mapping of slot a (another process in real use)
    ring.received(a, arrived)
    view = arrived[1]
    ring.poll()
    assert ring.take(0, (2, 3), dtype=torch.uint16)[1] is None  # a view still holds slot a's batch
    pointer = first.data_ptr()
    del arrived, view
    gc.collect()
    ring.poll()
    again, slot = ring.take(0, (1, 3), dtype=torch.uint16)  # smaller batches fit the same buffer
    assert slot == a and again.data_ptr() == pointer and again.shape == (1, 3)


def test_new_epoch_frees_what_the_consumer_does_not_hold():
    ring = SharedBatchRing(num_workers=2, slots=1)
    _, a = ring.take(0, (4,), dtype=torch.float32)
    _, b = ring.take(1, (4,), dtype=torch.float32)  # sent, then discarded unread by the DataLoader
    held = torch.zeros(4)  # what the consumer holds of slot a
    ring.received(a, held)
    ring.new_epoch()
    assert ring.take(1, (4,), dtype=torch.float32)[1] == b and ring.take(0, (4,), dtype=torch.float32)[1] is None


def test_new_shared_and_bad_arguments():
    t = new_shared((3, 5), torch.float32)
    assert t.shape == (3, 5) and t.is_shared()
    with pytest.raises(ValueError, match="num_workers >= 1 and slots >= 1"):
        SharedBatchRing(0, 2)
