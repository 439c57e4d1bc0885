#!/usr/bin/env bash
# Launch `satclip fit` with torchrun: one process per device, on one node or several.
#
#   scripts/torchrun.sh --config configs/satclip-vit16-l40.yaml                      # one node, all its GPUs
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 scripts/torchrun.sh --config ...   # on the first node
#   NNODES=2 NODE_RANK=1 MASTER_ADDR=10.0.0.1 scripts/torchrun.sh --config ...   # on the second node
#
# Environment: NPROC (processes per node; default the number of GPUs, 1 without GPU), NNODES (1),
# NODE_RANK (0), MASTER_ADDR (127.0.0.1), MASTER_PORT (29500), SATCLIP (the command, default
# `satclip`). Every other argument goes to `satclip fit` (add `--ckpt_path last` to resume); the
# device and node counts come last, after any --config, so that they always match torchrun's.
set -euo pipefail
NNODES="${NNODES:-1}"
NODE_RANK="${NODE_RANK:-0}"
MASTER_ADDR="${MASTER_ADDR:-127.0.0.1}"
MASTER_PORT="${MASTER_PORT:-29500}"
NPROC="${NPROC:-$(python -c 'import torch; print(max(torch.cuda.device_count(), 1))')}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-4}"

exec torchrun \
    --nnodes "$NNODES" --node_rank "$NODE_RANK" --nproc_per_node "$NPROC" \
    --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" \
    --no-python "${SATCLIP:-satclip}" fit "$@" \
    --trainer.num_nodes "$NNODES" --trainer.devices "$NPROC"
