#!/usr/bin/env bash
# Refreshes requirements.lock, the one pinned list tests, CI and the demo install (scripts/setup.sh):
# pyproject.toml's `dev` extra (which holds `train` and `sft` and the tools) resolved to the newest
# releases, for every platform and Python >= 3.10, with hashes. Needs uv (.venv has it after setup).
# Afterwards run `bash scripts/test.sh` and commit requirements.lock with what the tests needed.
# Extra arguments go to `uv pip compile` (e.g. --upgrade-package torch==2.15.0 to hold one back).
set -euo pipefail
cd "$(dirname "$0")/.."
"${UV:-.venv/bin/uv}" pip compile pyproject.toml --extra dev --universal --python-version 3.10 \
    --generate-hashes --upgrade --custom-compile-command "bash scripts/lock.sh" \
    -o requirements.lock "$@"
