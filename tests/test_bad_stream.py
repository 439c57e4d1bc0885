"""Bad data in training: a 2,000-sample stream with 5 % of it corrupted in every way the loader
recognises; training completes and the reported skip counts equal the injected ones."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

from satclip.data.errors import SKIP_KINDS
from satclip.data.transforms import S2_BANDS

SAMPLES, PER_SHARD, SIZE = 2000, 250, 32
# corrupted samples by kind (sample index -> how); 90 samples + a truncated shard losing 10 = 100 = 5 %
LOST_IN_TRUNCATED_SHARD = 10
INJECTED = {"shard": 1, "incomplete": 10, "decode": 40, "shape": 20, "coords": 20}


def _tif(bands: int, seed: int) -> bytes:
    from rasterio.io import MemoryFile

    data = np.random.default_rng(seed).integers(0, 10000, (bands, SIZE, SIZE), dtype=np.uint16)
    with MemoryFile() as memfile:
        with memfile.open(driver="GTiff", width=SIZE, height=SIZE, count=bands, dtype="uint16") as dst:
            dst.write(data)
        return memfile.read()


def _plan() -> dict[int, str]:
    """Which sample index gets which corruption (spread over the shards, deterministic)."""
    kinds = (
        ["truncated_tif"] * 20 + ["not_tiff"] * 20 + ["three_bands"] * 20 + ["nan_coords"] * 10 + ["out_of_range"] * 10 + ["no_payload"] * 5 + ["bad_json"] * 5
    )
    where = np.random.default_rng(7).choice(SAMPLES - PER_SHARD, size=len(kinds), replace=False)  # not in the last shard
    return dict(zip(where.tolist(), kinds))


def _member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o644
    tar.addfile(info, io.BytesIO(data))


def write_corrupted_stream(out: Path) -> dict:
    """Write 8 shards of 250 samples (12 x 32 x 32 uint16 GeoTIFF + JSON) with the corruptions of
    ``_plan`` and a last shard cut so that its last ``LOST_IN_TRUNCATED_SHARD`` samples are lost."""
    out.mkdir(parents=True, exist_ok=True)
    good = [_tif(12, seed) for seed in range(16)]
    three = _tif(3, 99)
    plan = _plan()
    rng = np.random.default_rng(0)
    shards = []
    for s in range(SAMPLES // PER_SHARD):
        name = f"shard-{s:06d}.tar"
        offsets = {}
        with tarfile.open(out / name, "w", format=tarfile.USTAR_FORMAT) as tar:
            for i in range(s * PER_SHARD, (s + 1) * PER_SHARD):
                how = plan.get(i)
                key = f"sample_{i:05d}"
                payload = good[i % len(good)]
                record: dict = {"lon": float(rng.uniform(-180, 180)), "lat": float(rng.uniform(-80, 80))}
                if how == "truncated_tif":
                    payload = payload[: len(payload) // 2]
                elif how == "not_tiff":
                    payload = b"\x89PNG\r\n\x1a\n" + payload[8:]
                elif how == "three_bands":
                    payload = three
                elif how == "nan_coords":
                    record["lon"] = float("nan")
                elif how == "out_of_range":
                    record["lat"] = 95.0
                offsets[i] = tar.offset
                if how != "no_payload":
                    _member(tar, f"{key}.tif", payload)
                _member(tar, f"{key}.json", b"{lon: oops" if how == "bad_json" else json.dumps(record).encode())
        shards.append({"name": name, "samples": PER_SHARD})
    # cut the last shard inside the image of its sample SAMPLES - LOST: it and the rest are lost
    last = out / shards[-1]["name"]
    cut = offsets[SAMPLES - LOST_IN_TRUNCATED_SHARD] + 512 + 100
    last.write_bytes(last.read_bytes()[:cut])
    manifest = {"format": 1, "payload": "tif", "dtype": "uint16", "bands": list(S2_BANDS), "shards": shards, "samples": SAMPLES}
    (out / "manifest.json").write_text(json.dumps(manifest))
    return manifest


@pytest.fixture(scope="module")
def corrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("corrupted")
    write_corrupted_stream(out)
    return out


def test_loader_counts_every_injected_corruption(corrupted: Path) -> None:
    from satclip.data.stream import StreamLoader, build_pipeline

    stream = build_pipeline(str(corrupted), batch_size=50, resample=False, crop_size=SIZE, shuffle_buffer=0, rank=0, world_size=1)
    loader = StreamLoader(stream, num_workers=0)
    keys = [k for batch in loader for k in batch["key"]]
    assert loader.skipped == {kind: INJECTED.get(kind, 0) for kind in SKIP_KINDS}
    assert len(keys) == len(set(keys)) == SAMPLES - sum(INJECTED.values()) + INJECTED["shard"] - LOST_IN_TRUNCATED_SHARD
    assert max(keys) == f"sample_{SAMPLES - LOST_IN_TRUNCATED_SHARD - 1:05d}"


def test_training_completes_and_reports_exact_skip_counts(corrupted: Path, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from satclip.train.cli import main

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cli = main(
            [
                "--data.train_urls",
                str(corrupted),
                "--data.resample",
                "false",
                "--data.shuffle_buffer",
                "0",
                "--data.num_workers",
                "0",
                "--data.batch_size",
                "50",
                "--data.crop_size",
                str(SIZE),
                "--data.pin_memory",
                "false",
                "--model.vision",
                "test_resnet",
                "--model.embed_dim",
                "32",
                "--model.location",
                '{"pe": "sphericalharmonics", "nn": "siren", "legendre_polys": 4, "dim_hidden": 32, "num_layers": 1}',
                "--trainer.max_epochs",
                "1",
                "--trainer.accelerator",
                "cpu",
                "--trainer.logger",
                "false",
                "--trainer.enable_progress_bar",
                "false",
                "--trainer.default_root_dir",
                str(tmp_path),
            ]
        )
    finally:
        torch.set_num_threads(threads)
    trainer = cli.trainer
    assert trainer.state.finished
    good = SAMPLES - sum(INJECTED.values()) + INJECTED["shard"] - LOST_IN_TRUNCATED_SHARD
    assert trainer.global_step == good // 50
    reported = {k.removeprefix("data/skipped_"): int(v) for k, v in trainer.callback_metrics.items() if k.startswith("data/skipped_")}
    assert reported == {kind: INJECTED.get(kind, 0) for kind in SKIP_KINDS}
