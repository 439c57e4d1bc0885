"""Training callbacks: throughput and data-wait logging, and the variant-named checkpoints."""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import lightning.pytorch as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from typing_extensions import override


class Throughput(Callback):
    """Logs ``perf/samples_per_s`` (per device), ``perf/samples_per_s_total`` (x world size),
    ``perf/step_s`` and ``perf/data_wait_fraction`` over the last ``window`` training batches.

    A step runs from the end of the previous batch to the end of this one; the data wait is the part
    before ``on_train_batch_start``: fetching the batch, moving it to the device and the on-device
    transforms (``on_after_batch_transfer``). On CUDA the step end waits for the device so that the
    wait is not hidden in queued kernels.
    """

    def __init__(self, window: int = 20) -> None:
        self.window = window
        self._history: deque[tuple[float, float, int]] = deque(maxlen=window)
        self._last_end: float | None = None
        self._start = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last_end = None  # the first batch of an epoch includes the loader start-up

    @override
    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        self._start = time.perf_counter()

    @override
    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        end = time.perf_counter()
        if self._last_end is not None:
            self._history.append((end - self._last_end, self._start - self._last_end, len(batch["lonlat"])))
        self._last_end = end
        if not self._history:
            return
        step = sum(h[0] for h in self._history)
        wait = sum(h[1] for h in self._history)
        samples = sum(h[2] for h in self._history)
        per_device = samples / step
        pl_module.log_dict(
            {
                "perf/samples_per_s": per_device,
                "perf/samples_per_s_total": per_device * trainer.world_size,
                "perf/step_s": step / len(self._history),
                "perf/data_wait_fraction": wait / step,
            },
            on_step=True,
            on_epoch=False,
        )


def variant_checkpoints(variant: str, dirpath: str, *, every_n_train_steps: int = 1000, monitor: str = "val/loss") -> list[ModelCheckpoint]:
    """Checkpoints named for the variant in ``dirpath``:

    - ``{variant}-epoch=E-step=S.ckpt`` every ``every_n_train_steps`` optimizer steps, all kept
      (0 disables);
    - ``{variant}-last.ckpt`` (what ``--ckpt_path last`` resumes): at each of those and at every
      epoch end, including the end of a run stopped by ``max_steps``;
    - ``{variant}-best-epoch=E-step=S.ckpt``: the lowest ``monitor`` (validation loss) so far.
    """
    last_name = f"{variant}-last"
    callbacks = [ModelCheckpoint(dirpath=dirpath, save_top_k=0, save_last=True, enable_version_counter=False)]
    if every_n_train_steps:
        callbacks.append(
            ModelCheckpoint(
                dirpath=dirpath,
                filename=f"{variant}-{{epoch}}-{{step}}",
                every_n_train_steps=every_n_train_steps,
                save_top_k=-1,
                save_last=True,
                enable_version_counter=False,
            )
        )
    for callback in callbacks:
        callback.CHECKPOINT_NAME_LAST = last_name
    callbacks.append(ModelCheckpoint(dirpath=dirpath, filename=f"{variant}-best-{{epoch}}-{{step}}", monitor=monitor, mode="min", save_top_k=1))
    return callbacks


__all__ = ["Throughput", "variant_checkpoints"]
