#!/usr/bin/env bash
# Creates a virtual environment and builds tokenmill into it (release mode):
#
#   bash scripts/setup.sh            .venv from requirements.lock: what tests, CI and the demo use
#   bash scripts/setup.sh --latest   .venv-latest from the newest releases pyproject.toml allows,
#                                    resolved now (what `pip install tokenmill[dev]` gets today)
#
# Both install a fully pinned list with --no-deps, then `pip check`, so nothing outside the list is
# installed. Reruns reinstall only when the list changed and rebuild incrementally (cargo --locked).
# What pip, uv and cargo print goes to <venv>/setup.log; this script prints one line.
# Refresh the lock: bash scripts/lock.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
venv=.venv
if [ "${1:-}" = --latest ]; then
    venv=.venv-latest
fi
[ -x "$venv/bin/python" ] || "$PYTHON" -m venv "$venv"
log="$PWD/$venv/setup.log"
: >"$log"
run() {
    if ! "$@" >>"$log" 2>&1; then
        tail -n 30 "$log" >&2
        echo "setup failed: $* (whole log: $log)" >&2
        exit 1
    fi
}
start=$SECONDS
pins=requirements.lock
if [ "$venv" = .venv-latest ]; then
    # The same install path as the lock, from a list resolved today for this Python.
    pins=$venv/requirements.latest.txt
    run "$venv/bin/python" -m pip install --upgrade uv
    run "$venv/bin/uv" pip compile pyproject.toml --extra dev --upgrade --generate-hashes \
        --python "$venv/bin/python" --no-header -o "$pins"
fi
stamp=$(sha256sum "$pins" | cut -d' ' -f1)
if [ "$(cat "$venv/.installed-pins" 2>/dev/null)" != "$stamp" ]; then
    run "$venv/bin/python" -m pip install --no-deps --require-hashes -r "$pins"
    run "$venv/bin/python" -m pip check
    echo "$stamp" >"$venv/.installed-pins"
fi
run env VIRTUAL_ENV="$PWD/$venv" PATH="$PWD/$venv/bin:$PATH" \
    "$venv/bin/maturin" develop --release --locked
echo "setup: $venv ready ($("$venv/bin/tokenmill" --version); $(grep -c "==" "$pins") pins" \
    "from $pins) in $((SECONDS - start)) s; log: $log"
