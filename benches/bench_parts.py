"""A partitioned `prepare` (parts, then `merge`) against one `prepare`, on one corpus.

- ``single``: ``tokenmill prepare CORPUS -t TOK -o OUT --threads C -q`` (default
  options: exact dedup, 1% val split).
- ``parts``: ``tokenmill prepare CORPUS ... --num-parts N --part I --threads T -q``
  for every part, at most S at once (by default T = 1 and S = C: a scheduler
  with C one-core slots), then ``tokenmill merge OUT/part-* -o OUT``.

Every command is a fresh process timed by wall clock from here, Python start-up
and tokenizer load included: that fixed cost is paid once per part, and it is
part of what partitioning costs. Each round runs both, the first of them
alternating between rounds; medians are reported with the ratio (target: at
most 1.3x). The merged dataset's token
stream is checked against the single run's (equal when no document is a
duplicate of one in another part, as in ``make_corpus.py``'s unique documents).

    python benches/bench_parts.py --corpus bench_out/corpus/u250M --tokenizer large --repeat 3
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench_prepare import BENCH_OUT, resolve_tokenizer


def tokenmill(*args: str) -> list[str]:
    return [sys.executable, "-m", "tokenmill", *args]


def run_single(corpus: Path, tok: Path, out: Path, cores: int) -> float:
    t0 = time.perf_counter()
    cmd = tokenmill("prepare", str(corpus), "-t", str(tok), "-o", str(out), "-q")
    subprocess.run([*cmd, "--threads", str(cores)], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def run_parts(
    corpus: Path, tok: Path, out: Path, parts: int, slots: int, threads: int
) -> tuple[float, float]:
    """Wall time of all parts (``slots`` at once, ``threads`` each) and of the merge after them."""
    t0 = time.perf_counter()
    queue = list(range(parts))
    running: list[subprocess.Popen[bytes]] = []
    while queue or running:
        while queue and len(running) < slots:
            i = queue.pop(0)
            cmd = tokenmill("prepare", str(corpus), "-t", str(tok), "-q", "--threads", str(threads))
            cmd += ["-o", str(out / f"part-{i:05d}"), "--num-parts", str(parts), "--part", str(i)]
            running.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL))
        time.sleep(0.01)
        for p in [p for p in running if p.poll() is not None]:
            if p.returncode != 0:
                sys.exit(f"a part failed: {p.args}")
            running.remove(p)
    t1 = time.perf_counter()
    names = [str(out / f"part-{i:05d}") for i in range(parts)]
    subprocess.run(
        tokenmill("merge", *names, "-o", str(out)), check=True, stdout=subprocess.DEVNULL
    )
    return t1 - t0, time.perf_counter() - t1


def stream_digest(root: Path) -> dict[str, str]:
    """sha256 of each split's token bytes in manifest order."""
    m = json.loads((root / "manifest.json").read_text())
    out = {}
    for name, split in m["splits"].items():
        h = hashlib.sha256()
        for s in split["shards"]:
            with open(root / s["bin"], "rb") as f:
                while block := f.read(1 << 24):
                    h.update(block)
        out[name] = h.hexdigest()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, default=BENCH_OUT / "corpus" / "u250M")
    ap.add_argument("--tokenizer", default="large", help="a bench_prepare.py name or a path")
    ap.add_argument("--parts", type=int, default=4)
    ap.add_argument("--cores", type=int, default=2, help="threads of the single run")
    ap.add_argument("--slots", type=int, default=0, help="parts at once (0: --cores)")
    ap.add_argument("--part-threads", type=int, default=1, help="threads of each part")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    tok = resolve_tokenizer(args.tokenizer, args.corpus)
    work = BENCH_OUT / "work" / "parts"
    single_t, parts_t, merge_t = [], [], []
    for r in range(args.repeat):
        shutil.rmtree(work, ignore_errors=True)
        slots = args.slots or args.cores
        # Alternate which goes first, so neither always reads after the other.
        for which in ("single", "parts") if r % 2 == 0 else ("parts", "single"):
            if which == "single":
                single_t.append(run_single(args.corpus, tok, work / "single", args.cores))
            else:
                p, m = run_parts(
                    args.corpus, tok, work / "parts", args.parts, slots, args.part_threads
                )
                parts_t.append(p)
                merge_t.append(m)
        same = stream_digest(work / "single") == stream_digest(work / "parts")
        print(
            f"round {r + 1}: single {single_t[-1]:.2f} s, {args.parts} parts {parts_t[-1]:.2f} s "
            f"+ merge {merge_t[-1]:.2f} s; token streams {'equal' if same else 'DIFFER'}",
            flush=True,
        )
        shutil.rmtree(work, ignore_errors=True)
    single, parts, merge = (statistics.median(x) for x in (single_t, parts_t, merge_t))
    total = statistics.median(p + m for p, m in zip(parts_t, merge_t, strict=True))
    meta = json.loads((args.corpus / "meta.json").read_text())
    print(
        f"\ncorpus {args.corpus} ({meta['text_bytes'] / 1e6:.0f} MB of text), tokenizer "
        f"{args.tokenizer}, {args.cores} cores, medians of {args.repeat}:\n"
        f"  single prepare ({args.cores} threads)          {single:8.2f} s\n"
        f"  {args.parts} parts ({args.slots or args.cores} at once, {args.part_threads} thread(s) "
        f"each) {parts:8.2f} s\n"
        f"  merge (checksums of every shard)     {merge:8.2f} s\n"
        f"  parts + merge / single               {total / single:8.2f}x (target <= 1.3x)"
    )


if __name__ == "__main__":
    main()
