"""The released SatCLIP checkpoints by name (``satclip.load("satclip-vit16-l40")``), like torchgeo's weights enums.

``satclip list`` prints the table. A revision or sha256 is given only where it is known (torchgeo
pins ``microsoft/SatCLIP-ViT16-L40``); unset ones follow the repository's ``main`` and are not verified.
"""

from __future__ import annotations

import argparse
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


def _release(vision: str, legendre_polys: int, revision: str | None = None) -> PretrainedWeights:
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
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join([*lines, "", f"licence: MIT (all six); cite: {CITATION}"])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the registry as JSON lines")


def run(args: argparse.Namespace) -> int:
    if args.json:
        import json

        for w in PRETRAINED.values():
            print(json.dumps({**asdict(w), "hub_id": w.hub_id}))
    else:
        print(table())
    return 0


__all__ = ["PRETRAINED", "PretrainedWeights", "get_pretrained", "list_pretrained", "table"]
