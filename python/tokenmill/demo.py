"""The embedded default job: a corpus built at run time from files every
Python installation has (the standard library's sources and docstrings, plus
the Chinese sample texts of its codec tests when present), then the whole
flow on it: train a tokenizer, prepare shards, verify and inspect them,
pretrain a tiny LLaMA for a few CPU minutes and sample from it. Nothing is
downloaded and nothing is copied into the repository.
"""

from __future__ import annotations

import ast
import gzip
import io
import json
import math
import sys
import sysconfig
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import zstandard

from tokenmill._text import counted
from tokenmill.shards import PrepareStats, inspect, prepare, verify
from tokenmill.tokenizer import train_tokenizer


def _stdlib_sources() -> Iterator[tuple[str, str]]:
    root = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if "site-packages" in rel.parts or "dist-packages" in rel.parts:
            continue
        try:
            yield rel.as_posix(), path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue


def _docstrings(source: str) -> Iterator[tuple[str, str]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # invalid escapes in old test files
        try:
            tree = ast.parse(source)
        except (SyntaxError, ValueError):
            return
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            if doc and len(doc) > 40:
                yield getattr(node, "name", "<module>"), doc


def chinese_texts() -> list[str]:
    """Real Simplified/Traditional Chinese prose from CPython's codec test
    data (``test/cjkencodings/*-utf8.txt``), one paragraph per item."""
    root = Path(sysconfig.get_paths()["stdlib"]) / "test" / "cjkencodings"
    texts = []
    for name in ("gb2312", "gbk", "gb18030", "big5", "hz"):
        path = root / f"{name}-utf8.txt"
        if path.is_file():
            texts += [p for p in path.read_text(encoding="utf-8").split("\n") if p.strip()]
    return texts


# Left out of the demo corpus: test suites (byte strings, odd data) and
# generated tables (codec maps, pydoc's topic dump). What stays is written
# Python and its docstrings, text a small model picks words up from quickly.
_NOT_IN_CORPUS = {"test", "tests", "idle_test", "encodings", "pydoc_data"}


def build_corpus(out: Path, max_mb: float = 16.0) -> list[Path]:
    """Writes the demo corpus into ``out`` in three formats the reader
    supports (.jsonl.zst, .jsonl.gz, .txt) and returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    budget = int(max_mb * 1e6)
    code_path, doc_path, zh_path = (
        out / "code.jsonl.zst",
        out / "docstrings.jsonl.gz",
        out / "zh.txt",
    )
    written = 0
    with (
        zstandard.ZstdCompressor(level=3).stream_writer(code_path.open("wb")) as code_raw,
        gzip.open(doc_path, "wt", encoding="utf-8") as docs,
    ):
        code = io.TextIOWrapper(code_raw, encoding="utf-8")
        for rel, source in _stdlib_sources():
            if _NOT_IN_CORPUS.intersection(rel.split("/")) or not source.strip():
                continue
            record: dict[str, Any] = {"text": source, "meta": {"path": rel}}
            line = json.dumps(record, ensure_ascii=False) + "\n"
            code.write(line)
            written += len(line)
            for name, doc in _docstrings(source):
                line = json.dumps({"text": doc, "meta": {"path": rel, "name": name}}) + "\n"
                docs.write(line)
                written += len(line)
            if written >= budget:
                break
        code.flush()
    zh_path.write_text("\n".join(chinese_texts()) + "\n", encoding="utf-8")
    return [code_path, doc_path, zh_path]


# The pretraining step, measured on 2 idle cores (2026-12-03): llama-micro
# with a 4,096-token vocabulary, 1,000 steps of 32 x 128 tokens at 5e-3 take
# 2m38s (25.9k tokens/s); eval perplexity falls from 4,100 to 58 and the
# samples are Python made of the corpus's own identifiers and comments. The
# old default, llama-tiny with 6,144 tokens, saw 0.2M tokens in 3 minutes
# and sampled noise (perplexity 340). 1.2e-2 learned less than 5e-3 and a
# 2,048-token vocabulary gave more made-up words.
DEMO_TRAINING: dict[str, Any] = dict(
    block_size=128,
    per_device_train_batch_size=32,
    learning_rate=5e-3,
    warmup_ratio=0.05,
    logging_steps=10,
    eval_on_start=True,
    max_eval_samples=64,
    resume_from_checkpoint="none",
)
PROMPTS = ("class", "def __init__(self", "    def get_")
SAMPLING: dict[str, Any] = dict(num_samples=1, max_new_tokens=40, temperature=0.6, top_k=30)


def run_demo(
    out: Path,
    vocab_size: int = 4096,
    corpus_mb: float = 16.0,
    threads: int = 0,
    progress: bool = True,
    train_steps: int = 1000,
    preset: str = "llama-micro",
) -> PrepareStats:
    """Runs the whole flow on the embedded corpus, one summary line per step;
    ``train_steps=0`` stops after the data part."""
    started = time.perf_counter()
    steps = 6 if train_steps else 4
    print(f"tokenmill demo: raw text to a trained model, no downloads; files in {out}/")
    files = build_corpus(out / "corpus", corpus_mb)
    sizes = ", ".join(f"{f.name} {_mb(f.stat().st_size)}" for f in files)
    print(
        f"[1/{steps}] corpus     standard-library modules, their docstrings, Chinese text: {sizes}"
    )

    t = time.perf_counter()
    tok_dir = train_tokenizer(
        files, out / "tokenizer", vocab_size=vocab_size, overwrite=True, progress=False
    )
    print(
        f"[2/{steps}] tokenizer  {vocab_size:,}-token byte-level BPE trained in "
        f"{time.perf_counter() - t:.1f} s"
    )

    # Under a second: a progress bar would only leave a line behind.
    stats = prepare(files, tok_dir, out / "shards", overwrite=True, threads=threads, progress=False)
    dropped = {**stats.skipped, **stats.filtered}
    print(
        f"[3/{steps}] shards     {counted(stats.docs, 'document')} kept of "
        f"{counted(stats.lines, 'line')}"
        + (f" ({', '.join(f'{n} {r}' for r, n in dropped.items())})" if dropped else "")
        + f", {counted(stats.tokens, 'token')} ({stats.dtype}) in {stats.seconds:.1f} s"
    )

    report = verify(out / "shards")
    train_docs = inspect(out / "shards")["splits"]["train"]
    print(
        f"[4/{steps}] verify     {'ok' if report.ok else 'FAILED'}: "
        f"{counted(report.shards, 'shard')}, checksums, offsets and ids checked; documents of "
        f"median {train_docs['p50']:,.0f} and at most {train_docs['max']:,} tokens"
    )
    for e in report.errors:
        print(f"  {e}")
    if not report.ok:
        raise SystemExit(1)
    if train_steps:
        pretrain_and_sample(out, train_steps, preset, progress)
    print(f"done in {_duration(time.perf_counter() - started)}; what is where:")
    for name, what in (
        ("corpus", "the input text"),
        ("tokenizer", "tokenizer.json and its config (transformers.AutoTokenizer loads it)"),
        ("shards", f"manifest.json, train/ and val/ shards (tokenmill inspect {out}/shards)"),
        (
            "run",
            f"final_model/, best_model/, loss.png, logs/ (tensorboard --logdir {out}/run/logs)",
        ),
    ):
        if (out / name).exists():
            print(f"  {name + '/':11}{what}")
    return stats


def pretrain_and_sample(
    out: Path, steps: int, preset: str, progress: bool = True
) -> dict[str, Any]:
    """Steps 5-6 of the demo: a short CPU pretraining run, then samples."""
    import transformers

    from tokenmill.config import load_config
    from tokenmill.generate import generate
    from tokenmill.train import train

    # Loading and saving bars of a 1 MB model are noise here.
    transformers.utils.logging.disable_progress_bar()
    run = out / "run"
    cfg = load_config(
        None,
        dict(
            DEMO_TRAINING,
            data=str(out / "shards"),
            output_dir=str(run),
            preset=preset,
            max_steps=steps,
            eval_steps=max(1, steps // 3),
        ),
    )
    print(
        f"[5/6] pretrain   {preset}, {steps} steps of {cfg.per_device_train_batch_size} x "
        f"{cfg.block_size} tokens, learning rate {cfg.learning_rate:g}, on the CPU"
    )
    bar = _progress_callback(steps, progress)
    metrics = train(cfg, callbacks=[bar], console=False)
    params = json.loads((run / "manifest.json").read_text())["model"]["parameters"]
    before = bar.evals[0] if bar.evals else float("nan")
    after = metrics.get("eval_loss", float("nan"))
    print(
        f"           {params / 1e6:.2f}M parameters: eval perplexity "
        f"{math.exp(before):,.0f} -> {math.exp(after):,.1f} (loss {before:.2f} -> {after:.2f}) "
        f"in {_duration(metrics['train_seconds'])}, {metrics['tokens_per_second']:,.0f} tokens/s"
    )
    print(
        f"[6/6] samples    temperature {SAMPLING['temperature']}, top-k {SAMPLING['top_k']}, "
        f"from {run / 'final_model'}"
    )
    for prompt in PROMPTS:
        text = prompt + generate(run / "final_model", prompt, **SAMPLING)[0]
        first, *more = text.rstrip().splitlines()[:4]
        print(f"  > {first}")
        for line in more:
            print(f"  | {line}")
    return metrics


def _progress_callback(steps: int, show: bool) -> Any:
    """A Trainer callback: one progress bar with the latest loss (on stderr,
    gone when training ends); ``evals`` collects the eval losses in order."""
    from tqdm.auto import tqdm
    from transformers import TrainerCallback

    class Progress(TrainerCallback):  # type: ignore[misc]
        def __init__(self) -> None:
            # A bar redrawn into a log file or pipe is noise: terminals only.
            show_bar = show and sys.stderr.isatty()
            self.bar = tqdm(total=steps, unit="step", leave=False, disable=not show_bar)
            self.evals: list[float] = []

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.bar.update(state.global_step - self.bar.n)

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            if logs and "loss" in logs:
                self.bar.set_postfix(loss=f"{logs['loss']:.2f}")

        def on_evaluate(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.evals.append(kw["metrics"]["eval_loss"])

        def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.bar.close()

    return Progress()


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.0f} kB"


def _duration(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    return f"{m}m {s:02d}s" if m else f"{s} s"
