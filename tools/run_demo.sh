#!/usr/bin/env bash
# The README's main job: set-up, then the small-scale benchmark (MoCo v3 with and without RePre on
# Fashion-MNIST; k-NN, linear and dense probes; paired intervals over 3 seeds). Results in
# work_dirs/small_scale/.
#   bash tools/run_demo.sh [small_scale.py args, e.g. --quick, --data PATH or --seeds 5]
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=$(bash "$REPO/tools/setup_env.sh" | tail -n 1)
cd "$REPO"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" PATH="$VENV/bin:$PATH"

# Fashion-MNIST only where it will be used: --data PATH brings its own images
uses_fashion_mnist=1
for arg in "$@"; do [[ $arg == --data || $arg == --data=* ]] && uses_fashion_mnist=0; done
if (( uses_fashion_mnist )) && \
   [[ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]] && \
   [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    echo "[demo] installing Debian's dataset-fashion-mnist (31 MB)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 \
        || echo "[demo] apt-get failed: using the Fashion-MNIST subset shipped in repre_mm/data"
fi
# baseline, RePre and the equal-compute baseline x 3 seeds (6 epochs on 2,000 images), two runs
# at a time. The longer study with every variant: python tools/benchmarks/repre_study.py
python tools/benchmarks/small_scale.py "$@"
