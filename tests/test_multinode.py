"""Launch anywhere: two simulated nodes (torchrun --nnodes 2 on localhost, CPU, gloo) train in step,
the launch scripts are valid shell, and the container pins every dependency."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
TINY = [
    "--model.vision",
    "test_resnet",
    "--model.embed_dim",
    "32",
    "--model.location",
    '{"pe": "sphericalharmonics", "nn": "siren", "legendre_polys": 4, "dim_hidden": 32, "num_layers": 1}',
    "--data.num_workers",
    "0",
    "--data.pin_memory",
    "false",
]


@pytest.fixture(scope="module")
def scripts_on_path():
    sys.path.insert(0, str(SCRIPTS))
    yield
    sys.path.remove(str(SCRIPTS))


@pytest.fixture(scope="module")
def demo_shards(tmp_path_factory: pytest.TempPathFactory, scripts_on_path) -> str:
    from fault_test import write_demo_shards

    return write_demo_shards(tmp_path_factory.mktemp("shards") / "demo")


def test_two_simulated_nodes_train_in_step(tmp_path: Path, demo_shards: str) -> None:
    from two_node_sim import simulate

    steps = 4
    reports = simulate(steps, tmp_path, str(ROOT / "configs" / "demo.yaml"), demo_shards, TINY, timeout=240)
    assert [(r["node_rank"], r["global_rank"], r["world_size"]) for r in reports] == [(0, 0, 2), (1, 1, 2)]
    assert [r["global_step"] for r in reports] == [steps, steps]
    assert reports[0]["param_checksum"] == reports[1]["param_checksum"]  # DDP kept the replicas identical
    for node in (0, 1):  # each node's own log shows it joined the two-member group
        assert f"GLOBAL_RANK: {node}, MEMBER: {node + 1}/2" in (tmp_path / f"node{node}.log").read_text()


@pytest.mark.parametrize("script", ["torchrun.sh", "slurm/pretrain.sbatch", "gpu_check.sh"])
def test_launch_scripts_are_valid_bash(script: str) -> None:
    path = SCRIPTS / script
    assert path.is_file(), f"missing {path}"
    subprocess.run(["bash", "-n", str(path)], check=True)
    if shutil.which("shellcheck"):
        subprocess.run(["shellcheck", str(path)], check=True)


def test_one_pin_set_for_venv_ci_and_dockerfile() -> None:
    """constraints.txt pins (==) every dependency of the core and every extra; scripts/_venv.sh (CI's and
    the demo's environment) and the Dockerfile install with it; the fast-moving majors have upper bounds."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    name = lambda r: re.match(r"[A-Za-z0-9_.-]+", r).group(0).lower().replace("_", "-")  # noqa: E731
    names = {name(r) for r in requirements} - {"satclip"}
    constraints = (ROOT / "constraints.txt").read_text()
    pinned = {m.lower().replace("_", "-") for m in re.findall(r"^([A-Za-z0-9_.-]+)==\S+", constraints, re.M)}
    assert names <= pinned, f"not pinned in constraints.txt: {sorted(names - pinned)}"
    bounded = {name(r) for r in requirements if "<" in r}
    assert {"torch", "lightning", "timm"} <= bounded
    assert "-c constraints.txt" in (ROOT / "scripts" / "_venv.sh").read_text()
    dockerfile = (ROOT / "Dockerfile").read_text().lower()
    assert "constraints.txt" in dockerfile and re.search(r"pip install [^\n]*-c /tmp/constraints.txt", dockerfile)
    assert re.search(r"^from \S+", dockerfile, re.M) and "\nuser 10001" in dockerfile
    assert 'entrypoint ["satclip"]' in dockerfile


def test_sbatch_trains_and_resumes_from_the_newest_checkpoint(tmp_path: Path, demo_shards: str) -> None:
    """scripts/slurm/pretrain.sbatch under a stand-in `srun` (one task) with SLURM's variables: the first
    job trains, the requeued one resumes from the newest of <variant>-last.ckpt and Lightning's hpc_ckpt_N.ckpt."""
    import os

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text('#!/bin/sh\nshift\nexec "$@"\n')  # drop --kill-on-bad-exit, run the one task
    (bin_dir / "srun").chmod(0o755)
    run_dir = tmp_path / "run"
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "SLURM_NNODES": "1",
        "SLURM_NTASKS_PER_NODE": "1",
        "SLURM_NTASKS": "1",
        "SLURM_JOB_NAME": "satclip",
        "SLURM_JOB_ID": "77",
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
        "SLURM_NODEID": "0",
        "SLURM_NODELIST": "localhost",
        "RUN_DIR": str(run_dir),
        "TRAIN_URLS": demo_shards,
        "VAL_URLS": demo_shards,
        "OMP_NUM_THREADS": "1",
        "SATCLIP_ACTIVATE": "/nonexistent",
    }

    def job(steps: int) -> str:
        cmd = [
            "bash",
            str(SCRIPTS / "slurm" / "pretrain.sbatch"),
            str(ROOT / "configs" / "demo.yaml"),
            "--trainer.max_steps",
            str(steps),
            "--trainer.accelerator",
            "cpu",
            "--trainer.enable_progress_bar",
            "false",
            *TINY,
        ]
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        return done.stdout + done.stderr

    first = job(2)
    assert "resuming" not in first
    last = run_dir / "checkpoints" / "satclip-resnet18-l10-demo-last.ckpt"
    hpc = run_dir / "hpc_ckpt_1.ckpt"  # as Lightning's SIGUSR1 handler would leave it, newer than last
    shutil.copy(last, hpc)
    os.utime(hpc, (last.stat().st_mtime + 5, last.stat().st_mtime + 5))
    second = job(4)
    assert f"resuming from {hpc}" in second and f"Restoring states from the checkpoint path at {hpc}" in second

    from satclip.train.checkpoint_io import safe_torch_load

    assert safe_torch_load(last)["global_step"] == 4


def test_two_rank_ddp_resume_with_more_steps_continues_the_schedule(tmp_path: Path, demo_shards: str) -> None:
    """Issue 16: extending a 2-rank gloo DDP run (--trainer.max_steps 4 -> 8) trains at lr > 0, on both ranks alike."""
    import csv

    import torch

    def fit(steps: int, *extra: str) -> None:
        cmd = [sys.executable, "-m", "satclip.cli", "fit", "--config", str(ROOT / "configs" / "demo.yaml"), *TINY,
               "--data.train_urls", demo_shards, "--data.val_urls", "null", "--data.epoch_length", "16", "--data.crop_size", "32",
               "--trainer.devices", "2", "--trainer.strategy", "ddp", "--trainer.max_steps", str(steps), "--model.max_steps", str(steps),
               "--model.warmup_steps", "2", "--trainer.log_every_n_steps", "1", "--trainer.enable_progress_bar", "false",
               "--trainer.default_root_dir", str(tmp_path), *extra]  # fmt: skip
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]

    fit(4)
    last = tmp_path / "checkpoints" / "satclip-resnet18-l10-demo-last.ckpt"
    before = torch.load(last, map_location="cpu", weights_only=True)["state_dict"]
    fit(8, "--ckpt_path", "last")
    after = torch.load(last, map_location="cpu", weights_only=True)
    assert after["global_step"] == 8
    rows = list(csv.DictReader((tmp_path / "csv" / "version_1" / "metrics.csv").open()))
    lrs = {int(r["step"]): float(r["train/lr"]) for r in rows if r.get("train/lr")}
    assert sorted(lrs) == [5, 6, 7, 8] and min(lrs.values()) > 0, lrs  # the resumed steps (was 0.0 before the fix)
    assert not torch.equal(before["model.location.nnet.last_layer.weight"], after["state_dict"]["model.location.nnet.last_layer.weight"])
