#!/usr/bin/env bash
# The run command: installs, then serves on embedded defaults (embedded Redis, default
# model, synthetic feed). Extra args go to `tickstream serve`.
source "$(dirname "$0")/_venv.sh"
exec "$VENV_BIN/tickstream" serve --synthetic-feed "$@"
