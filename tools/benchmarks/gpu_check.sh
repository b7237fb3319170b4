#!/usr/bin/env bash
# The prepared GPU check: one script, under 8 minutes on one GPU, nothing from the internet.
#
#   bash tools/benchmarks/gpu_check.sh WHEELS_DIR [gpu_check.py flags]   # on the GPU machine
#   bash tools/benchmarks/gpu_check.sh --device cpu --quick              # anywhere (the test)
#
# If PYTHON (default python3) cannot import the stack, a venv is made in
# work_dirs/gpu_check/venv that sees that Python's packages (its torch above all) through a .pth
# file adding its site directories (--system-site-packages would miss those of a venv), and
# WHEELS_DIR/requirements.txt is installed from WHEELS_DIR alone (pip --no-index; the folder is
# built by tools/benchmarks/gpu_wheels.sh on a machine with internet), torchvision too where
# the machine has none. Then tools/benchmarks/gpu_check.py measures and checks (AMP overhead,
# fp16 training, torchrun + NCCL + SyncBN, k-NN on the GPU) and writes one JSON file
# (default work_dirs/gpu_check/gpu_check.json). Exit status 0: every check passed.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PY=${PYTHON:-python3}
WHEELS=''
if [[ $# -gt 0 && "$1" != -* ]]; then WHEELS=$(cd "$1" && pwd); shift; fi
log() { printf '[gpu_check.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
stack_imports() {
    (cd "$REPO" && PYTHONPATH="$REPO" "$1" -c 'import repre_mm, mmpretrain.models' 2>/dev/null)
}

if ! stack_imports "$PY"; then
    [[ -n "$WHEELS" ]] || { log "$PY cannot import the stack and no WHEELS_DIR was given"; exit 2; }
    "$PY" -c 'import torch' || { log "$PY has no torch: this check uses the machine's own"; exit 2; }
    venv="$REPO/work_dirs/gpu_check/venv"
    if [[ ! -x "$venv/bin/python" ]]; then
        log "creating $venv (it uses $PY's torch)"
        "$PY" -m venv "$venv"
        # "import" lines of a .pth run at start-up: addsitedir appends $PY's site directories
        # (after the venv's own: what is installed there comes first) and reads their .pth files
        "$PY" -c 'import site
dirs = site.getsitepackages() + ([site.getusersitepackages()] if site.ENABLE_USER_SITE else [])
print("\n".join(f"import site; site.addsitedir({d!r})" for d in dirs))' \
            > "$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/gpu_check_base.pth"
    fi
    PY="$venv/bin/python"
    PIP=("$PY" -m pip --disable-pip-version-check --no-input install -q --no-index
         --find-links "$WHEELS")
    log "installing from $WHEELS (pip --no-index)"
    "${PIP[@]}" -r "$WHEELS/requirements.txt"
    if ! "$PY" -c 'import importlib.util as u; assert u.find_spec("torchvision")' 2>/dev/null; then
        "${PIP[@]}" --no-deps torchvision  # its torch requirement is met by the machine's
    fi
    stack_imports "$PY" || { (cd "$REPO" && PYTHONPATH="$REPO" "$PY" -c 'import repre_mm, mmpretrain.models'); exit 2; }
fi
log "python $("$PY" -c 'import sys, torch; print(sys.version.split()[0], "torch", torch.__version__, "CUDA", torch.version.cuda)')"
cd "$REPO"
PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" exec "$PY" tools/benchmarks/gpu_check.py "$@"
