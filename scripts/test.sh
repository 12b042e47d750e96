#!/usr/bin/env bash
# Run the test suite in .venv. pytest's exit code 5 ("no tests collected") is a failure here: a suite that
# silently runs nothing must not pass.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh || exit 1
.venv/bin/python -m pytest -q "$@"
status=$?
if [ "$status" -eq 5 ]; then
    echo "scripts/test.sh: pytest collected no tests; treating that as a failure" >&2
    exit 1
fi
exit "$status"
