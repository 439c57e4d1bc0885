"""Every weight file the project uses, by name, like torchgeo's weights enums: the registry.

- ``PRETRAINED``: the six released SatCLIP checkpoints (``satclip.load("satclip-vit16-l40")``). A
  revision or sha256 is given only where it is known (torchgeo pins ``microsoft/SatCLIP-ViT16-L40``);
  unset ones follow the repository's ``main`` and are not verified.
- ``BACKBONES``: the image-backbone initialisations the released recipe starts from, torchgeo's
  SSL4EO-S12 MoCo weights (``ResNet18_Weights.SENTINEL2_ALL_MOCO`` and kin) at torchgeo's pinned
  revisions, each checked against the sha256 prefix in its file name (torch.hub's convention).
  ``model.vision_weights: resnet18_sentinel2_all_moco`` in a config resolves through the Hub cache.

``satclip list`` prints both tables.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import asdict, dataclass

CITATION = (
    "Klemmer, K., Rolf, E., Robinson, C., Mackey, L., Russwurm, M. SatCLIP: Global, General-Purpose "
    "Location Embeddings with Satellite Imagery. arXiv:2311.17179 (2023)"
)
VISION = {"resnet18": "ResNet18", "resnet50": "ResNet50", "vit_small_patch16_224": "ViT16"}


@dataclass(frozen=True)
class PretrainedWeights:
    """One released checkpoint: where it lives on the Hub and what it holds."""

    name: str
    repo_id: str
    filename: str
    vision: str  # timm name of the image tower
    legendre_polys: int
    revision: str | None = None  # a pinned commit, where known
    sha256: str | None = None  # of the file, where known (verified after download)
    embed_dim: int = 256
    in_chans: int = 13  # Sentinel-2 L1C bands, B10 included
    image_size: int = 224
    location_tower: str = "sphericalharmonics + siren (512 x 2 hidden layers), float64"
    vision_init: str = "SSL4EO-S12 MoCo (frozen but for the head)"
    license: str = "MIT"
    citation: str = CITATION

    @property
    def hub_id(self) -> str:
        """The explicit form, ``hf-hub:owner/repo/file``."""
        return f"hf-hub:{self.repo_id}/{self.filename}"


def _release(vision: str, legendre_polys: int, *, revision: str | None = None) -> PretrainedWeights:
    name = f"satclip-{VISION[vision].lower()}-l{legendre_polys}"
    return PretrainedWeights(name, f"microsoft/SatCLIP-{VISION[vision]}-L{legendre_polys}", name + ".ckpt", vision, legendre_polys, revision)


PRETRAINED: dict[str, PretrainedWeights] = {
    w.name: w
    for w in (
        _release("resnet18", 10),
        _release("resnet18", 40),
        _release("resnet50", 10),
        _release("resnet50", 40),
        _release("vit_small_patch16_224", 10),
        _release("vit_small_patch16_224", 40, revision="0ef2acc0b91d3c8cfdf4a0cc03207095989287ab"),  # torchgeo's pin
    )
}
_BY_REPO = {w.repo_id.lower(): w for w in PRETRAINED.values()}


@dataclass(frozen=True)
class BackboneWeights:
    """One image-backbone initialisation: its Hub file, the timm model it fits and its preprocessing."""

    name: str
    vision: str  # timm name
    repo_id: str
    filename: str
    revision: str  # the publisher's pinned commit
    sha256: str  # the prefix in the file name (torch.hub's convention), checked after download
    in_chans: int = 13
    bands: str = "Sentinel-2 L1C B01 B02 B03 B04 B05 B06 B07 B08 B8A B09 B10 B11 B12"
    preprocessing: str = "DN / 10000; 224 x 224 (torchgeo: resize to 256, centre crop 224)"
    dataset: str = "SSL4EO-S12"
    method: str = "MoCo"
    publication: str = "https://arxiv.org/abs/2211.07044"
    source: str = "torchgeo"

    @property
    def hub_id(self) -> str:
        """The explicit form, ``hf-hub:owner/repo/file``."""
        return f"hf-hub:{self.repo_id}/{self.filename}"


def _ssl4eo(vision: str, file_hash: str, *, revision: str) -> BackboneWeights:
    name = f"{vision}_sentinel2_all_moco"
    return BackboneWeights(name, vision, f"torchgeo/{name}", f"{name}-{file_hash}.pth", revision, file_hash)


BACKBONES: dict[str, BackboneWeights] = {
    w.name: w
    for w in (
        _ssl4eo("resnet18", "59bfdff9", revision="5b8cddc9a14f3844350b7f40b85bcd32aed75918"),
        _ssl4eo("resnet50", "df8b932e", revision="da4f3c9dbe09272eb902f3b37f46635fa4726879"),
        _ssl4eo("vit_small_patch16_224", "67c9032d", revision="1cb683f6c14739634cdfaaceb076529adf898c74"),
    )
}


def get_backbone(name: str) -> BackboneWeights | None:
    """The registry entry of an image-backbone initialisation (``resnet18_sentinel2_all_moco``), if any."""
    return BACKBONES.get(name.lower())


def list_pretrained() -> list[PretrainedWeights]:
    """The released checkpoints, in order (``[w.name for w in satclip.list_pretrained()]`` for the names)."""
    return list(PRETRAINED.values())


def get_pretrained(name: str) -> PretrainedWeights | None:
    """The registry entry for a name (``satclip-resnet18-l10``) or a Hub repository id, if any."""
    return PRETRAINED.get(name.lower()) or _BY_REPO.get(name.lower())


def table() -> str:
    """The registry as a plain-text table."""
    rows = [("name", "hub id", "image tower", "L", "dim", "revision", "sha256")]
    rows += [
        (w.name, w.hub_id, w.vision, str(w.legendre_polys), str(w.embed_dim), (w.revision or "main")[:12], (w.sha256 or "-")[:12]) for w in PRETRAINED.values()
    ]
    backbones = [("image backbone (model.vision_weights)", "hub id", "timm model", "revision", "sha256")]
    backbones += [(w.name, w.hub_id, w.vision, w.revision[:12], w.sha256) for w in BACKBONES.values()]
    return "\n".join(
        [
            *_columns(rows),
            "",
            f"licence: MIT (all six); cite: {CITATION}",
            "",
            *_columns(backbones),
            "",
            "SSL4EO-S12 MoCo weights as torchgeo publishes them (Wang et al. 2022, arXiv:2211.07044); input: 13 bands, DN / 10000",
        ]
    )


def _columns(rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the registry as JSON lines")


def run(args: argparse.Namespace) -> int:
    if args.json:
        import json

        entries: list[PretrainedWeights | BackboneWeights] = [*PRETRAINED.values(), *BACKBONES.values()]
        for entry in entries:
            kind = "checkpoint" if isinstance(entry, PretrainedWeights) else "backbone"
            print(json.dumps({**asdict(entry), "hub_id": entry.hub_id, "kind": kind}))
    else:
        print(table())
    return 0


__all__ = ["BACKBONES", "PRETRAINED", "BackboneWeights", "PretrainedWeights", "get_backbone", "get_pretrained", "list_pretrained", "table"]
