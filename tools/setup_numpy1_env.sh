#!/usr/bin/env bash
# A second, small environment for the tests under numpy 1: a venv whose own site-packages holds
# only numpy 1.26.4 and that sees every other package of the main environment (tools/setup_env.sh)
# behind it, so that `import numpy` is numpy 1 and the rest is the same stack. Users still on
# numpy 1 get the compatibility patches gated for numpy 1 (repre_mm/compat); the suite runs
# tests/test_compat.py here (tests/test_guest.py).
#
#   bash tools/setup_numpy1_env.sh MAIN_VENV     # prints the environment's path on its last line
#
# Cached in $REPRE_MM_CACHE/venv-numpy1 (default ~/.cache/repre-mm), keyed by the main
# environment and the pin: a second run does nothing. ~5 s the first time (one 18 MB wheel).
set -euo pipefail
MAIN=${1:?usage: setup_numpy1_env.sh MAIN_VENV}
NUMPY_SPEC=numpy==1.26.4
CACHE=${REPRE_MM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/repre-mm}
VENV=$CACHE/venv-numpy1
log() { printf '[setup_numpy1_env %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

MAIN_PY=$MAIN/bin/python
[[ -x $MAIN_PY ]] || { log "ERROR: $MAIN has no bin/python: run tools/setup_env.sh first"; exit 1; }
main_site=$("$MAIN_PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
stamp="$VENV/.repre-mm-numpy1-$(printf '%s %s' "$main_site" "$NUMPY_SPEC" | sha256sum | cut -c1-16)"
if [[ -f $stamp ]]; then
    echo "$VENV"
    exit 0
fi
rm -rf "$VENV"
# the main environment's own Python, so that its compiled packages (torch, mmcv) fit
base=$("$MAIN_PY" -c 'import sys; print(sys._base_executable)')
log "creating $VENV ($NUMPY_SPEC over $main_site)"
"$base" -m venv "$VENV"
site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
# a .pth line appends the main site-packages after this venv's own: numpy 1 shadows numpy 2
echo "$main_site" >"$site/repre_mm_main_env.pth"
"$VENV/bin/python" -m pip --disable-pip-version-check --no-input install -q --no-deps \
    "$NUMPY_SPEC"
"$VENV/bin/python" -c 'import numpy, torch, mmengine
assert numpy.__version__.startswith("1."), numpy.__version__' >&2
touch "$stamp"
echo "$VENV"
