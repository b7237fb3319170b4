#!/usr/bin/env bash
# The prepared GPU check: one script, under 8 minutes on one GPU, nothing from the internet.
#
#   bash tools/benchmarks/gpu_check.sh WHEELS_DIR [gpu_check.py flags]   # on the GPU machine
#   bash tools/benchmarks/gpu_check.sh --device cpu --quick              # anywhere (the test)
#
# If PYTHON (default python3) cannot import the stack, a venv is made in GPU_CHECK_VENV (default
# work_dirs/gpu_check/venv) that sees that Python's packages (its torch above all) through a .pth
# file adding its site directories (--system-site-packages would miss those of a venv), and the
# wheels are installed from WHEELS_DIR alone (pip --no-index; the folder is built by
# tools/benchmarks/gpu_wheels.sh on a machine with internet), torchvision too where the machine
# has none and the folder has it (gpu_wheels.sh --full). Then tools/benchmarks/gpu_check.py
# measures and checks (AMP overhead, fp16 training, torchrun + NCCL + SyncBN, k-NN on the GPU)
# and writes one JSON file (default work_dirs/gpu_check/gpu_check.json). Exit status 0: every
# check passed.
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
    venv=${GPU_CHECK_VENV:-$REPO/work_dirs/gpu_check/venv}
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
    if [[ -f "$WHEELS/requirements.txt" ]]; then
        # The default folder holds only what the machine lacks, each wheel pinned in
        # requirements.txt. --no-deps: pip installs exactly those and nothing else. Resolving
        # instead, it would want opencv-python (mmengine and mmcv name it; the machine's
        # opencv-python-headless gives the same cv2) and stop (--no-index, not in the folder), and
        # a wheel asking a newer numpy than the machine's would make it replace numpy; a
        # constraints file cannot say "opencv-python-headless counts as opencv-python".
        # What --no-deps skips, the check below does: every requirement of the installed wheels
        # is met, by the folder or by the machine.
        log "installing from $WHEELS (pip --no-index --no-deps)"
        "${PIP[@]}" --no-deps -r "$WHEELS/requirements.txt"
        "$PY" - "$WHEELS/requirements.txt" <<'PY' ||
import importlib.metadata as md
import re
import sys
try:
    from packaging.requirements import Requirement
except ImportError:
    from pip._vendor.packaging.requirements import Requirement
norm = lambda name: re.sub(r'[-_.]+', '-', name).lower()  # noqa: E731
installed = {}
for dist in md.distributions():  # in sys.path order: the venv's own first
    installed.setdefault(norm(dist.metadata['Name']), dist)
# the cv2 of opencv-python (what mmengine and mmcv name) comes in other distributions too
cv2 = ['opencv-python-headless', 'opencv-contrib-python', 'opencv-contrib-python-headless']
missing = []
for line in open(sys.argv[1]):
    if not line.strip() or line.startswith('#'):
        continue
    name = norm(Requirement(line.strip()).name)
    if name not in installed:
        missing.append(f'{name} (from the wheel folder: not installed)')
        continue
    for text in installed[name].requires or ():
        req = Requirement(text)
        if req.marker and not req.marker.evaluate({'extra': ''}):
            continue
        dist = installed.get(norm(req.name))
        if dist is None and norm(req.name) == 'opencv-python':
            dist = next((installed[c] for c in cv2 if c in installed), None)
        if dist is None:
            missing.append(f'{req} (for {name})')
        elif dist.version not in req.specifier:
            print(f'[gpu_check.sh] warning: {name} asks {req}, this machine has {dist.version}',
                  file=sys.stderr)
if missing:
    sys.exit('[gpu_check.sh] neither this machine nor the wheel folder has: ' + ', '.join(missing))
PY
            { log "build the folder with gpu_wheels.sh --full or PROVIDED=what it has"; exit 2; }
    else
        # a --full folder holds everything; pip resolves and skips what the machine has
        log "installing from $WHEELS (pip --no-index)"
        "${PIP[@]}" -r "$WHEELS/requirements-full.txt"
    fi
    if ! "$PY" -c 'import importlib.util as u; assert u.find_spec("torchvision")' 2>/dev/null; then
        ls "$WHEELS"/torchvision-*.whl >/dev/null 2>&1 ||
            { log "no torchvision here or in $WHEELS (gpu_wheels.sh --full adds it)"; exit 2; }
        "${PIP[@]}" --no-deps torchvision  # its torch requirement is met by the machine's
    fi
    stack_imports "$PY" || { (cd "$REPO" && PYTHONPATH="$REPO" "$PY" -c 'import repre_mm, mmpretrain.models'); exit 2; }
fi
log "python $("$PY" -c 'import sys, torch; print(sys.version.split()[0], "torch", torch.__version__, "CUDA", torch.version.cuda)')"
cd "$REPO"
PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" exec "$PY" tools/benchmarks/gpu_check.py "$@"
