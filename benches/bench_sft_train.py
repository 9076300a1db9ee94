"""SFT training throughput: padded batches against packed blocks (CPU).

Both runs train the same randomly initialised ``llama-tiny`` model (dim 288,
8 layers, context 1024 here) with ``tokenmill sft`` on the same
``prepare-sft`` shards, the same optimizer, steps and samples per step (8
conversations or 8 blocks); they differ only in how conversations are
batched:

- ``pad``: one conversation per sample, each batch right-padded to its
  longest conversation (dynamic padding, as ``DataCollatorForSeq2Seq`` does;
  padding to a fixed max length, which some seed scripts do, would be slower
  still);
- ``doc``: ``--packing``, whole conversations packed best-fit into blocks of
  ``--block`` tokens, attention kept within each conversation.

The figure is trained tokens per second: tokens with a label (assistant
replies and their end-of-turn token), padding and prompt tokens excluded.
Conversations have a long-tailed length mix like Alpaca/BELLE-style data:
turn lengths drawn from a log-normal distribution, 1-3 exchanges, 30% with
a system message, real English and Chinese text from the Python standard
library. The tokenizer is the happy-llm setup: a 6,144-token byte-level BPE
trained on the same text (``--tokenizer DIR`` takes another one and gives it
tokenmill's ChatML template). One run each, in a fresh child process.

    python benches/bench_sft_train.py --conversations 5000 --steps 20
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def text_of(rng: random.Random, pieces: list[str], chars: int) -> str:
    out = ""
    while len(out) < chars:
        out += rng.choice(pieces) + "\n"
    return out[:chars]


def make_inputs(work: Path, n: int, tokenizer: Path | None) -> tuple[Path, Path]:
    import tokenmill
    from tokenmill.demo import _docstrings, _stdlib_sources, chinese_texts
    from tokenmill.tokenizer import CHATML_TEMPLATE

    zh = [p for p in chinese_texts() if len(p) > 20]
    en: list[str] = []
    for _, source in _stdlib_sources():
        en += [doc for _, doc in _docstrings(source)]
        if len(en) > 20_000:
            break
    rng = random.Random(0)
    path = work / "chats.jsonl"
    text = work / "text.jsonl"
    with path.open("w", encoding="utf-8") as out, text.open("w", encoding="utf-8") as plain:
        for _ in range(n):
            pieces = zh if rng.random() < 0.4 else en
            messages: list[dict[str, str]] = []
            if rng.random() < 0.3:
                messages.append({"role": "system", "content": "You are a helpful assistant."})
            for _ in range(rng.choice((1, 1, 1, 2, 2, 3))):
                # Median ~ 90 (prompt) and ~ 350 (reply) characters, long tails.
                user = int(rng.lognormvariate(4.5, 0.8))
                reply = int(rng.lognormvariate(5.9, 0.9))
                messages.append({"role": "user", "content": text_of(rng, pieces, user)})
                messages.append({"role": "assistant", "content": text_of(rng, pieces, reply)})
            out.write(json.dumps({"messages": messages}, ensure_ascii=False) + "\n")
            for m in messages:
                plain.write(json.dumps({"text": m["content"]}, ensure_ascii=False) + "\n")
    tok = work / "tok"
    if tokenizer is None:
        tokenmill.train_tokenizer(text, tok, vocab_size=6144, progress=False)
    else:
        shutil.copytree(tokenizer, tok, dirs_exist_ok=True)
        config = json.loads((tok / "tokenizer_config.json").read_text())
        config["chat_template"] = CHATML_TEMPLATE
        (tok / "tokenizer_config.json").write_text(json.dumps(config, ensure_ascii=False))
    return path, tok


def child(
    mode: str, shards: str, model: str, out: str, steps: str, batch: str, block: str, attn: str
) -> Any:
    from tokenmill.config import load_config
    from tokenmill.train import train

    cfg = load_config(
        None,
        dict(
            data=shards,
            model=model,
            output_dir=out,
            packing=mode,
            block_size=int(block),
            per_device_train_batch_size=int(batch),
            max_steps=int(steps),
            learning_rate=2e-4,
            warmup_ratio=0.0,
            eval_strategy="no",
            save_strategy="no",
            logging_steps=10,
            resume_from_checkpoint="none",
            attn_implementation=attn or None,
        ),
    )
    return train(cfg)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--conversations", type=int, default=5000)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=8, help="Samples per step, both modes.")
    p.add_argument("--block", type=int, default=1024)
    p.add_argument(
        "--doc-attn", default="", help="attn_implementation of the packed run (default: varlen)."
    )
    p.add_argument("--tokenizer", default=None, help="Default: train a 6,144-token BPE.")
    p.add_argument("--work", default=str(ROOT / "bench_out/work/sft_train"))
    a = p.parse_args()

    import numpy as np
    import torch
    import transformers

    import tokenmill
    from tokenmill.config import PRESETS
    from tokenmill.models import load_tokenizer

    work = Path(a.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    jsonl, tok = make_inputs(work, a.conversations, Path(a.tokenizer) if a.tokenizer else None)
    shards = work / "shards"
    tokenmill.prepare_sft(jsonl, tok, shards, max_length=a.block, val_fraction=0, progress=False)
    s = tokenmill.open_shards(shards)
    lengths = s.doc_lengths()
    trained = sum(int(s.mask(i)[1:].sum()) for i in range(len(s)))
    print(
        f"vocabulary {s.vocab_size:,}; {len(s):,} conversations, "
        f"{int(lengths.sum()):,} tokens ({trained:,} trained); "
        f"length p50 {int(np.median(lengths))}, p90 {int(np.percentile(lengths, 90))}, "
        f"max {int(lengths.max())}"
    )
    config = transformers.LlamaConfig(
        vocab_size=s.vocab_size,
        tie_word_embeddings=True,
        **{**PRESETS["llama-tiny"], "max_position_embeddings": a.block},
    )
    torch.manual_seed(0)
    model_dir = work / "model"
    transformers.LlamaForCausalLM(config).save_pretrained(model_dir)
    load_tokenizer(tok).save_pretrained(model_dir)

    results = {}
    for mode in ("pad", "doc"):
        out = work / f"run_{mode}"
        args = [mode, str(shards), str(model_dir), str(out), str(a.steps), str(a.batch)]
        done = subprocess.run(
            [sys.executable, __file__, "_child", *args, str(a.block),
             a.doc_attn if mode == "doc" else ""],
            capture_output=True, text=True,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(done.stderr[-3000:])
        r = json.loads((out / "metrics.json").read_text())
        results[mode] = r
        print(
            f"{mode:<4} {r['train_seconds']:7.1f} s  {r['tokens_per_second']:9,.0f} tokens/s  "
            f"{r['trained_tokens_per_second']:9,.0f} trained tokens/s"
        )
    speed = {mode: r["trained_tokens_per_second"] for mode, r in results.items()}
    ratio = speed["doc"] / speed["pad"]
    print(f"packed / padded trained tokens/s: {ratio:.2f}x (target >= 2x)")
    (work / "results.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        child(*sys.argv[2:10])
    else:
        main()
