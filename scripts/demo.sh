#!/usr/bin/env bash
# README command 1: set up and run the main job end to end on the embedded corpus.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/tokenmill demo --out "${1:-demo_out}"
