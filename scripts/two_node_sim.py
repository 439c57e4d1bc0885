#!/usr/bin/env python
"""Simulate a two-node pretraining on this machine: two torchrun "nodes" on localhost, CPU, gloo.

Starts ``torchrun --nnodes 2 --node_rank 0|1 --nproc_per_node 1 --master_addr 127.0.0.1`` twice,
each running ``satclip fit`` on the demo config with DDP (``--trainer.num_nodes 2``). Each rank
writes a report at the end of training (:class:`RankReport`, added to the trainer's callbacks):
its node, global rank, global step and a checksum of its parameters. The nodes trained in step
when both exit 0 with the same global step and identical parameters (DDP averages gradients
every step; a rank that fell out of step would hang or diverge).

    python scripts/two_node_sim.py                       # 6 steps, prints both reports
    python scripts/two_node_sim.py --steps 20 -- --data.batch_size 4
Shards are written from ``data/sample`` unless ``--shards`` names some. Arguments after ``--`` go
to both ``satclip fit`` calls. Exit status 0 when the check passed.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import lightning.pytorch as pl
import torch
from fault_test import write_demo_shards

ROOT = Path(__file__).resolve().parents[1]
REPORT_DIR = "SATCLIP_RANK_REPORT_DIR"


class RankReport(pl.Callback):
    """At the end of training, write ``rank<R>.json`` (node, rank, global step, parameter checksum)."""

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        with torch.no_grad():
            checksum = float(sum(p.double().sum() for p in pl_module.parameters()))
        report = {
            "node_rank": trainer.node_rank,
            "global_rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "global_step": trainer.global_step,
            "param_checksum": checksum,
        }
        Path(os.environ[REPORT_DIR], f"rank{trainer.global_rank}.json").write_text(json.dumps(report))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_command(node_rank: int, port: int, steps: int, run_dir: Path, config: str, shards: str, extra: list[str]) -> list[str]:
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "2",
        "--node_rank",
        str(node_rank),
        "--nproc_per_node",
        "1",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(port),
    ]
    fit = [
        "-m",
        "satclip.cli",
        "fit",
        "--config",
        config,
        "--data.train_urls",
        shards,
        "--data.val_urls",
        shards,
        "--trainer.accelerator",
        "cpu",
        "--trainer.devices",
        "1",
        "--trainer.num_nodes",
        "2",
        "--trainer.strategy",
        "ddp",
        "--trainer.max_steps",
        str(steps),
        "--trainer.max_epochs",
        "-1",
        "--trainer.default_root_dir",
        str(run_dir / f"node{node_rank}"),
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.callbacks+=two_node_sim.RankReport",
        *extra,
    ]
    return torchrun + fit


def simulate(steps: int, run_dir: Path, config: str, shards: str, extra: list[str], timeout: float) -> list[dict]:
    """Run both nodes; return their rank reports (raises with the logs if a node fails)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        WANDB_MODE="offline",
        HF_HUB_OFFLINE="1",
        PYTHONUNBUFFERED="1",
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "scripts"), os.environ.get("PYTHONPATH")])),
    )
    env[REPORT_DIR] = str(run_dir)
    port = free_port()
    logs = [run_dir / f"node{n}.log" for n in (0, 1)]
    procs = []
    for n, log in enumerate(logs):
        with open(log, "wb") as out:
            procs.append(
                subprocess.Popen(
                    node_command(n, port, steps, run_dir, config, shards, extra),
                    cwd=ROOT,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
    codes = []
    for proc in procs:
        try:
            codes.append(proc.wait(timeout=timeout))
        except subprocess.TimeoutExpired:
            for p in procs:
                if p.poll() is None:
                    os.killpg(p.pid, 9)
            codes.append("timeout")
    if codes != [0, 0]:
        tails = "\n".join(f"--- node {n} ({codes[n]}): {log}\n{log.read_text()[-2500:]}" for n, log in enumerate(logs))
        raise RuntimeError(f"two-node simulation failed: exit statuses {codes}\n{tails}")
    return [json.loads((run_dir / f"rank{r}.json").read_text()) for r in (0, 1)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--config", default=str(ROOT / "configs" / "demo.yaml"))
    p.add_argument("--shards", help="training/validation shards (default: written from data/sample)")
    p.add_argument("--run-dir", help="keep logs here (default: a temporary directory)")
    p.add_argument("--timeout", type=float, default=300)
    p.add_argument("extra", nargs="*", help="after --: more `satclip fit` options")
    args = p.parse_args(argv)
    run_dir = Path(args.run_dir or tempfile.mkdtemp(prefix="satclip-2node-"))
    shards = args.shards or write_demo_shards(run_dir / "shards")
    reports = simulate(args.steps, run_dir, args.config, shards, args.extra, args.timeout)
    for report in reports:
        print(json.dumps(report))
    ok = (
        all(r["global_step"] == args.steps and r["world_size"] == 2 for r in reports)
        and [r["node_rank"] for r in reports] == [0, 1]
        and reports[0]["param_checksum"] == reports[1]["param_checksum"]
    )
    print(
        f"{'PASS' if ok else 'FAIL'}: both nodes at global step {[r['global_step'] for r in reports]}, "
        f"identical parameters: {reports[0]['param_checksum'] == reports[1]['param_checksum']}; logs in {run_dir}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
