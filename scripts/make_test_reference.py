"""Write data/reference: a 6.6 MB subset of ../shared/reference that the tests fall back on without ../shared.

- ``satclip-resnet18-l10.ckpt``: ../shared's released-format checkpoint without its image tower
  (``model.visual.*``) and optimizer state; every other key, the hyper-parameters and the location
  tower (``model.location.nnet.*`` and its duplicate ``model.nnet.*``, one storage as in the original)
  are kept as they are;
- ``coords.npy``, ``loc_emb_satclip-resnet18-l10.npy``, ``sh_analytic_L10.npy``: rows ``ROWS`` of the
  originals (the first 90 random points and the 10 special ones: poles, antimeridian, cities);
- ``sh_exact_L40_first500.npy``, ``sh_analytic_L40_first500.npy``: their first ``L40_ROWS`` rows,
  the L = 40 values at the bundle's first ``L40_ROWS`` coordinates (four of them beyond 60 degrees);
- ``visual_trained.safetensors``: the image tower's tensors that differ from timm's seed-0
  initialisation (batch-norm statistics, the ``fc`` head; :mod:`satclip.testing.reference`);
- ``img_input_224_dn.npz``: ``img_input_224.npy`` as its uint16 digital numbers (12 bands), and
  ``img_emb_satclip-resnet18-l10.npy`` as it is;
- ``sources.json``: the rows taken, the sha256 of each source file (the tuned hyper-parameters
  table too: the package ships a copy, ``satclip/eval/tuned_hparams.csv``) and the digest of the
  whole image tower.

    python scripts/make_test_reference.py [--shared ../shared] [--out data/reference]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from satclip.testing.reference import VISUAL, digital_numbers, model_input, rebuild_visual, state_digest, trained_part

ROOT = Path(__file__).resolve().parents[1]
CKPT = "satclip-resnet18-l10.ckpt"
ROWS = [*range(90), *range(1990, 2000)]
L40_ROWS = 32
BY_ROW = ("coords.npy", "loc_emb_satclip-resnet18-l10.npy", "sh_analytic_L10.npy")
L40 = ("sh_exact_L40_first500.npy", "sh_analytic_L40_first500.npy")
TUNED = "data/locencoder-tuned-hparams.csv"
IMAGE = ("img_input_224.npy", "img_emb_satclip-resnet18-l10.npy")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def location_checkpoint(source: Path) -> dict:
    """The checkpoint at ``source`` less its image tower and optimizer state (the location tower keeps its shared storages)."""
    ckpt = torch.load(source, map_location="cpu", weights_only=True)
    ckpt["state_dict"] = {k: v for k, v in ckpt["state_dict"].items() if not k.startswith("model.visual.")}
    ckpt["optimizer_states"] = []
    return ckpt


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    """``numpy.savez_compressed`` with fixed member dates, so that a rebuild is byte-identical."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.save(buffer, array)
            archive.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)), buffer.getvalue(), compress_type=zipfile.ZIP_DEFLATED)


def write_image_tower(reference: Path, out: Path) -> str:
    """The image tower's trained tensors and the image input and output; returns the tower's digest."""
    state = torch.load(reference / CKPT, map_location="cpu", weights_only=True)["state_dict"]
    visual = {k[len(VISUAL) :]: v for k, v in state.items() if k.startswith(VISUAL)}
    digest = state_digest(visual)
    trained = trained_part(visual)
    assert state_digest(rebuild_visual(trained, digest)) == digest
    save_file(trained, str(out / "visual_trained.safetensors"))
    image = np.load(reference / IMAGE[0])
    dn = digital_numbers(image)
    assert np.array_equal(model_input(dn), image), "the image input is not DN / 10000 with a zero B10"
    save_npz(out / "img_input_224_dn.npz", dn=dn)
    np.save(out / IMAGE[1], np.load(reference / IMAGE[1]))
    return digest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "reference")
    args = parser.parse_args()
    reference = args.shared / "reference"
    args.out.mkdir(parents=True, exist_ok=True)
    for name in BY_ROW:
        np.save(args.out / name, np.load(reference / name)[ROWS])
    assert ROWS[:L40_ROWS] == list(range(L40_ROWS)), "the L = 40 rows are the first of ../shared's too"
    for name in L40:
        np.save(args.out / name, np.load(reference / name)[:L40_ROWS])
    torch.save(location_checkpoint(reference / CKPT), args.out / CKPT)
    visual = write_image_tower(reference, args.out)
    sources = {f"reference/{name}": sha256(reference / name) for name in (*BY_ROW, *L40, CKPT, *IMAGE)}
    sources[TUNED] = sha256(args.shared / TUNED)
    manifest = {"rows": ROWS, "l40_rows": L40_ROWS, "sha256": sources, "visual_digest": visual}
    (args.out / "sources.json").write_text(json.dumps(manifest, indent=1) + "\n")
    total = sum(p.stat().st_size for p in args.out.iterdir())
    print(f"wrote {args.out} ({total / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
