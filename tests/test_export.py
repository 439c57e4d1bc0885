"""``satclip export``: safetensors + config.json round trips, lean loading, TorchScript and ONNX."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import satclip
from satclip.cli import main as cli_main
from satclip.io.export import GraphLocationEncoder, export_location_encoder
from satclip.location import build_location_encoder

CKPT = "satclip-resnet18-l10.ckpt"
POLES = [[0.0, 90.0], [0.0, -90.0], [179.999, 89.999], [-179.999, -89.999], [45.0, 89.9999999], [-120.0, -89.99]]


def _coords(n: int = 300, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    lon = rng.uniform(-180, 180, n)
    lat = np.degrees(np.arcsin(rng.uniform(-1, 1, n)))
    extra = np.array(POLES + [[180.0, 0.0], [-180.0, 0.0], [200.0, 10.0], [-540.0, -10.0]])
    return torch.from_numpy(np.concatenate([np.stack([lon, lat], 1), extra]))


@pytest.fixture(scope="module")
def tower_l40() -> satclip.LocationEncoder:
    torch.manual_seed(0)
    return build_location_encoder("sphericalharmonics", "siren", output_dim=32, legendre_polys=40, dim_hidden=64, num_layers=2).eval()


@pytest.mark.parametrize("convention", ["satclip", "orthonormal", "closed-form"])
def test_graph_encoder_matches_encoder_at_l40(convention: str) -> None:
    torch.manual_seed(1)
    enc = build_location_encoder(output_dim=16, legendre_polys=40, dim_hidden=32, num_layers=1, convention=convention).eval()
    x = _coords()
    with torch.no_grad():
        diff = (GraphLocationEncoder(enc)(x) - enc(x)).abs().max().item()
    assert diff <= 1e-12


def test_safetensors_round_trip_is_exact(tmp_path: Path, tower_l40: satclip.LocationEncoder) -> None:
    config = export_location_encoder(tower_l40, tmp_path / "exp", source="test")
    stored = json.loads((tmp_path / "exp" / "config.json").read_text())
    assert stored == config
    assert stored["architecture"]["legendre_polys"] == 40 and stored["architecture"]["convention"] == "satclip"
    assert stored["spherical_harmonics_convention"] == "satclip" and stored["dtype"] == "float64"
    assert stored["satclip_version"] == satclip.__version__ and stored["output_dim"] == 32
    back = satclip.load_location_encoder(tmp_path / "exp")
    x = _coords()
    with torch.no_grad():
        assert (back(x) - tower_l40(x)).abs().max().item() <= 1e-12
    assert not back.training and back.dtype == torch.float64


def test_loading_an_export_imports_only_torch_and_safetensors(tmp_path: Path, tower_l40: satclip.LocationEncoder) -> None:
    export_location_encoder(tower_l40, tmp_path / "exp")
    code = (
        "import sys, torch\n"
        "torch.set_num_threads(1)\n"
        "import satclip\n"
        f"enc = satclip.load_location_encoder({str(tmp_path / 'exp')!r})\n"
        "print(tuple(enc(torch.tensor([[1.0, 2.0]], dtype=torch.float64)).shape))\n"
        "heavy = ('lightning', 'pytorch_lightning', 'timm', 'torchvision', 'rasterio', 'webdataset')\n"
        "print(sorted({m.split('.')[0] for m in sys.modules if m.split('.')[0] in heavy}))\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["(1, 32)", "[]"]


def test_torchscript_and_onnx_float64(tmp_path: Path, tower_l40: satclip.LocationEncoder) -> None:
    import onnx
    import onnxruntime as ort

    config = export_location_encoder(tower_l40, tmp_path / "exp", onnx=True, torchscript=True)
    assert config["files"] == {"weights": "model.safetensors", "torchscript": "model.torchscript.pt", "onnx": "model.onnx"}
    x = _coords()
    with torch.no_grad():
        ref = tower_l40(x).numpy()
        scripted = torch.jit.load(str(tmp_path / "exp" / "model.torchscript.pt"))(x).numpy()
    assert np.abs(scripted - ref).max() <= 1e-12
    model = onnx.load(str(tmp_path / "exp" / "model.onnx"))
    float_inits = [i.name for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT]
    assert float_inits == []  # every constant of the float64 graph is stored as float64
    session = ort.InferenceSession(str(tmp_path / "exp" / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"lonlat": x.numpy()})[0]
    assert got.dtype == np.float64 and np.abs(got - ref).max() <= 1e-12


def test_cli_export_float32_with_onnx(tmp_path: Path, reference: Path) -> None:
    import onnxruntime as ort

    out = tmp_path / "exp32"
    assert cli_main(["export", "--checkpoint", str(reference / CKPT), "--out", str(out), "--onnx", "--dtype", "float32"]) == 0
    enc = satclip.load_location_encoder(out)
    assert enc.dtype == torch.float32
    x = torch.from_numpy(np.load(reference / "coords.npy"))
    with torch.no_grad():
        ref = enc(x).numpy()
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"lonlat": x.numpy()})[0]
    assert got.dtype == np.float32
    # float32 networks differ by summation order only: bounded relative to the embedding scale
    assert np.abs(got - ref).max() <= 1e-6 * np.abs(ref).max()
    released = np.load(reference / "loc_emb_satclip-resnet18-l10.npy")
    assert np.abs(ref - released).max() <= 1e-5 * np.abs(released).max()


def test_cli_export_float64_matches_checkpoint(tmp_path: Path, reference: Path) -> None:
    out = tmp_path / "exp64"
    assert cli_main(["export", "--checkpoint", str(reference / CKPT), "--out", str(out)]) == 0
    x = torch.from_numpy(np.load(reference / "coords.npy"))
    with torch.no_grad():
        got = satclip.load_location_encoder(out)(x).numpy()
    np.testing.assert_allclose(got, np.load(reference / "loc_emb_satclip-resnet18-l10.npy"), rtol=0, atol=1e-9)


def test_broken_export_directory_errors(tmp_path: Path, tower_l40: satclip.LocationEncoder) -> None:
    export_location_encoder(tower_l40, tmp_path / "exp")
    (tmp_path / "exp" / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="missing model.safetensors"):
        satclip.load_location_encoder(tmp_path / "exp")
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"format": "something-else"}))
    (other / "model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="not a satclip location tower export"):
        satclip.load_location_encoder(other)


@pytest.mark.parametrize("pe", ["sphericalharmonics", "wrap", "spherec+"])
def test_graph_exports_of_other_towers(tmp_path: Path, pe: str) -> None:
    """Cold recurrence cache (an unusual L), an fcnet network, and encodings that use deg2rad."""
    import onnxruntime as ort

    from satclip.location import POSITIONAL_ENCODINGS

    if pe not in POSITIONAL_ENCODINGS:
        pytest.skip(f"encoding {pe!r} is not registered")
    torch.manual_seed(2)
    extra = {"legendre_polys": 11} if pe == "sphericalharmonics" else {}
    enc = build_location_encoder(pe, "fcnet", output_dim=8, dim_hidden=16, num_layers=1, **extra).eval()
    export_location_encoder(enc, tmp_path, onnx=True, torchscript=True)
    x = _coords(50)
    with torch.no_grad():
        ref = enc(x).numpy()
        scripted = torch.jit.load(str(tmp_path / "model.torchscript.pt"))(x).numpy()
    got = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"]).run(None, {"lonlat": x.numpy()})[0]
    assert np.abs(scripted - ref).max() <= 1e-12 and np.abs(got - ref).max() <= 1e-12


def test_readme_export_commands_write_what_its_snippet_loads() -> None:
    """The README's and the docs' ``satclip export`` commands write every file the docs' snippets load."""
    import re

    root = Path(__file__).resolve().parents[1]
    readme = "\n".join(p.read_text() for p in (root / "README.md", root / "docs" / "models.md"))
    loaded = set(re.findall(r"tower-l10/(model\.[a-z.]+)", readme))
    flags = {"model.onnx": "--onnx", "model.torchscript.pt": "--torchscript"}
    commands = [line for line in readme.splitlines() if line.startswith("satclip export") and "--out tower-l10 " in line + " "]
    assert commands and loaded
    for command in commands:
        missing = [flags[f] for f in loaded if f in flags and flags[f] not in command.split()]
        assert not missing, f"README / docs: {command!r} lacks {missing} for the files its snippet loads"
