#!/usr/bin/env bash
# README command 2: set up, lint, run the whole test suite (cargo test, loom's model check of the
# shared word cache, a one-minute fuzz run, pytest), then check the wheel as users get it
# (scripts/wheel_check.sh).
#
#   bash scripts/test.sh [PYTEST ARGS...]            in .venv, from requirements.lock
#   bash scripts/test.sh --latest [PYTEST ARGS...]   the same in .venv-latest, from the newest
#                                                    releases pyproject.toml allows
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv
setup=()
if [ "${1:-}" = --latest ]; then
    venv=.venv-latest
    setup=(--latest)
    shift
fi
start=$SECONDS
bash scripts/setup.sh "${setup[@]}"
export PATH="$PWD/$venv/bin:$PATH"
echo "== lint"
cargo fmt --all --check
cargo clippy --locked --all-targets -- -D warnings
cargo clippy --locked --all-targets --features python -- -D warnings
cargo clippy --locked --all-targets --features loom -- -D warnings
cargo fmt --manifest-path fuzz/Cargo.toml --check
cargo clippy --locked --manifest-path fuzz/Cargo.toml --bins -- -D warnings
ruff check python tests benches fuzz
ruff format --check python tests benches fuzz
echo "== stub check"
python -m mypy.stubtest tokenmill._core
echo "== cargo test"
cargo test --locked
echo "== loom (the shared word cache, model-checked)"
cargo test --locked --features loom --lib loom_model
echo "== fuzz (short)"
bash scripts/fuzz.sh
echo "== pytest"
python -m pytest "$@"
echo "== wheel"
bash scripts/wheel_check.sh "$venv"
echo "== all checks passed in $((SECONDS - start)) s ($venv)"
