"""Near-duplicate removal: MinHash signatures (`minhash`) and MinHash LSH
clustering (`dedup`) of texts in memory or of JSONL/text files.

Normalisation, shingles, the bands x rows choice and memory use are
described in docs/dedup.md. Clusters are deterministic: the kept document of
a cluster is its first in input order, whatever the thread count.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from tokenmill import _core
from tokenmill._text import counted
from tokenmill.inputs import Inputs, PathLike, resolved_inputs

if TYPE_CHECKING:
    import numpy as np

Shingle = Literal["auto", "word", "char"] | str


def _shingle_spec(shingle: str, ngram: int) -> str:
    return shingle if ":" in shingle else f"{shingle}:{ngram}"


def minhash(
    texts: Sequence[str],
    num_perm: int = 128,
    ngram: int = 5,
    *,
    seed: int = 1,
    shingle: Shingle = "auto",
    threads: int = 0,
) -> np.ndarray:
    """MinHash signatures of ``texts``: a read-only ``uint32`` array of shape
    ``(len(texts), num_perm)``.

    Rust computes the values straight into one bytes object that the array
    wraps, so no copy is made. A text with no shingle (only punctuation) gets
    ``0xFFFFFFFF`` everywhere.

    Args:
        texts: the documents.
        num_perm: permutations per signature.
        ngram: shingle size (words, or characters for CJK text).
        seed: seed of the shingle hash and the permutations.
        shingle: ``auto`` (characters for documents that are at least 30% CJK,
            words otherwise), ``word`` or ``char``, optionally ``word:N``.
        threads: worker threads (0: ``TOKENMILL_THREADS`` or all cores).
    """
    import numpy as np

    texts = list(texts)
    raw = _core.minhash(texts, num_perm, shingle, ngram, seed, threads)
    return np.frombuffer(raw, dtype="<u4").reshape(len(texts), num_perm)


@dataclass(frozen=True)
class DedupResult:
    """Clusters of near-duplicates.

    ``roots[i]`` is the first document (in input order) of document ``i``'s
    cluster; ``kept`` is ``roots == arange(n)``: the documents a dedup keeps.
    For file inputs, ``summary`` holds per-file counts, the LSH settings and
    timings, and the ordinals count documents (lines that hold one) in input order.
    """

    roots: np.ndarray
    bands: int
    rows: int
    candidate_pairs: int
    verified_pairs: int
    rejected_pairs: int
    summary: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def kept(self) -> np.ndarray:
        """Boolean mask of the kept documents."""
        import numpy as np

        mask: np.ndarray = self.roots == np.arange(len(self.roots), dtype=self.roots.dtype)
        return mask

    @property
    def removed(self) -> int:
        return int(len(self.roots) - self.kept.sum())

    @property
    def clusters(self) -> list[list[int]]:
        """Clusters of two or more documents, each in input order (kept first),
        ordered by their kept document."""
        import numpy as np

        order = np.argsort(self.roots, kind="stable")
        roots = self.roots[order]
        starts = np.flatnonzero(np.r_[True, roots[1:] != roots[:-1]])
        groups = np.split(order, starts[1:])
        return [g.tolist() for g in groups if len(g) > 1]

    def format_summary(self) -> str:
        """A one-screen report of a file run."""
        s = self.summary
        skipped: dict[str, int] = {}
        for f in s.get("inputs", []):
            for k, v in f["skipped"].items():
                skipped[k] = skipped.get(k, 0) + v
        lines = [
            f"read         {counted(s['docs'], 'document')} ({s['text_bytes'] / 1e6:,.1f} MB "
            f"of text) from {counted(len(s['inputs']), 'file')}",
            f"kept         {s['kept']:,}, removed {counted(s['removed'], 'near-duplicate')} "
            f"in {counted(s['clusters'], 'cluster')}",
            f"minhash      threshold {s['threshold']}, {counted(s['num_perm'], 'permutation')}, "
            f"{counted(s['bands'], 'band')} x {counted(s['rows'], 'row')}, "
            f"shingles {s['shingle']}, seed {s['seed']}",
            f"pairs        {self.candidate_pairs:,} candidate"
            + (
                f", {self.verified_pairs:,} verified, {self.rejected_pairs:,} under the threshold"
                if s["verify"]
                else " (not verified)"
            ),
            "skipped      "
            + (", ".join(f"{k}={v:,}" for k, v in sorted(skipped.items())) or "none"),
        ]
        lines += [f"  e.g. {e}" for e in s["skipped_examples"][:3]]
        if s.get("output"):
            layout = {"jsonl": "JSON Lines", "txt": "text lines"}[s["output_format"]]
            lines.append(f"output       {s['output']} ({layout}, by its name)")
        if s.get("report"):
            lines.append(f"report       {s['report']}")
        lines.append(
            f"speed        {s['seconds']:.2f} s ({s['signature_seconds']:.2f} signatures, "
            f"{s['cluster_seconds']:.2f} clustering, {s['write_seconds']:.2f} writing), "
            f"{s['text_mb_per_s']:.1f} MB/s on {counted(s['threads'], 'thread')}; "
            f"~{s['bytes_per_doc']} bytes of RAM per document"
        )
        return "\n".join(lines)


def _options(
    threshold: float,
    num_perm: int,
    bands: int | None,
    rows: int | None,
    shingle: str,
    ngram: int,
    seed: int,
    verify: bool,
) -> dict[str, Any]:
    return {
        "threshold": threshold,
        "num_perm": num_perm,
        "bands": bands,
        "rows": rows,
        "shingle": shingle,
        "ngram": ngram,
        "seed": seed,
        "verify": verify,
    }


def dedup(
    inputs: Inputs | None = None,
    output: PathLike | None = None,
    *,
    texts: Sequence[str] | None = None,
    threshold: float = 0.8,
    num_perm: int = 128,
    bands: int | None = None,
    rows: int | None = None,
    shingle: Shingle = "auto",
    ngram: int = 5,
    seed: int = 1,
    verify: bool = False,
    report: PathLike | None = None,
    text_field: str = "text",
    id_field: str = "id",
    txt_mode: Literal["line", "file"] = "line",
    max_line_bytes: int = _core.DEFAULT_MAX_LINE_BYTES,
    strict: bool = False,
    threads: int = 0,
    overwrite: bool = False,
    progress: bool = True,
    allow_empty: bool = False,
    input_split: str | None = None,
) -> DedupResult:
    """Finds near-duplicates with MinHash LSH and keeps the first of each cluster.

    Give either ``inputs`` (files, directories or globs, as for `prepare`) or
    ``texts`` (strings in memory). For files, ``output`` receives the kept
    records unchanged (byte for byte, same order; compressed as its name
    says: ``.jsonl``, ``.jsonl.gz``, ``.jsonl.zst``) and ``report`` one JSON
    line per cluster with the kept and removed documents (file, line, id).

    Args:
        threshold: Jaccard similarity at or above which documents are near-duplicates.
        num_perm: permutations per signature.
        bands, rows: LSH layout; by default chosen from the threshold by
            minimising false positive + false negative probability (false
            negatives weigh 0.9 with ``verify``, which removes false positives).
        shingle, ngram: ``auto`` | ``word`` | ``char`` (or ``word:N``) and N.
        seed: seed of the hashes.
        verify: compute the exact Jaccard of candidate pairs (a second read)
            and drop pairs under the threshold.
        text_field, id_field, txt_mode, max_line_bytes, strict: as for `prepare`;
            ``id_field`` is quoted in the report when a record has it.
        threads: worker threads (0: ``TOKENMILL_THREADS`` or all cores).
        overwrite: replace existing ``output``/``report`` files.
        progress: progress lines on stderr.
        allow_empty: finish a file run that reads no document; otherwise it
            raises `NoDocumentsError` naming the commonest reason lines gave
            none, and writes neither ``output`` nor ``report``.
        input_split: the split to read of a ``DatasetDict`` (object or
            ``save_to_disk`` directory) or of a dataset name.
    """
    import numpy as np

    opts = _options(threshold, num_perm, bands, rows, shingle, ngram, seed, verify)
    if (inputs is None) == (texts is None):
        raise _core.InvalidOptionError("give either inputs (files) or texts, not both")
    if texts is not None:
        if output is not None or report is not None:
            raise _core.InvalidOptionError("output and report are for file inputs")
        raw, info_json = _core.dedup_texts(list(texts), json.dumps(opts), threads)
        info = json.loads(info_json)
        return DedupResult(
            roots=np.frombuffer(raw, dtype="<u4"),
            bands=info["bands"],
            rows=info["rows"],
            summary=info,
            **info["stats"],
        )
    assert inputs is not None
    config = {
        "output": None if output is None else os.fspath(output),
        "report": None if report is None else os.fspath(report),
        "text_field": text_field,
        "id_field": id_field,
        "txt_mode": txt_mode,
        "max_line_bytes": max_line_bytes,
        "strict": strict,
        "minhash": opts,
        "threads": threads,
        "overwrite": overwrite,
        "progress": progress,
        "allow_empty": allow_empty,
    }
    with resolved_inputs(inputs, text_field, input_split) as r:
        raw, summary_json = _core.dedup_files(json.dumps({"inputs": r.specs, **config}), r.tables)
    summary = json.loads(summary_json)
    return DedupResult(
        roots=np.frombuffer(raw, dtype="<u4"),
        bands=summary["bands"],
        rows=summary["rows"],
        summary=summary,
        **summary["stats"],
    )


# --- the same across machines: stages that exchange files (docs/scale-out.md)


def dedup_signatures(
    inputs: Inputs,
    work: PathLike,
    *,
    num_parts: int = 1,
    part: int = 0,
    buckets: int = 1,
    threshold: float = 0.8,
    num_perm: int = 128,
    bands: int | None = None,
    rows: int | None = None,
    shingle: Shingle = "auto",
    ngram: int = 5,
    seed: int = 1,
    text_field: str = "text",
    txt_mode: Literal["line", "file"] = "line",
    max_line_bytes: int = _core.DEFAULT_MAX_LINE_BYTES,
    strict: bool = False,
    threads: int = 0,
    progress: bool = True,
    input_split: str | None = None,
) -> dict[str, Any]:
    """Dedup stage 1, for one part of the inputs (cut as `prepare` cuts
    parts): writes the band hashes of its documents into
    ``work/signatures/part-NNNNN/``, one file per bucket, and returns the
    part's record (``done.json``). A finished part with the same settings is
    not redone (``already_complete``). The MinHash settings are those of
    `dedup` (``verify`` is not available across machines); every part of a
    run must use the same settings, inputs and ``buckets``."""
    config = {
        "work": os.fspath(work),
        "text_field": text_field,
        "txt_mode": txt_mode,
        "max_line_bytes": max_line_bytes,
        "strict": strict,
        "minhash": _options(threshold, num_perm, bands, rows, shingle, ngram, seed, False),
        "num_parts": num_parts,
        "part": part,
        "buckets": buckets,
        "threads": threads,
        "progress": progress,
    }
    with resolved_inputs(inputs, text_field, input_split) as r:
        done = _core.dedup_signatures(json.dumps({"inputs": r.specs, **config}), r.tables)
    result: dict[str, Any] = json.loads(done)
    return result


def dedup_buckets(work: PathLike, bucket: int) -> dict[str, Any]:
    """Dedup stage 2, for one bucket: reads that bucket of every signatures
    part (all must be finished) and writes the candidate edges of documents
    that share a band hash to ``work/edges/``. Returns the bucket's record."""
    result: dict[str, Any] = json.loads(_core.dedup_buckets(os.fspath(work), bucket))
    return result


def dedup_clusters(work: PathLike) -> dict[str, Any]:
    """Dedup stage 3: union-find over every bucket's edges (all must be
    finished); each cluster keeps its first document in input order. Writes
    ``work/removed.bin`` and ``work/manifest.json`` (returned), which
    ``prepare(..., exclude=work)`` reads."""
    result: dict[str, Any] = json.loads(_core.dedup_clusters(os.fspath(work)))
    return result
