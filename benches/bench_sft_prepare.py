"""SFT data preparation: `tokenmill prepare-sft` against the common recipe.

- ``seed``: ``datasets.load_dataset("json")`` -> ``.map(process, num_proc=2)``
  where ``process`` renders each conversation with
  ``tokenizer.apply_chat_template(messages, tokenize=True)`` and builds the
  assistant-only labels the usual way, by rendering each assistant turn's
  prefix (with and without the reply) to find where the reply starts and
  ends -> ``save_to_disk``.
- ``tokenmill``: ``tokenmill.prepare_sft(..., threads=2, val_fraction=0)``,
  JSONL to finished ``.bin``/``.idx``/``.mask`` shards.

Same JSONL (OpenAI ``messages``, 1-3 user/assistant turns from real English
and Chinese text of the Python standard library, some with a system
message), same tokenizer (the benchmark's Qwen2-style ``large`` tokenizer
given the ChatML template of ``tokenmill.tokenizer``), one run each in a
fresh child process; conversations per second, timed inside the child
(imports excluded).

    python benches/bench_sft_prepare.py --conversations 100000
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def make_inputs(work: Path, n: int, tokenizer: Path) -> tuple[Path, Path]:
    from tokenmill.demo import _docstrings, _stdlib_sources, chinese_texts
    from tokenmill.tokenizer import CHATML_TEMPLATE

    tok = work / "tok"
    shutil.copytree(tokenizer, tok, dirs_exist_ok=True)
    config = json.loads((tok / "tokenizer_config.json").read_text())
    config["chat_template"] = CHATML_TEMPLATE
    (tok / "tokenizer_config.json").write_text(json.dumps(config, ensure_ascii=False))
    pieces = [p for p in chinese_texts() if len(p) > 20]
    for _, source in _stdlib_sources():
        pieces += [doc for _, doc in _docstrings(source)]
        if len(pieces) > 20_000:
            break
    rng = random.Random(0)
    path = work / "chats.jsonl"
    with path.open("w", encoding="utf-8") as out:
        for _ in range(n):
            messages: list[dict[str, str]] = []
            if rng.random() < 0.3:
                messages.append({"role": "system", "content": "You are a helpful assistant."})
            for _ in range(rng.randint(1, 3)):
                messages.append({"role": "user", "content": rng.choice(pieces)[:400]})
                messages.append({"role": "assistant", "content": rng.choice(pieces)[:800]})
            out.write(json.dumps({"messages": messages}, ensure_ascii=False) + "\n")
    return path, tok


def child_seed(jsonl: str, tok_dir: str, out: str) -> dict[str, Any]:
    import datasets
    import transformers

    datasets.disable_progress_bars()
    tok = transformers.AutoTokenizer.from_pretrained(tok_dir)

    def ids_of(messages: list[dict[str, str]], prompt: bool) -> list[int]:
        ids: Any = tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=prompt)
        return list(ids["input_ids"] if hasattr(ids, "keys") else ids)

    def process(example: dict[str, Any]) -> dict[str, Any]:
        messages = example["messages"]
        input_ids = ids_of(messages, False)
        labels = [-100] * len(input_ids)
        for i, m in enumerate(messages):
            if m["role"] == "assistant":
                start = len(ids_of(messages[:i], True))
                end = len(ids_of(messages[: i + 1], False))
                labels[start:end] = input_ids[start:end]
        return {"input_ids": input_ids, "labels": labels}

    started = time.perf_counter()
    raw = datasets.load_dataset("json", data_files=jsonl, split="train")
    done = raw.map(process, num_proc=2, remove_columns=raw.column_names)
    done.save_to_disk(out)
    return {"seconds": time.perf_counter() - started, "conversations": len(done)}


def child_tokenmill(jsonl: str, tok_dir: str, out: str) -> dict[str, Any]:
    import tokenmill

    started = time.perf_counter()
    stats = tokenmill.prepare_sft(
        jsonl, tok_dir, out, threads=2, val_fraction=0.0, overwrite=True, progress=False
    )
    return {"seconds": time.perf_counter() - started, "conversations": stats.docs}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--conversations", type=int, default=100_000)
    p.add_argument("--tokenizer", default=str(ROOT / "bench_out/tokenizers/large"))
    p.add_argument("--work", default=str(ROOT / "bench_out/work/sft"))
    a = p.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    jsonl, tok = make_inputs(work, a.conversations, Path(a.tokenizer))
    mb = jsonl.stat().st_size / 1e6
    print(f"{a.conversations:,} conversations, {mb:.1f} MB of JSONL")
    results = {}
    for tool in ("tokenmill", "seed"):
        out = work / f"out_{tool}"
        shutil.rmtree(out, ignore_errors=True)
        done = subprocess.run(
            [sys.executable, __file__, "_child", tool, str(jsonl), str(tok), str(out)],
            capture_output=True, text=True,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(done.stderr[-3000:])
        results[tool] = json.loads(done.stdout.strip().splitlines()[-1])
        r = results[tool]
        print(
            f"{tool:<10} {r['seconds']:8.1f} s  {r['conversations'] / r['seconds']:10,.0f} conv/s "
            f"({r['conversations']:,} kept)"
        )
    ratio = results["seed"]["seconds"] / results["tokenmill"]["seconds"]
    print(f"tokenmill / seed: {ratio:.1f}x (target >= 10x)")
    (work / "results.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        fn = child_seed if sys.argv[2] == "seed" else child_tokenmill
        print(json.dumps(fn(*sys.argv[3:6])))
    else:
        main()
