#!/usr/bin/env bash
# Pre-training checkpoint -> backbone export -> downstream training -> test, for one task.
# Usage: tools/benchmarks/transfer.sh TASK PRETRAIN GPUS [train.py args...]
# TASK: coco-mask-rcnn-{vit-s,vit-b}[-3x] | ade20k-upernet-{vit-s,vit-b} |
#       cityscapes-upernet-{vit-s,vit-b} | camvid-upernet-vit-s
#       | coco-custom-mask-rcnn-vit-s (a COCO-format custom dataset: edit the config's data lines)
# PRETRAIN: a pre-training checkpoint, or 'none' to train the same config from the backbone's
#   initial weights (tools/model_converters/initial_backbone.py: same module, same trainable
#   parameters; only the weights differ).
# GPUS: processes; 1 (or 0 on a machine without GPU) runs tools/train.py / test.py directly,
#   more run through tools/dist_train.sh / dist_test.sh (torchrun).
# CONFIG=path/to/config.py overrides the task's config (TASK then only names the work directory).
# WORK_DIR=dir overrides the work directory; TEST_ARGS="..." are passed to tools/test.py
# (e.g. TEST_ARGS="--out metrics.json --out-item metrics").
set -euo pipefail
TASK=$1
PRETRAIN=$2
GPUS=$3
REPO=$(cd "$(dirname "$0")/../.." && pwd)
PYTHON=${PYTHON:-python}
size() { [[ $1 == *vit-b* ]] && echo base || echo small; }
case "${CONFIG:+custom}${CONFIG:-$TASK}" in
    custom*) CONFIG=$(cd "$(dirname "$CONFIG")" && pwd)/$(basename "$CONFIG") ;;
    coco-custom-mask-rcnn-vit-s) CONFIG=configs/downstream/mmdet/mask-rcnn_vit-small-p16-sfp_8xb2-1x_coco-custom.py ;;
    coco-mask-rcnn-*-3x) CONFIG=configs/downstream/mmdet/mask-rcnn_vit-$(size "$TASK")-p16-sfp_8xb2-ms-3x_coco.py ;;
    coco-mask-rcnn-*) CONFIG=configs/downstream/mmdet/mask-rcnn_vit-$(size "$TASK")-p16-sfp_8xb2-1x_coco.py ;;
    ade20k-upernet-*) CONFIG=configs/downstream/mmseg/upernet_vit-$(size "$TASK")-p16_8xb2-160k_ade20k-512x512.py ;;
    cityscapes-upernet-*) CONFIG=configs/downstream/mmseg/upernet_vit-$(size "$TASK")-p16_8xb2-80k_cityscapes-512x1024.py ;;
    camvid-upernet-vit-s) CONFIG=configs/downstream/mmseg/upernet_vit-small-p16_8xb2-10k_camvid-360x480.py ;;
    *) echo "unknown task '$TASK': see the usage line in $0" >&2; exit 2 ;;
esac
WORK_DIR=${WORK_DIR:-work_dirs/transfer/${TASK}_$(basename "${PRETRAIN%.pth}")}
mkdir -p "$WORK_DIR"
[[ $CONFIG == /* ]] || CONFIG=$REPO/$CONFIG
if [[ $PRETRAIN == none ]]; then
    # 1. from scratch, the reference: the backbone at its architecture's initial weights (the
    # config's seed), loaded like an export below, so that it is the same module with the same
    # trainable parameters as a pre-trained run (built without a checkpoint, MoCoV3ViT freezes
    # its pos_embed)
    "$PYTHON" "$REPO/tools/model_converters/initial_backbone.py" "$CONFIG" "$WORK_DIR/backbone.pth"
else
    # 1. the encoder alone (refuses a checkpoint whose backbone keys do not all map)
    "$PYTHON" "$REPO/tools/model_converters/vit_layouts.py" "$PRETRAIN" "$WORK_DIR/backbone.pth" --to mmpretrain
fi
init=(--cfg-options model.backbone.init_cfg.checkpoint="$WORK_DIR/backbone.pth")
# 2. train, the backbone loaded strictly from the export; 3. test the last checkpoint
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
if (( GPUS <= 1 )); then
    "$PYTHON" "$REPO/tools/train.py" "$CONFIG" --work-dir "$WORK_DIR" "${init[@]}" "${@:4}"
    # shellcheck disable=SC2086
    "$PYTHON" "$REPO/tools/test.py" "$CONFIG" "$(cat "$WORK_DIR/last_checkpoint")" \
        --work-dir "$WORK_DIR/test" ${TEST_ARGS:-}
else
    bash "$REPO/tools/dist_train.sh" "$CONFIG" "$GPUS" --work-dir "$WORK_DIR" "${init[@]}" "${@:4}"
    # shellcheck disable=SC2086
    bash "$REPO/tools/dist_test.sh" "$CONFIG" "$(cat "$WORK_DIR/last_checkpoint")" "$GPUS" \
        --work-dir "$WORK_DIR/test" ${TEST_ARGS:-}
fi
