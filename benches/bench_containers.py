"""`tokenmill prepare` on one corpus in two containers: the JSON Lines part
files of benches/make_corpus.py, and the same documents in the same order as
one Parquet file (zstd, row groups of 10,000 rows, the text column only).

Each run is a fresh process that times `tokenmill.prepare` (imports
excluded) and reports its peak RSS; the two containers alternate in every
round and medians are reported. Fixed cost is measured the same way on a
one-document file of each container and subtracted. The shards of the two
containers are checked to be byte-identical. Prints the Parquet/JSONL ratios
of throughput and peak RSS.

    python benches/bench_containers.py --corpus bench_out/corpus/1G --repeat 3
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCH_OUT = HERE.parent / "bench_out"


def child(inputs: list[str], tokenizer: str, out: str, threads: int) -> None:
    import tokenmill

    t0 = time.perf_counter()
    stats = tokenmill.prepare(
        inputs if len(inputs) > 1 else inputs[0],
        tokenizer,
        out,
        threads=threads,
        dedup="none",
        val_fraction=0,
        progress=False,
        overwrite=True,
    )
    seconds = time.perf_counter() - t0
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so a child
    # would report its parent's peak when that is higher.
    status = Path("/proc/self/status").read_text()
    rss_mb = int(next(x for x in status.splitlines() if x.startswith("VmHWM:")).split()[1]) / 1024
    print(json.dumps({"seconds": seconds, "rss_mb": rss_mb, "tokens": stats.tokens}))


def to_parquet(parts: list[Path], path: Path) -> int:
    """The documents of ``parts``, in order, as one Parquet file; its bytes
    of text."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("text", pa.string())])
    text_bytes = 0
    tmp = path.with_suffix(".tmp")
    with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
        batch: list[str] = []
        for part in parts:
            with part.open(encoding="utf-8") as f:
                for line in f:
                    batch.append(json.loads(line)["text"])
                    if len(batch) == 10_000:
                        text_bytes += sum(len(t.encode()) for t in batch)
                        writer.write_table(pa.table({"text": batch}, schema=schema))
                        batch = []
        if batch:
            text_bytes += sum(len(t.encode()) for t in batch)
            writer.write_table(pa.table({"text": batch}, schema=schema))
    tmp.rename(path)
    return text_bytes


def one_document(parts: list[Path], work: Path) -> tuple[Path, Path]:
    """The first document as a JSON Lines file and as a Parquet file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with parts[0].open(encoding="utf-8") as f:
        line = f.readline()
    jsonl = work / "one.jsonl"
    jsonl.write_text(line, encoding="utf-8")
    parquet = work / "one.parquet"
    pq.write_table(pa.table({"text": [json.loads(line)["text"]]}), parquet, compression="zstd")
    return jsonl, parquet


def run(inputs: list[Path], tokenizer: Path, out: Path, threads: int) -> dict:
    cmd = [sys.executable, __file__, "_child", str(tokenizer), str(out), str(threads)]
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    proc = subprocess.run(
        [*cmd, *map(str, inputs)], env=env, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def shard_digest(out: Path) -> str:
    h = hashlib.sha256()
    for p in sorted((out / "train").iterdir()):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        tokenizer, out, threads, *inputs = sys.argv[2:]
        child(inputs, tokenizer, out, int(threads))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, required=True, help="part-*.jsonl of make_corpus.py")
    ap.add_argument(
        "--tokenizer", default="small", help="small, large, llama (bench_prepare.py) or a path"
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    sys.path.insert(0, str(HERE))
    from bench_prepare import _parts, resolve_tokenizer

    parts = _parts(args.corpus)
    tokenizer = resolve_tokenizer(args.tokenizer, args.corpus)
    work = BENCH_OUT / "containers"
    work.mkdir(parents=True, exist_ok=True)
    parquet = work / f"{args.corpus.name}.parquet"
    if not parquet.exists():
        t0 = time.perf_counter()
        to_parquet(parts, parquet)
        print(f"wrote {parquet} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    jsonl_bytes = sum(p.stat().st_size for p in parts)
    one_jsonl, one_parquet = one_document(parts, work)
    containers = {"jsonl": (parts, [one_jsonl]), "parquet": ([parquet], [one_parquet])}

    runs: dict[str, list[dict]] = {name: [] for name in containers}
    fixed: dict[str, list[float]] = {name: [] for name in containers}
    digests = {}
    for r in range(args.repeat):
        for name, (full, one) in containers.items():
            out = work / f"out-{name}"
            fixed[name].append(run(one, tokenizer, work / f"one-{name}", args.threads)["seconds"])
            result = run(full, tokenizer, out, args.threads)
            runs[name].append(result)
            digests[name] = shard_digest(out)
            print(f"round {r + 1} {name}: {result}", file=sys.stderr)
    if digests["jsonl"] != digests["parquet"]:
        sys.exit("the two containers gave different shards")

    report = {"corpus": str(args.corpus), "jsonl_bytes": jsonl_bytes}
    report["parquet_bytes"] = parquet.stat().st_size
    report["tokenizer"] = str(tokenizer)
    report["threads"] = args.threads
    for name in containers:
        seconds = statistics.median(x["seconds"] for x in runs[name])
        fixed_s = statistics.median(fixed[name])
        report[name] = {
            "seconds": seconds,
            "fixed_seconds": fixed_s,
            "mb_per_s": jsonl_bytes / 1e6 / (seconds - fixed_s),
            "rss_mb": statistics.median(x["rss_mb"] for x in runs[name]),
            "tokens": runs[name][0]["tokens"],
        }
    report["throughput_ratio"] = report["parquet"]["mb_per_s"] / report["jsonl"]["mb_per_s"]
    report["rss_ratio"] = report["parquet"]["rss_mb"] / report["jsonl"]["rss_mb"]
    report["shards_identical"] = True
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
