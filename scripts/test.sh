#!/usr/bin/env bash
# README command 2: set up, lint, and run the whole test suite (cargo test + pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
echo "== lint"
cargo fmt --all --check
cargo clippy --all-targets -- -D warnings
cargo clippy --all-targets --features python -- -D warnings
ruff check python tests benches
ruff format --check python tests benches
echo "== stub check"
python -m mypy.stubtest tokenmill._core
echo "== cargo test"
cargo test
echo "== pytest"
python -m pytest "$@"
