"""The contrastive losses (InfoNCE, SigLIP, their Matryoshka wrapper): single-process behaviour and the 2-process gloo equivalence with one process."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from satclip.loss import LOSSES, InfoNCELoss, MatryoshkaLoss, SigLIPLoss, gather_rows, info_nce, sigmoid_pairs

HERE = Path(__file__).resolve().parent


def _features(n: int = 8, d: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g), dim=-1), F.normalize(torch.randn(n, d, generator=g), dim=-1)


def test_perfect_alignment_gives_low_loss_and_random_gives_about_log_n() -> None:
    img, loc = _features(n=8, d=64)
    loss = InfoNCELoss()
    aligned = loss(img, img.clone(), torch.tensor(100.0))
    assert float(aligned) < 1e-3
    random = loss(img, loc, torch.tensor(1.0))
    assert abs(float(random) - math.log(8)) < 0.5


def test_symmetric_in_its_two_inputs_and_matches_the_explicit_formula() -> None:
    img, loc = _features()
    loss = InfoNCELoss()
    scale = torch.tensor(14.3)
    assert torch.allclose(loss(img, loc, scale), loss(loc, img, scale))
    logits = scale * img @ loc.T
    labels = torch.arange(8)
    expected = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    assert torch.allclose(loss(img, loc, scale), expected, atol=1e-6)


def test_temperature_sharpens_a_correct_ranking_and_flattens_to_log_n_at_zero() -> None:
    img, _ = _features(n=8, d=64)
    loc = F.normalize(img + 0.3 * _features(n=8, d=64, seed=1)[1], dim=-1)  # matches ranked first
    loss = InfoNCELoss()
    values = [float(loss(img, loc, torch.tensor(s))) for s in (1.0, 10.0, 100.0)]
    assert values[0] > values[1] > values[2]
    assert abs(float(loss(img, loc, torch.tensor(0.0))) - math.log(8)) < 1e-6


def test_rejects_mismatched_shapes_with_a_clear_error() -> None:
    img, loc = _features()
    with pytest.raises(ValueError, match=r"image and location features .* \(8, 16\) and \(7, 16\)"):
        InfoNCELoss()(img, loc[:7], torch.tensor(1.0))


def test_without_a_process_group_gather_is_the_identity() -> None:
    img, _ = _features()
    out, offset = gather_rows(img)
    assert out is img and offset == 0


def test_local_rows_against_global_batch_sum_to_the_global_loss() -> None:
    img, loc = _features(n=8)
    scale = torch.tensor(5.0)
    parts = [info_nce(img[i : i + 4], loc[i : i + 4], logit_scale=scale, all_image=img, all_location=loc, offset=i) for i in (0, 4)]
    assert torch.allclose(sum(parts) / 2, info_nce(img, loc, logit_scale=scale), atol=1e-6)


SIZES = ["4,4", "5,3"]  # rows per rank: equal, and uneven (a short last batch)


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One 2-process gloo run (a subprocess: no process group in the pytest process) for all SIZES."""
    out = tmp_path_factory.mktemp("gloo")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, str(HERE / "_dist_loss_worker.py"), str(out), *SIZES], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return out


@pytest.mark.parametrize("with_ids", [False, True], ids=["noids", "ids"])
@pytest.mark.parametrize("name", [*sorted(LOSSES), *(f"matryoshka-{n}" for n in sorted(LOSSES))])
@pytest.mark.parametrize("sizes", SIZES)
def test_two_process_gloo_loss_and_gradients_equal_one_process(two_process_run: Path, sizes: str, name: str, with_ids: bool) -> None:
    sys.path.insert(0, str(HERE))
    from _dist_loss_worker import Towers, global_batch, global_ids, make_loss

    folder = two_process_run / f"{name}-{'ids' if with_ids else 'noids'}" / sizes
    ranks = [torch.load(folder / f"rank{r}.pt", weights_only=True) for r in range(2)]
    counts = [int(s) for s in sizes.split(",")]
    x, y = global_batch(sum(counts))
    model = Towers()
    loss_fn = make_loss(name)
    img, loc, scale = model(x, y)
    img.retain_grad()
    loc.retain_grad()
    loss = loss_fn(img, loc, scale, global_ids(sum(counts)) if with_ids else None)
    loss.backward()
    for n, p in loss_fn.named_parameters():  # SigLIP's bias: DDP-averaged gradient = one-process gradient
        for r in ranks:
            assert torch.allclose(r["grads"][f"loss.{n}"], p.grad, rtol=0, atol=1e-6), n

    # the mean of the ranks' losses is the global loss
    assert abs(float(sum(r["loss"] for r in ranks) / 2) - loss.item()) <= 1e-6
    # DDP-averaged parameter gradients equal the one-process gradients
    for name, p in model.named_parameters():
        for r in ranks:
            assert torch.allclose(r["grads"][name], p.grad, rtol=0, atol=1e-6), name
    # feature gradients: each rank holds the sum over ranks' losses, i.e. world_size x its rows of the global gradient
    got_img = torch.cat([r["img_grad"] for r in ranks]) / 2
    got_loc = torch.cat([r["loc_grad"] for r in ranks]) / 2
    assert torch.allclose(got_img, img.grad, rtol=0, atol=1e-6)
    assert torch.allclose(got_loc, loc.grad, rtol=0, atol=1e-6)
    # and the comparison is not vacuous: the gradients are far from zero
    assert float(img.grad.abs().max()) > 1e-3


def test_duplicate_ids_are_not_negatives() -> None:
    """A patch drawn twice into a batch: with ids, its copy leaves the denominators (InfoNCE) or the
    negative pairs (SigLIP); the loss equals the one without that pair, by the explicit formulas."""
    img, loc = _features(n=6)
    loc = loc.clone()
    img[5], loc[5] = img[0], loc[0]  # row 5 is row 0 again
    ids = torch.tensor([0, 1, 2, 3, 4, 0])
    scale = torch.tensor(7.0)
    logits = scale * img @ loc.T
    mask = torch.zeros(6, 6, dtype=torch.bool)
    mask[0, 5] = mask[5, 0] = True
    masked = logits.masked_fill(mask, float("-inf"))
    labels = torch.arange(6)
    expected = (F.cross_entropy(masked, labels) + F.cross_entropy(masked.T, labels)) / 2
    assert torch.allclose(InfoNCELoss()(img, loc, scale, ids), expected, atol=1e-6)
    assert not torch.allclose(InfoNCELoss()(img, loc, scale), expected, atol=1e-3)
    bias = torch.tensor(-3.0)
    sign = 2 * torch.eye(6) - 1
    terms = F.logsigmoid(sign * (logits + bias)).masked_fill(mask, 0.0)
    assert torch.allclose(sigmoid_pairs(img, loc, logit_scale=scale, logit_bias=bias, ids=ids), -terms.sum() / 6, atol=1e-6)
    with pytest.raises(ValueError, match=r"ids must be one per row, shape \(6,\); got \(5,\)"):
        InfoNCELoss()(img, loc, scale, ids[:5])


def test_siglip_matches_the_paper_formula_and_learns_its_bias() -> None:
    img, loc = _features(n=8)
    loss_fn = SigLIPLoss()
    assert float(loss_fn.logit_bias) == -10.0
    scale = torch.tensor(10.0)
    logits = scale * img @ loc.T + loss_fn.logit_bias
    expected = -F.logsigmoid((2 * torch.eye(8) - 1) * logits).sum() / 8
    loss = loss_fn(img, loc, scale)
    assert torch.allclose(loss, expected, atol=1e-6)
    loss.backward()
    # at -10 every negative is already far below 0: the positives pull the bias up (a negative gradient)
    assert loss_fn.logit_bias.grad is not None and float(loss_fn.logit_bias.grad) < -0.5
    aligned = SigLIPLoss(bias_init=0.0)(img, img.clone(), torch.tensor(100.0))
    assert float(aligned) < float(SigLIPLoss(bias_init=0.0)(img, loc, torch.tensor(100.0)))


def test_matryoshka_sums_the_weighted_losses_of_each_prefix_normalised_alone() -> None:
    img, loc = _features(n=8, d=16)
    scale = torch.tensor(5.0)
    for base in (InfoNCELoss(), SigLIPLoss()):
        loss = MatryoshkaLoss(base, dims=[4, 8, 16], weights=[2.0, 0.5, 1.0])(img, loc, scale)
        expected = sum(w * base(F.normalize(img[:, :d], dim=-1), F.normalize(loc[:, :d], dim=-1), scale) for d, w in ((4, 2.0), (8, 0.5), (16, 1.0)))
        assert torch.allclose(loss, expected, atol=1e-6)
    # one prefix of the full dimension is the plain loss; the prefixes differ from the full features
    assert torch.allclose(MatryoshkaLoss(InfoNCELoss(), [16])(img, loc, scale), InfoNCELoss()(img, loc, scale), atol=1e-6)
    assert not torch.allclose(MatryoshkaLoss(InfoNCELoss(), [4])(img, loc, scale), InfoNCELoss()(img, loc, scale), atol=1e-3)


def test_matryoshka_trains_the_leading_dimensions_only_up_to_its_largest_prefix() -> None:
    img, loc = (t.requires_grad_() for t in _features(n=8, d=16))
    MatryoshkaLoss(InfoNCELoss(), [4, 8])(img, loc, torch.tensor(5.0)).backward()
    assert float(img.grad[:, 8:].abs().max()) == 0.0 and float(img.grad[:, :8].abs().max()) > 1e-3


@pytest.mark.parametrize(
    ("dims", "weights", "match"),
    [
        ([], None, "increasing positive"),
        ([8, 4], None, "increasing positive"),
        ([0, 4], None, "increasing positive"),
        ([4, 8], [1.0], "one non-negative weight"),
        ([4, 8], [1.0, -1.0], "one non-negative weight"),
    ],
)
def test_matryoshka_rejects_bad_dims_and_weights(dims: list[int], weights: list[float] | None, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MatryoshkaLoss(InfoNCELoss(), dims, weights=weights)
    img, loc = _features(n=4, d=16)
    with pytest.raises(ValueError, match=r"matryoshka_dims \[8, 32\] go beyond the features' 16 dimensions"):
        MatryoshkaLoss(InfoNCELoss(), [8, 32])(img, loc, torch.tensor(1.0))
