#!/usr/bin/env bash
# The test command of the README and of CI: sets up the environment if needed, then runs pytest.
#   bash tools/run_tests.sh [pytest args]
# The test files run on REPRE_MM_TEST_WORKERS pytest-xdist workers (default: one per core, at
# most 4), a file's tests on one worker (its module fixtures are built once), with the cores
# shared out as torch threads. Most of a test's time is Python and single-threaded subprocesses,
# so two workers on two cores roughly halve the suite's wall clock. REPRE_MM_TEST_WORKERS=1: one
# process, no xdist.
set -euo pipefail
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
start=$(date +%s)
"$VENV/bin/python" -m pytest tests -q -p no:cacheprovider --durations=15 "${PARALLEL[@]}" "$@"
echo "tests took $(( $(date +%s) - start )) s"
