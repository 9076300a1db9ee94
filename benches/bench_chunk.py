"""tokenmill's chunking against LangChain's RecursiveCharacterTextSplitter.

Same corpus (the JSONL text fields, in memory), same limit: 512 characters
(Unicode code points; LangChain's default ``length_function=len`` counts the
same unit), no overlap. Both run in one process run, ``--repeat`` rounds
interleaved, and the table shows each tool's median:

- ``tokenmill``: ``tokenmill.chunk(texts, max_chars=512, threads=T)`` (list
  of lists of str) for T = 1 and 2.
- ``langchain``: ``RecursiveCharacterTextSplitter(chunk_size=512,
  chunk_overlap=0).split_text`` per document (its default separators
  ``["\\n\\n", "\\n", " ", ""]``), in this process, and over a 2-process
  pool (documents in batches of 200, as a user would parallelise it).
- ``langchain-cjk``: the same with ``。！？`` added after ``"\\n"`` in
  the separators, so that Chinese text is cut at sentence ends too.

Besides speed it reports the chunks: how many, their mean length, how many
exceed the limit, and whether they tile the text (joined, they give back the
document; LangChain strips whitespace at the cuts by default, so its chunks
do not).

    python benches/bench_chunk.py --corpus bench_out/corpus/40M --repeat 5
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MAX_CHARS = 512
CJK_SEPARATORS = ["\n\n", "\n", "。", "！", "？", " ", ""]


def _splitter(cjk: bool) -> Any:
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    seps = CJK_SEPARATORS if cjk else None
    return RecursiveCharacterTextSplitter(chunk_size=MAX_CHARS, chunk_overlap=0, separators=seps)


def _langchain_batch(args: tuple[list[str], bool]) -> list[list[str]]:
    texts, cjk = args
    splitter = _splitter(cjk)
    return [splitter.split_text(t) for t in texts]


def run_langchain(texts: list[str], cjk: bool, pool: Any | None) -> tuple[float, list[list[str]]]:
    if pool is None:
        splitter = _splitter(cjk)
        t = time.perf_counter()
        out = [splitter.split_text(x) for x in texts]
        return time.perf_counter() - t, out
    batches = [(texts[i : i + 200], cjk) for i in range(0, len(texts), 200)]
    t = time.perf_counter()
    out = [c for part in pool.map(_langchain_batch, batches) for c in part]
    return time.perf_counter() - t, out


def run_tokenmill(texts: list[str], threads: int) -> tuple[float, list[list[str]]]:
    import tokenmill

    t = time.perf_counter()
    out = tokenmill.chunk(texts, max_chars=MAX_CHARS, threads=threads)
    return time.perf_counter() - t, out


def describe(texts: list[str], chunks: list[list[str]]) -> dict[str, Any]:
    flat = [c for doc in chunks for c in doc]
    return {
        "chunks": len(flat),
        "mean_chars": sum(map(len, flat)) / max(len(flat), 1),
        "over_limit": sum(len(c) > MAX_CHARS for c in flat),
        "tiles": all("".join(doc) == t for doc, t in zip(chunks, texts, strict=True)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, default=ROOT / "bench_out" / "corpus" / "40M")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args()
    files = sorted(args.corpus.glob("part-*.jsonl"))
    texts = [json.loads(line)["text"] for f in files for line in f.open(encoding="utf-8")]
    mb = sum(len(t.encode()) for t in texts) / 1e6
    print(f"corpus {args.corpus}: {len(texts):,} docs, {mb:.1f} MB of text")
    print(f"load average before: {os.getloadavg()[0]:.2f} (other processes share the cores)")
    import tokenmill

    tokenmill.chunk(texts[:4], max_chars=MAX_CHARS)  # warm-up: tables, threads
    runs: dict[str, list[float]] = {}
    shapes: dict[str, dict[str, Any]] = {}
    with mp.get_context("fork").Pool(2) as pool:
        pool.map(_langchain_batch, [(texts[:2], False)] * 2)  # warm-up: imports in the workers
        tools = {
            "tokenmill, 1 thread": lambda: run_tokenmill(texts, 1),
            "tokenmill, 2 threads": lambda: run_tokenmill(texts, 2),
            "langchain, 1 process": lambda: run_langchain(texts, False, None),
            "langchain, 2 processes": lambda: run_langchain(texts, False, pool),
            "langchain-cjk, 1 process": lambda: run_langchain(texts, True, None),
            "langchain-cjk, 2 processes": lambda: run_langchain(texts, True, pool),
        }
        for _ in range(args.repeat):
            for name, run in tools.items():
                seconds, chunks = run()
                runs.setdefault(name, []).append(seconds)
                if name not in shapes:
                    shapes[name] = describe(texts, chunks)
    print()
    print("| tool | median s | MB/s | docs/s | chunks | mean chars | over 512 | tile the text |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    rows = []
    for name, secs in runs.items():
        med = statistics.median(secs)
        s = shapes[name]
        rows.append({"tool": name, "seconds": secs, "median": med, **s})
        print(
            f"| {name} | {med:.3f} | {mb / med:.1f} | {len(texts) / med:,.0f} | {s['chunks']:,} "
            f"| {s['mean_chars']:.0f} | {s['over_limit']} | {'yes' if s['tiles'] else 'no'} |"
        )
    print()
    tm2 = statistics.median(runs["tokenmill, 2 threads"])
    tm1 = statistics.median(runs["tokenmill, 1 thread"])
    for name in ("langchain, 1 process", "langchain, 2 processes"):
        print(
            f"tokenmill vs {name}: {statistics.median(runs[name]) / tm2:.1f}x (2 threads), "
            f"{statistics.median(runs[name]) / tm1:.1f}x (1 thread)"
        )
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"docs": len(texts), "mb": mb, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
