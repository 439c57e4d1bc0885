#!/usr/bin/env bash
# Throughput on a GPU machine without network access, in one log:
# - location embedding (PARTS has "location"): the released towers' shapes (L=10 and L=40, float64
#   and float32) on LOC_POINTS points (default 10M) in batches of LOC_BATCH (default 262144) already
#   on the GPU, harmonics with the torch engine: points/s, the GEMM bound there (the network's
#   matrix products alone), embed_array with host transfers, and the CUDA outputs checked against
#   the CPU ones (float64 <= 1e-10, float32 <= 1e-5; the script fails otherwise). COMPILE=1 adds a
#   torch.compile'd network;
# - pretraining (PARTS has "train"): samples/s per GPU for satclip-resnet18-l10,
#   satclip-resnet50-l40 and satclip-vit16-l40 in bf16, on synthetic batches already on the GPU and
#   on batches from shards (decoded by the loader's workers).
#
# Bring along (prepare on a machine with network, same OS, CPU architecture and Python version):
#   git clone <this repository> satclip && cd satclip
#   python3 -m pip download -d wheels -c constraints.txt ".[train]" pip setuptools wheel
#     (PyPI's Linux torch wheels carry their CUDA libraries; for another CUDA build add
#      `--index-url https://download.pytorch.org/whl/cu124 torch torchvision` in a second download)
#   tar czf satclip-gpu.tgz ../satclip        # repository + wheels/, copy it to the GPU machine
# There:
#   tar xzf satclip-gpu.tgz && cd satclip && WHEELS=wheels scripts/gpu_check.sh
#
# Environment: WHEELS (a wheel folder: install into .venv-gpu from it, offline; unset: use the
# python on PATH as it is), BATCH (rows per step per GPU, default 256), STEPS (timed steps, 20),
# WORKERS (loader processes, default 8), OUT (log file, default runs/gpu_check.log), DEVICE (cuda;
# `DEVICE=cpu BATCH=2 STEPS=1 WORKERS=1 LOC_POINTS=2000 LOC_BATCH=500 scripts/gpu_check.sh` smoke-tests
# this script without a GPU), PARTS (default "location train"; `PARTS=location` for the location
# part alone, a few minutes), LOC_POINTS, LOC_BATCH, COMPILE.
set -euo pipefail
cd "$(dirname "$0")/.."
BATCH="${BATCH:-256}"
STEPS="${STEPS:-20}"
WORKERS="${WORKERS:-8}"
OUT="${OUT:-runs/gpu_check.log}"
DEVICE="${DEVICE:-cuda}"
PARTS="${PARTS:-location train}"
LOC_POINTS="${LOC_POINTS:-10000000}"
LOC_BATCH="${LOC_BATCH:-262144}"
export HF_HUB_OFFLINE=1 WANDB_MODE=offline
mkdir -p "$(dirname "$OUT")"

if [ -n "${WHEELS:-}" ]; then
    if [ ! -x .venv-gpu/bin/python ]; then
        python3 -m venv .venv-gpu
        .venv-gpu/bin/python -m pip install -q --no-index --find-links "$WHEELS" --upgrade pip setuptools wheel
    fi
    .venv-gpu/bin/python -m pip install -q --no-index --find-links "$WHEELS" -c constraints.txt -e ".[train]"
    export PATH="$PWD/.venv-gpu/bin:$PATH"
fi

if [ "$DEVICE" = cuda ]; then python - <<'PY'
import sys, torch
if not torch.cuda.is_available():
    sys.exit(f"gpu_check: torch {torch.__version__} sees no CUDA device (CUDA build: {torch.version.cuda})")
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.device_count()} GPU(s): "
      + ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())))
if not torch.cuda.is_bf16_supported():
    sys.exit("gpu_check: this GPU has no bf16 support")
PY
fi

shards="runs/gpu_check/shards"
if [[ " $PARTS " == *" train "* ]] && [ ! -f "$shards/manifest.json" ]; then
    satclip shards data/sample --out "$shards" --payload s2c --samples-per-shard 4 --overwrite
fi
# bench_embed.py times the CPU path for --device cpu; any other device (cpu:0 in a smoke test) gets the device benchmark
loc_device="$DEVICE"
[ "$loc_device" = cpu ] && loc_device=cpu:0

{
    echo "# satclip gpu_check $(date -u +%FT%TZ) on $(hostname): parts: $PARTS"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
    if [[ " $PARTS " == *" location "* ]]; then
        echo "## location embedding: python scripts/bench_embed.py --device $loc_device --points $LOC_POINTS --batch-size $LOC_BATCH --degrees 10 40 ${COMPILE:+--compile}"
        # shellcheck disable=SC2086  # COMPILE adds one flag or none
        python scripts/bench_embed.py --device "$loc_device" --points "$LOC_POINTS" --batch-size "$LOC_BATCH" --degrees 10 40 ${COMPILE:+--compile}
    fi
    if [[ " $PARTS " == *" train "* ]]; then
        echo "## pretraining: batch $BATCH per GPU, bf16, $STEPS steps"
        python scripts/bench_train.py --device "$DEVICE" --precision bf16 --batch "$BATCH" --steps "$STEPS" \
            --variants satclip-resnet18-l10 satclip-resnet50-l40 satclip-vit16-l40 \
            --shards "$shards" --num-workers "$WORKERS"
    fi
} 2>&1 | tee "$OUT"
echo "table written to $OUT"
