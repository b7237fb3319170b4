#!/usr/bin/env bash
# Creates (or reuses) the Python environment repre-mm runs in, CPU-only or GPU machine alike.
#
#   bash tools/setup_env.sh           # prints the environment's path on its last line
#   bash tools/setup_env.sh --plan    # prints what it would do (key=value lines), changes nothing
#
# Which environment (the first that applies):
#   1. REPRE_MM_VENV: that environment (created if missing).
#   2. An activated virtualenv / conda environment (VIRTUAL_ENV / CONDA_PREFIX) whose Python has
#      torch: installed into, its torch kept (a CUDA build included).
#   3. $REPRE_MM_CACHE/venv (default ~/.cache/repre-mm/venv).
# A new environment is created from PYTHON, or else the first of python3.11 (the version the CPU
# set-up is measured with), python3.12, python3.10, python3 that runs and is 3.10-3.12. If that
# Python already has torch, the venv sees it (--system-site-packages) instead of getting another.
#
# What it installs and why (measured facts: ../shared/notes/stack-install.md):
#   * torch: kept if the environment has one; else REPRE_MM_TORCH (default torch==2.13.0, the CPU
#     wheel on the CI machine; pip never resolves torch anywhere else in this script).
#   * setuptools < 82: mmcv's setup.py and mmengine's `mmpretrain::` config scopes import
#     pkg_resources, which setuptools 82 removed.
#   * mmcv 2.1.0 WITH compiled ops, built against that torch once and cached as a wheel in
#     $REPRE_MM_CACHE/wheels/<python>-torch<version>[-cuda<version>]/: CUDA ops where torch is a
#     CUDA build and nvcc exists (MMCV_WITH_OPS=1 FORCE_CUDA=1), CPU ops otherwise (6-7 min on 2
#     idle cores; a CUDA build takes longer). An mmcv 2.1.0 whose ops match is kept.
#   * mmengine, mmpretrain, mmdet, mmsegmentation and what they import without declaring it.
#   * torchvision (mmpretrain imports it) if missing: the release paired with torch (0.<minor+15>),
#     --no-deps (REPRE_MM_TORCHVISION overrides). Beside a CPU torch PyPI's CUDA build imports
#     only through the shim in repre_mm/compat/torchvision.py. timm (converter tests),
#     --no-deps too.
# A completed set-up leaves a stamp keyed by the requirement files: a second run does nothing.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${REPRE_MM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/repre-mm}
TORCH_SPEC=${REPRE_MM_TORCH:-torch==2.13.0}
TIMM_SPEC=timm==1.0.31
MMCV_VERSION=2.1.0

PLAN_ONLY=0
case "${1:-}" in
    --plan) PLAN_ONLY=1 ;;
    '') ;;
    -h|--help) sed -n '2,30p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "unknown argument: $1 (use --plan or nothing)" >&2; exit 2 ;;
esac

log() { printf '[setup_env %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
# A decision: printed on stdout with --plan, logged otherwise (the run says what it does).
decide() { if (( PLAN_ONLY )); then echo "$1=$2"; else log "$1: $2"; fi; }

# --- facts about a Python, in one call (a fake python in the tests answers it) ----------------
PROBE='import importlib.util as u, sys
print("python=%d.%d" % sys.version_info[:2])
try:
    import torch
    print("torch=" + torch.__version__)
    print("torch_cuda=" + (torch.version.cuda or ""))
except Exception:
    print("torch=")
    print("torch_cuda=")
print("torchvision=" + ("yes" if u.find_spec("torchvision") else ""))
mmcv_version = ops = ""
try:
    import mmcv
    mmcv_version = mmcv.__version__
    from mmcv.ops import get_compiling_cuda_version
    cuda = get_compiling_cuda_version()
    ops = "cpu" if cuda in ("", "not available") else "cuda" + cuda
except Exception:
    pass
print("mmcv=" + mmcv_version)
print("mmcv_ops=" + ops)'

probe() { "$1" -c "$PROBE" 2>/dev/null || true; }
fact() { sed -n "s/^$1=//p" <<<"$2" | head -n 1; }
supported() { [[ "$1" == 3.10 || "$1" == 3.11 || "$1" == 3.12 ]]; }

# --- 1. the environment -------------------------------------------------------------------------
ACTIVE=${VIRTUAL_ENV:-${CONDA_PREFIX:-}}
active_env_usable() {  # set up before, or its Python has torch
    [[ -n "$ACTIVE" && -x "$ACTIVE/bin/python" ]] || return 1
    compgen -G "$ACTIVE/.repre-mm-setup-*" >/dev/null && return 0
    [[ -n $(fact torch "$(probe "$ACTIVE/bin/python")") ]]
}
if [[ -n "${REPRE_MM_VENV:-}" ]]; then
    VENV=$REPRE_MM_VENV; env_source=REPRE_MM_VENV
elif active_env_usable; then
    VENV=$ACTIVE; env_source=active
else
    VENV=$CACHE/venv; env_source=default
fi

stamp_key=$(cat "$REPO"/requirements/*.txt "$REPO/tools/setup_env.sh" | sha256sum | cut -c1-16)
stamp="$VENV/.repre-mm-setup-$stamp_key"
if [[ -f "$stamp" ]]; then
    if (( PLAN_ONLY )); then
        printf 'env=%s\nenv_source=%s\nstamp=up-to-date\n' "$VENV" "$env_source"
        exit 0
    fi
    log "environment up to date: $VENV"
    echo "$VENV"
    exit 0
fi
decide env "$VENV"
decide env_source "$env_source"

# --- 2. the Python of a new environment ---------------------------------------------------------
base_python=''
venv_flags=''
if [[ -x "$VENV/bin/python" ]]; then
    env_facts=$(probe "$VENV/bin/python")
    version=$(fact python "$env_facts")
    supported "$version" || die "$VENV has Python ${version:-?}; repre-mm needs 3.10-3.12 (mmcv 2.1 / mmdet 3.3)."
    decide python "$VENV/bin/python ($version, existing environment)"
else
    if [[ -n "${PYTHON:-}" ]]; then candidates=("$PYTHON"); else candidates=(python3.11 python3.12 python3.10 python3); fi
    tried=()
    for candidate in "${candidates[@]}"; do
        path=$(command -v "$candidate" 2>/dev/null) || { tried+=("$candidate: not found"); continue; }
        facts=$(probe "$path")
        version=$(fact python "$facts")
        if supported "$version"; then base_python=$path; env_facts=$facts; break; fi
        tried+=("$candidate: ${version:-does not run}")
    done
    [[ -n "$base_python" ]] || die "no Python 3.10-3.12 found (${tried[*]}); set PYTHON=/path/to/python3.1x."
    decide python "$base_python ($version)"
    if [[ -n $(fact torch "$env_facts") ]]; then
        venv_flags=--system-site-packages  # the venv uses that Python's torch (CUDA build included)
    fi
    decide venv "create with $base_python -m venv ${venv_flags:-(no flags)}"
fi
py_tag=cp${version/./}

# --- 3. torch, torchvision ----------------------------------------------------------------------
torch_version=$(fact torch "$env_facts")
torch_cuda=$(fact torch_cuda "$env_facts")
build_kind() { if [[ -n "$torch_cuda" ]]; then echo "CUDA $torch_cuda"; else echo "CPU build"; fi; }
if [[ -n "$torch_version" ]]; then
    decide torch "keep $torch_version ($(build_kind))"
else
    decide torch "install $TORCH_SPEC"
fi
torchvision_spec() {  # torch 2.M.p pairs with torchvision 0.(M+15).p
    local v=${1%%+*} major minor patch
    IFS=. read -r major minor patch <<<"$v"
    echo "torchvision==0.$((minor + 15)).${patch:-0}"
}

# --- 4. mmcv's ops: CUDA where torch is a CUDA build and nvcc exists ----------------------------
find_nvcc() {  # as torch's cpp_extension looks: CUDA_HOME, else /usr/local/cuda, else PATH
    local home=${CUDA_HOME:-${CUDA_PATH:-/usr/local/cuda}}
    if [[ -x "$home/bin/nvcc" ]]; then echo "$home/bin/nvcc"
    elif [[ -z "${CUDA_HOME:-}${CUDA_PATH:-}" ]] && command -v nvcc >/dev/null 2>&1; then command -v nvcc
    fi
}
mmcv_build_env=()
decide_mmcv() {  # sets mmcv_action (keep|build|cached), ops (cpu|cuda), wheel_dir, mmcv_build_env
    local have_ops nvcc
    nvcc=$(find_nvcc)
    ops=cpu
    mmcv_build_env=(MMCV_WITH_OPS=1)
    if [[ -n "$torch_cuda" && -n "$nvcc" ]]; then
        ops=cuda
        mmcv_build_env+=(FORCE_CUDA=1)
        local home
        home=$(dirname "$(dirname "$nvcc")")
        # (a toolkit's own bin/nvcc: say where it is; a wrapper script elsewhere: torch finds it)
        [[ -f "$home/include/cuda_runtime.h" ]] && mmcv_build_env+=("CUDA_HOME=$home")
        local nvcc_cuda
        nvcc_cuda=$("$nvcc" --version 2>/dev/null | sed -n 's/.*release \([0-9][0-9.]*[0-9]\).*/\1/p' | head -n 1)
        if [[ -n "$nvcc_cuda" && "${nvcc_cuda%%.*}" != "${torch_cuda%%.*}" ]]; then
            # torch's cpp_extension refuses to build across CUDA major versions
            decide warning "nvcc is CUDA $nvcc_cuda but torch was built with CUDA $torch_cuda: the build will fail; point CUDA_HOME at a CUDA ${torch_cuda%%.*}.x toolkit"
        fi
    elif [[ -n "$torch_cuda" ]]; then
        # mmcv's setup.py builds CUDA ops whenever torch sees a GPU, and fails without nvcc: hide
        # the GPU from the build. Pre-training needs no mmcv op; mmdet / mmseg on GPUs do.
        mmcv_build_env+=(CUDA_VISIBLE_DEVICES=)
        decide warning "torch is a CUDA build (CUDA $torch_cuda) but nvcc was not found (PATH, CUDA_HOME): mmcv gets CPU ops only; mmdet / mmseg need its CUDA ops on GPUs: install the CUDA $torch_cuda toolkit and rerun"
    fi
    # (the CPU key is the one wheels were cached under before CUDA builds existed here)
    wheel_dir="$CACHE/wheels/$py_tag-torch$torch_version"
    [[ $ops == cuda ]] && wheel_dir+="-cuda$torch_cuda"
    have_ops=$(fact mmcv_ops "$env_facts")
    if [[ $(fact mmcv "$env_facts") == "$MMCV_VERSION" && -n "$have_ops" &&
          ( $ops == cpu || $have_ops == cuda* ) ]]; then
        mmcv_action=keep
        decide mmcv "keep $MMCV_VERSION ($have_ops ops)"
    elif compgen -G "$wheel_dir/mmcv-$MMCV_VERSION-*.whl" >/dev/null; then
        mmcv_action=cached
        decide mmcv "install the cached wheel in $wheel_dir"
    else
        mmcv_action=build
        decide mmcv "build $MMCV_VERSION with $ops ops (${mmcv_build_env[*]}${nvcc:+; nvcc $nvcc}) into $wheel_dir"
    fi
}
if [[ -n "$torch_version" ]]; then
    decide_mmcv
else
    decide mmcv "decided once torch is installed (CUDA ops if it is a CUDA build and nvcc exists)"
fi
if (( PLAN_ONLY )); then
    echo "stamp=missing"
    exit 0
fi

# --- doing it -----------------------------------------------------------------------------------
mkdir -p "$CACHE"
if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating venv $VENV"
    "$base_python" -m venv $venv_flags "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check --no-input)

t0=$(date +%s)
if [[ -z "$torch_version" ]]; then
    log "installing $TORCH_SPEC"
    "${PIP[@]}" install -q "$TORCH_SPEC"
    env_facts=$(probe "$PY")
    torch_version=$(fact torch "$env_facts")
    torch_cuda=$(fact torch_cuda "$env_facts")
    [[ -n "$torch_version" ]] || die "torch does not import after installing $TORCH_SPEC"
    decide torch "installed $torch_version ($(build_kind))"
    decide_mmcv
fi
"${PIP[@]}" install -q 'setuptools>=65,<82' wheel

# --- mmcv with compiled ops ------------------------------------------------------------------
if [[ $mmcv_action != keep ]]; then
    mkdir -p "$wheel_dir"
    if [[ $mmcv_action == build ]]; then
        log "building mmcv $MMCV_VERSION with $ops ops (once per python/torch; ~6-7 min on 2 idle cores for CPU ops)"
        build_dir=$(mktemp -d)
        # -g0 keeps the .so at a few MB and halves compile time; CFLAGS replaces Python's own
        # flags, so the optimisation flags must be repeated here.
        env "${mmcv_build_env[@]}" MAX_JOBS=${MAX_JOBS:-$(nproc)} \
            CFLAGS='-Wsign-compare -DNDEBUG -g0 -fwrapv -O3 -Wall' \
            "${PIP[@]}" wheel -q --no-deps --no-build-isolation --no-cache-dir \
            "mmcv==$MMCV_VERSION" -w "$build_dir" >"$CACHE/mmcv-build.log" 2>&1 || true
        wheel_built=$(ls "$build_dir"/mmcv-$MMCV_VERSION-*.whl 2>/dev/null | head -n 1 || true)
        if [[ -z "$wheel_built" ]]; then
            tail -n 40 "$CACHE/mmcv-build.log" >&2
            die "mmcv build failed; full log: $CACHE/mmcv-build.log"
        fi
        mv "$wheel_built" "$wheel_dir/" && rm -rf "$build_dir"
        log "cached $(ls "$wheel_dir"/mmcv-$MMCV_VERSION-*.whl | head -n 1)"
    fi
    wheel=$(ls "$wheel_dir"/mmcv-$MMCV_VERSION-*.whl | head -n 1)
    "${PIP[@]}" install -q --no-deps --force-reinstall "$wheel"
    log "installed $wheel"
fi

# --- the rest of the stack ---------------------------------------------------------------------
log "installing OpenMMLab packages"
"${PIP[@]}" install -q -r "$REPO/requirements/runtime.txt" -r "$REPO/requirements/downstream.txt" \
    -r "$REPO/requirements/tests.txt" "mmcv==$MMCV_VERSION"
if [[ -z $(fact torchvision "$env_facts") ]] &&
        ! "$PY" -c 'import importlib.util as u; assert u.find_spec("torchvision")' 2>/dev/null; then
    spec=${REPRE_MM_TORCHVISION:-$(torchvision_spec "$torch_version")}
    log "installing $spec (--no-deps)"
    # --no-deps: its dependency on torch is already met, and pip must never resolve a CUDA torch.
    "${PIP[@]}" install -q --no-deps "$spec"
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
from mmcv.ops import RoIAlign, nms, get_compiling_cuda_version
import torch
print("imports ok: torch", torch.__version__, "CUDA", torch.version.cuda,
      "| mmcv ops compiled with CUDA:", get_compiling_cuda_version())' >&2)
log "set-up took $(( $(date +%s) - t0 )) s; environment size $(du -sh "$VENV" | cut -f1)"
rm -f "$VENV"/.repre-mm-setup-*
touch "$stamp"
echo "$VENV"
