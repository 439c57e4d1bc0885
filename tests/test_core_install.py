"""``pip install satclip`` alone: a fresh venv with the core only loads a released-format checkpoint and an
export, embeds coordinates from Python and the command line, and names the extra a missing job needs.

The venv gets satclip from a copy of the source and the core's packages from pip (its cache and
the machine's indexes); torch, the one large dependency, is shared read-only from the running
environment (only torch and the distributions it requires are made visible), so the test takes
seconds, not a multi-gigabyte download. Without a way to build the venv (offline, no cache) it skips.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from satclip.extras import EXTRA_OF_MODULE, MissingExtraError

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
OFFLINE_SIGNS = re.compile(
    r"No matching distribution|Could not find a version|NewConnectionError|Failed to establish|"
    r"Temporary failure in name resolution|Network is unreachable|ProxyError|Max retries exceeded"
)


def _requirement_names(dist: md.Distribution) -> list[str]:
    names = []
    for req in dist.requires or []:
        if "extra ==" in req:
            continue
        marker = req.split(";", 1)[1] if ";" in req else ""
        if marker:
            from packaging.markers import Marker

            if not Marker(marker).evaluate():
                continue
        names.append(re.split(r"[\s<>=!~\[;(]", req, maxsplit=1)[0])
    return names


def _torch_closure() -> list[md.Distribution]:
    """torch and every distribution it requires, transitively, as installed here."""
    seen: dict[str, md.Distribution] = {}
    todo = ["torch"]
    while todo:
        name = todo.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue
        seen[key] = dist
        todo += _requirement_names(dist)
    return list(seen.values())


def _share_torch(shim: Path) -> None:
    """Symlink the top-level files and folders of torch's distributions into ``shim``."""
    shim.mkdir()
    for dist in _torch_closure():
        base = Path(str(dist.locate_file("")))
        for top in {Path(str(f)).parts[0] for f in dist.files or []}:
            if top in ("..", "__pycache__") or (shim / top).exists():
                continue
            if (base / top).exists():
                (shim / top).symlink_to(base / top)


def _pip(python: Path, *args: str) -> None:
    done = subprocess.run([str(python), "-m", "pip", *args], capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        log = done.stdout + done.stderr
        if OFFLINE_SIGNS.search(log):
            pytest.skip(f"cannot build a core-only venv here (no package source reachable): {log.strip().splitlines()[-1]}")
        raise AssertionError(f"pip {' '.join(args)} failed:\n{log[-4000:]}")


@pytest.fixture(scope="module")
def core_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("core")
    venv = base / "venv"
    made = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot create a venv here: {made.stderr.strip()[-300:]}")
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], capture_output=True, text=True, check=True
    ).stdout.strip()
    _share_torch(base / "torch-only")
    Path(purelib, "shared-torch.pth").write_text(str(base / "torch-only") + "\n")
    src = base / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "satclip", src / "satclip", ignore=shutil.ignore_patterns("__pycache__"))
    # the tested pins, less torch's (torch is the running environment's)
    pins = [line for line in (ROOT / "constraints.txt").read_text().splitlines() if not line.startswith(("torch==", "torchvision=="))]
    (base / "constraints.txt").write_text("\n".join(pins) + "\n")
    _pip(python, "install", "-q", "-c", str(base / "constraints.txt"), str(src))
    return python


SCRIPT = """
import importlib.util, json, sys
import numpy as np, torch, satclip
from satclip.extras import MissingExtraError
from satclip.io.export import export_location_encoder
ckpt, out, absent = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
lonlat = torch.tensor([[-73.97, 40.78], [151.2, -33.86], [0.0, 89.9]], dtype=torch.float64)
enc = satclip.load_location_encoder(ckpt)
with torch.no_grad():
    emb = enc(lonlat)
export_location_encoder(enc, out)
with torch.no_grad():
    again = satclip.load_location_encoder(out)(lonlat)
try:
    satclip.load(ckpt)
    full = "loaded"
except MissingExtraError as err:
    full = str(err)
np.save(out + "/coords.npy", lonlat.numpy())
print(json.dumps({"emb": emb.tolist(), "same": bool(torch.equal(emb, again)), "full": full,
                  "present": [m for m in absent if importlib.util.find_spec(m) is not None]}))
"""


def test_core_only_venv_embeds_from_checkpoint_and_export(core_python: Path, released_ckpt: Path, tmp_path: Path) -> None:
    ckpt, out = released_ckpt, tmp_path / "export"
    env = {**os.environ, "PYTHONPATH": "", "HF_HUB_OFFLINE": "1"}
    optional = sorted(EXTRA_OF_MODULE)
    done = subprocess.run(
        [str(core_python), "-c", SCRIPT, str(ckpt), str(out), json.dumps(optional)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["present"] == [], f"the core install pulled in optional modules {result['present']}"
    assert result["same"]
    assert 'pip install "satclip[image]"' in result["full"]
    import satclip

    expected = satclip.load_location_encoder(ckpt)(torch.tensor([[-73.97, 40.78], [151.2, -33.86], [0.0, 89.9]], dtype=torch.float64))
    torch.testing.assert_close(torch.tensor(result["emb"], dtype=torch.float64), expected.detach(), rtol=0, atol=1e-12)

    satclip_cli = core_python.parent / "satclip"
    embedded = subprocess.run(
        [str(satclip_cli), "embed", "--checkpoint", str(out), "--input", str(out / "coords.npy"), "--output", str(tmp_path / "emb.npy"), "--no-progress"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert embedded.returncode == 0, embedded.stderr[-3000:]
    import numpy as np

    np.testing.assert_allclose(np.load(tmp_path / "emb.npy"), np.array(result["emb"]), rtol=0, atol=1e-12)
    (tmp_path / "x.csv").write_text("lon,lat\n1.0,2.0\n")
    for argv, extra in ((["fit", "--help"], "train"), (["embed", "--checkpoint", str(out), "--input", "x.csv", "--output", "y.npy"], "tables")):
        failed = subprocess.run([str(satclip_cli), *argv], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
        assert failed.returncode != 0 and f'pip install "satclip[{extra}]"' in failed.stderr, failed.stderr[-2000:]


@pytest.mark.parametrize("module, extra", [("zarr", "gis"), ("xarray", "gis"), ("geopandas", "gis"), ("lightning", "train"), ("onnxruntime", "onnx")])
def test_a_missing_optional_module_names_its_extra(module: str, extra: str) -> None:
    from satclip.extras import requires_extra

    with pytest.raises(MissingExtraError, match=rf"satclip embed-grid needs '{module}', .*pip install \"satclip\[{extra}\]\""):
        with requires_extra("satclip embed-grid"):
            raise ModuleNotFoundError(f"No module named {module!r}", name=module)
