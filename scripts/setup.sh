#!/usr/bin/env bash
# Creates .venv and builds tokenmill into it (release mode). Idempotent:
# reruns reuse the venv, pip's cache and cargo's incremental build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q -U pip "maturin>=1.5,<2"
export VIRTUAL_ENV="$PWD/.venv"
export PATH="$VIRTUAL_ENV/bin:$PATH"
maturin develop --release --extras "${TOKENMILL_EXTRAS:-dev}" -q
