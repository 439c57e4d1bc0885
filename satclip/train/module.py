"""``SatCLIPModule``: the LightningModule that pretrains a ``SatCLIP`` with the global InfoNCE loss.

Optimisation is manual, so that one optimizer step can cover several micro-batches with all their
negatives (``accumulate_batches`` loader batches per step, each optionally split into micro-batches
of ``micro_batch_size``; see ``satclip.train.accumulate``). Per step: AdamW (no weight decay on
biases, norms, the logit scale and other 1-D parameters, nor on the parameters timm lists in
``no_weight_decay()``), linear warm-up then cosine decay (a resumed run follows this run's schedule:
:class:`WarmupCosineLR`), optional gradient clipping, the logit scale clamped to [0, ln 100], and a
non-finite loss skips the step (counted and logged; an error after ``max_nonfinite_in_row`` in a row).

Precision: under ``--trainer.precision bf16-mixed`` the image tower runs in autocast; the location
tower runs outside autocast in its own dtype (``location_dtype``: float64 as released, or float32),
because spherical harmonics and SIREN's sin(30 x) lose too much in bfloat16.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from typing import Any

import lightning.pytorch as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from ..data.datamodule import skip_metrics
from ..io.checkpoints import OWN_FORMAT_VERSION, read_spec
from ..loss import LOSSES, MatryoshkaLoss, SigLIPLoss, gather_rows, info_nce
from ..model import SatCLIP
from .accumulate import GradCache, concat_batches, split_batch
from .optim import WarmupCosine, WarmupCosineLR, parameter_groups
from .recipes import DEFAULT_RECIPE, batch_multiplier, resolve_recipe
from .retrieval import retrieval_metrics

# SatCLIP constructor arguments that describe the architecture (saved in checkpoints)
ARCHITECTURE = ("embed_dim", "vision", "in_chans", "location", "location_dtype")


def key_ids(keys: list[str], device: torch.device | str = "cpu") -> torch.Tensor:
    """Stable int64 ids of sample keys (the first 8 bytes of their BLAKE2b digest): equal keys, equal ids,
    on every rank and run."""
    ids = [int.from_bytes(hashlib.blake2b(k.encode(), digest_size=8).digest(), "little", signed=True) for k in keys]
    return torch.tensor(ids, dtype=torch.int64, device=device)


class SatCLIPModule(L.LightningModule):
    """Contrastive pretraining of ``SatCLIP`` (kept as ``self.model``: checkpoint keys ``model.visual.*``,
    ``model.location.nnet.*``, ``model.logit_scale`` as in the released checkpoints).

    Architecture (``SatCLIP`` arguments): ``embed_dim``, ``vision`` (a timm name), ``in_chans``,
    ``vision_weights`` (a local state dict), ``freeze_backbone``, ``frozen_bn_drift``, ``location``
    (location tower hyper-parameters), ``location_dtype``. ``init_from`` (a checkpoint file or hub
    id) takes architecture and weights from a checkpoint instead; the optimizer starts fresh.

    Optimisation: ``lr``, ``weight_decay``, ``betas``, ``eps``; ``warmup_steps``; ``max_steps``
    for the cosine (default: the trainer's ``max_steps``, else its estimate of the run's steps);
    ``min_lr_ratio``; ``accumulate_batches`` loader batches per optimizer step, all negatives kept;
    ``micro_batch_size`` rows per forward/backward pass (memory); ``gradient_clip_val`` /
    ``gradient_clip_algorithm`` ("norm" or "value"; Lightning's trainer flags are handed here by
    ``satclip fit``); ``max_nonfinite_in_row`` skipped steps before giving up; ``gather`` negatives
    from all ranks.

    Recipe (``satclip.train.recipes``): ``recipe`` "cool" (the default for new runs: a fixed
    multiplier of 1, duplicates masked) or "released" (the published recipe: learned from 1/0.07,
    what ``configs/released.yaml`` names); each of the following left unset (null) takes the recipe's
    value: ``loss`` "infonce" (CLIP) or "siglip" (pairwise sigmoid, with a learned bias);
    ``logit_scale_init`` the initial logit multiplier (the released recipe: 1/0.07 for InfoNCE, 10 for
    SigLIP); ``learn_logit_scale`` whether it is learned (then clamped to [1, ``max_logit_scale``]);
    ``mask_duplicates`` leaves pairs of rows holding the same patch (same sample key) out of the
    negatives. The resolved values are what ``self.hparams`` and the checkpoints hold.
    ``location_lr_scale`` multiplies the location tower's learning rate.

    Matryoshka embeddings (docs/matryoshka.md): ``matryoshka_dims`` (e.g. [16, 32, 64], increasing,
    at most ``embed_dim``) applies the loss to each leading prefix of both towers' features (each
    L2-normalised alone) and sums them, weighted by ``matryoshka_weights`` (default 1 each), so that
    the first d dimensions are an embedding on their own; the checkpoint records the dims, and
    ``satclip export --dim`` / ``load_location_encoder(..., dim=)`` truncate. ``train/loss`` is then
    that weighted sum.
    """

    def __init__(
        self,
        variant: str = "satclip",
        embed_dim: int = 256,
        *,
        vision: str = "resnet18",
        in_chans: int = 13,
        vision_weights: str | None = None,
        freeze_backbone: bool = False,
        frozen_bn_drift: bool = False,
        location: dict[str, Any] | None = None,
        location_dtype: str = "float64",
        init_from: str | None = None,
        lr: float = 1e-4,
        weight_decay: float = 0.01,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        warmup_steps: int = 0,
        max_steps: int | None = None,
        min_lr_ratio: float = 0.0,
        accumulate_batches: int = 1,
        micro_batch_size: int | None = None,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str = "norm",
        max_nonfinite_in_row: int = 10,
        gather: bool = True,
        recipe: str = DEFAULT_RECIPE,
        loss: str | None = None,
        logit_scale_init: float | None = None,
        learn_logit_scale: bool | None = None,
        max_logit_scale: float = 100.0,
        mask_duplicates: bool | None = None,
        location_lr_scale: float = 1.0,
        matryoshka_dims: list[int] | None = None,
        matryoshka_weights: list[float] | None = None,
    ) -> None:
        super().__init__()
        settings = resolve_recipe(recipe, loss=loss, logit_scale_init=logit_scale_init, learn_logit_scale=learn_logit_scale, mask_duplicates=mask_duplicates)
        loss, logit_scale_init = settings["loss"], settings["logit_scale_init"]
        learn_logit_scale, mask_duplicates = settings["learn_logit_scale"], settings["mask_duplicates"]
        if accumulate_batches < 1:
            raise ValueError(f"accumulate_batches must be >= 1, got {accumulate_batches}")
        if micro_batch_size is not None and micro_batch_size < 1:
            raise ValueError(f"micro_batch_size must be >= 1 or null, got {micro_batch_size}")
        if gradient_clip_algorithm not in ("norm", "value"):
            raise ValueError(f"gradient_clip_algorithm must be 'norm' or 'value', got {gradient_clip_algorithm!r}")
        if location_dtype not in ("float32", "float64"):
            raise ValueError(f"location_dtype must be 'float32' or 'float64', got {location_dtype!r}")
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {loss!r}")
        if not max_logit_scale >= 1.0:
            raise ValueError(f"max_logit_scale must be >= 1 (a multiplier of the cosine similarities), got {max_logit_scale}")
        if logit_scale_init is not None and not 0 < logit_scale_init <= max_logit_scale:
            raise ValueError(f"logit_scale_init must be in (0, max_logit_scale={max_logit_scale}], got {logit_scale_init}")
        if not location_lr_scale > 0:
            raise ValueError(f"location_lr_scale must be > 0, got {location_lr_scale}")
        self.save_hyperparameters()
        self.scale_with_batch = bool(settings.pop("scale_with_batch")) and not init_from
        self.hparams.update(settings)  # the recipe's values, as the run uses them
        self.automatic_optimization = False
        if init_from:
            self.model, arch = self._from_checkpoint(init_from, freeze_backbone, frozen_bn_drift=frozen_bn_drift)
        else:
            arch = {"embed_dim": embed_dim, "vision": vision, "in_chans": in_chans, "location": dict(location or {}), "location_dtype": location_dtype}
            self.model = SatCLIP(**arch, vision_weights=vision_weights, freeze_backbone=freeze_backbone, frozen_bn_drift=frozen_bn_drift)
        self.satclip_kwargs: dict[str, Any] = {**arch, "freeze_backbone": freeze_backbone, "frozen_bn_drift": frozen_bn_drift}
        self.loss_fn: torch.nn.Module = LOSSES[loss](gather=gather)
        if matryoshka_dims:
            if max(int(d) for d in matryoshka_dims) > int(arch["embed_dim"]):
                raise ValueError(f"matryoshka_dims {list(matryoshka_dims)} go beyond embed_dim={arch['embed_dim']}")
            self.loss_fn = MatryoshkaLoss(self.loss_fn, list(matryoshka_dims), weights=matryoshka_weights)
        elif matryoshka_weights:
            raise ValueError(f"matryoshka_weights {list(matryoshka_weights)} given without matryoshka_dims")
        if logit_scale_init is None and loss == "siglip":
            logit_scale_init = 10.0  # SigLIP's initial multiplier (with its bias at -10)
        if logit_scale_init is not None and not init_from:
            with torch.no_grad():
                self.model.logit_scale.fill_(math.log(logit_scale_init))
        self.model.logit_scale.requires_grad_(learn_logit_scale)
        self.nonfinite_in_row = 0
        self.nonfinite_total = 0
        self._pending: list[dict[str, Any]] = []
        self._val: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    @staticmethod
    def _from_checkpoint(source: str, freeze_backbone: bool, *, frozen_bn_drift: bool) -> tuple[SatCLIP, dict[str, Any]]:
        """Architecture and weights of a released or own checkpoint (file, URL or hub id)."""
        spec = read_spec(source)
        arch = {k: spec.kwargs[k] for k in ARCHITECTURE if k in spec.kwargs}
        model = SatCLIP(**arch, freeze_backbone=freeze_backbone, frozen_bn_drift=frozen_bn_drift)
        missing, unexpected = model.load_state_dict(spec.state_dict, strict=False)
        if missing or unexpected:
            raise ValueError(f"init_from {source!r}: weights do not fit the architecture: missing {missing[:8]}, unexpected {unexpected[:8]}")
        return model, arch

    @property
    def accumulating(self) -> bool:
        """Whether batches of an unfinished optimizer step are waiting (``Preemption`` waits for the step)."""
        return bool(self._pending)

    @property
    def variant(self) -> str:
        return str(self.hparams.variant)

    def set_trainer_flags(self, gradient_clip_val: float | None, gradient_clip_algorithm: str | None, *, accumulate_grad_batches: int) -> None:
        """Take over Lightning's ``gradient_clip_val`` / ``accumulate_grad_batches`` trainer flags
        (Lightning refuses them under manual optimisation); conflicting values raise ``ValueError``."""
        hp = self.hparams
        if gradient_clip_val:
            if hp.gradient_clip_val not in (None, gradient_clip_val):
                raise ValueError(f"trainer.gradient_clip_val={gradient_clip_val} conflicts with model.gradient_clip_val={hp.gradient_clip_val}")
            hp.gradient_clip_val = float(gradient_clip_val)
            hp.gradient_clip_algorithm = gradient_clip_algorithm or hp.gradient_clip_algorithm
        if accumulate_grad_batches != 1:
            if hp.accumulate_batches not in (1, accumulate_grad_batches):
                raise ValueError(f"trainer.accumulate_grad_batches={accumulate_grad_batches} conflicts with model.accumulate_batches={hp.accumulate_batches}")
            hp.accumulate_batches = int(accumulate_grad_batches)

    # ------------------------------------------------------------------ embedding

    def encode(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """L2-normalised float32 image and location features of a batch. The location tower runs
        outside autocast, in its own dtype; a time-aware tower also gets ``batch["time"]`` (absent: unknown)."""
        image = F.normalize(self.model.encode_image(batch["image"]).float(), dim=-1)
        with torch.autocast(device_type=self.device.type, enabled=False):
            location = F.normalize(self.model.encode_location(batch["lonlat"], batch.get("time")).float(), dim=-1)
        return image, location

    def temperature_scale(self) -> torch.Tensor:
        """The logit multiplier exp(logit_scale), clamped at ``max_logit_scale``."""
        return self.model.logit_scale.clamp(max=math.log(self.hparams.max_logit_scale)).exp()

    def sample_ids(self, keys: list[str]) -> torch.Tensor | None:
        """Per-row int64 ids of the samples (from their keys) when ``mask_duplicates`` is on, else None."""
        if not self.hparams.mask_duplicates:
            return None
        return key_ids(keys, self.device)

    def contrastive_loss(self, image: torch.Tensor, location: torch.Tensor, *, scale: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        """The global contrastive loss, in float32 even under autocast (bf16 logits would blur the ranking)."""
        with torch.autocast(device_type=self.device.type, enabled=False):
            return self.loss_fn(image.float(), location.float(), scale.float(), ids)

    # ------------------------------------------------------------------ optimisation

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        location_lr = None if hp.location_lr_scale == 1.0 else hp.lr * hp.location_lr_scale
        groups = parameter_groups(self.model, hp.weight_decay, location_lr=location_lr)
        loss_params = [p for p in self.loss_fn.parameters() if p.requires_grad]
        if loss_params:
            groups.append({"params": loss_params, "weight_decay": 0.0})
        optimizer = torch.optim.AdamW(groups, lr=hp.lr, betas=tuple(hp.betas), eps=hp.eps)
        schedule = WarmupCosine(hp.warmup_steps, self._total_steps(), min_ratio=hp.min_lr_ratio)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": WarmupCosineLR(optimizer, schedule), "interval": "step"}}

    def on_fit_start(self) -> None:
        self._scale_with_batch()

    def on_train_start(self) -> None:
        self._check_schedule_covers_run()

    def _scale_with_batch(self) -> None:
        """The ``cool`` recipe: set the fixed multiplier for this run's negatives per loss (``batch_multiplier``)."""
        batch = getattr(getattr(self.trainer, "datamodule", None), "hparams", {}).get("batch_size")
        if not self.scale_with_batch or batch is None:
            return
        negatives = int(batch) * self.hparams.accumulate_batches * self.trainer.world_size
        with torch.no_grad():
            self.model.logit_scale.fill_(math.log(batch_multiplier(negatives)))
        rank_zero_info(f"recipe {self.hparams.recipe}: logit multiplier {batch_multiplier(negatives):.3g} for {negatives:,} negatives per loss")

    def _check_schedule_covers_run(self) -> None:
        """Refuse a run whose remaining steps would all train at learning rate 0: the cosine ends
        (``model.max_steps``, e.g. restored from a checkpoint) before the trainer stops."""
        schedule = self.lr_schedulers().schedule
        stop = self.trainer.max_steps if self.trainer.max_steps and self.trainer.max_steps > 0 else None
        if schedule.min_ratio > 0 or stop is None or schedule.total_steps >= stop:
            return
        raise ValueError(
            f"the learning-rate schedule ends at step {schedule.total_steps} (model.max_steps) but trainer.max_steps is "
            f"{stop}: steps {max(schedule.total_steps, self.global_step) + 1}-{stop} would train at learning rate 0 "
            f"(model.min_lr_ratio=0). Set model.max_steps to {stop} (or leave it unset to follow trainer.max_steps), "
            f"or model.min_lr_ratio > 0. Resuming with a longer schedule continues the cosine to the new length."
        )

    def _total_steps(self) -> int:
        if self.hparams.max_steps:
            return int(self.hparams.max_steps)
        if self.trainer.max_steps and self.trainer.max_steps > 0:
            return int(self.trainer.max_steps)
        estimate = self.trainer.estimated_stepping_batches / self.hparams.accumulate_batches
        if not math.isfinite(estimate):
            raise ValueError(
                "the cosine schedule needs the number of optimizer steps: set --trainer.max_steps or --model.max_steps "
                "(the number of batches per epoch is unknown for this data)"
            )
        return max(1, int(estimate))

    def _micro_batches(self, batches: list[dict[str, Any]]) -> list[dict[str, Any]]:
        size = self.hparams.micro_batch_size
        if size is None:
            return batches
        return split_batch(concat_batches(batches), size)

    def _nonfinite(self, loss: torch.Tensor) -> bool:
        """Whether any rank's loss is non-finite; counts it and raises after too many in a row."""
        bad = not bool(torch.isfinite(loss))
        bad = self.trainer.strategy.reduce_boolean_decision(bad, all=False)
        if not bad:
            self.nonfinite_in_row = 0
            return False
        self.nonfinite_in_row += 1
        self.nonfinite_total += 1
        self.log("train/nonfinite_skipped", float(self.nonfinite_total), on_step=True)
        limit = self.hparams.max_nonfinite_in_row
        if self.nonfinite_in_row >= limit:
            raise FloatingPointError(
                f"the training loss was non-finite (last value {float(loss)}) for {self.nonfinite_in_row} steps in a row "
                f"(model.max_nonfinite_in_row={limit}) at global step {self.global_step}; {self.nonfinite_total} steps skipped "
                f"in all. Lower model.lr, check the data (skip counters), or use a wider precision."
            )
        return True

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        if "skipped" in batch:
            self.log_dict(skip_metrics(batch), on_step=True)
        self._pending.append(batch)
        if len(self._pending) < self.hparams.accumulate_batches:
            return None
        micro = self._micro_batches(self._pending)
        self._pending = []
        optimizer, scheduler = self.optimizers(), self.lr_schedulers()
        keys = [k for m in micro for k in m.get("key", [])]  # the step's rows in order (no image copy)
        ids = self.sample_ids(keys)
        if len(micro) == 1:
            image, location = self.encode(micro[0])
            loss = self.contrastive_loss(image, location, scale=self.temperature_scale(), ids=ids)
            if self._nonfinite(loss.detach()):
                return None
            self.manual_backward(loss)
        else:
            loss_params = [p for p in self.loss_fn.parameters() if p.requires_grad]
            cache = GradCache(
                self.encode, self.temperature_scale, loss_fn=lambda i, l, s: self.contrastive_loss(i, l, scale=s, ids=ids), loss_params=loss_params
            )
            loss = cache.forward(micro)
            if self._nonfinite(loss):
                return None
            no_sync = getattr(self.trainer.strategy, "block_backward_sync", contextlib.nullcontext)
            cache.backward(self.manual_backward, no_sync)
        if self.hparams.gradient_clip_val:
            self.clip_gradients(optimizer, self.hparams.gradient_clip_val, self.hparams.gradient_clip_algorithm)
        lr = optimizer.param_groups[0]["lr"]  # the rate this step uses (image tower; location: x location_lr_scale)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        if self.hparams.learn_logit_scale:  # CLIP's bounds on a learned temperature: multiplier in [1, max_logit_scale]
            with torch.no_grad():
                self.model.logit_scale.clamp_(0.0, math.log(self.hparams.max_logit_scale))
        rows = sum(len(m["lonlat"]) for m in micro)
        # mean over ranks of their shares = the global-batch loss
        self.log("train/loss", loss.detach(), on_step=True, prog_bar=True, batch_size=rows, sync_dist=True)
        self.log("train/logit_scale", self.temperature_scale().detach(), on_step=True, batch_size=rows)
        for module in self.loss_fn.modules():
            if isinstance(module, SigLIPLoss):  # the learned bias of the sigmoid loss
                self.log("train/logit_bias", module.logit_bias.detach(), on_step=True, batch_size=rows)
        self.log("train/lr", lr, on_step=True, batch_size=rows)
        if keys:  # rows of this rank's step that repeat a patch already in it (false negatives unless masked)
            self.log("train/duplicate_rows", float(len(keys) - len(set(keys))), on_step=True, batch_size=rows)
        return None

    # ------------------------------------------------------------------ validation

    def on_validation_epoch_start(self) -> None:
        self._val = []

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        image, location = self.encode(batch)
        # in-batch negatives of the validation batch (every rank may read the same validation set)
        with torch.autocast(device_type=self.device.type, enabled=False):
            loss = info_nce(image, location, logit_scale=self.temperature_scale())
        self.log("val/loss", loss, on_epoch=True, sync_dist=True, batch_size=len(image))
        self._val.append((image, location, batch["lonlat"].to(torch.float64)))

    def on_validation_epoch_end(self) -> None:
        if not self._val or self.trainer.sanity_checking:
            self._val = []
            return
        image, location, lonlat = (torch.cat(parts) for parts in zip(*self._val))
        self._val = []
        datamodule = getattr(self.trainer, "datamodule", None)
        if getattr(getattr(datamodule, "hparams", {}), "get", lambda *_: False)("val_split_by_rank"):
            image, location, lonlat = (gather_rows(t)[0] for t in (image, location, lonlat))
        metrics = retrieval_metrics(image, location, lonlat=lonlat)
        self.log_dict({f"val/{k}": v for k, v in metrics.items()}, sync_dist=True)  # equal on every rank

    # ------------------------------------------------------------------ checkpoints

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Constructor arguments for ``satclip.io.checkpoints`` (plain types only: weights_only loading)."""
        checkpoint["satclip"] = {
            "format": OWN_FORMAT_VERSION,
            "variant": self.variant,
            "model": dict(self.satclip_kwargs),
            "nonfinite_skipped": self.nonfinite_total,
        }
        if self.hparams.matryoshka_dims:  # the prefixes that stand alone (read by load_location_encoder)
            checkpoint["satclip"]["matryoshka_dims"] = [int(d) for d in self.hparams.matryoshka_dims]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.nonfinite_total = int(checkpoint.get("satclip", {}).get("nonfinite_skipped", 0))
        max_steps, step = getattr(self._trainer, "max_steps", -1), int(checkpoint.get("global_step", 0))
        if max_steps not in (None, -1) and step >= max_steps:  # Lightning then stops at once, saying only that max_steps was reached
            rank_zero_warn(
                f"the checkpoint is already at step {step}, trainer.max_steps={max_steps}: nothing is trained; raise --trainer.max_steps to continue the run"
            )


__all__ = ["SatCLIPModule", "key_ids"]
