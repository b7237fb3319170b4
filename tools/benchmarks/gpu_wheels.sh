#!/usr/bin/env bash
# Builds the wheel folder tools/benchmarks/gpu_check.sh installs from (pip --no-index), on a
# machine with internet, for a GPU machine that has Python and a CUDA torch but no internet and
# no OpenMMLab package (this project is lent ones with Python 3.12 and torch 2.11):
#
#   bash tools/benchmarks/gpu_wheels.sh [DIR]          # default DIR: work_dirs/gpu_wheels
#   bash tools/benchmarks/gpu_wheels.sh --full [DIR]   # default DIR: work_dirs/gpu_wheels_full
#
#   PY_VERSION=3.12                  the GPU machine's Python
#   PROVIDED="numpy ..."             (default bundle) what the GPU machine already has, besides
#                                    torch and torchvision; default: the list below
#   TORCHVISION=torchvision==0.26.0  (--full) the release paired with its torch (2.11), used
#                                    only where that machine has no torchvision
#   PYTHON=...                       a Python here with torch and setuptools < 82 (default: the
#                                    repre-mm venv), to run mmcv's setup.py and pip
#
# Default bundle (4.6 MB, 18 wheels): only what a typical GPU machine lacks. It is taken to
# have torch, torchvision and what they need (filelock, typing-extensions, sympy, networkx,
# jinja2, fsspec) and the PROVIDED packages: numpy, opencv-python-headless, pillow, scipy,
# matplotlib, pandas, rich, pyyaml, regex, tqdm, tabulate, pytest. pip resolves mmengine,
# mmpretrain, mmcv-lite, setuptools < 82 and those packages together for that Python
# (--dry-run --report: metadata only, no torch), and the bundle is mmengine, mmpretrain,
# mmcv-lite, setuptools < 82 (mmengine's Config imports pkg_resources, gone from setuptools
# >= 82) and every dependency of theirs that neither a PROVIDED package nor one of its
# dependencies brings; opencv-python, which mmengine and mmcv name, is left out too:
# opencv-python-headless provides the same cv2. requirements.txt pins each wheel; gpu_check.sh
# installs them with --no-deps, so pip never tries to fetch opencv-python or to replace the
# machine's numpy.
#
# --full (135 MB, 36 wheels): mmengine, mmpretrain, setuptools < 82 and ALL their dependencies
# (numpy, opencv-python, matplotlib, ...), and torchvision without dependencies, for a machine
# that has only torch; requirements-full.txt names the top-level packages and gpu_check.sh lets
# pip resolve them (it skips what the machine already has).
#
# Both: mmcv 2.1.0 WITHOUT its compiled ops (MMCV_WITH_OPS=0, a pure-Python wheel named
# mmcv-lite: no binary mmcv exists for that torch, and pre-training needs no mmcv op; mmdet /
# mmseg would), binary wheels for that Python (--only-binary=:all:), and no torch: the GPU
# machine's own is used. The last line printed is DIR; the line before gives the bundle's size.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
FULL=0
ARGS=()
for arg in "$@"; do
    case "$arg" in
        --full) FULL=1 ;;
        -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        -*) echo "gpu_wheels.sh: unknown option $arg" >&2; exit 2 ;;
        *) ARGS+=("$arg") ;;
    esac
done
DEFAULT_DIR=$REPO/work_dirs/gpu_wheels$([[ $FULL == 1 ]] && echo _full || true)
DIR=$(mkdir -p "${ARGS[0]:-$DEFAULT_DIR}" && cd "${ARGS[0]:-$DEFAULT_DIR}" && pwd)
PY_VERSION=${PY_VERSION:-3.12}
TORCHVISION=${TORCHVISION:-torchvision==0.26.0}
PROVIDED=${PROVIDED:-numpy opencv-python-headless pillow scipy matplotlib pandas rich pyyaml regex
                    tqdm tabulate pytest}
PROVIDED=$(echo $PROVIDED)  # one line
TORCH_NEEDS='filelock typing-extensions sympy networkx jinja2 fsspec'  # torch's own, by name
PYTHON=${PYTHON:-${REPRE_MM_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/repre-mm/venv}/bin/python}
MMCV_VERSION=2.1.0
TOP=(mmengine==0.10.7 mmpretrain==1.2.0 "mmcv-lite==$MMCV_VERSION" 'setuptools>=65,<82')
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

# 2. the other wheels, as binaries for the GPU machine's Python. --find-links: a copy of
#    mmcv-lite (pip download -d DIR --find-links DIR would copy it onto itself)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/links" && cp "$DIR"/mmcv_lite-$MMCV_VERSION-*.whl "$tmp/links/"
target=(--python-version "$PY_VERSION" --implementation cp --only-binary=:all:
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64
        --platform manylinux2014_x86_64 --platform linux_x86_64 --find-links "$tmp/links")
if [[ $FULL == 1 ]]; then
    rm -f "$DIR/requirements.txt"
    printf '%s\n' "${TOP[@]}" > "$DIR/requirements-full.txt"
    log "downloading wheels for Python $PY_VERSION: all dependencies (--full)"
    "$PYTHON" -m pip download -q "${target[@]}" -d "$DIR" -r "$DIR/requirements-full.txt"
    "$PYTHON" -m pip download -q "${target[@]}" -d "$DIR" --no-deps "$TORCHVISION"
else
    rm -f "$DIR/requirements-full.txt"
    log "resolving for Python $PY_VERSION with what the GPU machine has: $PROVIDED"
    # shellcheck disable=SC2086
    "$PYTHON" -m pip install -q --dry-run --ignore-installed --target "$tmp/none" \
        --report "$tmp/report.json" "${target[@]}" "${TOP[@]}" $PROVIDED $TORCH_NEEDS
    "$PYTHON" - "$tmp/report.json" "$PY_VERSION" "$PROVIDED $TORCH_NEEDS" "${TOP[@]}" \
        > "$DIR/requirements.txt" <<'PY'
"""Pins the bundle: TOP and its dependency closure, less the PROVIDED packages' closure."""
import json
import re
import sys

try:
    from packaging.requirements import Requirement
except ImportError:
    from pip._vendor.packaging.requirements import Requirement

report, py_version, provided, top = sys.argv[1], sys.argv[2], sys.argv[3].split(), sys.argv[4:]
norm = lambda name: re.sub(r'[-_.]+', '-', name).lower()  # noqa: E731
meta = {norm(item['metadata']['name']): item['metadata']
        for item in json.load(open(report))['install']}
env = dict(python_version=py_version, python_full_version=py_version + '.0', os_name='posix',
           sys_platform='linux', platform_system='Linux', platform_machine='x86_64',
           implementation_name='cpython', platform_python_implementation='CPython')
# the machine's opencv-python-headless provides the cv2 that mmengine and mmcv ask for by the
# name opencv-python (the same module, without the GUI); carrying both would add 71 MB
SUBSTITUTED = {'opencv-python': 'opencv-python-headless'}


def deps(name, extras=()):
    for line in meta[name].get('requires_dist') or ():
        req = Requirement(line)
        if not req.marker or any(req.marker.evaluate(dict(env, extra=e)) for e in ('',) + extras):
            yield norm(req.name), tuple(sorted(req.extras))


def closure(roots, stop=frozenset()):
    seen, stack = set(), [(norm(r), ()) for r in roots]
    while stack:
        name, extras = stack.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        # (one pip did not resolve has a marker false on that machine: not needed there)
        stack += [d for d in deps(name, extras) if d[0] not in stop and d[0] in meta]
    return {name for name, _ in seen}


has = closure(provided)
top = [norm(Requirement(r).name) for r in top]
bundle = closure(top, stop=has | set(SUBSTITUTED)) | set(top)
left = [f'{n} (as {SUBSTITUTED[n]})' if n in SUBSTITUTED else n
        for n in sorted(closure(top) - bundle)]
print(f'# gpu_wheels.sh for Python {py_version}: install with pip install --no-index '
      f'--find-links DIR --no-deps -r requirements.txt\n# left to the GPU machine: '
      + ' '.join(left))
print('\n'.join(f'{name}=={meta[name]["version"]}' for name in sorted(bundle)))
PY
    log "$(sed -n 2p "$DIR/requirements.txt" | cut -c3-)"
    log "downloading $(grep -vc '^#' "$DIR/requirements.txt") wheels for Python $PY_VERSION"
    "$PYTHON" -m pip download -q "${target[@]}" -d "$DIR" --no-deps -r "$DIR/requirements.txt"
    # a folder used before (a --full build, older pins) keeps no wheel that is not pinned
    pinned=" $(grep -v '^#' "$DIR/requirements.txt" | cut -d= -f1 | tr '\n' ' ')"
    for whl in "$DIR"/*.whl; do
        name=$(basename "$whl" | cut -d- -f1 | tr '_.' '--' | tr '[:upper:]' '[:lower:]')
        if [[ "$pinned" != *" $name "* ]]; then
            log "removing $(basename "$whl") (not pinned)"; rm -f "$whl"
        fi
    done
fi
if ls "$DIR"/torch-*.whl >/dev/null 2>&1; then
    log "ERROR: a torch wheel was pulled in: $(ls "$DIR"/torch-*.whl)"; exit 1
fi
bytes=$(cat "$DIR"/*.whl | wc -c)
mb=$(awk "BEGIN {printf \"%.1f\", $bytes / 1e6}")
log "bundle: $(ls "$DIR"/*.whl | wc -l) wheels, $mb MB in $DIR"
echo "$DIR"
