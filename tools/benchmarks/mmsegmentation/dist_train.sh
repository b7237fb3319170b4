#!/usr/bin/env bash
# Fine-tune a pre-trained encoder on ADE20K or Cityscapes with an mmseg config of configs/downstream/mmseg.
# Usage: tools/benchmarks/mmsegmentation/dist_train.sh CONFIG PRETRAIN GPUS [train.py args...]
# PRETRAIN: a RePre / baseline pre-training checkpoint (its backbone.* keys load, strictly).
set -euo pipefail
CONFIG=$1
PRETRAIN=$2
GPUS=$3
REPO=$(cd "$(dirname "$0")/../../.." && pwd)
WORK_DIR=${WORK_DIR:-work_dirs/mmseg/$(basename "${CONFIG%.py}")_$(basename "${PRETRAIN%.pth}")}
bash "$REPO/tools/dist_train.sh" "$CONFIG" "$GPUS" --work-dir "$WORK_DIR" \
    --cfg-options model.backbone.init_cfg.checkpoint="$PRETRAIN" "${@:4}"
