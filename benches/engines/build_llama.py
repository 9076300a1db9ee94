"""Builds the LLaMA-2-style SentencePiece BPE (32k, byte fallback) used by the
engine comparison, from ~10 MB of a corpus part file, with tests/corpus.py.

    python benches/engines/build_llama.py \
        bench_out/corpus/100M/part-00002.jsonl /tmp/engines_tok/llama
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))

import corpus

source, out = Path(sys.argv[1]), Path(sys.argv[2])
texts: list[str] = []
n = 0
with source.open(encoding="utf-8") as f:
    for line in f:
        t = json.loads(line)["text"]
        texts.append(t)
        n += len(t.encode())
        if n > 10_000_000:
            break
print(len(texts), n)
corpus.build_llama_style(out, texts, vocab_size=32000)
