#!/usr/bin/env bash
# The main job on the bundled sample: shards from data/sample, a short CPU pretraining of the
# ResNet18-L10 architecture (configs/demo.yaml, about 1-2 minutes on 2 cores), and the checkpoint path.
# Extra arguments go to `satclip fit` (e.g. scripts/demo.sh --trainer.max_steps 10).
set -euo pipefail
source "$(dirname "$0")/_venv.sh"
OUT=runs/demo
satclip shards data/sample --out "$OUT/shards" --payload s2c --samples-per-shard 4 --overwrite
satclip fit --config configs/demo.yaml "$@"
last="$OUT/checkpoints/satclip-resnet18-l10-demo-last.ckpt"
if [ ! -f "$last" ]; then
    echo "[satclip] no checkpoint at $last" >&2
    exit 1
fi
echo
echo "[satclip] checkpoints in $OUT/checkpoints:"
ls -1 "$OUT/checkpoints"
echo "[satclip] last checkpoint: $last"
echo "[satclip] resume an interrupted run: satclip fit --config configs/demo.yaml --ckpt_path last"
echo "[satclip] load:   python -c \"import satclip; print(satclip.load('$last'))\""
