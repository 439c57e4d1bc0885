"""Atomic checkpoints, weights-only reading and graceful preemption (satclip.train.checkpoint_io, .preemption)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from satclip.train import checkpoint_io
from satclip.train.checkpoint_io import AtomicCheckpointIO, UnsafeCheckpointError, atomic_torch_save, safe_torch_load


class _Payload:
    """Unpickling this would create ``marker``: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _hostile_checkpoint(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "PWNED"
    path = tmp_path / "hostile.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "hyper_parameters": {"x": _Payload(marker)}}, path)
    assert not marker.exists()
    return path, marker


def _temps(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.endswith(".tmp")]


def test_atomic_save_round_trip_and_replace(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "last.ckpt"
    atomic_torch_save({"step": 1, "w": torch.arange(3.0)}, path)
    atomic_torch_save({"step": 2, "w": torch.arange(4.0)}, path)
    loaded = safe_torch_load(path)
    assert loaded["step"] == 2 and torch.equal(loaded["w"], torch.arange(4.0))
    assert _temps(path.parent) == []
    umask = os.umask(0o022)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # same permissions as a plain torch.save


def test_crash_mid_write_keeps_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "last.ckpt"
    atomic_torch_save({"step": 7}, path)
    real_save = torch.save

    def dying_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a zip")  # what a killed writer leaves on disk
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(checkpoint_io.torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        atomic_torch_save({"step": 8}, path)
    monkeypatch.setattr(checkpoint_io.torch, "save", real_save)
    assert safe_torch_load(path)["step"] == 7
    assert _temps(tmp_path) == []


def test_stale_temp_from_sigkilled_writer_is_cleaned(tmp_path: Path) -> None:
    path = tmp_path / "last.ckpt"
    stale = tmp_path / ".last.ckpt.abc123.tmp"
    stale.write_bytes(b"truncated")
    other = tmp_path / ".epoch=0.ckpt.zzz.tmp"  # another target's temp is not ours to delete
    other.write_bytes(b"x")
    atomic_torch_save({"step": 1}, path)
    assert not stale.exists() and other.exists()


def test_checkpoint_io_plugin_writes_atomically_and_reads_weights_only(tmp_path: Path) -> None:
    io = AtomicCheckpointIO()
    path = tmp_path / "ckpts" / "last.ckpt"
    io.save_checkpoint({"global_step": 3, "state_dict": {"w": torch.ones(2)}}, path)
    assert io.load_checkpoint(path)["global_step"] == 3
    with pytest.raises(FileNotFoundError, match="not found"):
        io.load_checkpoint(tmp_path / "missing.ckpt")


@pytest.mark.parametrize("weights_only", [None, False, True])
def test_hostile_checkpoint_refused_by_resume_path(tmp_path: Path, weights_only) -> None:
    path, marker = _hostile_checkpoint(tmp_path)
    with pytest.raises(UnsafeCheckpointError, match=r"refusing to load .*hostile\.ckpt.*weights_only=True"):
        AtomicCheckpointIO().load_checkpoint(path, weights_only=weights_only)
    assert not marker.exists(), "unpickling ran code"


# --- graceful preemption ---------------------------------------------------------------------

import signal  # noqa: E402

import lightning.pytorch as pl  # noqa: E402
from lightning.pytorch.callbacks import ModelCheckpoint  # noqa: E402

from satclip.train.preemption import Preemption  # noqa: E402


class _Tiny(pl.LightningModule):
    """Sends ``signum`` to its own process during step ``at`` (as a scheduler would)."""

    def __init__(self, signum: int = 0, at: int = -1) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.signum, self.at = signum, at

    def training_step(self, batch, batch_idx):
        if batch_idx == self.at:
            os.kill(os.getpid(), self.signum)
        return self.layer(batch).pow(2).mean()

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.randn(64, 4), batch_size=2)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _trainer(tmp_path: Path, save_last=True, **kwargs) -> pl.Trainer:
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpts", save_last=save_last, every_n_train_steps=100)
    return pl.Trainer(
        default_root_dir=tmp_path,
        max_steps=20,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[Preemption(), ckpt],
        plugins=[AtomicCheckpointIO()],
        **kwargs,
    )


def test_sigusr1_saves_last_and_stops(tmp_path: Path) -> None:
    before, before_term = signal.getsignal(signal.SIGUSR1), signal.getsignal(signal.SIGTERM)
    trainer = _trainer(tmp_path)
    trainer.fit(_Tiny(signal.SIGUSR1, at=4))
    assert trainer.global_step == 5  # the step in flight finished, then the run stopped
    assert safe_torch_load(tmp_path / "ckpts" / "last.ckpt")["global_step"] == 5
    assert signal.getsignal(signal.SIGUSR1) == before  # handlers restored
    assert signal.getsignal(signal.SIGTERM) == before_term


def test_sigterm_saves_last_and_exits_cleanly(tmp_path: Path) -> None:
    before = signal.getsignal(signal.SIGUSR1)
    trainer = _trainer(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        trainer.fit(_Tiny(signal.SIGTERM, at=6))
    assert exit_info.value.code in (None, 0)
    assert signal.getsignal(signal.SIGUSR1) == before
    assert safe_torch_load(tmp_path / "ckpts" / "last.ckpt")["global_step"] == 7
    resumed = _trainer(tmp_path)
    resumed.fit(_Tiny(), ckpt_path="last")
    assert resumed.global_step == 20


def test_preemption_requires_atomic_last_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="save_last='link'"):
        _trainer(tmp_path, save_last="link").fit(_Tiny())
    trainer = pl.Trainer(default_root_dir=tmp_path, max_steps=1, logger=False, enable_checkpointing=False, callbacks=[Preemption()])
    with pytest.raises(ValueError, match="save_last=True"):
        trainer.fit(_Tiny())


def test_slurm_sigusr1_saves_hpc_checkpoint_and_requeues(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under srun Lightning's SLURMEnvironment(auto_requeue=True, SIGUSR1) owns SIGUSR1: atomic save + requeue."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" > {tmp_path / "requeued"}\n')
    scontrol.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    for key, value in {
        "SLURM_NTASKS": "1",
        "SLURM_NTASKS_PER_NODE": "1",
        "SLURM_JOB_NAME": "satclip",
        "SLURM_JOB_ID": "4242",
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
        "SLURM_NODEID": "0",
        "SLURM_NODELIST": "localhost",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    trainer = _trainer(tmp_path, accelerator="cpu", devices=1)
    trainer.fit(_Tiny(signal.SIGUSR1, at=3))
    assert (tmp_path / "requeued").read_text().split() == ["requeue", "4242"]
    hpc = sorted(tmp_path.glob("hpc_ckpt_*.ckpt"))
    assert len(hpc) == 1 and safe_torch_load(hpc[0])["global_step"] >= 3


def test_sigkill_during_writes_never_leaves_an_unreadable_checkpoint(tmp_path: Path) -> None:
    """A forked writer saving 8 MB checkpoints in a loop is SIGKILLed at random moments, 8 times."""
    import random
    import time

    path, weights = tmp_path / "last.ckpt", torch.randn(2_000_000)
    rng, last = random.Random(0), -1
    for _ in range(8):
        before = path.stat().st_mtime_ns if path.exists() else None
        pid = os.fork()
        if pid == 0:  # the writer: never returns
            i = last + 1
            while True:
                atomic_torch_save({"i": i, "w": weights}, path)
                i += 1
        deadline = time.monotonic() + 30
        while (path.stat().st_mtime_ns if path.exists() else None) == before and time.monotonic() < deadline:
            time.sleep(0.005)  # this life's first save
        time.sleep(rng.uniform(0.0, 0.1))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        step = safe_torch_load(path)["i"]  # never truncated
        assert step > last
        last = step
    atomic_torch_save({"i": last}, path)  # the next save sweeps the temporaries killed writers left
    assert _temps(tmp_path) == []


def test_fault_test_short(tmp_path: Path) -> None:
    """scripts/fault_test.py, shortened: 2 SIGKILLs of a tiny demo run, resumed with --ckpt_path last."""
    import importlib.util

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("fault_test", root / "scripts" / "fault_test.py")
    fault_test = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fault_test)
    tiny = [
        "--model.vision",
        "test_resnet",
        "--model.embed_dim",
        "16",
        "--data.num_workers",
        "0",
        "--data.pin_memory",
        "false",
        "--model.location",
        '{"pe": "sphericalharmonics", "nn": "siren", "legendre_polys": 4, "dim_hidden": 32, "num_layers": 1}',
    ]
    code = fault_test.main(["--kills", "2", "--max-steps", "10", "--every", "2", "--workdir", str(tmp_path), "--timeout", "300", "--", *tiny])
    assert code == 0


def test_satclip_fit_saves_and_exits_cleanly_on_sigterm(tmp_path: Path) -> None:
    """The real `satclip fit` (Preemption wired in by the CLI; SIGUSR1 is tested in-process above):
    SIGTERM -> last checkpoint -> exit 0."""
    import subprocess
    import sys
    import time

    ckpts = tmp_path / "checkpoints"
    cmd = [
        sys.executable,
        "-m",
        "satclip.cli",
        "fit",
        "--model.variant",
        "tiny",
        "--model.vision",
        "test_resnet",
        "--model.embed_dim",
        "16",
        "--model.location",
        '{"pe": "sphericalharmonics", "nn": "siren", "legendre_polys": 3, "dim_hidden": 16, "num_layers": 1}',
        "--data",
        "satclip.train.synthetic.SyntheticDataModule",
        "--data.num_batches",
        "100000",
        "--data.val_batches",
        "0",
        "--trainer.max_steps",
        "100000",
        "--trainer.accelerator",
        "cpu",
        "--trainer.logger",
        "false",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.default_root_dir",
        str(tmp_path),
        "--checkpoint.every_n_train_steps",
        "5",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 600  # a loaded machine takes minutes to import Lightning and take 5 steps
    while not list(ckpts.glob("tiny-epoch=*.ckpt")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(ckpts.glob("tiny-epoch=*.ckpt")), "no checkpoint within the deadline: the run did not get going"
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out[-2000:]
    assert "Preemption: signal received (SIGTERM), saved" in out, out[-3000:]
    step = safe_torch_load(ckpts / "tiny-last.ckpt")["global_step"]
    assert 5 <= step < 100000
