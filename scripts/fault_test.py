#!/usr/bin/env python
"""Fault test: SIGKILL the demo pretraining at random moments, resume with ``--ckpt_path last``, compare weights.

1. An uninterrupted run gives the reference final global step.
2. A second run in a fresh directory is killed (SIGKILL to its whole process group, DataLoader
   workers included) ``--kills`` times, each at a random moment after it has saved at least one
   new checkpoint in that life, up to one save interval later (mid-step, mid-save, validation),
   and restarted with ``--ckpt_path last`` each time; then it runs to completion.

Checked after every kill: every ``*.ckpt`` in the run loads with ``torch.load(weights_only=True)``
(no truncated file under a checkpoint name) and the global step of the last checkpoint
(``<variant>-last.ckpt``) never goes back.
At the end: exit status 0, the final global step equals the reference's, and the final weights
(every tensor of the last checkpoint's ``state_dict``) are bit-identical to the reference's.

    python scripts/fault_test.py                          # demo config, 5 kills, 60 steps
    python scripts/fault_test.py --kills 5 --max-steps 60 -- --data.num_workers 2
Shards are written from ``data/sample`` unless ``--shards`` names some. Arguments after ``--`` go
to every ``satclip fit`` call. Exit status 0 when every check passed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(ROOT / "configs" / "demo.yaml"))
    p.add_argument("--kills", type=int, default=5)
    p.add_argument("--max-steps", type=int, default=60)
    p.add_argument("--every", type=int, default=4, help="save a checkpoint and last every N training steps (default 4)")
    p.add_argument("--shards", help="training/validation shards (default: written from data/sample)")
    p.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    p.add_argument("--workdir", help="keep the runs here (default: a temporary directory, removed)")
    p.add_argument("--timeout", type=float, default=600, help="seconds allowed for one life of the run")
    p.add_argument("extra", nargs="*", help="after --: more `satclip fit` options")
    return p.parse_args(argv)


def fit_command(args: argparse.Namespace, run_dir: Path, resume: bool) -> list[str]:
    """``satclip fit`` with a fixed step budget and checkpoints (``*-last.ckpt`` too) every ``--every`` steps."""
    cmd = [
        sys.executable,
        "-m",
        "satclip.cli",
        "fit",
        "--config",
        args.config,
        "--data.train_urls",
        args.shards,
        "--data.val_urls",
        args.shards,
        "--trainer.max_steps",
        str(args.max_steps),
        "--model.max_steps",
        str(args.max_steps),
        "--trainer.default_root_dir",
        str(run_dir),
        "--trainer.enable_progress_bar",
        "false",
        "--checkpoint.dirpath",
        str(run_dir / "checkpoints"),
        "--checkpoint.every_n_train_steps",
        str(args.every),
        *args.extra,
    ]
    if resume:
        cmd += ["--ckpt_path", "last"]
    return cmd


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", WANDB_MODE="offline", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    return env


def checkpoint_steps(ckpt_dir: Path) -> dict[str, int]:
    """Global step of every ``*.ckpt`` in ``ckpt_dir``; raises naming the file if one does not load."""
    import torch

    steps = {}
    for path in sorted(ckpt_dir.glob("*.ckpt")):
        try:
            steps[path.name] = int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])
        except Exception as err:  # noqa: BLE001 - any failure here is the finding
            raise RuntimeError(f"{path} does not load with weights_only=True after a kill: {err}") from None
    return steps


def start(cmd: list[str], log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(cmd, cwd=ROOT, env=child_env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def finish(proc: subprocess.Popen, timeout: float, log: Path) -> None:
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise RuntimeError(f"run did not finish within {timeout} s; see {log}") from None
    if code != 0:
        raise RuntimeError(f"run exited with status {code}; see {log}:\n{log.read_text()[-3000:]}")


def last_checkpoint(ckpt_dir: Path) -> Path | None:
    """The newest ``*last*.ckpt`` (what ``--ckpt_path last`` resumes), or None."""
    candidates = [p for p in ckpt_dir.glob("*last*.ckpt")]
    return max(candidates, key=lambda p: p.stat().st_mtime_ns) if candidates else None


def newest_save(ckpt_dir: Path) -> int | None:
    """mtime (ns) of the newest checkpoint file: changes whenever the run saves."""
    times = [p.stat().st_mtime_ns for p in ckpt_dir.glob("*.ckpt")] if ckpt_dir.is_dir() else []
    return max(times) if times else None


def final_step(run_dir: Path) -> int:
    last = last_checkpoint(run_dir / "checkpoints")
    if last is None:
        raise RuntimeError(f"no last checkpoint in {run_dir / 'checkpoints'}")
    return checkpoint_steps(run_dir / "checkpoints")[last.name]


def weight_differences(a: Path, b: Path) -> list[str]:
    """Names of the ``state_dict`` tensors that differ (or exist in one only) between two runs' last checkpoints."""
    import torch

    first, second = (torch.load(last_checkpoint(d / "checkpoints"), map_location="cpu", weights_only=True)["state_dict"] for d in (a, b))
    return sorted(k for k in first.keys() | second.keys() if k not in first or k not in second or not torch.equal(first[k], second[k]))


def reference_run(args: argparse.Namespace, run_dir: Path) -> tuple[int, float]:
    """Uninterrupted run: its final global step and the seconds between two saves."""
    run_dir.mkdir(parents=True)
    log = run_dir / "fit.log"
    finish(start(fit_command(args, run_dir, resume=False), log), args.timeout, log)
    times = sorted(p.stat().st_mtime for p in (run_dir / "checkpoints").glob("*.ckpt"))
    interval = (times[-1] - times[0]) / max(1, len(times) - 1)
    return final_step(run_dir), interval


def killed_run(args: argparse.Namespace, run_dir: Path, save_interval: float, rng: random.Random) -> dict:
    """Run with ``--kills`` SIGKILLs and resumes; returns what was seen."""
    ckpt_dir, log = run_dir / "checkpoints", run_dir / "fit.log"
    run_dir.mkdir(parents=True)
    seen: list[dict] = []
    previous = -1
    for kill in range(1, args.kills + 1):
        proc = start(fit_command(args, run_dir, resume=last_checkpoint(ckpt_dir) is not None), log)
        before, deadline = newest_save(ckpt_dir), time.monotonic() + args.timeout
        while newest_save(ckpt_dir) == before and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)  # this life's first save
        delay = rng.uniform(0, save_interval)
        time.sleep(delay)
        if proc.poll() is not None:
            raise RuntimeError(f"kill {kill}: the run ended (status {proc.returncode}) before the kill; raise --max-steps. See {log}")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        steps = checkpoint_steps(ckpt_dir)  # every checkpoint file loads
        last = last_checkpoint(ckpt_dir)
        step = steps[last.name] if last else -1
        temps = sorted(p.name for p in ckpt_dir.glob(".*.tmp"))
        seen.append({"kill": kill, "seconds_after_a_save": round(delay, 2), "last_step": step, "checkpoints_loaded": len(steps), "temp_files_left": temps})
        print(
            f"kill {kill}: SIGKILL {delay:.2f} s after a save; {last.name if last else None} at step {step}; "
            f"{len(steps)} checkpoint files load; temporaries left by the kill: {temps}",
            flush=True,
        )
        if step < previous:
            raise RuntimeError(f"kill {kill}: the last checkpoint went back from step {previous} to {step}")
        previous = step
    finish(start(fit_command(args, run_dir, resume=True), log), args.timeout, log)
    steps = checkpoint_steps(ckpt_dir)
    return {"kills": seen, "final_step": final_step(run_dir), "checkpoint_files": len(steps)}


def write_demo_shards(out: Path) -> str:
    subprocess.run(
        [sys.executable, "-m", "satclip.cli", "shards", str(ROOT / "data" / "sample"), "--out", str(out), "--payload", "s2c", "--samples-per-shard", "4"],
        check=True,
        env=child_env(),
        capture_output=True,
    )
    return str(out)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="satclip-fault-"))
    rng = random.Random(args.seed)
    try:
        args.shards = args.shards or write_demo_shards(work / "shards")
        ref_step, save_interval = reference_run(args, work / "reference")
        print(f"reference: final global step {ref_step}, {save_interval:.2f} s between saves", flush=True)
        report = killed_run(args, work / "killed", save_interval, rng)
        report["reference_step"] = ref_step
        report["weights_differing"] = weight_differences(work / "reference", work / "killed")
        ok = report["final_step"] == ref_step and len(report["kills"]) == args.kills and not report["weights_differing"]
        print(json.dumps(report, indent=1))
        print(
            f"{'PASS' if ok else 'FAIL'}: {len(report['kills'])}/{args.kills} kills survived, final step "
            f"{report['final_step']} vs uninterrupted {ref_step}, every checkpoint file loadable, "
            f"{len(report['weights_differing'])} weight tensors differ from the uninterrupted run's"
        )
        return 0 if ok else 1
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
