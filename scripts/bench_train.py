"""Training-step speed per variant, and whether the loader keeps up.

1. For each variant (the ``model:`` section of ``configs/<variant>.yaml``, without backbone weights):
   time of one optimizer step (forward, backward, AdamW step, logit-scale clamp) on synthetic
   batches already on the device, and samples/s.
2. With ``--shards DIR``: samples/s of the same step fed by ``SatCLIPDataModule`` (worker decoding,
   transfer, on-device transforms) against the same step on synthetic batches, measured in the same
   run. A ratio well below 1 means the loader is the bottleneck.

    python scripts/bench_train.py --variants satclip-resnet18-l10 --batch 4 --crop 64 --steps 5
    python scripts/bench_train.py --variants satclip-resnet50-l40 satclip-vit16-l40 --batch 512 \
        --precision bf16 --device cuda --shards data/s2-100k/shards/train --num-workers 8
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from pathlib import Path

import torch
import yaml

from satclip.model import MAX_LOGIT_SCALE
from satclip.train.module import SatCLIPModule
from satclip.train.synthetic import synthetic_batch

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = [f"satclip-{v}-l{L}" for v in ("resnet18", "resnet50", "vit16") for L in (10, 40)]


def build(variant: str, device: torch.device) -> tuple[SatCLIPModule, torch.optim.Optimizer]:
    """The variant's module (no backbone weights: speed only) and its optimizer."""
    config = yaml.safe_load((ROOT / "configs" / f"{variant}.yaml").read_text())["model"]
    config.update(vision_weights=None, accumulate_batches=1, max_steps=1000)
    module = SatCLIPModule(**config).to(device).train()
    optimizer = module.configure_optimizers()["optimizer"]
    return module, optimizer


def train_step(module: SatCLIPModule, optimizer: torch.optim.Optimizer, batch: dict, autocast: contextlib.AbstractContextManager) -> float:
    """One optimizer step as SatCLIPModule.training_step takes it (without Lightning); returns the loss."""
    with autocast:
        image, location = module.encode(batch)
        loss = module.loss_fn(image, location, module.model.temperature_scale())
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    with torch.no_grad():
        module.model.logit_scale.clamp_(0.0, MAX_LOGIT_SCALE)
    return loss.item()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(module, optimizer, batches, steps: int, device: torch.device, autocast_fn) -> list[float]:
    """Seconds per step over ``steps`` steps (after one warm-up step), batches drawn from ``batches``."""
    times = []
    for i in range(steps + 1):
        _sync(device)
        start = time.perf_counter()
        batch = next(batches)
        train_step(module, optimizer, batch, autocast_fn())
        _sync(device)
        if i > 0:
            times.append(time.perf_counter() - start)
    return times


def synthetic_stream(batch: int, crop: int, device: torch.device):
    fixed = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in synthetic_batch(batch, crop).items()}
    while True:
        yield fixed


def shard_stream(shards: str, batch: int, crop: int, workers: int, device: torch.device):
    """Batches of ``SatCLIPDataModule`` moved to ``device`` with its on-device transforms."""
    from satclip.data.stream import SatCLIPDataModule

    data = SatCLIPDataModule(train_urls=shards, batch_size=batch, num_workers=workers, crop_size=crop, epoch_length=10**9,
                             keep_uint16=device.type == "cuda")  # fmt: skip
    while True:
        for item in data.train_dataloader():
            item = {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in item.items()}
            yield data.on_after_batch_transfer(item, 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=VARIANTS, choices=VARIANTS)
    parser.add_argument("--batch", type=int, default=4, help="rows per step (per device)")
    parser.add_argument("--crop", type=int, default=224, help="image size (ViT variants always use 224)")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=("32", "bf16"), default="32")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--shards", default=None, help="shard folder: also measure steps fed by the loader")
    parser.add_argument("--num-workers", type=int, default=2)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    def autocast_fn():
        if args.precision == "bf16":
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {name}; batch {args.batch}; precision {args.precision}; {args.steps} timed steps after 1 warm-up")
    print(f"{'variant':<22} {'crop':>4} {'ms/step':>10} {'samples/s':>10}  (median; min-max ms)")
    for variant in args.variants:
        crop = 224 if "vit" in variant else args.crop
        torch.manual_seed(0)
        module, optimizer = build(variant, device)
        times = time_steps(module, optimizer, synthetic_stream(args.batch, crop, device), args.steps, device, autocast_fn)
        med = statistics.median(times)
        print(f"{variant:<22} {crop:>4} {1000 * med:>10.1f} {args.batch / med:>10.1f}  ({1000 * min(times):.1f}-{1000 * max(times):.1f})")
        if args.shards:
            loader = shard_stream(args.shards, args.batch, crop, args.num_workers, device)
            fed = time_steps(module, optimizer, loader, args.steps, device, autocast_fn)
            again = time_steps(module, optimizer, synthetic_stream(args.batch, crop, device), args.steps, device, autocast_fn)
            syn = statistics.median(times + again)
            real = statistics.median(fed)
            print(f"{'':<22} shards: {args.batch / real:.1f} samples/s vs synthetic {args.batch / syn:.1f} "
                  f"-> loader-fed / synthetic = {syn / real:.2f}")  # fmt: skip
        del module, optimizer


if __name__ == "__main__":
    main()
