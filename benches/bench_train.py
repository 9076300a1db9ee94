"""`tokenmill pretrain` against the seed recipe, CPU, same model and steps.

- ``seed``: the recipe users copy: ``datasets.load_dataset("json")`` ->
  ``.map(tokenize, batched=True, num_proc=2)`` -> ``.map(group_texts)`` ->
  ``DataCollatorForLanguageModeling(mlm=False)`` -> ``Trainer``.
- ``tokenmill``: ``tokenmill.train`` (``tokenmill pretrain``) on shards that
  ``tokenmill prepare`` wrote from the same JSONL (prepare timed separately).
- ``loader``: tokenmill's training stream and DataLoader alone, no model:
  how many tokens/s the data side can serve.
- ``first-step``: ``tokenmill pretrain`` on a large shard set (``--big``),
  time from process start to the end of the first optimizer step.

Both trainers build the same ``LlamaConfig`` preset with the same seed, block
size, batch, learning rate and steps; tokens/s counts the tokens of steps
2..N (step 1 includes warm-up). Each tool runs in its own child process;
peak RSS is the child's ``ru_maxrss`` (the largest of it and its workers).

    python benches/bench_train.py --corpus bench_out/corpus/100M \
        --tokenizer bench_out/tokenizers/small --docs 20000 --steps 30
    python benches/bench_train.py ... --big bench_out/work/shards-1G
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

T0 = time.perf_counter()
ROOT = Path(__file__).resolve().parent.parent


def _timer_callback(result: dict[str, Any]) -> Any:
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):  # type: ignore[misc]
        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            now = time.perf_counter()
            if state.global_step == 1:
                result["first_step_s"] = now - T0
                result["_t1"] = now
            result["_tn"] = now
            result["_steps"] = state.global_step

    return StepTimer()


def _finish(result: dict[str, Any], tokens_per_step: int) -> None:
    steps = result.pop("_steps") - 1
    elapsed = result.pop("_tn") - result.pop("_t1")
    result["tokens_per_s"] = steps * tokens_per_step / elapsed if elapsed > 0 else 0.0
    rss = max(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
    )
    result["peak_rss_mib"] = rss / 1024
    print(json.dumps(result))


def child_seed(a: argparse.Namespace) -> None:
    from itertools import chain

    import datasets
    import torch
    import transformers

    from tokenmill.config import PRESETS

    datasets.disable_progress_bars()
    tok = transformers.AutoTokenizer.from_pretrained(a.tokenizer)
    raw = datasets.load_dataset("json", data_files=a.jsonl, split="train")

    def tokenize_function(examples: dict[str, list[str]]) -> Any:
        return tok(examples["text"])

    def group_texts(examples: dict[str, list[list[int]]]) -> dict[str, list[list[int]]]:
        concatenated = {k: list(chain(*examples[k])) for k in examples}
        total = (len(concatenated["input_ids"]) // a.block) * a.block
        out = {
            k: [t[i : i + a.block] for i in range(0, total, a.block)]
            for k, t in concatenated.items()
        }
        out["labels"] = out["input_ids"].copy()
        return out

    tokenized = raw.map(
        tokenize_function, batched=True, num_proc=2, remove_columns=raw.column_names
    )
    lm = tokenized.map(group_texts, batched=True, num_proc=2)
    config = transformers.LlamaConfig(
        vocab_size=len(tok), tie_word_embeddings=True, **PRESETS[a.preset]
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config)
    args = transformers.TrainingArguments(
        output_dir=a.work + "/seed_run",
        max_steps=a.steps,
        per_device_train_batch_size=a.batch,
        learning_rate=3e-4,
        logging_steps=10**6,
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_pin_memory=False,
    )
    result: dict[str, Any] = {"tool": "seed", "blocks": len(lm)}
    trainer = transformers.Trainer(
        model=model,
        args=args,
        train_dataset=lm,
        data_collator=transformers.DataCollatorForLanguageModeling(tok, mlm=False),
        callbacks=[_timer_callback(result)],
    )
    trainer.train()
    _finish(result, a.batch * a.block)


def child_tokenmill(a: argparse.Namespace, shards: str, steps: int) -> None:
    from tokenmill.config import load_config
    from tokenmill.train import train

    name = "tokenmill" if steps > 1 else f"first-step-{a.packing}"
    result: dict[str, Any] = {"tool": name}
    cfg = load_config(
        None,
        dict(
            data=shards,
            output_dir=a.work + f"/tm_run_{result['tool']}",
            preset=a.preset,
            block_size=a.block,
            packing=a.packing,
            max_steps=steps,
            per_device_train_batch_size=a.batch,
            learning_rate=3e-4,
            logging_steps=10**6,
            eval_strategy="no",
            save_strategy="no",
            resume_from_checkpoint="none",
            chunked_loss=not a.model_loss,
        ),
    )
    import transformers

    transformers.logging.disable_progress_bar()
    train(cfg, callbacks=[_timer_callback(result)])
    if steps > 1:
        _finish(result, a.batch * a.block)
    else:
        result.pop("_t1"), result.pop("_tn"), result.pop("_steps")
        result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))


def child_loader(a: argparse.Namespace, shards: str) -> None:
    from torch.utils.data import DataLoader

    from tokenmill.data import PackedDataset, Source, TrainStream, collate

    ds = PackedDataset(shards, "train", a.block, "concat")
    loader = DataLoader(
        TrainStream([Source(ds, 1.0)], a.batch), batch_size=a.batch, collate_fn=collate
    )
    n, start = 0, time.perf_counter()
    for i, batch in enumerate(loader):
        n += batch["input_ids"].numel()
        if i == 2000:
            break
    seconds = time.perf_counter() - start
    print(json.dumps({"tool": "loader", "tokens_per_s": n / seconds, "batches": 2001}))


def run_child(args: list[str]) -> dict[str, Any]:
    env = os.environ | {"TOKENIZERS_PARALLELISM": "true", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(
        [sys.executable, __file__, "_child", *args], capture_output=True, text=True, env=env
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--corpus", default=str(ROOT / "bench_out/corpus/100M"))
    p.add_argument("--tokenizer", default=str(ROOT / "bench_out/tokenizers/small"))
    p.add_argument("--docs", type=int, default=20000, help="Documents of the corpus to use.")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--block", type=int, default=256)
    p.add_argument("--preset", default="llama-tiny")
    p.add_argument("--big", help="A large shard set for the time-to-first-step figure.")
    p.add_argument("--work", default=str(ROOT / "bench_out/work/train"))
    p.add_argument("--model-loss", action="store_true", help="tokenmill without chunked loss.")
    a = p.parse_args()

    import tokenmill

    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    jsonl = work / "corpus.jsonl"
    with jsonl.open("w", encoding="utf-8") as out:
        n = 0
        for part in sorted(Path(a.corpus).glob("*.jsonl")):
            for line in part.open(encoding="utf-8"):
                out.write(line)
                n += 1
                if n >= a.docs:
                    break
            if n >= a.docs:
                break
    started = time.perf_counter()
    stats = tokenmill.prepare(
        jsonl, a.tokenizer, work / "shards", overwrite=True, progress=False, val_fraction=0.0
    )
    prep_s = time.perf_counter() - started
    print(
        f"corpus: {n:,} docs, {stats.text_bytes / 1e6:.1f} MB, {stats.tokens:,} tokens; "
        f"tokenmill prepare {prep_s:.1f} s"
    )
    common = ["--tokenizer", a.tokenizer, "--steps", str(a.steps), "--batch", str(a.batch),
              "--block", str(a.block), "--preset", a.preset, "--work", str(work),
              "--jsonl", str(jsonl)]  # fmt: skip
    if a.model_loss:
        common.append("--model-loss")
    results = {
        "seed": run_child([*common, "--tool", "seed"]),
        "tokenmill": run_child([*common, "--tool", "tokenmill", "--shards", str(work / "shards")]),
        "loader": run_child([*common, "--tool", "loader", "--shards", str(work / "shards")]),
    }
    if a.big:
        for packing in ("concat", "doc"):
            results[f"first-step-{packing}"] = run_child(
                [*common, "--tool", "first-step", "--shards", a.big, "--packing", packing]
            )
    s, t, ld = results["seed"], results["tokenmill"], results["loader"]
    print(f"\n{a.preset}, block {a.block}, batch {a.batch}, {a.steps} steps, CPU")
    print(f"{'':<12}{'tokens/s':>10}{'first step s':>14}{'peak RSS MiB':>14}")
    for name in ("seed", "tokenmill"):
        r = results[name]
        print(
            f"{name:<12}{r['tokens_per_s']:>10,.0f}{r['first_step_s']:>14.1f}{r['peak_rss_mib']:>14,.0f}"
        )
    print(
        f"tokenmill / seed tokens/s: {t['tokens_per_s'] / s['tokens_per_s']:.2f}x (target >= 1.0x)"
    )
    print(
        f"loader alone: {ld['tokens_per_s']:,.0f} tokens/s = "
        f"{ld['tokens_per_s'] / t['tokens_per_s']:,.0f}x the trainer (target >= 100x)"
    )
    if a.big:
        size = sum(f.stat().st_size for f in Path(a.big).rglob("*.bin")) / 1e9
        for packing in ("concat", "doc"):
            r = results[f"first-step-{packing}"]
            print(f"first step on {a.big} ({size:.2f} GB of .bin, {packing}): "
                  f"{r['first_step_s']:.1f} s from process start, "
                  f"peak RSS {r['peak_rss_mib']:,.0f} MiB")  # fmt: skip
    (work / "results.json").write_text(json.dumps(results, indent=2))


def child() -> None:
    p = argparse.ArgumentParser()
    for name in ("--tokenizer", "--preset", "--work", "--jsonl", "--tool", "--shards"):
        p.add_argument(name)
    p.add_argument("--packing", default="concat")
    for name in ("--steps", "--batch", "--block"):
        p.add_argument(name, type=int)
    p.add_argument("--model-loss", action="store_true")
    a = p.parse_args(sys.argv[2:])
    if a.tool == "seed":
        child_seed(a)
    elif a.tool == "tokenmill":
        child_tokenmill(a, a.shards, a.steps)
    elif a.tool == "first-step":
        child_tokenmill(a, a.shards, 1)
    else:
        child_loader(a, a.shards)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        child()
    else:
        main()
