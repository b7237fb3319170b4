#!/usr/bin/env bash
# Creates (or reuses) the Python environment repre-mm runs in, on a machine with no GPU stack.
#
#   bash tools/setup_env.sh          # prints the venv path on its last line
#
# What it installs and why (measured facts: ../shared/notes/stack-install.md):
#   * torch 2.13.0 CPU wheel. A venv that already has a torch keeps it.
#   * setuptools < 82: mmcv's setup.py and mmengine's `mmpretrain::` config scopes import
#     pkg_resources, which setuptools 82 removed.
#   * mmcv 2.1.0 WITH compiled ops, built from source once (6-7 min on 2 idle cores) and cached as a
#     wheel in $REPRE_MM_CACHE/wheels/<python>-torch<version>/, so later set-ups take minutes.
#   * mmengine, mmpretrain, mmdet, mmsegmentation and what they import without declaring it.
#   * torchvision 0.28.0 (mmpretrain imports it). PyPI only has a CUDA build; beside a CPU torch it
#     imports only through the shim in repre_mm/compat.py. timm (converter tests), --no-deps too.
# A completed set-up leaves a stamp keyed by the requirement files: a second run does nothing.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${REPRE_MM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/repre-mm}
VENV=${REPRE_MM_VENV:-$CACHE/venv}
PYTHON_BIN=${PYTHON:-python3.11}
TORCH_SPEC=${REPRE_MM_TORCH:-torch==2.13.0}
TORCHVISION_SPEC=${REPRE_MM_TORCHVISION:-torchvision==0.28.0}
TIMM_SPEC=timm==1.0.31
MMCV_VERSION=2.1.0

log() { printf '[setup_env %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

stamp_key=$(cat "$REPO"/requirements/*.txt "$REPO/tools/setup_env.sh" | sha256sum | cut -c1-16)
stamp="$VENV/.repre-mm-setup-$stamp_key"
if [[ -f "$stamp" ]]; then
    log "environment up to date: $VENV"
    echo "$VENV"
    exit 0
fi

mkdir -p "$CACHE"
if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating venv $VENV"
    "$PYTHON_BIN" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check --no-input)

t0=$(date +%s)
if ! "$PY" -c 'import torch' 2>/dev/null; then
    log "installing $TORCH_SPEC"
    "${PIP[@]}" install -q "$TORCH_SPEC"
fi
"${PIP[@]}" install -q 'setuptools>=65,<82' wheel
torch_version=$("$PY" -c 'import torch; print(torch.__version__)')
py_tag=$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
log "torch $torch_version ($py_tag)"

# --- mmcv with compiled ops ------------------------------------------------------------------
if ! "$PY" -c "import mmcv, mmcv.ops; assert mmcv.__version__ == '$MMCV_VERSION'" 2>/dev/null; then
    wheel_dir="$CACHE/wheels/$py_tag-torch$torch_version"
    mkdir -p "$wheel_dir"
    wheel=$(ls "$wheel_dir"/mmcv-$MMCV_VERSION-*.whl 2>/dev/null | head -n 1 || true)
    if [[ -z "$wheel" ]]; then
        log "building mmcv $MMCV_VERSION with ops (once per python/torch; ~6-7 min on 2 idle cores)"
        build_dir=$(mktemp -d)
        # -g0 keeps the .so at a few MB and halves compile time; CFLAGS replaces Python's own
        # flags, so the optimisation flags must be repeated here.
        MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} \
            CFLAGS='-Wsign-compare -DNDEBUG -g0 -fwrapv -O3 -Wall' \
            "${PIP[@]}" wheel -q --no-deps --no-build-isolation --no-cache-dir \
            "mmcv==$MMCV_VERSION" -w "$build_dir" >"$CACHE/mmcv-build.log" 2>&1 || true
        wheel_built=$(ls "$build_dir"/mmcv-$MMCV_VERSION-*.whl 2>/dev/null | head -n 1 || true)
        if [[ -z "$wheel_built" ]]; then
            tail -n 40 "$CACHE/mmcv-build.log" >&2
            log "mmcv build failed; full log: $CACHE/mmcv-build.log"
            exit 1
        fi
        mv "$wheel_built" "$wheel_dir/" && rm -rf "$build_dir"
        wheel=$(ls "$wheel_dir"/mmcv-$MMCV_VERSION-*.whl | head -n 1)
        log "cached $wheel"
    else
        log "reusing cached $wheel"
    fi
    "${PIP[@]}" install -q --no-deps "$wheel"
fi

# --- the rest of the stack ---------------------------------------------------------------------
log "installing OpenMMLab packages"
"${PIP[@]}" install -q -r "$REPO/requirements/runtime.txt" -r "$REPO/requirements/downstream.txt" \
    -r "$REPO/requirements/tests.txt" "mmcv==$MMCV_VERSION"
if ! "$PY" -c 'import importlib.util as u; assert u.find_spec("torchvision")' 2>/dev/null; then
    # --no-deps: its dependency on torch is already met, and pip must never resolve a CUDA torch.
    "${PIP[@]}" install -q --no-deps "$TORCHVISION_SPEC"
fi
if ! "$PY" -c 'import importlib.util as u; assert u.find_spec("mim")' 2>/dev/null; then
    # --no-deps: openmim's opendatalab -> openxlab pins old requests / setuptools
    "${PIP[@]}" install -q --no-deps openmim==0.3.9
fi
if ! "$PY" -c 'import importlib.util as u; assert u.find_spec("timm")' 2>/dev/null; then
    "${PIP[@]}" install -q --no-deps "$TIMM_SPEC"  # converter tests; --no-deps as torchvision
fi
"${PIP[@]}" install -q --no-deps --no-build-isolation -e "$REPO"

log "checking imports"
(cd "$REPO" && "$PY" -c 'import repre_mm, mmpretrain.models, mmdet.models, mmseg.models
from mmcv.ops import RoIAlign, nms
print("imports ok")' >&2)
log "set-up took $(( $(date +%s) - t0 )) s; venv size $(du -sh "$VENV" | cut -f1)"
rm -f "$VENV"/.repre-mm-setup-*
touch "$stamp"
echo "$VENV"
