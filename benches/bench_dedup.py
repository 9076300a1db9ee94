"""tokenmill's MinHash dedup against datasketch, rensa and datatrove on one corpus.

Same corpus, num_perm=128, threshold 0.8, 5-shingles (words, characters for
CJK documents), 2 workers for every tool, one run each:

- ``tokenmill minhash``: ``tokenmill.minhash(texts, threads=2)``, texts in memory.
- ``tokenmill dedup (texts)``: ``tokenmill.dedup(texts=texts, threads=2)``:
  signatures, LSH and clustering in memory.
- ``tokenmill dedup (files)``: ``tokenmill.dedup(files, output, threads=2)``:
  reads the JSONL, clusters, writes the kept records (``--verify`` too).
- ``datasketch``: Python shingling with tokenmill's normalisation (NFKC,
  lowercase, non-word characters as separators) in a 2-process pool,
  ``MinHash.update_batch``; then ``MinHashLSH`` (its own bands x rows for
  0.8, the same 9 x 13 as tokenmill) insert + query and a union-find.
- ``rensa``: the same Python shingling in a 2-process pool,
  ``RMinHash.digests_from_token_sets``; end to end: ``from_token_sets``,
  ``RMinHashLSH(0.8, 128, 8)`` (its bands must divide 128), ``insert_many``
  + ``query_all``, union-find.
- ``datatrove``: its four MinHash stages (signatures, buckets, cluster,
  filter) on a ``LocalPipelineExecutor`` with 2 workers, from the JSONL
  files to kept JSONL; its own normalisation and spaCy English word
  tokenizer (no CJK character shingles), 9 buckets x 13 hashes (117 hashes).

Every tool's clusters are scored against the exact Jaccard of the corpus
(tokenmill's shingles as ``tests/corpus.py`` restates them in Python, all
pairs >= 0.8 by prefix filtering): recall and precision over the pairs
inside clusters. Text MB/s uses the UTF-8 bytes of the text field.

    python benches/make_corpus.py --size 40M --near-duplicates -o bench_out/corpus/40M
    python benches/bench_dedup.py --corpus bench_out/corpus/40M --repeat 5

``--memory N`` instead writes N short random documents and reports the peak
RSS that ``tokenmill.dedup`` adds per document (a fresh child process each,
with and without ``verify``), to check the estimate in docs/dedup.md.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import re
import shutil
import statistics
import sys
import time
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
BENCH_OUT = ROOT / "bench_out"
THREADS = 2
NUM_PERM = 128
THRESHOLD = 0.8
NGRAM = 5
SEED = 1

# ---------------------------------------------------------------- shingles (Python tools)

_SEP = re.compile(r"[\W_]+")
_CJK = re.compile(
    "[\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af"
    "\u1100-\u11ff\u3130-\u318f\uf900-\ufaff\U00020000-\U0003ffff]"
)


def py_shingles(text: str, n: int = NGRAM) -> list[str]:
    """tokenmill's shingles written for speed in Python (regex instead of a
    loop per character; combining marks count as separators here)."""
    t = unicodedata.normalize("NFKC", text).lower()
    words = [w for w in _SEP.split(t) if w]
    if not words:
        return []
    kept = sum(map(len, words))
    if len(_CJK.findall(t)) * 10 >= kept * 3:
        units, sep = list("".join(words)), ""
    else:
        units, sep = words, " "
    if len(units) <= n:
        return [sep.join(units)]
    return [sep.join(units[i : i + n]) for i in range(len(units) - n + 1)]


def _datasketch_sigs(texts: list[str]) -> np.ndarray:
    from datasketch import MinHash

    out = np.empty((len(texts), NUM_PERM), dtype=np.uint64)
    for i, t in enumerate(texts):
        m = MinHash(num_perm=NUM_PERM, seed=SEED)
        m.update_batch([s.encode("utf-8") for s in py_shingles(t)])
        out[i] = m.hashvalues
    return out


def _rensa_sigs(texts: list[str]) -> np.ndarray:
    from rensa import RMinHash

    sets = [py_shingles(t) for t in texts]
    return np.asarray(RMinHash.digests_from_token_sets(sets, NUM_PERM, SEED), dtype=np.uint32)


def _shingle_chunk(texts: list[str]) -> list[list[str]]:
    return [py_shingles(t) for t in texts]


def _chunks(texts: list[str], size: int = 200) -> list[list[str]]:
    return [texts[i : i + size] for i in range(0, len(texts), size)]


# ---------------------------------------------------------------- tools


def run_tokenmill(texts: list[str], files: list[Path]) -> dict[str, Any]:
    import tokenmill

    res: dict[str, Any] = {}
    tokenmill.minhash(texts[:4], num_perm=NUM_PERM, threads=THREADS)  # warm-up: tables, threads
    t = time.perf_counter()
    sig = tokenmill.minhash(texts, num_perm=NUM_PERM, threads=THREADS)
    res["sig_seconds"] = time.perf_counter() - t
    assert sig.shape == (len(texts), NUM_PERM)
    t = time.perf_counter()
    r = tokenmill.dedup(texts=texts, threshold=THRESHOLD, num_perm=NUM_PERM, threads=THREADS)
    res["e2e_seconds"] = time.perf_counter() - t
    res["clusters"] = r.clusters
    res["params"] = f"{r.bands} x {r.rows}"
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        tokenmill.minhash(texts, num_perm=NUM_PERM, threads=1)
        best = min(best, time.perf_counter() - t)
    res["one_thread_seconds"] = best
    out = BENCH_OUT / "dedup" / "kept.jsonl"
    for verify in (False, True):
        t = time.perf_counter()
        rf = tokenmill.dedup(
            [str(f) for f in files],
            out,
            threshold=THRESHOLD,
            verify=verify,
            threads=THREADS,
            overwrite=True,
            progress=False,
        )
        key = "files_verify" if verify else "files"
        res[f"{key}_seconds"] = time.perf_counter() - t
        res[f"{key}_clusters"] = rf.clusters
        res[f"{key}_params"] = f"{rf.bands} x {rf.rows}"
        res[f"{key}_summary"] = {
            k: rf.summary[k]
            for k in ("signature_seconds", "cluster_seconds", "write_seconds", "bytes_per_doc")
        }
    out.unlink()
    return res


def run_datasketch(texts: list[str], pool: Any) -> dict[str, Any]:
    from datasketch import MinHash, MinHashLSH

    from corpus import clusters_from_candidates

    pool.map(_datasketch_sigs, [texts[:2]] * THREADS)  # warm-up: imports in the workers
    t = time.perf_counter()
    sigs = np.concatenate(pool.map(_datasketch_sigs, _chunks(texts)))
    sig_seconds = time.perf_counter() - t
    lsh = MinHashLSH(threshold=THRESHOLD, num_perm=NUM_PERM)
    mins = [MinHash(num_perm=NUM_PERM, seed=SEED, hashvalues=h, scheme="affine32") for h in sigs]
    with lsh.insertion_session() as session:
        for i, m in enumerate(mins):
            session.insert(i, m)
    clusters = clusters_from_candidates(len(texts), lambda i: lsh.query(mins[i]))
    return {
        "sig_seconds": sig_seconds,
        "e2e_seconds": time.perf_counter() - t,
        "clusters": clusters,
        "params": f"{lsh.b} x {lsh.r}",
    }


def run_rensa(texts: list[str], pool: Any) -> dict[str, Any]:
    from rensa import RMinHash, RMinHashLSH

    from corpus import clusters_from_candidates

    pool.map(_rensa_sigs, [texts[:2]] * THREADS)  # warm-up: imports in the workers
    t = time.perf_counter()
    sigs = np.concatenate(pool.map(_rensa_sigs, _chunks(texts)))
    sig_seconds = time.perf_counter() - t
    assert sigs.shape == (len(texts), NUM_PERM)
    t = time.perf_counter()
    sets = [s for chunk in pool.map(_shingle_chunk, _chunks(texts)) for s in chunk]
    mins = RMinHash.from_token_sets(sets, NUM_PERM, SEED)
    lsh = RMinHashLSH(THRESHOLD, NUM_PERM, 8)  # its bands must divide num_perm
    lsh.insert_many(mins)
    candidates = lsh.query_all(mins)
    clusters = clusters_from_candidates(len(texts), lambda i: candidates[i])
    return {
        "sig_seconds": sig_seconds,
        "e2e_seconds": time.perf_counter() - t,
        "clusters": clusters,
        "params": "8 x 16 (bands must divide 128)",
    }


def run_datatrove(files: list[Path]) -> dict[str, Any]:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    work = BENCH_OUT / "datatrove"
    shutil.rmtree(work, ignore_errors=True)
    config = MinhashConfig(n_grams=NGRAM, num_buckets=9, hashes_per_bucket=13, seed=SEED)
    data = str(files[0].parent)

    def reader() -> JsonlReader:
        return JsonlReader(data, glob_pattern="part-*.jsonl")

    stages = [
        ([reader(), MinhashDedupSignature(str(work / "sigs"), config=config)], THREADS),
        ([MinhashDedupBuckets(str(work / "sigs"), str(work / "buckets"), config=config)], 9),
        (
            [
                MinhashDedupCluster(
                    str(work / "buckets"), str(work / "remove"), config=config, save_cluster_id=True
                )
            ],
            1,
        ),
        (
            [
                reader(),
                MinhashDedupFilter(
                    str(work / "remove"),
                    exclusion_writer=JsonlWriter(str(work / "removed"), compression=None),
                    load_cluster_ids=True,
                ),
                JsonlWriter(str(work / "kept"), compression=None),
            ],
            THREADS,
        ),
    ]
    t = time.perf_counter()
    for i, (pipeline, tasks) in enumerate(stages):
        LocalPipelineExecutor(
            pipeline=pipeline,
            tasks=tasks,
            workers=THREADS,
            logging_dir=str(work / f"logs{i}"),
        ).run()
    seconds = time.perf_counter() - t
    # Cluster ids of every document, by (file, line index) -> global ordinal.
    starts, n = {}, 0
    for f in files:
        starts[f.name] = n
        n += sum(1 for _ in f.open(encoding="utf-8"))
    by_cluster: dict[int, list[int]] = {}
    for sub in ("kept", "removed"):
        for path in sorted((work / sub).glob("*.jsonl")):
            for line in path.open(encoding="utf-8"):
                doc = json.loads(line)
                cid = doc.get("metadata", {}).get("minhash_cluster_id", -1)
                if cid is None or cid < 0:
                    continue
                name, idx = doc["id"].rsplit("/", 1)
                by_cluster.setdefault(cid, []).append(starts[Path(name).name] + int(idx))
    return {
        "e2e_seconds": seconds,
        "clusters": [sorted(c) for c in by_cluster.values() if len(c) > 1],
        "params": "9 x 13 (117 hashes)",
    }


# ---------------------------------------------------------------- scoring


def truth_pairs(texts: list[str]) -> set[tuple[int, int]]:
    from corpus import exact_pairs, reference_shingles

    sets = [{hash(s) for s in reference_shingles(t, "auto", NGRAM)[1]} for t in texts]
    return set(exact_pairs(sets, THRESHOLD))


def score(clusters: list[list[int]], truth: set[tuple[int, int]]) -> tuple[float, float]:
    from corpus import cluster_pairs

    predicted = cluster_pairs(clusters)
    hits = len(predicted & truth)
    return hits / max(len(truth), 1), hits / max(len(predicted), 1)


def _memory_child(path: str, verify: bool) -> None:
    import resource

    import tokenmill

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    r = tokenmill.dedup(path, threads=THREADS, verify=verify, progress=False)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    n = len(r.roots)
    print(
        f"verify={verify}: {n:,} docs, peak RSS {before / 1024:.0f} MB -> {after / 1024:.0f} MB, "
        f"{(after - before) * 1024 / n:.0f} bytes per document "
        f"(the summary estimates {r.summary['bytes_per_doc']})"
    )


def memory(n: int) -> None:
    """Peak RSS per document of `tokenmill.dedup` on n short random documents."""
    import random

    path = BENCH_OUT / "dedup" / f"short-{n}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    words = [f"w{i}" for i in range(50_000)]
    with path.open("w") as f:
        for _ in range(n):
            f.write(json.dumps({"text": " ".join(rng.choice(words) for _ in range(6))}) + "\n")
    print(f"{path}: {path.stat().st_size / 1e6:.1f} MB")
    for verify in (False, True):
        ctx = mp.get_context("spawn")
        p = ctx.Process(target=_memory_child, args=(str(path), verify))
        p.start()
        p.join()
    path.unlink()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, default=BENCH_OUT / "corpus" / "40M")
    ap.add_argument("--tools", nargs="+", default=["tokenmill", "datasketch", "rensa", "datatrove"])
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--memory", type=int, metavar="N", help="only the peak RSS check, N documents")
    ap.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="rounds of every tool but datatrove (run once), interleaved; times are medians",
    )
    args = ap.parse_args()
    if args.memory:
        memory(args.memory)
        return
    os.environ["RAYON_NUM_THREADS"] = str(THREADS)
    files = sorted(args.corpus.glob("part-*.jsonl"))
    lines = [line for f in files for line in f.open(encoding="utf-8")]
    texts = [json.loads(line)["text"] for line in lines]
    mb = sum(len(t.encode()) for t in texts) / 1e6
    print(f"corpus {args.corpus}: {len(texts):,} docs, {mb:.1f} MB of text, {THREADS} workers")
    print(f"load average before: {os.getloadavg()[0]:.2f} (other processes share the cores)")
    ctx = mp.get_context("fork")
    rounds: dict[str, list[dict[str, Any]]] = {}
    with ctx.Pool(THREADS) as pool:
        for r in range(args.repeat):
            # New str objects every round, so that tokenmill's first call pays
            # CPython's UTF-8 encoding of non-ASCII texts each time.
            fresh = texts if r == 0 else [json.loads(line)["text"] for line in lines]
            for tool in args.tools:
                if tool == "datatrove" and r > 0:
                    continue
                try:
                    if tool == "tokenmill":
                        res = run_tokenmill(fresh, files)
                    elif tool == "datasketch":
                        res = run_datasketch(fresh, pool)
                    elif tool == "rensa":
                        res = run_rensa(fresh, pool)
                    elif tool == "datatrove":
                        res = run_datatrove(files)
                    rounds.setdefault(tool, []).append(res)
                except ImportError as e:
                    print(f"{tool}: not installed ({e}), skipped")
    # Times: the median over the rounds; clusters and settings: the first round.
    results: dict[str, dict[str, Any]] = {}
    for tool, runs in rounds.items():
        results[tool] = dict(runs[0])
        for key in runs[0]:
            if key.endswith("_seconds"):
                results[tool][key] = statistics.median(run[key] for run in runs)
        if len(runs) > 1:
            print(
                f"{tool}: signatures s per round "
                + ", ".join(f"{run['sig_seconds']:.3f}" for run in runs if "sig_seconds" in run)
            )
    t = time.perf_counter()
    truth = truth_pairs(texts)
    print(f"exact Jaccard >= {THRESHOLD}: {len(truth):,} pairs ({time.perf_counter() - t:.0f} s)")

    rows = []
    tm = results.get("tokenmill")
    for tool, r in results.items():
        variants = [("", "clusters", "e2e_seconds", "in memory")]
        if tool == "tokenmill":
            variants += [
                ("files", "files_clusters", "files_seconds", "JSONL -> kept JSONL"),
                ("files_verify", "files_verify_clusters", "files_verify_seconds", "same, --verify"),
            ]
        elif tool == "datatrove":
            variants = [("", "clusters", "e2e_seconds", "JSONL -> kept JSONL")]
        for key, ckey, skey, how in variants:
            recall, precision = score(r[ckey], truth)
            params = r[f"{key}_params" if key else "params"]
            rows.append(
                {
                    "tool": tool,
                    "how": how,
                    "params": params,
                    "sig_seconds": r.get("sig_seconds") if not key else None,
                    "e2e_seconds": r[skey],
                    "recall": recall,
                    "precision": precision,
                }
            )
    print()
    print(
        "| tool | run | bands x rows | signatures s | MB/s | docs/s | end to end s | MB/s "
        "| recall | precision |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        sig = row["sig_seconds"]
        sig_cols = f"{sig:.2f} | {mb / sig:.1f} | {len(texts) / sig:,.0f}" if sig else "- | - | -"
        e2e = row["e2e_seconds"]
        print(
            f"| {row['tool']} | {row['how']} | {row['params']} | {sig_cols} | {e2e:.2f} | "
            f"{mb / e2e:.1f} | {row['recall']:.3f} | {row['precision']:.3f} |"
        )
    if tm:
        print()
        targets = []
        if "datasketch" in results:
            ds = results["datasketch"]
            targets.append(
                ("signatures docs/s vs datasketch", ds["sig_seconds"] / tm["sig_seconds"], 50)
            )
            targets.append(
                ("end to end vs datasketch (in memory)", ds["e2e_seconds"] / tm["e2e_seconds"], 20)
            )
            targets.append(
                (
                    "end to end vs datasketch (tokenmill from files)",
                    ds["e2e_seconds"] / tm["files_seconds"],
                    20,
                )
            )
            if len(rounds["tokenmill"]) > 1 and len(rounds["datasketch"]) > 1:
                per_round = [
                    d["sig_seconds"] / t["sig_seconds"]
                    for t, d in zip(rounds["tokenmill"], rounds["datasketch"], strict=True)
                ]
                print(
                    "signatures docs/s vs datasketch, round by round: "
                    + ", ".join(f"{r:.1f}x" for r in per_round)
                    + f" (median {statistics.median(per_round):.1f}x)"
                )
        if "rensa" in results:
            rensa_ratio = results["rensa"]["sig_seconds"] / tm["sig_seconds"]
            targets.append(("signatures docs/s vs rensa", rensa_ratio, 1.5))
        for name, ratio, target in targets:
            status = "met" if ratio >= target else "NOT met"
            print(f"{name}: {ratio:.1f}x (target {target}x: {status})")
        print(
            f"tokenmill.minhash on 1 thread, best of 3 (median over rounds): "
            f"{tm['one_thread_seconds']:.3f} s, "
            f"{mb / tm['one_thread_seconds']:.1f} MB/s"
        )
        print("tokenmill files, phases:", json.dumps(tm["files_summary"]))
        print("tokenmill files --verify, phases:", json.dumps(tm["files_verify_summary"]))
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        meta = {"machine": platform.processor() or platform.machine(), "docs": len(texts), "mb": mb}
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
