"""The ``satclip`` command: one subcommand per user job, each implemented in its own module.

A subcommand module provides ``add_arguments(parser)`` and ``run(args)``; ``fit`` hands its
arguments to LightningCLI through ``main(argv)``. Modules are imported only when their subcommand
runs, so ``satclip --help`` is quick, and a subcommand whose optional extra is not installed says
which one to install (``pip install "satclip[train]"``). A bad input (``ValueError``, a missing file;
for ``fit`` the errors in ``satclip.train.cli.USER_ERRORS``: an unusable ``--ckpt_path``, config or
resume, weights that are neither local, cached nor fetchable) ends a command with a one-line
``satclip <command>: ...`` error, status 1. Ctrl-C ends a command with ``satclip <command>:
interrupted (Ctrl-C)``, status 130, and SIGTERM, which every command but ``fit`` (Lightning saves a
checkpoint on it) turns into the same exception, with ``(SIGTERM)`` and status 143: either way
clean-up code runs first (``embed-grid``'s staging files are removed; ``shards`` stops its workers
and keeps its ``.OUT.partial`` folder, which the same command resumes); no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading

from .extras import MissingExtraError, requires_extra

# name -> (module, one-line description)
COMMANDS: dict[str, tuple[str, str]] = {
    "list": ("satclip.pretrained", "the released checkpoints (names for satclip.load / --checkpoint)"),
    "fit": ("satclip.train.cli", "contrastive pretraining (LightningCLI: satclip fit --config configs/demo.yaml)"),
    "shards": ("satclip.data.shards", "write WebDataset shards from Sentinel-2 GeoTIFF folders or S2-100K tars"),
    "combine-shards": ("satclip.data.combine", "combine the parts written by `satclip shards --part I/N` into one shard set"),
    "embed": ("satclip.io.embed", "embed coordinates from a CSV/Parquet/NPY file with a location tower"),
    "embed-grid": ("satclip.io.embed_grid", "embed a lon/lat grid into a Cloud-Optimised GeoTIFF or a Zarr store"),
    "embed-images": ("satclip.io.embed_images", "embed Sentinel-2 patches (shards or a GeoTIFF folder) with a checkpoint's image tower"),
    "export": ("satclip.io.export", "export a checkpoint's location tower (safetensors + config.json, ONNX, TorchScript)"),
    "locfit": ("satclip.eval.locfit", "fit a location encoder to a table of (lon, lat, target)"),
    "locbench": ("satclip.eval.locbench", "reproduce the Siren(SH) land-ocean / checkerboard tables"),
    "locate": ("satclip.eval.geolocate", "geolocate Sentinel-2 patches: rank a location gallery by similarity, top-k, errors in km"),
    "probe": ("satclip.eval.probe", "probe pretrained location embeddings on a downstream table"),
    "bench": ("satclip.eval.harness", "compare location encoders on tasks x protocols x label budgets x probes (a YAML suite)"),
    "plot-embeddings": ("satclip.eval.plots", "map the first three principal components of location embeddings"),
}


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C so that ``finally`` blocks and clean-up run."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated(signal.Signals(signum).name)


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: satclip <command> [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {desc}" for name, (_, desc) in COMMANDS.items()]
    lines += ["", "Run 'satclip <command> --help' for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``satclip`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from . import __version__

        print(__version__)
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"satclip: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    handle_term = name != "fit" and threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if handle_term else None
    try:
        with requires_extra(f"satclip {name}"):
            return _run(name, rest)
    except MissingExtraError as err:
        print(f"satclip {name}: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as err:
        terminated = isinstance(err, Terminated)
        print(f"satclip {name}: interrupted ({'SIGTERM' if terminated else 'Ctrl-C'})", file=sys.stderr)
        return 143 if terminated else 130
    finally:
        if handle_term:
            signal.signal(signal.SIGTERM, previous)


def _run(name: str, rest: list[str]) -> int:
    module = importlib.import_module(COMMANDS[name][0])
    errors = module.USER_ERRORS if name == "fit" else (ValueError, FileNotFoundError)
    try:
        if name == "fit":
            module.main(rest)
            return 0
        parser = argparse.ArgumentParser(prog=f"satclip {name}", description=COMMANDS[name][1])
        module.add_arguments(parser)
        return int(module.run(parser.parse_args(rest)) or 0)
    except errors as err:
        raise SystemExit(f"satclip {name}: {err}") from None


if __name__ == "__main__":
    sys.exit(main())
