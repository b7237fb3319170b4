#!/usr/bin/env bash
# The test command of the README and of CI: sets up the environment if needed, then runs pytest.
#   bash tools/run_tests.sh [pytest args]
#   bash tools/run_tests.sh --plan [pytest args]   # prints workers, threads and the command only
# The test files run on REPRE_MM_TEST_WORKERS pytest-xdist workers (default: one per core, at
# most 4), a file's tests on one worker (its module fixtures are built once), with the cores
# shared out as torch threads (OMP_NUM_THREADS, unless set). Most of a test's time is Python and
# single-threaded subprocesses, which one process cannot spread over the cores.
# REPRE_MM_TEST_WORKERS=1: one process, no xdist.
set -euo pipefail
PLAN_ONLY=0
if [[ "${1:-}" == --plan ]]; then PLAN_ONLY=1; shift; fi
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=$(bash "$REPO/tools/setup_env.sh" | tail -n 1)
cd "$REPO"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" PATH="$VENV/bin:$PATH"
CORES=$(nproc 2>/dev/null || echo 1)
WORKERS=${REPRE_MM_TEST_WORKERS:-$(( CORES < 4 ? CORES : 4 ))}
PARALLEL=()
if (( WORKERS > 1 )); then
    PARALLEL=(-n "$WORKERS" --dist loadfile)
    THREADS=$(( CORES / WORKERS > 0 ? CORES / WORKERS : 1 ))
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$THREADS} MKL_NUM_THREADS=${MKL_NUM_THREADS:-$THREADS}
fi
COMMAND=("$VENV/bin/python" -m pytest tests -q -p no:cacheprovider --durations=15
         "${PARALLEL[@]}" "$@")
if (( PLAN_ONLY )); then
    printf 'workers=%s\nthreads=%s\ncommand=%s\n' "$WORKERS" "${OMP_NUM_THREADS:-}" "${COMMAND[*]}"
    exit 0
fi
echo "[run_tests] $WORKERS worker(s) on $CORES core(s), OMP_NUM_THREADS=${OMP_NUM_THREADS:-unset}"
start=$(date +%s)
"${COMMAND[@]}"
echo "tests took $(( $(date +%s) - start )) s"
