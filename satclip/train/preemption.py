"""Graceful preemption: SIGTERM or SIGUSR1 -> finish the step, save ``last.ckpt``, stop cleanly.

Cloud spot instances, Kubernetes and SLURM send SIGTERM (SLURM also SIGUSR1 ``--signal`` seconds
before the time limit). ``Preemption`` turns either into a checkpoint of the last finished step
(``--ckpt_path last`` resumes there) and a clean stop (exit status 0). SIGTERM: Lightning finishes
the step and raises ``SIGTERMException`` on every rank; the checkpoint is saved on the way out.
SIGUSR1: the ranks agree at the end of the step (one collective per step), save, and stop.
With gradient accumulation (a module whose ``accumulating`` is true between the batches of one
optimizer step) both wait for the end of the optimizer step (a SIGTERM inside one reaches
Lightning's handler only then), so the checkpoint never falls inside one.

On SLURM Lightning detects the ``srun`` job and uses ``SLURMEnvironment(auto_requeue=True,
requeue_signal=SIGUSR1)`` (pass it in ``trainer.plugins`` to change that): Lightning itself then owns
SIGUSR1, saves ``hpc_ckpt_N.ckpt`` in ``default_root_dir`` and runs ``scontrol requeue``, and this
callback handles SIGTERM only.
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType
from typing import Any

import lightning.pytorch as pl
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_info
from typing_extensions import override

__all__ = ["Preemption"]


def _lightning_owns_sigusr1(trainer: pl.Trainer) -> bool:
    """Whether Lightning's SLURM auto-requeue handles SIGUSR1: the strategy's cluster environment, or
    for single-device strategies (which have none) the SLURMEnvironment Lightning picks under srun
    (public API only: a custom ``SLURMEnvironment`` plugin is seen through multi-device strategies)."""
    env = getattr(trainer.strategy, "cluster_environment", None)
    if env is None and SLURMEnvironment.detect():
        env = SLURMEnvironment()  # Lightning's default under srun: auto_requeue=True, requeue_signal=SIGUSR1
    return isinstance(env, SLURMEnvironment) and env.auto_requeue and env.requeue_signal == signal.SIGUSR1


def _last_checkpoint_callback(trainer: pl.Trainer) -> ModelCheckpoint:
    for cb in trainer.checkpoint_callbacks:
        if isinstance(cb, ModelCheckpoint) and cb.save_last:
            if cb.save_last == "link":
                raise ValueError(
                    "Preemption: ModelCheckpoint(save_last='link') replaces last.ckpt by delete + symlink, which a "
                    "kill can interrupt and leave no last.ckpt; use save_last=True (written atomically)"
                )
            return cb
    raise ValueError(
        "Preemption needs a ModelCheckpoint with save_last=True so that `--ckpt_path last` finds the checkpoint it saves; add one to trainer.callbacks"
    )


class Preemption(Callback):
    """After SIGTERM or SIGUSR1: save the ModelCheckpoint's last checkpoint at a step boundary and stop."""

    def __init__(self) -> None:
        self._requested = False
        self._previous: Any | None = None
        self._previous_term: Any | None = None
        self._module: pl.LightningModule | None = None
        self._term_waiting = False
        self._installed = False
        self._saved_step: int | None = None

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            _last_checkpoint_callback(trainer)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Installed after Lightning's own handlers (SIGTERM sets trainer.received_sigterm), which it restores
        # at teardown, also on an exception; on SLURM with auto-requeue SIGUSR1 is Lightning's.
        self._requested, self._saved_step, self._module, self._term_waiting = False, None, pl_module, False
        if threading.current_thread() is not threading.main_thread():
            return
        self._previous_term = signal.signal(signal.SIGTERM, self._on_sigterm)
        if hasattr(signal, "SIGUSR1") and not _lightning_owns_sigusr1(trainer):
            self._previous = signal.signal(signal.SIGUSR1, self._on_signal)
        self._installed = True

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        """Hand SIGTERM to Lightning's handler now, or at the end of an accumulated optimizer step."""
        if getattr(self._module, "accumulating", False):
            self._term_waiting = True
        elif callable(self._previous_term):
            self._previous_term(signum, frame)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._requested = True
        if callable(self._previous):
            self._previous(signum, frame)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        accumulating = getattr(pl_module, "accumulating", False)
        if self._term_waiting and not accumulating:
            self._term_waiting = False
            self._on_sigterm(signal.SIGTERM, None)  # Lightning stops after this batch
        requested = self._requested and not accumulating
        if trainer.world_size > 1:  # a collective every step: every rank must take part
            requested = trainer.strategy.reduce_boolean_decision(requested, all=False)
        if requested:
            self._requested = False
            self._save(trainer, "SIGUSR1")
            trainer.should_stop = True

    def _save(self, trainer: pl.Trainer, what: str) -> None:
        if self._saved_step == trainer.global_step:
            return
        cb = _last_checkpoint_callback(trainer)
        path = cb.last_model_path or os.path.join(str(cb.dirpath), cb.CHECKPOINT_NAME_LAST + cb.FILE_EXTENSION)
        trainer.save_checkpoint(path)
        self._saved_step = trainer.global_step
        rank_zero_info(f"Preemption: signal received ({what}), saved {path} at global step {trainer.global_step}; stopping")

    def _restore(self) -> None:
        """Put back the handlers found at ``on_train_start`` (before Lightning restores its own originals)."""
        if self._installed and threading.current_thread() is threading.main_thread():
            if signal.getsignal(signal.SIGTERM) == self._on_sigterm:
                signal.signal(signal.SIGTERM, self._previous_term if self._previous_term is not None else signal.SIG_DFL)
            if hasattr(signal, "SIGUSR1") and signal.getsignal(signal.SIGUSR1) == self._on_signal:
                signal.signal(signal.SIGUSR1, self._previous if self._previous is not None else signal.SIG_DFL)
            self._installed = False
        self._module = None

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore()

    @override
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._restore()

    @override
    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        # After SIGTERM Lightning finishes the step, then raises SIGTERMException (a clean SystemExit) on every
        # rank; the step is complete, so this is a resumable point. Lightning skips teardown hooks on exceptions.
        if isinstance(exception, SIGTERMException):
            self._save(trainer, "SIGTERM")
        self._restore()
