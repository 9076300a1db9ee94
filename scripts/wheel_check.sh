#!/usr/bin/env bash
# The wheel as users get it: build the abi3 wheel, install it into a clean venv with no extras (its
# own dependencies pinned by requirements.lock), and run every data command there on a small corpus
# of the embedded demo; the training commands must name the extra to install, not fail with a
# traceback, and `import tokenmill` must not import the training stack.
#
#   bash scripts/wheel_check.sh [VENV]   VENV (default .venv) provides maturin; run by scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
venv=${1:-.venv}
work=target/wheel-check # under cargo's target/: only this script writes here
rm -rf "$work"
mkdir -p "$work/run"
log=$root/$work/wheel-check.log
step() { printf '  %-62s' "$1"; }
fail() {
    echo "FAILED"
    tail -n 30 "$log" >&2
    echo "wheel check failed: $1 (log: $log)" >&2
    exit 1
}
ok() { echo "ok${1:+ ($1)}"; }

step "maturin build --release (abi3 wheel)"
VIRTUAL_ENV="$root/$venv" PATH="$root/$venv/bin:$PATH" \
    "$venv/bin/maturin" build --release --locked --out "$work/dist" >>"$log" 2>&1 || fail "build"
wheel=$(ls "$work"/dist/tokenmill-*.whl)
ok "$(basename "$wheel")"

step "clean venv, pip install the wheel (no extras)"
# The lock without its hashes is a constraints file: the wheel's own dependencies at tested versions.
grep -E '^[A-Za-z0-9]' requirements.lock | sed 's/ *\\$//' >"$work/constraints.txt"
python3 -m venv "$work/venv" >>"$log" 2>&1 || fail "venv"
"$work/venv/bin/python" -m pip install -c "$work/constraints.txt" "$wheel" >>"$log" 2>&1 ||
    fail "pip install"
ok
py=$root/$work/venv/bin/python
tm=$root/$work/venv/bin/tokenmill
cd "$work/run"

run() { # run NAME CMD...: the command must succeed
    step "$1"
    shift
    "$@" >>"$log" 2>&1 || fail "$*"
    ok
}

step "no training stack installed"
"$py" -c "
import importlib.util as u
present = [m for m in ('torch', 'transformers', 'peft', 'bitsandbytes') if u.find_spec(m)]
assert not present, present" >>"$log" 2>&1 || fail "the clean venv has training packages"
ok

step "import tokenmill imports no training code"
"$py" -X importtime -c "import tokenmill" 2>importtime.txt || fail "import tokenmill"
heavy=$(grep -oE '\| +(torch|transformers|peft|bitsandbytes|accelerate)(\.| |$)' importtime.txt | sort -u || true)
[ -z "$heavy" ] || fail "import tokenmill imported: $heavy"
ok "$(awk -F'|' 'END {printf "%.0f ms", $2 / 1000}' importtime.txt)"

run "python -m tokenmill --version" "$py" -m tokenmill --version
run "tokenmill demo --train-steps 0 (corpus, tokenizer, shards)" \
    "$tm" demo --out demo --corpus-mb 1 --vocab-size 1000 --train-steps 0 -q
"$py" - <<'EOF' >>"$log" 2>&1 || fail "writing chats.jsonl"
import json
rows = [
    {"messages": [{"role": "user", "content": f"What is {i} + {i}?"},
                  {"role": "assistant", "content": f"{i} + {i} = {2 * i}."}]}
    for i in range(40)
] + [
    {"conversations": [{"from": "human", "value": f"用一句话介绍第{i}号长城烽火台。"},
                       {"from": "gpt", "value": f"第{i}号烽火台建于明代，用来传递军情。"}]}
    for i in range(40)
]
with open("chats.jsonl", "w", encoding="utf-8") as f:
    f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
EOF
run "tokenmill train-tokenizer" "$tm" train-tokenizer demo/corpus --vocab-size 800 -o tok -q
run "tokenmill prepare" "$tm" prepare demo/corpus -t tok -o shards -q
run "tokenmill verify" "$tm" verify shards
run "tokenmill inspect" "$tm" inspect shards
run "tokenmill dedup" "$tm" dedup demo/corpus -o deduped.jsonl.zst -q
run "tokenmill chunk" "$tm" chunk demo/corpus -o chunks.jsonl.gz --max-chars 256 -q
run "tokenmill prepare-sft" "$tm" prepare-sft chats.jsonl -t tok -o sft -q --val-fraction 0.1
run "tokenmill pretrain --help" "$tm" pretrain --help

for cmd in pretrain cpt sft; do
    step "tokenmill $cmd without the train extra"
    status=0
    data=shards model=(--model tok)
    [ "$cmd" = sft ] && data=sft
    [ "$cmd" = pretrain ] && model=()
    "$tm" "$cmd" "${model[@]}" --data "$data" --out "run-$cmd" >out.txt 2>&1 || status=$?
    cat out.txt >>"$log"
    [ "$status" = 2 ] || fail "$cmd exited with $status, expected 2"
    [ "$(wc -l <out.txt)" = 1 ] || fail "$cmd printed more than one line"
    grep -q "pip install 'tokenmill\[train" out.txt || fail "$cmd does not name the extra"
    ok "$(cat out.txt)"
done

step "tokenmill --help start-up"
"$py" - <<'EOF' >startup.txt 2>>"$log" || fail "timing tokenmill --help"
import statistics, subprocess, sys, time
times = []
for _ in range(5):
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "tokenmill", "--help"], check=True, capture_output=True)
    times.append(time.perf_counter() - t)
print(f"{statistics.median(times):.2f} s median of 5")
EOF
ok "$(cat startup.txt)"
echo "wheel check: ok ($wheel in a clean venv; log: $log)"
