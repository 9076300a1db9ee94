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
import sysconfig
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import zstandard

from tokenmill.shards import PrepareStats, format_inspect, inspect, prepare, verify
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


def run_demo(
    out: Path,
    vocab_size: int = 6144,
    corpus_mb: float = 16.0,
    threads: int = 0,
    progress: bool = True,
    train_steps: int = 100,
    preset: str = "llama-tiny",
) -> PrepareStats:
    """Runs the whole flow on the embedded corpus, printing each step;
    ``train_steps=0`` stops after the data part."""
    steps = 6 if train_steps else 4
    print(f"[1/{steps}] building the embedded corpus ({corpus_mb:g} MB budget) in {out / 'corpus'}")
    files = build_corpus(out / "corpus", corpus_mb)
    print(f"[2/{steps}] training a {vocab_size}-token byte-level BPE tokenizer")
    tok_dir = train_tokenizer(files, out / "tokenizer", vocab_size=vocab_size, progress=progress)
    print(f"[3/{steps}] preparing shards in {out / 'shards'}")
    stats = prepare(
        files,
        tok_dir,
        out / "shards",
        text_field="text",
        overwrite=True,
        threads=threads,
        progress=progress,
    )
    print(stats.summary())
    print(f"[4/{steps}] verifying and inspecting")
    report = verify(out / "shards")
    status = "ok" if report.ok else "FAILED"
    print(f"verify: {status} ({report.shards} shards, {report.tokens:,} tokens)")
    for e in report.errors:
        print(f"  {e}")
    print(format_inspect(inspect(out / "shards")))
    if not report.ok:
        raise SystemExit(1)
    if train_steps:
        pretrain_and_sample(out, train_steps, preset)
    return stats


def pretrain_and_sample(out: Path, steps: int, preset: str) -> dict[str, Any]:
    """Steps 5-6 of the demo: a short CPU pretraining run, then samples."""
    from tokenmill.config import load_config
    from tokenmill.generate import generate
    from tokenmill.train import train

    run = out / "run"
    print(
        f"[5/6] pretraining {preset} for {steps} steps in {run} (loss.png, logs/ for TensorBoard)"
    )
    cfg = load_config(
        None,
        {},
        dict(
            data=str(out / "shards"),
            output_dir=str(run),
            preset=preset,
            max_steps=steps,
            per_device_train_batch_size=8,
            learning_rate=1e-3,
            warmup_ratio=0.05,
            logging_steps=10,
            eval_steps=max(1, steps // 3),
            max_eval_samples=32,
            resume_from_checkpoint="none",
        ),
    )
    metrics = train(cfg)
    print(
        f"trained: eval loss {metrics.get('eval_loss', float('nan')):.3f} "
        f"(perplexity {metrics.get('perplexity', float('nan')):,.1f}), "
        f"{metrics['tokens_per_second']:,.0f} tokens/s"
    )
    print("[6/6] sampling from the trained model")
    for prompt in ("def ", "中文"):
        for text in generate(run / "final_model", prompt, num_samples=1, max_new_tokens=48):
            print(f"--- {prompt!r} ->\n{prompt}{text}")
    return metrics
