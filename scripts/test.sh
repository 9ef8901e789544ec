#!/usr/bin/env bash
# The test command: installs what it needs, lints, runs every test. Extra args go to pytest.
source "$(dirname "$0")/_venv.sh"
echo ">> ruff check"
"$VENV_BIN/ruff" check .
echo ">> pytest"
set +e
"$VENV_BIN/pytest" "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
    echo "pytest collected no tests: that is a failure here" >&2
    exit 1
fi
exit "$rc"
