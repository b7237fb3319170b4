#!/usr/bin/env bash
# Pre-training checkpoint -> backbone export -> downstream training -> test, for one task.
# Usage: tools/benchmarks/transfer.sh TASK PRETRAIN GPUS [train.py args...]
# TASK: coco-mask-rcnn-{vit-s,vit-b}[-3x] | ade20k-upernet-{vit-s,vit-b} | cityscapes-upernet-{vit-s,vit-b}
# CONFIG=path/to/config.py overrides the task's config (TASK then only names the work directory).
set -euo pipefail
TASK=$1
PRETRAIN=$2
GPUS=$3
REPO=$(cd "$(dirname "$0")/../.." && pwd)
size() { [[ $1 == *vit-b* ]] && echo base || echo small; }
case "${CONFIG:+custom}${CONFIG:-$TASK}" in
    custom*) CONFIG=$(cd "$(dirname "$CONFIG")" && pwd)/$(basename "$CONFIG") ;;
    coco-mask-rcnn-*-3x) CONFIG=configs/downstream/mmdet/mask-rcnn_vit-$(size "$TASK")-p16-sfp_8xb2-ms-3x_coco.py ;;
    coco-mask-rcnn-*) CONFIG=configs/downstream/mmdet/mask-rcnn_vit-$(size "$TASK")-p16-sfp_8xb2-1x_coco.py ;;
    ade20k-upernet-*) CONFIG=configs/downstream/mmseg/upernet_vit-$(size "$TASK")-p16_8xb2-160k_ade20k-512x512.py ;;
    cityscapes-upernet-*) CONFIG=configs/downstream/mmseg/upernet_vit-$(size "$TASK")-p16_8xb2-80k_cityscapes-512x1024.py ;;
    *) echo "unknown task '$TASK': see the usage line in $0" >&2; exit 2 ;;
esac
WORK_DIR=${WORK_DIR:-work_dirs/transfer/${TASK}_$(basename "${PRETRAIN%.pth}")}
mkdir -p "$WORK_DIR"
# 1. the encoder alone (refuses a checkpoint whose backbone keys do not all map)
${PYTHON:-python} "$REPO/tools/model_converters/vit_layouts.py" "$PRETRAIN" "$WORK_DIR/backbone.pth" --to mmpretrain
# 2. train, the backbone loaded strictly from the export
[[ $CONFIG == /* ]] || CONFIG=$REPO/$CONFIG
bash "$REPO/tools/dist_train.sh" "$CONFIG" "$GPUS" --work-dir "$WORK_DIR" \
    --cfg-options model.backbone.init_cfg.checkpoint="$WORK_DIR/backbone.pth" "${@:4}"
# 3. test the last checkpoint
bash "$REPO/tools/dist_test.sh" "$CONFIG" "$(cat "$WORK_DIR/last_checkpoint")" "$GPUS" \
    --work-dir "$WORK_DIR/test"
