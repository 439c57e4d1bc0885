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
TINY = ["--model.vision", "test_resnet", "--model.embed_dim", "32",
        "--model.location", '{"pe": "sphericalharmonics", "nn": "siren", "legendre_polys": 4, "dim_hidden": 32, "num_layers": 1}',
        "--data.num_workers", "0", "--data.pin_memory", "false"]


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


def test_dockerfile_pins_every_dependency() -> None:
    """torch/torchvision come from the base image; every other dependency is pinned (==) in the Dockerfile."""
    import tomllib

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {re.match(r"[A-Za-z0-9_.-]+", d).group(0).lower().replace("_", "-") for d in deps} - {"torch", "torchvision"}
    dockerfile = (ROOT / "Dockerfile").read_text().lower().replace("_", "-")
    pinned = set(re.findall(r"([a-z0-9.-]+)(?:\[[a-z,]+\])?==[0-9]", dockerfile))
    assert names <= pinned, f"not pinned in the Dockerfile: {sorted(names - pinned)}"
    assert re.search(r"^from \S+", dockerfile, re.M) and "\nuser 10001" in dockerfile
    assert 'entrypoint ["satclip"]' in dockerfile
