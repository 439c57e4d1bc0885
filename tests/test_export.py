"""``satclip export``: safetensors + config.json round trips, lean loading, TorchScript and ONNX
(FP64 / FP32 / FP16 / INT8, measured and bounded)."""

from __future__ import annotations

import copy
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
from satclip.io.onnx_formats import ERROR_BOUNDS, FormatRefused, check_points
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
    flags = {"model.onnx": "--onnx", "model.torchscript.pt": "--torchscript", "model.fp16.onnx": "fp16", "model.int8.onnx": "int8"}
    commands = [line for line in readme.splitlines() if line.startswith("satclip export") and "--out tower-l10 " in line + " "]
    assert commands and loaded
    for command in commands:
        tokens = set(command.split()) | ({"--onnx"} if "--onnx-precision" in command else set())  # which implies --onnx
        missing = [flags[f] for f in loaded if f in flags and flags[f] not in tokens]
        assert not missing, f"README / docs: {command!r} lacks {missing} for the files its snippet loads"


@pytest.fixture(scope="module")
def small_l10() -> satclip.LocationEncoder:
    """A released-architecture tower (Siren(SH), w0 = 30 on the first layer), narrow to keep the tests fast."""
    torch.manual_seed(3)
    return build_location_encoder(output_dim=32, legendre_polys=10, dim_hidden=64, num_layers=2).eval()


def _onnx_run(path: Path, points: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"lonlat": points})[0]


def test_check_points_cover_poles_antimeridian_and_equator_and_are_fixed() -> None:
    points = check_points()
    assert points.dtype == np.float64 and points.shape[1] == 2 and 4096 < len(points) < 5000
    lon, lat = points[:, 0], points[:, 1]
    assert np.isin([90.0, -90.0, 0.0], lat).all() and np.isin([180.0, -180.0], lon).all()
    assert np.abs(lat).max() <= 90.0 and np.abs(lon).max() <= 180.0
    np.testing.assert_array_equal(points, check_points())
    hemispheres = np.histogram(np.sin(np.radians(lat[-4096:])), bins=4, range=(-1, 1))[0]
    assert hemispheres.min() > 0.9 * 1024  # uniform on the sphere: equal areas, equal counts
    timed = check_points(with_time=True)
    assert timed.shape == (len(points), 3) and np.isnan(timed[:, 2]).any() and np.isfinite(timed[1:10, 2]).all()


def test_onnx_fp16_int8_load_meet_their_bounds_and_config_carries_the_figures(tmp_path: Path, small_l10: satclip.LocationEncoder) -> None:
    import onnx

    out = tmp_path / "exp"
    config = export_location_encoder(small_l10, out, onnx_precisions=["fp32", "fp16", "int8"])
    assert json.loads((out / "config.json").read_text()) == config
    names = {"onnx": "model.onnx", "onnx_fp32": "model.fp32.onnx", "onnx_fp16": "model.fp16.onnx", "onnx_int8": "model.int8.onnx"}
    assert config["files"] == {"weights": "model.safetensors", **names}
    points = check_points()
    with torch.no_grad():
        ref = small_l10(torch.from_numpy(points)).numpy()
    scale = np.abs(ref).max()
    assert config["onnx_check"]["points"] == len(points) and config["onnx_check"]["embedding_scale"] == pytest.approx(scale, rel=1e-12)
    for name, precision in zip(names.values(), ["fp64", "fp32", "fp16", "int8"]):
        got = _onnx_run(out / name, points)
        assert got.dtype == (np.float64 if precision == "fp64" else np.float32) and got.shape == ref.shape
        error = np.abs(got.astype(np.float64) - ref)
        assert error.max() <= ERROR_BOUNDS[precision] * scale, name
        figures = config["onnx_formats"][name]
        assert figures["precision"] == precision and figures["points_per_s"] > 0
        assert figures["max_abs_error"] == pytest.approx(error.max(), rel=1e-6)
        assert figures["mean_abs_error"] == pytest.approx(error.mean(), rel=1e-6)
        assert figures["max_abs_error_bound"] == pytest.approx(ERROR_BOUNDS[precision] * scale)
    # real conversions: the errors sit where each precision puts them
    assert config["onnx_formats"]["model.fp16.onnx"]["max_abs_error_relative"] > 1e-5
    assert config["onnx_formats"]["model.int8.onnx"]["max_abs_error_relative"] > 1e-3
    fp16 = onnx.load(str(out / "model.fp16.onnx")).graph
    assert {i.data_type for i in fp16.initializer if i.name.startswith("nnet.")} == {onnx.TensorProto.FLOAT16}
    int8 = onnx.load(str(out / "model.int8.onnx")).graph
    assert sum(n.op_type == "MatMulInteger" for n in int8.node) == 2  # the first layer (reading the harmonics) stays float32
    # uint8 weights: int8 weights saturate in ONNX Runtime's AVX2-without-VNNI kernel (error ~0.3 x scale)
    weights = {i.name: i.data_type for i in int8.initializer}
    assert {weights[n.input[1]] for n in int8.node if n.op_type == "MatMulInteger"} == {onnx.TensorProto.UINT8}
    assert sum(n.op_type in ("MatMul", "Gemm") for n in int8.node) == 1


def test_float32_export_writes_fp32_as_model_onnx(tmp_path: Path, small_l10: satclip.LocationEncoder) -> None:
    config = export_location_encoder(copy.deepcopy(small_l10).float(), tmp_path, onnx_precisions=["fp32", "fp16"])
    assert config["files"] == {"weights": "model.safetensors", "onnx": "model.onnx", "onnx_fp16": "model.fp16.onnx"}
    assert sorted(p.name for p in tmp_path.glob("*.onnx")) == ["model.fp16.onnx", "model.onnx"]
    assert [f["precision"] for f in config["onnx_formats"].values()] == ["fp32", "fp16"]


def test_time_aware_tower_exports_fp16_and_int8(tmp_path: Path) -> None:
    torch.manual_seed(0)
    enc = build_location_encoder("sphericalharmonics_time", "siren", output_dim=6, legendre_polys=4, time_harmonics=2, dim_hidden=16).eval()
    config = export_location_encoder(enc, tmp_path, onnx_precisions=["fp16", "int8"])
    assert config["onnx_check"]["points"] == len(check_points())
    assert all(f["max_abs_error"] <= f["max_abs_error_bound"] for f in config["onnx_formats"].values())


def test_a_format_past_its_bound_is_refused_and_not_written(tmp_path: Path, small_l10: satclip.LocationEncoder) -> None:
    with pytest.raises(FormatRefused, match=r"refusing model\.int8\.onnx \(int8\): max abs error .* exceeds its bound 1e-06 x embedding scale"):
        export_location_encoder(small_l10, tmp_path, onnx_precisions=["fp16", "int8"], onnx_bounds={**ERROR_BOUNDS, "int8": 1e-6})
    assert (tmp_path / "model.fp16.onnx").exists() and not (tmp_path / "model.int8.onnx").exists()
    with pytest.raises(ValueError, match=r"unknown ONNX precision\(s\) \['int4'\]"):
        export_location_encoder(small_l10, tmp_path / "other", onnx_precisions=["int4"])
    with pytest.raises(ValueError, match="threads must be >= 1, got 0"):
        export_location_encoder(small_l10, tmp_path / "other", onnx=True, onnx_threads=0)


def test_cli_export_onnx_precisions_and_refusal(tmp_path: Path, released_ckpt: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "exp"
    argv = ["export", "--checkpoint", str(released_ckpt), "--out", str(out), "--dtype", "float32", "--onnx-precision", "fp32", "fp16", "int8"]
    assert cli_main(argv) == 0
    config = json.loads((out / "config.json").read_text())
    assert list(config["onnx_formats"]) == ["model.onnx", "model.fp16.onnx", "model.int8.onnx"]
    assert config["onnx_check"]["timing"].endswith("1 thread(s), one batch of all points, best of 5 runs")
    monkeypatch.setitem(ERROR_BOUNDS, "fp16", 1e-9)
    with pytest.raises(SystemExit, match=r"satclip export: refusing model\.fp16\.onnx \(fp16\)"):
        cli_main([*argv[:4], str(tmp_path / "refused"), *argv[5:]])
    assert not (tmp_path / "refused" / "model.fp16.onnx").exists()
