#!/usr/bin/env bash
# The README's main job: set-up, Fashion-MNIST in CustomDataset layout, then a small-scale RePre
# pre-training with k-NN evaluation.
#   bash tools/run_demo.sh [extra args]
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=$(bash "$REPO/tools/setup_env.sh" | tail -n 1)
cd "$REPO"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" PATH="$VENV/bin:$PATH"

if [[ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]] && \
   [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    echo "[demo] installing Debian's dataset-fashion-mnist (31 MB)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 \
        || echo "[demo] apt-get failed: using the Fashion-MNIST subset shipped in repre_mm/data"
fi
python tools/dataset_converters/prepare_fashion_mnist.py --out data/fashion_mnist \
    --train-per-class 1000 --test-per-class 200
python tools/train.py configs/repre/repre_mocov3_vit-tiny-p4_1xb128-coslr-20e_fashion-mnist.py \
    --work-dir work_dirs/demo_repre --cfg-options train_cfg.max_epochs=5 "$@"
