"""The streaming loader: WebDataset shards of Sentinel-2 patches -> batches of (image, lonlat).

The public entry point; each layer lives in its own module, bottom to top:

- :mod:`.shardlist`: :func:`expand_urls` turns a directory (its ``manifest.json``), a brace
  pattern (``shard-{000000..000099}.tar``), a list, ``http(s)://`` or ``pipe:`` URLs into a shard
  list; :func:`read_manifest` gives sample counts and band order.
- :mod:`.tarstream`: :func:`iter_tar` / :func:`iter_shard` read one shard and group its members
  into samples, naming a truncated or garbage tar exactly.
- :mod:`.samples`: :class:`SampleDecoder` decodes the payload, checks bands, size and
  coordinates and crops. Anything wrong is skipped and counted by kind (:mod:`.errors`).
- :mod:`.pipeline`: :class:`ShardStream` (an ``IterableDataset``, built by
  :func:`build_pipeline`) runs in each DataLoader worker: shard selection, shuffle buffer,
  batching, augmentation; keeps ranks in step.
- :mod:`.loader`: :class:`StreamLoader` wraps the DataLoader: sums the workers' skip counts into
  every batch, forwards Lightning's ``set_epoch`` to the workers, fails loudly when nothing arrives;
  its workers write batches into reused shared-memory buffers (:mod:`.sharedring`).
- :mod:`.datamodule`: :class:`SatCLIPDataModule` wires it for LightningCLI; :func:`skip_metrics`.
"""

from __future__ import annotations

from .datamodule import SatCLIPDataModule, skip_metrics
from .errors import EmptyStreamError
from .loader import StreamLoader
from .pipeline import ShardStream, build_pipeline
from .samples import SampleDecoder
from .shardlist import expand_urls, read_manifest
from .tarstream import ShardError, iter_shard, iter_tar
from .transforms import finish_batch

__all__ = [
    "EmptyStreamError",
    "SampleDecoder",
    "SatCLIPDataModule",
    "ShardError",
    "ShardStream",
    "StreamLoader",
    "build_pipeline",
    "expand_urls",
    "finish_batch",
    "iter_shard",
    "iter_tar",
    "read_manifest",
    "skip_metrics",
]
