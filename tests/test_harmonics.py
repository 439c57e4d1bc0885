import math

import numpy as np
import pytest
import torch

from satclip.location import SphericalHarmonics, spherical_harmonics
from satclip.location.harmonics import _sphericart

ENGINES = ["torch"] + (["sphericart"] if _sphericart is not None else [])


def _exact_satclip(lon_deg: float, lat_deg: float, L: int) -> np.ndarray:
    """Independent slow evaluation: scipy-free associated Legendre by explicit sums in Python floats."""
    from math import comb, factorial

    theta = math.radians(lat_deg + 90)
    phi = math.radians(lon_deg + 180)
    x = math.cos(theta)
    s = math.cos(math.radians(lat_deg))
    out = np.zeros(L * L)
    for l in range(L):
        for m in range(0, l + 1):
            # P_l^m(x) without Condon-Shortley phase: s^m d^m/dx^m P_l(x), P_l by the explicit sum
            deriv = (
                sum(
                    comb(l, k) * comb(2 * l - 2 * k, l) * (-1) ** k * factorial(l - 2 * k) // factorial(l - 2 * k - m) * x ** (l - 2 * k - m)
                    for k in range(0, (l - m) // 2 + 1)
                )
                / 2**l
            )
            p = s**m * deriv
            k_lm = math.sqrt((2 * l + 1) / (4 * math.pi) * factorial(l - m) / factorial(l + m))
            if m == 0:
                out[l * l + l] = math.pi * k_lm * p
            else:
                out[l * l + l + m] = math.sqrt(2) * k_lm * p * math.cos(m * phi)
                out[l * l + l - m] = math.sqrt(2) * k_lm * p * math.sin(m * phi)
    return out


@pytest.mark.parametrize("engine", ENGINES)
def test_l10_matches_reference(reference, engine):
    coords = torch.from_numpy(np.load(reference / "coords.npy"))
    expected = np.load(reference / "sh_analytic_L10.npy")
    got = spherical_harmonics(coords, 10, engine=engine).numpy()
    assert got.shape == (len(coords), 100) == expected.shape
    assert np.abs(got - expected).max() <= 1e-10


@pytest.mark.parametrize("engine", ENGINES)
def test_l40_matches_exact_values(reference, engine):
    expected = np.load(reference / "sh_exact_L40_first500.npy")  # at the first rows of coords.npy
    coords = torch.from_numpy(np.load(reference / "coords.npy"))[: len(expected)]
    got = spherical_harmonics(coords, 40, engine=engine).numpy()
    assert np.abs(got - expected).max() <= 1e-10
    # and unlike the reference's own output, which is off by up to ~0.6 there
    analytic = np.load(reference / "sh_analytic_L40_first500.npy")
    assert np.abs(analytic - expected).max() > 1e-3


@pytest.mark.parametrize("engine", ENGINES)
def test_poles_and_unseen_points_against_independent_formula(engine):
    pts = [(0.0, 90.0), (0.0, -90.0), (37.0, 89.9999999), (-120.0, -89.9999), (179.999, 45.0), (-33.3, 12.3)]
    got = spherical_harmonics(torch.tensor(pts, dtype=torch.float64), 12, engine=engine).numpy()
    for row, (lon, lat) in zip(got, pts):
        np.testing.assert_allclose(row, _exact_satclip(lon, lat, 12), rtol=0, atol=1e-12)


def test_engines_agree_for_all_conventions():
    if _sphericart is None:
        pytest.skip("sphericart not installed")
    g = torch.Generator().manual_seed(0)
    pts = torch.stack([torch.rand(3000, generator=g) * 360 - 180, torch.rand(3000, generator=g) * 180 - 90], 1).double()
    for conv in ("satclip", "orthonormal", "closed-form"):
        a = spherical_harmonics(pts, 30, convention=conv, engine="torch")
        b = spherical_harmonics(pts, 30, convention=conv, engine="sphericart")
        assert (a - b).abs().max() <= 1e-11, conv


def test_conventions_relations():
    pts = torch.tensor([[10.0, 20.0], [-150.0, -60.0], [80.0, 5.0]], dtype=torch.float64)
    L = 6
    sat = spherical_harmonics(pts, L, convention="satclip")
    orth = spherical_harmonics(pts, L, convention="orthonormal")
    cf = spherical_harmonics(pts, L, convention="closed-form")
    for l in range(L):
        for m in range(-l, l + 1):
            c = l * l + l + m
            if m == 0:
                torch.testing.assert_close(sat[:, c], math.pi * orth[:, c])
                torch.testing.assert_close(cf[:, c], orth[:, c])
            else:
                torch.testing.assert_close(sat[:, c], orth[:, c])
                torch.testing.assert_close(cf[:, c], (-1) ** abs(m) * orth[:, c])


def test_orthonormal_basis_by_quadrature():
    # Gauss-Legendre in cos(theta) x uniform in phi integrates degree < 2L products exactly.
    L = 8
    nodes, weights = np.polynomial.legendre.leggauss(L + 1)
    nphi = 2 * L + 1
    lat = np.degrees(np.arcsin(nodes))  # sin(lat) = -cos(theta): a reflection, same quadrature
    lon = np.linspace(-180, 180, nphi, endpoint=False)
    LON, LAT = np.meshgrid(lon, lat)
    W = np.repeat(weights, nphi) * (2 * np.pi / nphi)
    Y = spherical_harmonics(torch.from_numpy(np.stack([LON.ravel(), LAT.ravel()], 1)), L, convention="orthonormal").numpy()
    gram = (Y * W[:, None]).T @ Y
    np.testing.assert_allclose(gram, np.eye(L * L), atol=1e-12)


def test_float32_output_computed_in_float64():
    pts = torch.tensor([[12.0, 88.0], [-60.0, -30.0]], dtype=torch.float32)
    got = SphericalHarmonics(40)(pts)
    assert got.dtype == torch.float32 and torch.isfinite(got).all()
    ref = spherical_harmonics(pts.double(), 40)
    assert (got.double() - ref).abs().max() < 1e-5


def test_chunked_output_buffer_matches():
    pts = torch.rand(500, 2, dtype=torch.float64) * torch.tensor([360.0, 180.0]) - torch.tensor([180.0, 90.0])
    out = torch.empty(500, 400, dtype=torch.float32)
    import satclip.location.harmonics as H

    old = H._CHUNK_ELEMENTS
    H._CHUNK_ELEMENTS = 400 * 64  # force several chunks
    try:
        spherical_harmonics(pts, 20, out=out)
    finally:
        H._CHUNK_ELEMENTS = old
    assert (out.double() - spherical_harmonics(pts, 20)).abs().max() < 1e-5


def test_module_output_dim_and_repr():
    sh = SphericalHarmonics(legendre_polys=7, convention="orthonormal")
    assert sh.output_dim == 49
    assert "orthonormal" in repr(sh)
    with pytest.raises(ValueError, match="convention"):
        SphericalHarmonics(10, convention="cs")


@pytest.mark.parametrize(
    "bad, match",
    [
        (torch.zeros(3, 3), r"shape \(N, 2\)"),
        (torch.tensor([[0.0, 0.0], [1.0, float("nan")], [2.0, 91.0]]), "2 of 3 rows.*first bad row 1"),
        (torch.tensor([[0.0, -90.5]]), "1 of 1 rows"),
    ],
)
def test_bad_input(bad, match):
    with pytest.raises(ValueError, match=match):
        spherical_harmonics(bad, 5)


def test_longitudes_are_wrapped():
    a = spherical_harmonics(torch.tensor([[190.0, 10.0], [-200.0, 5.0]], dtype=torch.float64), 6)
    b = spherical_harmonics(torch.tensor([[-170.0, 10.0], [160.0, 5.0]], dtype=torch.float64), 6)
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("engine", ENGINES)
def test_out_float64_direct_and_strided(engine, threads, monkeypatch):
    import satclip.location.harmonics as H

    pts = torch.rand(300, 2, dtype=torch.float64) * torch.tensor([360.0, 180.0]) - torch.tensor([180.0, 90.0])
    expected = spherical_harmonics(pts, 12, engine=engine)
    monkeypatch.setattr(H, "_TORCH_CHUNK", 7)  # several recurrence chunks
    monkeypatch.setattr(H, "_BLOCK_FEATURES", 64 * 144 + 1)  # several sphericart blocks per thread
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    direct = torch.full((300, 144), float("nan"), dtype=torch.float64)
    assert spherical_harmonics(pts, 12, out=direct, engine=engine) is direct
    strided = torch.full((144, 300), float("nan"), dtype=torch.float64).T  # not C-contiguous: goes through a buffer
    spherical_harmonics(pts, 12, out=strided, engine=engine)
    torch.testing.assert_close(direct, expected, rtol=0, atol=0)
    torch.testing.assert_close(strided, expected, rtol=0, atol=0)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("convention", ["satclip", "orthonormal", "closed-form"])
def test_float32_out_is_the_float64_result_rounded(convention, threads, monkeypatch):
    """sphericart writes a float32 ``out`` block by block (scaled and cast from float64 in cache): the float64 values, rounded."""
    if _sphericart is None:
        pytest.skip("sphericart not installed")
    import satclip.location.harmonics as H

    pts = torch.rand(300, 2, dtype=torch.float64) * torch.tensor([360.0, 180.0]) - torch.tensor([180.0, 90.0])
    pts[:2] = torch.tensor([[10.0, 90.0], [-170.0, -90.0]])  # the poles
    expected = spherical_harmonics(pts, 12, convention=convention, engine="torch").float()
    monkeypatch.setattr(H, "_BLOCK_FEATURES", 64 * 144 + 1)  # several blocks per thread
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    out = torch.full((300, 144), float("nan"), dtype=torch.float32)
    assert spherical_harmonics(pts, 12, convention=convention, out=out, engine="sphericart") is out
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-7)
