#!/usr/bin/env bash
# Builds the wheel folder tools/benchmarks/gpu_check.sh installs from (pip --no-index), on a
# machine with internet, for a GPU machine that has Python and a CUDA torch but no internet and
# no OpenMMLab package (this project is lent ones with Python 3.12 and torch 2.11):
#
#   bash tools/benchmarks/gpu_wheels.sh [DIR]     # default DIR: work_dirs/gpu_wheels
#
#   PY_VERSION=3.12                  the GPU machine's Python
#   TORCHVISION=torchvision==0.26.0  the release paired with its torch (2.11), used only where
#                                    that machine has no torchvision
#   PYTHON=...                       a Python here with torch and setuptools < 82 (default: the
#                                    repre-mm venv), to run mmcv's setup.py
#
# What goes in: binary wheels of mmengine, mmpretrain, setuptools < 82 and all their
# dependencies for that Python (pip download --python-version --only-binary=:all:), torchvision
# without dependencies, and mmcv 2.1.0 WITHOUT its compiled ops (MMCV_WITH_OPS=0, a pure-Python
# wheel named mmcv-lite: no binary mmcv exists for that torch, and pre-training needs no mmcv op;
# mmdet / mmseg would). No torch: the GPU machine's own is used. requirements.txt lists what
# gpu_check.sh installs.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
DIR=$(mkdir -p "${1:-$REPO/work_dirs/gpu_wheels}" && cd "${1:-$REPO/work_dirs/gpu_wheels}" && pwd)
PY_VERSION=${PY_VERSION:-3.12}
TORCHVISION=${TORCHVISION:-torchvision==0.26.0}
PYTHON=${PYTHON:-${REPRE_MM_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/repre-mm/venv}/bin/python}
MMCV_VERSION=2.1.0
log() { printf '[gpu_wheels %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# 1. mmcv without ops. From the sdist's path: built by name, pip would refuse a wheel whose
#    project name (mmcv-lite) differs from the one asked for.
if ! ls "$DIR"/mmcv_lite-$MMCV_VERSION-*.whl >/dev/null 2>&1; then
    src=$(mktemp -d)
    log "building mmcv-lite $MMCV_VERSION (MMCV_WITH_OPS=0)"
    "$PYTHON" -m pip download -q --no-deps --no-binary=:all: --no-build-isolation \
        "mmcv==$MMCV_VERSION" -d "$src"
    MMCV_WITH_OPS=0 "$PYTHON" -m pip wheel -q --no-deps --no-build-isolation \
        "$src"/mmcv-$MMCV_VERSION.tar.gz -w "$DIR"
    rm -rf "$src"
fi

# 2. everything else, as binaries for the GPU machine's Python
cat > "$DIR/requirements.txt" <<REQ
mmengine==0.10.7
mmpretrain==1.2.0
mmcv-lite==$MMCV_VERSION
setuptools>=65,<82
REQ
download=(-m pip download -q --python-version "$PY_VERSION" --implementation cp
          --only-binary=:all: --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64
          --platform manylinux2014_x86_64 --platform linux_x86_64 -d "$DIR")
log "downloading wheels for Python $PY_VERSION"
"$PYTHON" "${download[@]}" --find-links "$DIR" -r "$DIR/requirements.txt"
"$PYTHON" "${download[@]}" --no-deps "$TORCHVISION"
if ls "$DIR"/torch-*.whl >/dev/null 2>&1; then
    log "ERROR: a torch wheel was pulled in: $(ls "$DIR"/torch-*.whl)"; exit 1
fi
log "$(ls "$DIR"/*.whl | wc -l) wheels, $(du -sh "$DIR" | cut -f1) in $DIR"
echo "$DIR"
