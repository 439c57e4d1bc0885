"""``satclip fit``: LightningCLI over ``SatCLIPModule`` and any LightningDataModule.

``satclip fit --config configs/demo.yaml [--trainer.max_steps 5] [--ckpt_path last]`` has the
semantics of LightningCLI's ``fit`` subcommand (several ``--config`` files overlay in order; a config
whose top level has ``base: FILE`` is read on top of ``FILE``, a path relative to it, which is how
the six released variants share one base), ``model:`` holds ``SatCLIPModule`` arguments,
``data:`` a ``class_path`` (default ``satclip.data.stream.SatCLIPDataModule``) and its
``init_args``, ``trainer:`` Trainer arguments; unknown keys are errors. On top of Lightning's
defaults ``satclip fit`` adds:

- checkpoints named for ``model.variant`` in ``checkpoint.dirpath`` (default
  ``<trainer.default_root_dir>/checkpoints``): every ``checkpoint.every_n_train_steps`` steps,
  ``<variant>-last.ckpt`` and the best by validation loss (``satclip.train.callbacks``), written
  atomically (``AtomicCheckpointIO``), and a clean save-and-stop on SIGTERM/SIGUSR1 (``Preemption``);
- CSV and TensorBoard loggers when ``trainer.logger`` is left unset (name a
  ``lightning.pytorch.loggers.WandbLogger`` in ``trainer.logger`` for wandb);
- throughput / data-wait logging (``Throughput``);
- geography metrics at every validation (``geography:``, :class:`~satclip.train.geography.GeographyMetrics`):
  ridge probes of the location tower on the configured tables next to their untrained and plain-SH
  baselines, a PCA world map, the validation share of wall time;
- the recommended recipe unless the config names another (``model.recipe``, ``satclip.train.recipes``);
- ``trainer.gradient_clip_val`` and ``trainer.accumulate_grad_batches`` handed to the module, which
  optimises manually (accumulation keeps all negatives).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.plugins.io import CheckpointIO

from ..data.errors import EmptyStreamError, ResumeError
from ..hubfiles import MissingWeightsError
from .callbacks import Throughput, variant_checkpoints
from .checkpoint_io import AtomicCheckpointIO, CheckpointReadError, resumable_checkpoint, safe_torch_load
from .geography import GeographyMetrics
from .module import SatCLIPModule
from .preemption import Preemption

DEFAULT_DATA = "satclip.data.stream.SatCLIPDataModule"
LIGHTNING_CKPT_NAMES = ("last", "best", "hpc", "registry")
"""``--ckpt_path`` values Lightning resolves itself; anything else without ``://`` must be a file."""


class ConfigError(ValueError):
    """A ``--config`` file's ``base:`` that cannot be followed (a cycle, a missing file, not a name)."""


USER_ERRORS = (CheckpointReadError, ConfigError, ResumeError, EmptyStreamError, MissingWeightsError)
"""What ``satclip fit`` reports in one line (a bad checkpoint, config, resume or data; weights that
cannot be had); other errors keep their traceback."""


def check_resumable(path: str) -> None:
    """Raise the error ``--ckpt_path path`` deserves: :class:`UnsafeCheckpointError` for pickled code,
    :class:`CheckpointReadError` for an unreadable file or one that is not a Lightning training
    checkpoint. Memory-mapped, so only the pickle of a good checkpoint is read."""
    try:
        checkpoint = safe_torch_load(path, mmap=True)
    except CheckpointReadError:  # mmap needs the zip format: read a legacy or broken file plainly, which names what is wrong
        checkpoint = safe_torch_load(path)
    resumable_checkpoint(checkpoint, path)


def expand_config_bases(argv: list[str]) -> list[str]:
    """``--config FILE`` whose YAML has a top-level ``base: OTHER`` becomes ``--config OTHER --config
    <FILE's other keys>`` (``OTHER`` relative to ``FILE``, bases of bases followed; a cycle or a
    missing base is a :class:`ConfigError`).
    Other arguments pass through unchanged."""
    import yaml

    def expand(path: Path, seen: tuple[Path, ...]) -> list[str]:
        if path in seen:
            raise ConfigError(f"config {path}: its base chain returns to itself ({' -> '.join(map(str, (*seen, path)))})")
        try:
            content = yaml.safe_load(path.read_text())
        except yaml.YAMLError:  # jsonargparse reports it (and refuses Python tags) as for any config
            return ["--config", str(path)]
        if not isinstance(content, dict) or "base" not in content:
            return ["--config", str(path)]
        base = content.pop("base")
        if not isinstance(base, str):
            raise ConfigError(f"config {path}: base must be a file name, got {base!r}")
        parent = (path.parent / base).resolve()
        if not parent.is_file():
            raise ConfigError(f"config {path}: its base {base!r} is not a file ({parent})")
        return [*expand(parent, (*seen, path)), "--config", yaml.safe_dump(content, sort_keys=False)]

    out: list[str] = []
    args = iter(argv)
    for arg in args:
        value = next(args, None) if arg == "--config" else arg.partition("=")[2] if arg.startswith("--config=") else None
        if value is not None and Path(value).is_file():
            out += expand(Path(value).resolve(), ())
        elif value is not None:
            out += ["--config", value]
        else:
            out.append(arg)
    return out


def no_progress_flag(argv: list[str]) -> list[str]:
    """``--no-progress`` (the flag every satclip command shares) as Lightning's ``--trainer.enable_progress_bar false``."""
    return [item for arg in argv for item in (["--trainer.enable_progress_bar", "false"] if arg == "--no-progress" else [arg])]


class SatCLIPCLI(LightningCLI):
    """LightningCLI with the satclip trainer defaults (see the module docstring)."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--checkpoint.dirpath", type=str | None, default=None, help="checkpoint folder (default: <trainer.default_root_dir>/checkpoints)")
        parser.add_argument("--checkpoint.every_n_train_steps", type=int, default=1000, help="keep a checkpoint every N optimizer steps (0: none)")
        parser.add_argument("--checkpoint.monitor", type=str, default="val/loss", help="metric for the best checkpoint (lower is better)")
        parser.add_lightning_class_args(GeographyMetrics, "geography")
        parser.set_defaults({"data": {"class_path": DEFAULT_DATA}})

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        # ``satclip fit`` always hands over its own argv (sys.argv also holds the dispatcher's words)
        self.config = parser.parse_args(args)
        # LightningCLI then reads --ckpt_path's hyper-parameters (weights_only=True): check the file
        # first, with our messages (unsafe, unreadable, not a training checkpoint)
        ckpt_path = self.config.get(self.config.get("subcommand") or "", {}).get("ckpt_path")
        if ckpt_path and os.path.isfile(ckpt_path):
            check_resumable(ckpt_path)
        elif ckpt_path and ckpt_path not in LIGHTNING_CKPT_NAMES and "://" not in ckpt_path:
            raise CheckpointReadError(f"--ckpt_path {ckpt_path!r}: no such file (or one of {', '.join(LIGHTNING_CKPT_NAMES)})")

    def instantiate_trainer(self, **kwargs: Any) -> L.Trainer:
        """The Trainer with satclip's defaults added to the configured arguments (public hook)."""
        config = {**self.config_init[self.subcommand]["trainer"], **kwargs}
        model: SatCLIPModule = self.model
        model.set_trainer_flags(
            config.get("gradient_clip_val"), config.get("gradient_clip_algorithm"), accumulate_grad_batches=config.get("accumulate_grad_batches") or 1
        )
        kwargs.update(gradient_clip_val=None, gradient_clip_algorithm=None, accumulate_grad_batches=1)

        root = config.get("default_root_dir") or os.getcwd()
        settings = self.config[self.subcommand]["checkpoint"]
        callbacks = config.get("callbacks") or []
        user: list[L.Callback] = list(callbacks) if isinstance(callbacks, (list, tuple)) else [callbacks]
        extra: list[L.Callback] = [Throughput()]
        if config.get("enable_checkpointing", True) is not False and not any(isinstance(c, ModelCheckpoint) for c in user):
            dirpath = settings["dirpath"] or os.path.join(root, "checkpoints")
            extra += variant_checkpoints(model.variant, dirpath, every_n_train_steps=settings["every_n_train_steps"], monitor=settings["monitor"])
            extra.append(Preemption())
        kwargs["callbacks"] = user + extra

        if config.get("logger") in (None, True):
            kwargs["logger"] = [CSVLogger(root, name="csv"), TensorBoardLogger(root, name="tensorboard")]

        plugins = config.get("plugins")
        plugins = [] if plugins is None else list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            plugins.append(AtomicCheckpointIO())
        kwargs["plugins"] = plugins
        return super().instantiate_trainer(**kwargs)


def main(argv: list[str] | None = None) -> SatCLIPCLI:
    """``satclip fit ARGS``: parse ``ARGS`` as LightningCLI's ``fit`` subcommand and run it."""
    # the checkpoints hold the post-step state on purpose (what resuming needs)
    warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization")
    return SatCLIPCLI(
        SatCLIPModule,
        L.LightningDataModule,
        subclass_mode_data=True,
        args=["fit", *no_progress_flag(expand_config_bases(list(argv or [])))],
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"prog": "satclip", "description": "satclip fit: contrastive pretraining (LightningCLI)"},
        auto_configure_optimizers=False,
    )


__all__ = ["USER_ERRORS", "ConfigError", "SatCLIPCLI", "main"]
