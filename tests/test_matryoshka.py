"""Matryoshka embeddings: truncating a tower to its first dims (every network), the training dims
recorded by a checkpoint and an export, ``satclip export --dim`` / ``satclip embed --dim``, warnings
and errors. (The loss itself: tests/test_loss.py; GradCache: tests/test_train.py.)"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import satclip
from satclip.cli import main as cli_main
from satclip.io.export import export_location_encoder
from satclip.location import build_location_encoder, truncate_location_encoder

LONLAT = torch.tensor([[0.0, 0.0], [12.5, 41.9], [-73.9, 40.7], [151.2, -33.9], [179.9, 89.9], [-180.0, -90.0]], dtype=torch.float64)


def _tower(nn: str = "siren", dims: list[int] | None = None) -> satclip.LocationEncoder:
    torch.manual_seed(0)
    width = {} if nn == "linear" else {"dim_hidden": 32}
    tower = build_location_encoder("sphericalharmonics", nn, output_dim=16, legendre_polys=4, **width).eval()
    tower.matryoshka_dims = dims
    return tower


@pytest.mark.parametrize("nn", ["siren", "mlp", "fcnet", "linear"])
def test_truncated_tower_outputs_the_prefix_of_the_full_embedding(nn: str) -> None:
    tower = _tower(nn, dims=[4, 8, 16])
    short = truncate_location_encoder(tower, 8)
    assert short.output_dim == 8 and short.matryoshka_dims == [4, 8, 16] and not short.training
    with torch.no_grad():
        full, got = tower(LONLAT), short(LONLAT)
    torch.testing.assert_close(got, full[:, :8], rtol=0, atol=1e-12)
    assert truncate_location_encoder(tower, 16) is tower  # the full dim: nothing to cut


def test_truncating_warns_off_the_training_dims_and_rejects_impossible_dims() -> None:
    with pytest.warns(UserWarning, match=r"dim=8: this tower was not trained with Matryoshka prefixes"):
        truncate_location_encoder(_tower(dims=None), 8)
    with pytest.warns(UserWarning, match=r"dim=6: this tower was trained with Matryoshka prefixes \[4, 8, 16\]; 6 is not one of them"):
        truncate_location_encoder(_tower(dims=[4, 8, 16]), 6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        truncate_location_encoder(_tower(dims=[4, 8, 16]), 4)  # a trained prefix: silent
    for bad in (0, -3, 17, 2.5):
        with pytest.raises(ValueError, match=rf"dim={bad!r}: the embedding can be truncated to 1\.\.16 dimensions"):
            truncate_location_encoder(_tower(), bad)  # type: ignore[arg-type]


def _module_checkpoint(path: Path, dims: list[int] | None) -> Path:
    """A checkpoint as ``satclip fit`` writes it (state dict + the module's ``satclip`` entry)."""
    from satclip.train.module import SatCLIPModule

    torch.manual_seed(0)
    module = SatCLIPModule(vision="resnet18", embed_dim=16, location={"legendre_polys": 4, "dim_hidden": 32}, matryoshka_dims=dims)
    checkpoint: dict = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, path)
    return path


def test_checkpoint_and_export_record_the_training_dims_and_export_dim_truncates(tmp_path: Path) -> None:
    ckpt = _module_checkpoint(tmp_path / "m.ckpt", [4, 8, 16])
    full = satclip.load_location_encoder(ckpt)
    assert full.matryoshka_dims == [4, 8, 16] and full.output_dim == 16
    assert cli_main(["export", "--checkpoint", str(ckpt), "--out", str(tmp_path / "exp8"), "--dim", "8", "--torchscript"]) == 0
    config = json.loads((tmp_path / "exp8" / "config.json").read_text())
    assert config["matryoshka_dims"] == [4, 8, 16] and config["output_dim"] == 8
    short = satclip.load_location_encoder(tmp_path / "exp8")
    assert short.matryoshka_dims == [4, 8, 16]
    with torch.no_grad():
        want = full(LONLAT)[:, :8]
        torch.testing.assert_close(short(LONLAT), want, rtol=0, atol=1e-12)
        torch.testing.assert_close(torch.jit.load(str(tmp_path / "exp8" / "model.torchscript.pt"))(LONLAT), want, rtol=0, atol=1e-12)
        # load_location_encoder(dim=) on the full export gives the same tower
        export_location_encoder(full, tmp_path / "exp16")
        torch.testing.assert_close(satclip.load_location_encoder(tmp_path / "exp16", dim=4)(LONLAT), want[:, :4], rtol=0, atol=1e-12)
    # a standard checkpoint records no dims, and truncating it warns
    plain = _module_checkpoint(tmp_path / "plain.ckpt", None)
    assert satclip.load_location_encoder(plain).matryoshka_dims is None
    with pytest.warns(UserWarning, match="not trained with Matryoshka prefixes"):
        satclip.load_location_encoder(plain, dim=8)
    export_location_encoder(satclip.load_location_encoder(plain), tmp_path / "plain")
    assert json.loads((tmp_path / "plain" / "config.json").read_text())["matryoshka_dims"] is None


def test_cli_embed_dim_writes_the_prefix_and_names_a_bad_dim(tmp_path: Path) -> None:
    ckpt = _module_checkpoint(tmp_path / "m.ckpt", [4, 8, 16])
    np.save(tmp_path / "pts.npy", LONLAT.numpy())
    assert (
        cli_main(["embed", "--checkpoint", str(ckpt), "--input", str(tmp_path / "pts.npy"), "--output", str(tmp_path / "e.npy"), "--dim", "4", "--no-progress"])
        == 0
    )
    got = np.load(tmp_path / "e.npy")
    with torch.no_grad():
        want = satclip.load_location_encoder(ckpt)(LONLAT).numpy()[:, :4]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    with pytest.raises(SystemExit, match=r"satclip embed: dim=32: the embedding can be truncated to 1\.\.16 dimensions"):
        cli_main(["embed", "--checkpoint", str(ckpt), "--input", str(tmp_path / "pts.npy"), "--output", str(tmp_path / "bad.npy"), "--dim", "32"])
    assert not (tmp_path / "bad.npy").exists()


def test_module_rejects_matryoshka_dims_beyond_the_embedding() -> None:
    from satclip.train.module import SatCLIPModule

    with pytest.raises(ValueError, match=r"matryoshka_dims \[8, 32\] go beyond embed_dim=16"):
        SatCLIPModule(vision="resnet18", embed_dim=16, location={"legendre_polys": 4, "dim_hidden": 32}, matryoshka_dims=[8, 32])
    with pytest.raises(ValueError, match="matryoshka_weights .* given without matryoshka_dims"):
        SatCLIPModule(vision="resnet18", embed_dim=16, location={"legendre_polys": 4, "dim_hidden": 32}, matryoshka_weights=[1.0])
