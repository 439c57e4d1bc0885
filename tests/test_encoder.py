"""The encoder zoo: positional encodings x networks, the released SIREN tower, and build errors."""

import contextlib
import csv
import inspect
import math
from importlib import resources

import numpy as np
import pytest
import torch

from satclip.location import NETWORKS, POSITIONAL_ENCODINGS, LocationEncoder, build_location_encoder

S, L = 4, 5  # small hyper-parameters so every combination is quick
PE_DIMS = {
    "direct": 2,
    "cartesian3d": 3,
    "wrap": 4,
    "grid": 4 * S,
    "theory": 6 * S,
    "spherec": 3 * S,
    "spherec+": 6 * S,
    "spherem": 5 * S,
    "spherem+": 8 * S,
    "sphericalharmonics": L * L,
}
HPARAMS = {"frequency_num": S, "min_radius": 1.0, "max_radius": 360.0, "legendre_polys": L}


def _points(n: int = 64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    lon = torch.rand(n, generator=g, dtype=torch.float64) * 360 - 180
    lat = torch.rad2deg(torch.asin(torch.rand(n, generator=g, dtype=torch.float64) * 2 - 1))
    return torch.stack([lon, lat], 1)


def _pe_kwargs(pe: str) -> dict:
    params = inspect.signature(POSITIONAL_ENCODINGS[pe].__init__).parameters
    return {k: v for k, v in HPARAMS.items() if k in params}


def test_all_paper_encodings_and_networks_are_registered():
    assert set(PE_DIMS) <= set(POSITIONAL_ENCODINGS)
    assert {"linear", "mlp", "fcnet", "siren"} <= set(NETWORKS)
    # the Siren(SH) authors' spellings are aliases
    assert POSITIONAL_ENCODINGS["spherecplus"] is POSITIONAL_ENCODINGS["spherec+"]
    assert POSITIONAL_ENCODINGS["spheremplus"] is POSITIONAL_ENCODINGS["spherem+"]


@pytest.mark.parametrize("pe", sorted(PE_DIMS))
def test_encoding_output_dim_dtype_and_finiteness(pe):
    enc = POSITIONAL_ENCODINGS[pe](**_pe_kwargs(pe))
    assert enc.output_dim == PE_DIMS[pe]
    pts = torch.cat([_points(), torch.tensor([[180.0, 90.0], [-180.0, -90.0], [0.0, 0.0]], dtype=torch.float64)])
    out = enc(pts)
    assert out.shape == (pts.shape[0], PE_DIMS[pe]) and out.dtype == torch.float64
    assert torch.isfinite(out).all()
    out32 = enc(pts.float())
    assert out32.dtype == torch.float32
    assert (out32.double() - out).abs().max() < 1e-5


@pytest.mark.parametrize("nn_name", ["linear", "mlp", "fcnet", "siren"])
@pytest.mark.parametrize("pe", sorted(PE_DIMS))
def test_every_encoding_and_network_runs_forward_and_backward(pe, nn_name):
    hp = _pe_kwargs(pe)
    if nn_name != "linear":
        hp.update(dim_hidden=16, num_layers=2)
    enc = build_location_encoder(pe, nn_name, output_dim=7, **hp)
    assert enc.posenc.output_dim == PE_DIMS[pe]
    assert enc.output_dim == 7
    out = enc(_points(32))
    assert out.shape == (32, 7) and out.dtype == torch.float64
    out.square().mean().backward()
    for name, p in enc.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert any(p.grad.abs().sum() > 0 for p in enc.parameters())


def test_hand_computed_single_scale_values():
    pts = torch.tensor([[0.0, 0.0], [90.0, 0.0], [180.0, 0.0], [-45.0, 90.0], [30.0, -60.0]], dtype=torch.float64)
    s2, s3 = math.sqrt(2) / 2, math.sqrt(3) / 2
    cart = POSITIONAL_ENCODINGS["cartesian3d"]()(pts)
    expected = [[1, 0, 0], [0, 1, 0], [-1, 0, 0], [0, 0, 1], [0.5 * s3, 0.5 * 0.5, -s3]]
    torch.testing.assert_close(cart, torch.tensor(expected, dtype=torch.float64), atol=1e-15, rtol=0)
    wrap = POSITIONAL_ENCODINGS["wrap"]()(pts)
    expected = [[1, 0, 1, 0], [0, 1, 1, 0], [-1, 0, 1, 0], [s2, -s2, 0, 1], [s3, 0.5, 0.5, -s3]]
    torch.testing.assert_close(wrap, torch.tensor(expected, dtype=torch.float64), atol=1e-15, rtol=0)
    direct = POSITIONAL_ENCODINGS["direct"]()(pts)
    expected = [[0, 0], [math.pi / 2, 0], [math.pi, 0], [-math.pi / 4, math.pi / 2], [math.pi / 6, -math.pi / 3]]
    torch.testing.assert_close(direct, torch.tensor(expected, dtype=torch.float64), atol=1e-15, rtol=0)


def test_antimeridian_continuity_of_periodic_encodings():
    a = torch.tensor([[180.0, 12.0], [-180.0, -33.0]], dtype=torch.float64)
    b = torch.tensor([[-180.0, 12.0], [180.0, -33.0]], dtype=torch.float64)
    for pe in ("cartesian3d", "wrap", "sphericalharmonics"):
        enc = POSITIONAL_ENCODINGS[pe]()
        torch.testing.assert_close(enc(a), enc(b), atol=1e-12, rtol=0)


def test_timescales_are_geometric_between_min_and_max_radius():
    enc = POSITIONAL_ENCODINGS["grid"](frequency_num=3, min_radius=10, max_radius=360)
    torch.testing.assert_close(enc.timescales(), torch.tensor([10.0, 60.0, 360.0], dtype=torch.float64))
    single = POSITIONAL_ENCODINGS["grid"](frequency_num=1, min_radius=5, max_radius=360)
    torch.testing.assert_close(single.timescales(), torch.tensor([5.0], dtype=torch.float64))


def test_hand_computed_multi_scale_values():
    sin, cos = math.sin, math.cos
    # grid: per coordinate, per scale [sin, cos] of degrees / r_s; r = (1, 4)
    grid = POSITIONAL_ENCODINGS["grid"](frequency_num=2, min_radius=1, max_radius=4)
    got = grid(torch.tensor([[2.0, 1.0]], dtype=torch.float64))[0]
    expected = [sin(2), cos(2), sin(0.5), cos(0.5), sin(1), cos(1), sin(0.25), cos(0.25)]
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64))
    # theory: projections of (lon, lat) = (2, 0) on 0/120/240 degree unit vectors are 2, -1, -1; r = 2
    theory = POSITIONAL_ENCODINGS["theory"](frequency_num=1, min_radius=2, max_radius=2)
    got = theory(torch.tensor([[2.0, 0.0]], dtype=torch.float64))[0]
    expected = [sin(1), cos(1), sin(-0.5), cos(-0.5), sin(-0.5), cos(-0.5)]
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64))
    # sphere*: r = 1, so the scaled angles are the degree values themselves
    pt = torch.tensor([[30.0, 60.0]], dtype=torch.float64)
    a, b, lon, lat = 30.0, 60.0, math.pi / 6, math.pi / 3
    kw = dict(frequency_num=1, min_radius=1, max_radius=1)
    cases = {
        "spherec": [sin(b), cos(b) * cos(a), cos(b) * sin(a)],
        "spherec+": [sin(b), cos(b), sin(a), cos(a), cos(b) * cos(a), cos(b) * sin(a)],
        "spherem": [sin(b), cos(b) * cos(lon), cos(lat) * cos(a), cos(b) * sin(lon), cos(lat) * sin(a)],
        "spherem+": [sin(b), cos(b), sin(a), cos(a), cos(b) * cos(lon), cos(lat) * cos(a), cos(b) * sin(lon), cos(lat) * sin(a)],
    }
    for pe, expected in cases.items():
        got = POSITIONAL_ENCODINGS[pe](**kw)(pt)[0]
        torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64), msg=pe)


def test_columns_are_scale_major():
    enc = POSITIONAL_ENCODINGS["spherec"](frequency_num=3, min_radius=1, max_radius=100)
    pt = torch.tensor([[10.0, 20.0]], dtype=torch.float64)
    out = enc(pt)[0]
    for s, r in enumerate(enc.timescales().tolist()):
        assert out[3 * s].item() == pytest.approx(math.sin(20.0 / r), abs=1e-15)


def test_bad_multiscale_hparams():
    with pytest.raises(ValueError, match="frequency_num"):
        POSITIONAL_ENCODINGS["grid"](frequency_num=2.5)
    with pytest.raises(ValueError, match="min_radius"):
        POSITIONAL_ENCODINGS["spherec"](min_radius=400, max_radius=360)
    with pytest.raises(ValueError, match="dim_hidden"):
        build_location_encoder("wrap", "mlp", dim_hidden=0)


def test_siren_parameter_names_and_init_bounds():
    torch.manual_seed(0)
    enc = build_location_encoder("sphericalharmonics", "siren", legendre_polys=10)
    names = [n for n, _ in enc.nnet.named_parameters()]
    assert names == ["layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias", "last_layer.weight", "last_layer.bias"]
    assert enc.output_dim == 256 and enc.dtype == torch.float64
    sd = enc.nnet.state_dict()
    assert sd["layers.0.weight"].shape == (512, 100) and sd["last_layer.weight"].shape == (256, 512)
    first = 1 / 100
    assert sd["layers.0.weight"].abs().max() <= first and sd["layers.0.weight"].abs().max() > 0.95 * first
    for key, d in (("layers.1", 512), ("last_layer", 512)):
        bound = math.sqrt(6 / d) / 1.0
        w = sd[f"{key}.weight"]
        assert w.abs().max() <= bound and w.abs().max() > 0.95 * bound, key
        assert sd[f"{key}.bias"].abs().max() <= bound, key
    assert enc.nnet.layers[0].w0 == 30.0 and enc.nnet.layers[1].w0 == 1.0


def test_siren_dropout_only_in_training():
    torch.manual_seed(0)
    enc = build_location_encoder("wrap", "siren", dim_hidden=32, dropout=0.5)
    x = _points(16)
    enc.eval()
    torch.testing.assert_close(enc(x), enc(x))
    enc.train()
    assert not torch.equal(enc(x), enc(x))


def test_fcnet_structure():
    net = build_location_encoder("wrap", "fcnet", output_dim=3, dim_hidden=24).nnet
    assert len(net.blocks) == 4  # Mac Aodha et al.: four residual blocks
    assert all(isinstance(b.block[2], torch.nn.Dropout) and b.block[2].p == 0.5 for b in net.blocks)
    assert net.stem[0].weight.shape == (24, 4)


def _released_tower(reference):
    ckpt = torch.load(reference / "satclip-resnet18-l10.ckpt", map_location="cpu", weights_only=True)
    prefix = "model.location.nnet."
    state = {k[len(prefix) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    enc = build_location_encoder("sphericalharmonics", "siren", legendre_polys=10)
    enc.nnet.load_state_dict(state)
    return enc.eval()


def test_released_checkpoint_tower_reproduces_reference(reference):
    enc = _released_tower(reference)
    coords = torch.from_numpy(np.load(reference / "coords.npy"))
    expected = np.load(reference / "loc_emb_satclip-resnet18-l10.npy")
    with torch.no_grad():
        got = enc(coords)
        assert got.dtype == torch.float64
        assert np.abs(got.numpy() - expected).max() <= 1e-9
        got32 = enc.float()(coords)
    assert got32.dtype == torch.float32
    assert np.abs(got32.double().numpy() - expected).max() <= 1e-5


@pytest.mark.parametrize(
    "bad, match",
    [
        (torch.zeros(4), r"shape \(N, 2\)"),
        (torch.zeros(3, 3), r"shape \(N, 2\)"),
        (torch.tensor([[0.0, 0.0], [float("nan"), 1.0], [2.0, 91.0]]), "2 of 3 rows.*first bad row 1"),
        (torch.tensor([[float("inf"), 0.0]]), "1 of 1 rows"),
        (torch.tensor([[0.0, -90.5]]), "1 of 1 rows.*lat=-90.5"),
    ],
)
@pytest.mark.parametrize("pe", ["sphericalharmonics", "spherec+", "wrap"])
def test_bad_input_raises_through_location_encoder(bad, match, pe):
    enc = build_location_encoder(pe, "linear", output_dim=2, **({"legendre_polys": 3} if pe == "sphericalharmonics" else {}))
    assert isinstance(enc, LocationEncoder)
    with pytest.raises(ValueError, match=match):
        enc(bad)


def test_unknown_names_raise():
    with pytest.raises(ValueError, match="'spherez'"):
        build_location_encoder("spherez", "siren")
    with pytest.raises(ValueError, match="'transformer'"):
        build_location_encoder("wrap", "transformer")
    with pytest.raises(ValueError, match=r"\['legendre_poly'\]"):
        build_location_encoder("sphericalharmonics", "siren", legendre_poly=10)
    with pytest.raises(ValueError, match=r"\['frequency_num'\]"):
        build_location_encoder("wrap", "linear", frequency_num=16)  # wrap has no scales, linear no width


def test_every_tuned_hparam_row_builds():
    """Every row of the authors' table (the package's copy; tests/test_reference_bundle.py checks it is theirs)."""
    rows = list(csv.DictReader(resources.files("satclip.eval").joinpath("tuned_hparams.csv").read_text().splitlines()))
    assert len(rows) >= 80
    keys = ("legendre_polys", "dim_hidden", "num_layers", "frequency_num", "min_radius", "max_radius")
    pts = _points(8)
    for row in rows:
        hparams = {k: float(row[k]) for k in keys if row[k] != ""}
        out_dim = 1 if row["task"] == "landocean" else 16
        enc = build_location_encoder(row["pe"], row["nn"], output_dim=out_dim, **hparams)
        assert enc(pts).shape == (8, out_dim), row
        if "dim_hidden" in hparams:
            widths = [p.shape[0] for n, p in enc.nnet.named_parameters() if n.endswith("weight")][:-1]
            assert set(widths) == {int(hparams["dim_hidden"])}, row
        if "frequency_num" in hparams:
            assert enc.posenc.frequency_num == int(hparams["frequency_num"])
            assert enc.posenc.max_radius == hparams.get("max_radius", 360.0)


def test_bench_script_runs_small():
    pytest.importorskip("sphericart")
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "bench_location.py"
    args = ["--points", "2000", "--degrees", "3", "12", "--repeats", "1", "--memory", "--memory-points", "3000"]
    res = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "| 12 | satclip auto |" in res.stdout and "vs sphericart" in res.stdout
    assert "peak anonymous memory beyond the output" in res.stdout


@pytest.mark.parametrize("legendre_polys, engine", [(3, "auto"), (12, "auto"), (12, "torch")])
@pytest.mark.parametrize("n", [0, 1, 255, 700])  # empty, one row, and not a multiple of the chunk
def test_chunked_inference_path_equals_the_plain_path(legendre_polys, engine, n):
    from satclip.location import fused

    torch.manual_seed(0)
    enc64 = build_location_encoder(legendre_polys=legendre_polys, engine=engine, dim_hidden=64, output_dim=16).eval()
    enc32 = build_location_encoder(legendre_polys=legendre_polys, engine=engine, dim_hidden=64, output_dim=16).eval()
    enc32.load_state_dict(enc64.state_dict())
    enc32 = enc32.float()
    x = _points(n, seed=n) + torch.tensor([360.0, 0.0])  # longitudes to wrap: validated once, as in the plain path
    with torch.inference_mode():
        assert fused.applies(enc64.posenc, enc64.nnet, lonlat=x) and fused.applies(enc32.posenc, enc32.nnet, lonlat=x)
        plain64 = enc64.nnet(enc64.posenc(x))
        got64, got32 = enc64(x), enc32(x)
        got64_small = fused.siren_harmonics_forward(enc64.posenc, enc64.nnet, lonlat=x, chunk_rows=7)
    assert got64.shape == (n, 16) and got64.dtype == torch.float64 and got32.dtype == torch.float32
    torch.testing.assert_close(got64, plain64, atol=1e-12, rtol=0)
    torch.testing.assert_close(got64_small, plain64, atol=1e-12, rtol=0)
    scale = max(1.0, float(plain64.abs().max())) if n else 1.0
    torch.testing.assert_close(got32.double(), plain64, atol=1e-6 * scale, rtol=0)


def test_chunked_path_only_for_inference_of_a_harmonics_siren():
    from satclip.location import fused

    enc = build_location_encoder(legendre_polys=3, dim_hidden=8, output_dim=4)
    x = _points(5)
    with torch.no_grad():
        assert not fused.applies(enc.posenc, enc.nnet, lonlat=x)  # training mode (dropout)
        enc.eval()
        assert fused.applies(enc.posenc, enc.nnet, lonlat=x)
    assert not fused.applies(enc.posenc, enc.nnet, lonlat=x)  # gradients wanted: the autograd path
    other = build_location_encoder("spherec+", "siren", frequency_num=2, dim_hidden=8, output_dim=4).eval()
    with torch.no_grad():
        assert not fused.applies(other.posenc, other.nnet, lonlat=x)
    y = enc(x.requires_grad_(False))
    y.sum().backward()  # the plain path keeps gradients to the weights
    assert enc.nnet.layers[0].weight.grad is not None


@contextlib.contextmanager
def _torch_threads(n: int):
    """Run the block with ``n`` torch threads; the caller's setting back afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def test_threaded_inference_path_equals_the_plain_path_and_keeps_the_thread_setting():
    """Several torch threads: one part of the rows per thread, each in its own Python thread; same numbers."""
    from satclip.location import fused

    torch.manual_seed(0)
    enc = build_location_encoder(legendre_polys=6, dim_hidden=32, output_dim=8).eval()
    x = _points(3001, seed=3)
    with _torch_threads(3), torch.inference_mode():
        plain = enc.nnet(enc.posenc(x))
        threaded = fused.siren_harmonics_forward(enc.posenc, enc.nnet, lonlat=x, chunk_rows=100)  # 3 parts of 1000 rows
        assert torch.get_num_threads() == 3
    torch.testing.assert_close(threaded, plain, atol=1e-12, rtol=0)


def test_threaded_inference_at_the_released_degree_is_right_on_every_row():
    """Two threads at L = 40 (each thread needs its own sphericart calculator: a shared one gives wrong rows)."""
    from satclip.location import fused

    torch.manual_seed(0)
    enc = build_location_encoder(legendre_polys=40, dim_hidden=32, output_dim=8).eval()
    x = _points(6000, seed=4)
    with _torch_threads(2), torch.inference_mode():
        plain = enc.nnet(enc.posenc(x))
        for _ in range(3):
            torch.testing.assert_close(fused.siren_harmonics_forward(enc.posenc, enc.nnet, lonlat=x, chunk_rows=64), plain, atol=1e-12, rtol=0)
