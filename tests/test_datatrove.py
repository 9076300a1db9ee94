"""tokenmill.datatrove: the partitioned stages as datatrove pipeline steps,
run by datatrove's LocalPipelineExecutor (4 tasks, 2 workers)."""

from __future__ import annotations

from pathlib import Path

from datatrove.executor import LocalPipelineExecutor

import tokenmill
from corpus import planted_corpus, write_jsonl
from test_parts import stream
from tokenmill.datatrove import (
    TokenmillDedupBuckets,
    TokenmillDedupClusters,
    TokenmillDedupSignatures,
    TokenmillMerge,
    TokenmillPrepare,
)


def run(steps: list, tasks: int, logs: Path, depends: LocalPipelineExecutor | None = None):
    executor = LocalPipelineExecutor(
        steps, tasks=tasks, workers=min(tasks, 2), logging_dir=str(logs), depends=depends
    )
    executor.run()
    return executor


def test_parts_and_dedup_stages_through_datatrove(tmp_path: Path, qwen_tok: Path) -> None:
    docs = planted_corpus(seed=5, pairs=150, triples=20, singles=150)
    inputs = tmp_path / "in"
    inputs.mkdir()
    for k in range(6):
        write_jsonl(inputs / f"{k}.jsonl", docs[k::6])
    work, out, logs = tmp_path / "work", tmp_path / "out", tmp_path / "logs"

    signatures = run([TokenmillDedupSignatures([inputs], work, buckets=3)], 4, logs / "sig")
    buckets = run([TokenmillDedupBuckets(work)], 3, logs / "buckets", signatures)
    clusters = run([TokenmillDedupClusters(work)], 1, logs / "clusters", buckets)
    prepare = TokenmillPrepare(out, qwen_tok, inputs=[inputs], dedup="none", exclude=work)
    parts = run([prepare], 4, logs / "prepare", clusters)
    run([TokenmillMerge(out)], 1, logs / "merge", parts)

    single = tokenmill.prepare(
        inputs, qwen_tok, tmp_path / "single", dedup="minhash", progress=False
    )
    assert single.filtered["near_duplicate"] > 30
    for split in ("train", "val"):
        assert stream(out, split) == stream(tmp_path / "single", split)
    assert tokenmill.verify(out).ok


def test_prepare_tokenizes_documents_from_earlier_steps(
    tmp_path: Path, texts: list[str], qwen_tok: Path
) -> None:
    from datatrove.data import Document

    docs = [t for t in texts if t.strip()][:400]

    def source(data: object, rank: int = 0, world_size: int = 1):
        """A reader as datatrove's are: each task reads its share."""
        for i in range(rank, len(docs), world_size):
            yield Document(text=docs[i], id=str(i))

    out = tmp_path / "out"
    parts = run([source, TokenmillPrepare(out, qwen_tok, dedup="none")], 2, tmp_path / "l1")
    run([TokenmillMerge(out)], 1, tmp_path / "l2", parts)
    # The merged dataset holds every document once, task 0's share first.
    order = docs[0::2] + docs[1::2]
    write_jsonl(tmp_path / "ordered.jsonl", order)
    single = tokenmill.prepare(
        tmp_path / "ordered.jsonl", qwen_tok, tmp_path / "single", dedup="none", progress=False
    )
    for split in ("train", "val"):
        assert stream(out, split) == stream(tmp_path / "single", split)
    assert tokenmill.read_manifest(out)["totals"]["docs"] == single.docs == len(docs)
