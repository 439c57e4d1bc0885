"""Optional dependencies: which extra provides which module, and one error naming the extra to install.

``pip install satclip`` is the core (torch, numpy, safetensors, huggingface_hub, sphericart): enough
to load a checkpoint or an export and embed coordinates. Every other job has an extra; a job whose
extra is missing fails with ``MissingExtraError`` saying ``pip install "satclip[EXTRA]"``.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

# top-level module -> the extra that installs it (pyproject.toml's [project.optional-dependencies])
EXTRA_OF_MODULE: dict[str, str] = {
    "lightning": "train",
    "jsonargparse": "train",
    "webdataset": "train",
    "blosc": "train",
    "rasterio": "train",
    "tensorboard": "train",
    "torchvision": "train",
    "timm": "image",
    "pyarrow": "tables",
    "wandb": "wandb",
    "sklearn": "eval",
    "matplotlib": "eval",
    "pandas": "eval",
    "global_land_mask": "eval",
    "onnx": "onnx",
    "onnxruntime": "onnx",
    "zarr": "gis",
    "xarray": "gis",
    "geopandas": "gis",
    "aiohttp": "remote",
    "shapely": "gis",
}
_MENTIONED = re.compile(r"\b(" + "|".join(map(re.escape, EXTRA_OF_MODULE)) + r")\b")


class MissingExtraError(ModuleNotFoundError):
    """A module of an optional extra is not installed; the message names the extra."""


def missing_module(err: ImportError) -> str | None:
    """The optional module ``err`` is about: its ``name``, or (for libraries that raise their own
    ``ModuleNotFoundError`` without one, like Lightning's loggers) the first one its message names."""
    name = (err.name or "").split(".")[0]
    if name in EXTRA_OF_MODULE:
        return name
    found = None if err.name else _MENTIONED.search(str(err))
    return found.group(1) if found else None


def missing_extra_error(err: ImportError, job: str) -> MissingExtraError | None:
    """``MissingExtraError`` for ``err`` if an extra provides the missing module, else None."""
    module = missing_module(err)
    if module is None:
        return None
    extra = EXTRA_OF_MODULE[module]
    return MissingExtraError(f'{job} needs {module!r}, which the core install leaves out: pip install "satclip[{extra}]"', name=module)


@contextlib.contextmanager
def requires_extra(job: str) -> Iterator[None]:
    """Turn a ``ModuleNotFoundError`` for an optional module raised inside the block into ``MissingExtraError``."""
    try:
        yield
    except MissingExtraError:
        raise
    except ModuleNotFoundError as err:
        error = missing_extra_error(err, job)
        if error is None:
            raise
        raise error from err


__all__ = ["EXTRA_OF_MODULE", "MissingExtraError", "missing_module", "missing_extra_error", "requires_extra"]
