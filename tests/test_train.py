"""Pretraining: all-negatives accumulation, optimisation details, the six variants, the demo config
(checkpoint contents, weights_only loading, resuming)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as L
import pytest
import torch

from satclip.cli import main as satclip_main
from satclip.geo import great_circle_km
from satclip.model import MAX_LOGIT_SCALE
from satclip.train.accumulate import GradCache, split_batch
from satclip.train.cli import ConfigError, expand_config_bases, main
from satclip.train.module import SatCLIPModule
from satclip.train.optim import WarmupCosine, parameter_groups
from satclip.train.retrieval import retrieval_metrics
from satclip.train.synthetic import SyntheticDataModule, synthetic_batch

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = [f"satclip-{v}-l{L}" for v in ("resnet18", "resnet50", "vit16") for L in (10, 40)]
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false", "--trainer.accelerator", "cpu", "--trainer.devices", "1"]


def tiny_module(**kwargs) -> SatCLIPModule:
    """A small module; the released recipe (a learned temperature) unless ``recipe`` is given."""
    args = {"vision": "resnet18", "embed_dim": 16, "location": {"legendre_polys": 4, "dim_hidden": 32}, "lr": 1e-3, "recipe": "released", **kwargs}
    return SatCLIPModule(**args)


def tiny_trainer(tmp_path: Path, **kwargs) -> L.Trainer:
    args = {
        "accelerator": "cpu", "devices": 1, "logger": False, "enable_checkpointing": False, "enable_progress_bar": False,
        "enable_model_summary": False, "default_root_dir": str(tmp_path), "num_sanity_val_steps": 0, **kwargs,
    }  # fmt: skip
    return L.Trainer(**args)


# ----------------------------------------------------------------------------- accumulation


def test_gradcache_gradient_equals_the_full_batch_gradient() -> None:
    torch.manual_seed(0)
    module = tiny_module().double().eval()  # eval-mode BatchNorm: a deterministic image tower; float64 convolutions
    batch = synthetic_batch(12, image_size=16)
    batch["image"] = batch["image"].double()
    params = [p for p in module.parameters() if p.requires_grad]

    image, location = module.encode(batch)
    module.loss_fn(image, location, module.model.temperature_scale()).backward()
    full = [p.grad.clone() for p in params]
    module.zero_grad()

    cache = GradCache(module.encode, module.model.temperature_scale, loss_fn=module.loss_fn)
    micro = split_batch(batch, 5)  # 5 + 5 + 2 rows
    assert [len(m["lonlat"]) for m in micro] == [5, 5, 2]
    loss = cache.forward(micro)
    cache.backward()
    worst = max(float((p.grad - g).abs().max()) for p, g in zip(params, full))
    assert worst <= 1e-6
    assert float(module.model.logit_scale.grad) != 0.0
    # and plain accumulation (mean of micro-batch losses) would differ: fewer negatives
    plain = sum(module.loss_fn(*module.encode(m), module.model.temperature_scale()) * len(m["lonlat"]) for m in micro) / 12
    assert abs(plain.item() - loss.item()) > 1e-3


@pytest.mark.parametrize("matryoshka", [None, [4, 8, 16]], ids=["plain", "matryoshka"])
@pytest.mark.parametrize("loss", ["infonce", "siglip"])
def test_gradcache_with_the_loss_parameters_and_duplicate_ids_equals_the_full_batch(loss: str, matryoshka: list[int] | None) -> None:
    torch.manual_seed(0)
    module = tiny_module(loss=loss, mask_duplicates=True, matryoshka_dims=matryoshka).double().eval()
    batch = synthetic_batch(12, image_size=16)
    batch["image"] = batch["image"].double()
    batch["key"] = [f"k{i % 10}" for i in range(12)]  # rows 10 and 11 repeat rows 0 and 1
    ids = module.sample_ids(batch["key"])
    params = [p for p in module.parameters() if p.requires_grad]
    image, location = module.encode(batch)
    module.contrastive_loss(image, location, scale=module.temperature_scale(), ids=ids).backward()
    full = [p.grad.clone() for p in params]
    module.zero_grad()
    loss_params = list(module.loss_fn.parameters())
    assert len(loss_params) == (1 if loss == "siglip" else 0)
    cache = GradCache(module.encode, module.temperature_scale, loss_fn=lambda i, l, s: module.contrastive_loss(i, l, scale=s, ids=ids), loss_params=loss_params)
    cache.forward(split_batch(batch, 5))
    cache.backward()
    assert max(float((p.grad - g).abs().max()) for p, g in zip(params, full)) <= 1e-6


def test_gradcache_replays_the_random_state_for_dropout() -> None:
    torch.manual_seed(0)
    dropout = torch.nn.Dropout(0.5)
    weight = torch.nn.Parameter(torch.randn(6, 4))

    def encode(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = dropout(x @ weight)
        return torch.nn.functional.normalize(h[:, :2], dim=-1), torch.nn.functional.normalize(h[:, 2:], dim=-1)

    x = torch.randn(8, 6)
    scale = torch.tensor(3.0)
    cache = GradCache(encode, lambda: scale, loss_fn=lambda a, b, s: (s * a @ b.T).logsumexp(1).mean())
    torch.manual_seed(1)
    cache.forward([x[:4], x[4:]])
    cache.backward()
    got = weight.grad.clone()
    weight.grad = None
    torch.manual_seed(1)
    a, b = zip(*(encode(m) for m in (x[:4], x[4:])))
    (scale * torch.cat(a) @ torch.cat(b).T).logsumexp(1).mean().backward()
    assert torch.allclose(got, weight.grad, atol=1e-6)


# ----------------------------------------------------------------------------- optimisation


def test_no_weight_decay_on_biases_norms_logit_scale_and_frozen_parameters_are_left_out() -> None:
    module = tiny_module(freeze_backbone=True)
    decay, no_decay = parameter_groups(module.model, 0.01)
    named = {id(p): n for n, p in module.model.named_parameters()}
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in decay["params"])
    names = {named[id(p)] for p in no_decay["params"]}
    assert {"logit_scale", "visual.fc.bias", "location.nnet.last_layer.bias"} <= names
    assert "visual.conv1.weight" not in {named[id(p)] for p in decay["params"] + no_decay["params"]}  # frozen
    vit = tiny_module(vision="vit_tiny_patch16_224")
    decay, _ = parameter_groups(vit.model, 0.01)
    assert "visual.pos_embed" not in {n for n, p in vit.model.named_parameters() if any(p is q for q in decay["params"])}


def test_warmup_then_cosine() -> None:
    schedule = WarmupCosine(warmup_steps=10, total_steps=110, min_ratio=0.1)
    assert schedule(0) == pytest.approx(0.1) and schedule(4) == pytest.approx(0.5) and schedule(9) == pytest.approx(1.0)
    assert schedule(60) == pytest.approx(0.1 + 0.9 * 0.5)
    assert schedule(110) == pytest.approx(0.1) and schedule(500) == pytest.approx(0.1)
    assert all(schedule(s) >= schedule(s + 1) for s in range(10, 120))


def test_retrieval_metrics() -> None:
    torch.manual_seed(0)
    feats = torch.nn.functional.normalize(torch.randn(20, 8), dim=-1)
    lonlat = synthetic_batch(20)["lonlat"]
    perfect = retrieval_metrics(feats, feats, lonlat=lonlat, chunk=7)
    assert {k: perfect[k] for k in ("top1", "top5", "median_km")} == {"top1": 1.0, "top5": 1.0, "median_km": 0.0}
    assert (perfect["top1_chance"], perfect["top5_chance"]) == (1 / 20, 5 / 20)
    pairs = great_circle_km(lonlat.double()[:, None].expand(20, 20, 2).reshape(-1, 2), lonlat.double()[None].expand(20, 20, 2).reshape(-1, 2))
    assert abs(perfect["median_km_chance"] - float(pairs.median())) < 0.05 * float(pairs.median())  # a sample of all pairs
    feats[1] = torch.nn.functional.normalize(feats[0] + 0.01 * feats[1], dim=0)  # 0 and 1 nearly alike
    swapped = retrieval_metrics(feats, feats[[1, 0, *range(2, 20)]], lonlat=lonlat)  # their locations exchanged
    assert swapped["top1"] == pytest.approx(18 / 20) and swapped["top5"] == 1.0


def test_bad_settings_are_named() -> None:
    with pytest.raises(ValueError, match="accumulate_batches must be >= 1"):
        tiny_module(accumulate_batches=0)
    with pytest.raises(ValueError, match="location_dtype must be 'float32' or 'float64'"):
        tiny_module(location_dtype="float16")
    with pytest.raises(ValueError, match=r"loss must be one of \['infonce', 'siglip'\], got 'clip'"):
        tiny_module(loss="clip")
    with pytest.raises(ValueError, match=r"logit_scale_init must be in \(0, max_logit_scale=100.0\], got 200"):
        tiny_module(logit_scale_init=200)
    with pytest.raises(ValueError, match="location_lr_scale must be > 0"):
        tiny_module(location_lr_scale=0)


def test_temperature_options_and_location_learning_rate() -> None:
    released = tiny_module(recipe="released")
    assert released.model.logit_scale.requires_grad and math.isclose(float(released.temperature_scale()), 1 / 0.07, rel_tol=1e-6)
    cool = tiny_module(logit_scale_init=1.0, learn_logit_scale=False)
    assert not cool.model.logit_scale.requires_grad and float(cool.temperature_scale()) == 1.0
    assert float(tiny_module(loss="siglip").temperature_scale()) == pytest.approx(10.0)
    assert float(tiny_module(logit_scale_init=50.0, max_logit_scale=20.0 + 30.0).temperature_scale()) == pytest.approx(50.0)
    groups = parameter_groups(released.model, 0.01, location_lr=5e-4)
    named = {id(p): n for n, p in released.model.named_parameters()}
    assert [g.get("lr") for g in groups] == [None, None, 5e-4, 5e-4]
    assert all(named[id(p)].startswith("location.") for g in groups[2:] for p in g["params"])
    assert not any(named[id(p)].startswith("location.") for g in groups[:2] for p in g["params"])


# ----------------------------------------------------------------------------- training loop


class _NaNFirst(SatCLIPModule):
    """Non-finite loss on the first ``bad`` optimizer-step attempts."""

    def __init__(self, bad: int, **kwargs) -> None:
        super().__init__(**{"recipe": "released", **kwargs})
        self.bad, self.calls = bad, 0

    def encode(self, batch):
        image, location = super().encode(batch)
        self.calls += 1
        return (image * float("nan"), location) if self.calls <= self.bad else (image, location)


def test_nonfinite_loss_skips_the_step_and_training_goes_on_with_accumulation(tmp_path: Path) -> None:
    module = _NaNFirst(1, vision="resnet18", embed_dim=16, location={"legendre_polys": 4, "dim_hidden": 32},
                       lr=1e-3, accumulate_batches=2, micro_batch_size=3)  # fmt: skip
    with torch.no_grad():
        module.model.logit_scale.fill_(10.0)  # above ln 100: clamped after the first step
    before = {n: p.detach().clone() for n, p in module.named_parameters()}
    trainer = tiny_trainer(tmp_path, max_steps=2)
    trainer.fit(module, SyntheticDataModule(batch_size=4, num_batches=6, val_batches=0, image_size=16))
    assert module.nonfinite_total == 1 and trainer.global_step == 2
    assert float(module.model.logit_scale) <= MAX_LOGIT_SCALE + 1e-6
    assert not torch.equal(before["model.location.nnet.last_layer.weight"], module.model.location.nnet.last_layer.weight)


def test_too_many_nonfinite_steps_in_a_row_raise(tmp_path: Path) -> None:
    module = _NaNFirst(100, vision="resnet18", embed_dim=16, location={"legendre_polys": 4, "dim_hidden": 32}, max_nonfinite_in_row=3)
    with pytest.raises(FloatingPointError, match=r"non-finite .* for 3 steps in a row \(model.max_nonfinite_in_row=3\)"):
        tiny_trainer(tmp_path, max_steps=2).fit(module, SyntheticDataModule(batch_size=4, num_batches=10, val_batches=0, image_size=16))


@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_builds_and_takes_one_cpu_step(tmp_path: Path, variant: str) -> None:
    size = "224" if "vit" in variant else "32"
    precision = "bf16-mixed" if variant == "satclip-resnet18-l10" else "32-true"  # one CPU run under autocast
    cli = main(
        ["--config", str(ROOT / "configs" / f"{variant}.yaml"), "--model.vision_weights", "null", "--model.accumulate_batches", "1",
         "--data", "satclip.train.synthetic.SyntheticDataModule", "--data.batch_size", "2", "--data.num_batches", "1",
         "--data.val_batches", "0", "--data.image_size", size, "--trainer.max_steps", "1", "--trainer.precision", precision,
         "--trainer.logger", "false", "--trainer.enable_checkpointing", "false", "--trainer.default_root_dir", str(tmp_path),
         "--trainer.gradient_clip_val", "1.0", *QUIET]
    )  # fmt: skip
    module = cli.model
    assert cli.trainer.global_step == 1
    assert module.hparams.gradient_clip_val == 1.0 and cli.trainer.gradient_clip_val is None
    assert module.satclip_kwargs["location"]["legendre_polys"] == int(variant[-2:])
    assert module.model.location.nnet.layers[0].weight.shape == (512, int(variant[-2:]) ** 2)
    assert module.model.location.nnet.layers[0].weight.dtype == torch.float64  # outside autocast, as released
    trainable = {n for n, p in module.model.visual.named_parameters() if p.requires_grad}
    assert trainable == {f"{module.model.visual.default_cfg.get('classifier', 'fc')}.{k}" for k in ("weight", "bias")}
    # the released recipe: InfoNCE, CLIP's learned temperature from 1/0.07, every negative kept
    hp = module.hparams
    assert hp.recipe == "released"
    assert (hp.loss, hp.learn_logit_scale, hp.max_logit_scale, hp.mask_duplicates, hp.location_lr_scale) == ("infonce", True, 100.0, False, 1.0)
    assert hp.logit_scale_init is None and module.model.logit_scale.requires_grad


def test_config_bases_expand_in_order_and_fail_clearly(tmp_path: Path) -> None:
    (tmp_path / "root.yaml").write_text("model:\n  lr: 0.1\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "mid.yaml").write_text("base: ../root.yaml\nmodel:\n  embed_dim: 8\n")
    (tmp_path / "top.yaml").write_text("base: sub/mid.yaml\ntrainer:\n  max_steps: 3\n")
    args = expand_config_bases(["--trainer.devices", "1", "--config", str(tmp_path / "top.yaml"), "--config=" + str(tmp_path / "root.yaml")])
    assert args == [
        "--trainer.devices",
        "1",
        "--config",
        str(tmp_path / "root.yaml"),
        "--config",
        "model:\n  embed_dim: 8\n",
        "--config",
        "trainer:\n  max_steps: 3\n",
        "--config",
        str(tmp_path / "root.yaml"),
    ]
    (tmp_path / "loop.yaml").write_text("base: loop2.yaml\n")
    (tmp_path / "loop2.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(ConfigError, match="loop.yaml: its base chain returns to itself"):
        expand_config_bases(["--config", str(tmp_path / "loop.yaml")])
    (tmp_path / "orphan.yaml").write_text("base: nowhere.yaml\n")
    with pytest.raises(ConfigError, match=r"its base 'nowhere.yaml' is not a file"):
        expand_config_bases(["--config", str(tmp_path / "orphan.yaml")])
    for config, message in (("loop.yaml", "base chain returns to itself"), ("orphan.yaml", "its base 'nowhere.yaml' is not a file")):
        with pytest.raises(SystemExit, match=f"^satclip fit: config {tmp_path}.*{message}"):  # one line, no traceback
            satclip_main(["fit", "--config", str(tmp_path / config)])


def test_the_six_variants_are_overlays_on_the_released_base() -> None:
    import yaml

    for variant in VARIANTS:
        overlay = yaml.safe_load((ROOT / "configs" / f"{variant}.yaml").read_text())
        assert overlay.pop("base") == "released.yaml"
        assert set(overlay) == {"model", "trainer"} and set(overlay["trainer"]) == {"default_root_dir"}
        assert set(overlay["model"]) == {"variant", "vision", "vision_weights", "location"}


class _LrLog(L.Callback):
    """The learning rate each optimizer step used (``train/lr``)."""

    def __init__(self) -> None:
        self.lrs: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.lrs.append(float(trainer.callback_metrics["train/lr"]))


def _fit_steps(tmp_path: Path, steps: int, ckpt: Path | None = None, **module_args) -> tuple[SatCLIPModule, list[float]]:
    torch.manual_seed(0)
    module, log = tiny_module(warmup_steps=2, **module_args), _LrLog()
    trainer = tiny_trainer(tmp_path, max_steps=steps, callbacks=[log])
    trainer.fit(module, SyntheticDataModule(batch_size=4, num_batches=20, val_batches=0, image_size=16), ckpt_path=ckpt)
    if ckpt is None:
        trainer.save_checkpoint(tmp_path / "first.ckpt")
    return module, log.lrs


def test_resuming_with_more_steps_continues_the_schedule_to_the_new_length(tmp_path: Path) -> None:
    first, _ = _fit_steps(tmp_path, 3)
    before = first.model.location.nnet.last_layer.weight.detach().clone()
    resumed, lrs = _fit_steps(tmp_path, 6, tmp_path / "first.ckpt")
    new = WarmupCosine(2, 6)
    assert lrs == pytest.approx([1e-3 * new(s) for s in (3, 4, 5)])  # the new schedule from the resumed step on
    assert min(lrs) > 0
    assert not torch.equal(before, resumed.model.location.nnet.last_layer.weight)
    assert resumed.lr_schedulers().schedule.total_steps == 6


def test_a_schedule_that_ends_before_the_trainer_is_refused(tmp_path: Path) -> None:
    _fit_steps(tmp_path, 3, max_steps=3)
    with pytest.raises(ValueError, match=r"schedule ends at step 3 \(model.max_steps\) but trainer.max_steps is 6: steps 4-6 would train at learning rate 0"):
        _fit_steps(tmp_path, 6, tmp_path / "first.ckpt", max_steps=3)


# ----------------------------------------------------------------------------- demo config


@pytest.fixture(scope="module")
def demo_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shards")
    if not (ROOT / "data" / "sample" / "index.csv").is_file():
        pytest.skip("data/sample is missing")
    cmd = [sys.executable, "-m", "satclip.cli", "shards", str(ROOT / "data" / "sample"), "--out", str(out), "--payload", "s2c",
           "--samples-per-shard", "4", "--overwrite"]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True)
    return out


def _demo(tmp_path: Path, shards: Path, *extra: str):
    return main(
        ["--config", str(ROOT / "configs" / "demo.yaml"), "--data.init_args.train_urls", str(shards),
         "--data.init_args.val_urls", str(shards), "--data.init_args.num_workers", "0", "--data.init_args.crop_size", "32",
         "--data.init_args.epoch_length", "16", "--trainer.default_root_dir", str(tmp_path), "--trainer.limit_val_batches", "1",
         *QUIET, *extra]
    )  # fmt: skip


def test_resuming_with_another_num_workers_is_one_line(tmp_path: Path, demo_shards: Path) -> None:
    _demo(tmp_path, demo_shards, "--trainer.max_steps", "2")
    args = ["--config", str(ROOT / "configs" / "demo.yaml"), "--data.init_args.train_urls", str(demo_shards), "--data.init_args.val_urls",
            str(demo_shards), "--data.init_args.crop_size", "32", "--data.init_args.epoch_length", "16", "--trainer.default_root_dir",
            str(tmp_path), *QUIET, "--data.init_args.num_workers", "1", "--trainer.max_steps", "4", "--ckpt_path", "last"]  # fmt: skip
    with pytest.raises(SystemExit, match=r"^satclip fit: the checkpoint's data position is for data.num_workers=0 .* not 1$"):
        satclip_main(["fit", *args])


def test_demo_trains_saves_loads_weights_only_and_resumes(tmp_path: Path, demo_shards: Path) -> None:
    first = _demo(tmp_path, demo_shards, "--trainer.max_steps", "3")
    assert first.trainer.global_step == 3
    ckpts = tmp_path / "checkpoints"
    last = ckpts / "satclip-resnet18-l10-demo-last.ckpt"
    assert last.is_file() and any(p.name.startswith("satclip-resnet18-l10-demo-best-epoch=") for p in ckpts.iterdir())
    state = torch.load(last, map_location="cpu", weights_only=True)
    assert state["global_step"] == 3
    assert state["satclip"]["format"] == 1 and state["satclip"]["variant"] == "satclip-resnet18-l10-demo"
    assert state["satclip"]["model"]["location"]["legendre_polys"] == 10
    keys = set(state["state_dict"])
    assert {"model.logit_scale", "model.visual.fc.weight", "model.location.nnet.layers.0.weight", "model.location.nnet.last_layer.bias"} <= keys
    assert all(k.startswith(("model.visual.", "model.location.nnet.", "model.logit_scale")) for k in keys)
    assert (tmp_path / "csv").is_dir() and (tmp_path / "tensorboard").is_dir()

    from satclip.io.checkpoints import load

    model = load(last)
    assert torch.equal(model.location.nnet.last_layer.weight, state["state_dict"]["model.location.nnet.last_layer.weight"])

    resumed = _demo(tmp_path, demo_shards, "--trainer.max_steps", "5", "--ckpt_path", "last")
    assert resumed.trainer.global_step == 5
    again = torch.load(last, map_location="cpu", weights_only=True)
    assert again["global_step"] == 5 and set(again["state_dict"]) == keys
    with pytest.warns(UserWarning, match=r"already at step 5, trainer.max_steps=4: nothing is trained; raise --trainer.max_steps"):
        assert _demo(tmp_path, demo_shards, "--trainer.max_steps", "4", "--ckpt_path", "last").trainer.global_step == 5


@pytest.mark.parametrize("loss", ["infonce", "siglip"])
def test_the_cool_recipe_overlay_trains_at_its_fixed_temperature_and_loads(tmp_path: Path, demo_shards: Path, loss: str) -> None:
    cli = _demo(tmp_path, demo_shards, "--config", str(ROOT / "configs" / "recipes" / "cool.yaml"), "--model.loss", loss,
                "--trainer.max_steps", "3")  # fmt: skip
    hp = cli.model.hparams
    assert (hp.loss, hp.logit_scale_init, hp.learn_logit_scale, hp.mask_duplicates) == (loss, 1.0, False, True)
    assert float(cli.model.model.logit_scale) == 0.0  # ln 1, not learned
    last = tmp_path / "checkpoints" / "satclip-resnet18-l10-demo-last.ckpt"
    state = torch.load(last, map_location="cpu", weights_only=True)
    assert ("loss_fn.logit_bias" in state["state_dict"]) == (loss == "siglip")
    if loss == "siglip":
        assert float(state["state_dict"]["loss_fn.logit_bias"]) != -10.0  # learned
    from satclip.io.checkpoints import load

    assert float(load(last).logit_scale) == 0.0


def test_unknown_config_keys_are_errors(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["--config", str(ROOT / "configs" / "demo.yaml"), "--model.learning_rate", "0.1"])
    assert "learning_rate" in capsys.readouterr().err


def test_init_from_a_released_checkpoint_keeps_its_weights(reference_with_image_tower: Path) -> None:
    module = SatCLIPModule(init_from=str(reference_with_image_tower), freeze_backbone=True)
    state = torch.load(reference_with_image_tower, map_location="cpu", weights_only=True)["state_dict"]
    assert torch.equal(module.model.location.nnet.layers[0].weight, state["model.location.nnet.layers.0.weight"])
    assert module.satclip_kwargs["vision"] == "resnet18" and module.satclip_kwargs["freeze_backbone"] is True
    assert math.isclose(float(module.model.logit_scale), float(state["model.logit_scale"]))


def test_trainer_flags_are_handed_to_the_module_and_conflicts_named() -> None:
    module = tiny_module()
    module.set_trainer_flags(0.5, "value", accumulate_grad_batches=4)
    assert (module.hparams.gradient_clip_val, module.hparams.gradient_clip_algorithm, module.hparams.accumulate_batches) == (0.5, "value", 4)
    with pytest.raises(ValueError, match=r"trainer.accumulate_grad_batches=2 conflicts with model.accumulate_batches=4"):
        module.set_trainer_flags(None, None, accumulate_grad_batches=2)


# ----------------------------------------------------------------------------- exact resume


class _Record(L.Callback):
    """The keys of every training batch; sends SIGTERM to this process after batch ``sigterm_at``."""

    def __init__(self, sigterm_at: int | None = None) -> None:
        self.keys: list[list[str]] = []
        self.sigterm_at = sigterm_at

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.keys.append(list(batch["key"]))
        if len(self.keys) == self.sigterm_at:
            import os
            import signal

            os.kill(os.getpid(), signal.SIGTERM)


def _shard_fit(tmp_path: Path, shards: Path, workers: int, max_steps: int, resume: bool = False, sigterm_at: int | None = None, accumulate: int = 1):
    """A small run on the demo shards with the CLI's checkpoints (every 2 steps), preemption and atomic IO."""
    from satclip.data.stream import SatCLIPDataModule
    from satclip.train.callbacks import variant_checkpoints
    from satclip.train.checkpoint_io import AtomicCheckpointIO
    from satclip.train.preemption import Preemption

    L.seed_everything(0)
    module = tiny_module(warmup_steps=2, max_steps=8, accumulate_batches=accumulate)
    data = SatCLIPDataModule(train_urls=str(shards), batch_size=4, num_workers=workers, epoch_length=12, crop_size=32, shuffle_buffer=8)
    record = _Record(sigterm_at)
    checkpoints = variant_checkpoints("tiny", str(tmp_path / "ckpt"), every_n_train_steps=2)[:-1]  # no validation: no best
    trainer = tiny_trainer(tmp_path, max_steps=max_steps, enable_checkpointing=True, plugins=[AtomicCheckpointIO()],
                           callbacks=[*checkpoints, Preemption(), record])  # fmt: skip
    try:
        trainer.fit(module, data, ckpt_path="last" if resume else None)
    except SystemExit:
        assert sigterm_at is not None
    return {k: v.detach().clone() for k, v in module.state_dict().items()}, record.keys


@pytest.mark.parametrize("workers,stop", [(0, "max_steps"), (1, "max_steps"), (0, "sigterm"), (1, "sigterm"), (0, "sigterm-accumulating")])
def test_a_resumed_run_is_bit_identical_to_the_uninterrupted_one(tmp_path: Path, demo_shards: Path, workers: int, stop: str) -> None:
    accumulate = 2 if stop == "sigterm-accumulating" else 1  # 2 batches per step, 3 per epoch
    reference, keys = _shard_fit(tmp_path / "reference", demo_shards, workers, 8, accumulate=accumulate)
    run = tmp_path / "stopped"
    if stop == "max_steps":
        _, first = _shard_fit(run, demo_shards, workers, 5)  # mid-epoch (3 batches per epoch)
    else:  # after batch 5: mid-epoch; with accumulation mid-step too (the step is finished first)
        _, first = _shard_fit(run, demo_shards, workers, 8, sigterm_at=5, accumulate=accumulate)
    resumed, rest = _shard_fit(run, demo_shards, workers, 8, resume=True, accumulate=accumulate)
    assert first + rest == keys  # no batch repeated or skipped
    different = [k for k in reference if not torch.equal(reference[k], resumed[k])]
    assert not different, f"{len(different)} tensors differ after resuming, e.g. {different[:3]}"
