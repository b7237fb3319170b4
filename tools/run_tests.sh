#!/usr/bin/env bash
# The test command of the README and of CI: sets up the environment if needed, then runs pytest.
#   bash tools/run_tests.sh [pytest args]
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=$(bash "$REPO/tools/setup_env.sh" | tail -n 1)
cd "$REPO"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" PATH="$VENV/bin:$PATH"
start=$(date +%s)
"$VENV/bin/python" -m pytest tests -q -p no:cacheprovider --durations=15 "$@"
echo "tests took $(( $(date +%s) - start )) s"
