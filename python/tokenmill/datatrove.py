"""datatrove pipeline steps for tokenmill's partitioned stages (docs/scale-out.md).

datatrove's executors (local, Slurm, Ray) run a pipeline as ``tasks`` ranks,
retry failed ones and skip completed ones. These steps map that onto
tokenmill's parts: a task's rank is its part (or bucket), the number of tasks
the number of parts; a second executor (``depends=`` the first) merges.

    from datatrove.executor import LocalPipelineExecutor
    from tokenmill.datatrove import TokenmillMerge, TokenmillPrepare

    parts = LocalPipelineExecutor(
        [TokenmillPrepare("out/", "tok/", inputs=["data/"])], tasks=4, workers=2,
        logging_dir="logs/prepare",
    )
    LocalPipelineExecutor([TokenmillMerge("out/")], logging_dir="logs/merge", depends=parts).run()

Executors pickle the steps and run them in other processes or on other
machines, so a step holds only plain configuration and calls tokenmill in
``run``. Threads per task: ``threads``, else ``DATATROVE_CPUS_PER_TASK`` (the
Slurm and Ray executors set it), else all cores. Needs
``pip install 'tokenmill[datatrove]'``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

try:
    from datatrove.data import DocumentsPipeline
    from datatrove.pipeline.base import PipelineStep
except ImportError as e:
    raise ImportError(
        "tokenmill.datatrove needs datatrove: pip install 'tokenmill[datatrove]'"
    ) from e

from tokenmill import _core
from tokenmill.dedup import dedup_buckets, dedup_clusters, dedup_signatures
from tokenmill.inputs import PathLike
from tokenmill.shards import merge, prepare


def _threads(threads: int) -> int:
    """``threads``, else the task's CPUs as the executor says, else 0 (all cores)."""
    if threads > 0:
        return threads
    cpus = int(os.environ.get("DATATROVE_CPUS_PER_TASK", "-1") or -1)
    return max(cpus, 0)


def _part_dir(output: PathLike, rank: int) -> str:
    return os.path.join(os.fspath(output), f"part-{rank:05d}")


def _paths(inputs: PathLike | Sequence[PathLike]) -> list[str]:
    if isinstance(inputs, (str, os.PathLike)):
        return [os.fspath(inputs)]
    return [os.fspath(p) for p in inputs]


class TokenmillPrepare(PipelineStep):
    """Tokenizes into ``output/part-NNNNN`` (``NNNNN``: the task's rank).

    With ``inputs`` (files, directories or globs, as for `tokenmill.prepare`)
    the step reads them itself, as part ``rank`` of ``world_size``
    (``prepare(num_parts=, part=)``), and must come first in its pipeline;
    its parts merge into one run's dataset. Without ``inputs`` it tokenizes
    the texts of the documents that datatrove's readers and filters before it
    hand on (each task its share), and ends the pipeline. ``options`` are
    `tokenmill.prepare`'s (``dedup``, ``val_fraction``, ``exclude``, ...).
    """

    name = "tokenmill prepare"
    type = "Tokenizer"

    def __init__(
        self,
        output: PathLike,
        tokenizer: PathLike,
        inputs: PathLike | Sequence[PathLike] | None = None,
        threads: int = 0,
        **options: Any,
    ) -> None:
        super().__init__()
        self.output = os.fspath(output)
        self.tokenizer = os.fspath(tokenizer)
        self.inputs = None if inputs is None else _paths(inputs)
        self.threads = threads
        self.options = dict(options)

    def run(
        self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1
    ) -> DocumentsPipeline:
        common = {"threads": _threads(self.threads), "progress": False, **self.options}
        if self.inputs is not None:
            if data is not None:
                raise _core.InvalidOptionError(
                    "TokenmillPrepare(inputs=...) reads its inputs itself: put it first in the "
                    "pipeline, or give no inputs to tokenize the documents before it"
                )
            stats = prepare(
                self.inputs,
                self.tokenizer,
                _part_dir(self.output, rank),
                num_parts=world_size,
                part=rank,
                **common,
            )
            self.stat_update("documents", value=stats.docs)
            self.stat_update("tokens", value=stats.tokens)
            return None
        texts = (doc.text for doc in data or [])
        stats = prepare(
            texts, self.tokenizer, _part_dir(self.output, rank), allow_empty=True, **common
        )
        self.stat_update("documents", value=stats.docs)
        self.stat_update("tokens", value=stats.tokens)
        return None


class TokenmillMerge(PipelineStep):
    """Merges ``output/part-*`` into ``output`` (`tokenmill.merge`): run it in
    an executor of one task that ``depends=`` the one of `TokenmillPrepare`."""

    name = "tokenmill merge"
    type = "Tokenizer"

    def __init__(self, output: PathLike, threads: int = 0, overwrite: bool = False) -> None:
        super().__init__()
        self.output = os.fspath(output)
        self.threads = threads
        self.overwrite = overwrite

    def run(
        self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1
    ) -> DocumentsPipeline:
        if world_size != 1:
            raise _core.InvalidOptionError("TokenmillMerge runs as one task (tasks=1)")
        parts = sorted(p for p in Path(self.output).glob("part-*") if p.is_dir())
        stats = merge(parts, self.output, overwrite=self.overwrite, threads=_threads(self.threads))
        self.stat_update("documents", value=stats.docs)
        self.stat_update("tokens", value=stats.tokens)
        return data


class TokenmillDedupSignatures(PipelineStep):
    """Dedup stage 1 (`tokenmill.dedup_signatures`): part ``rank`` of
    ``world_size``. ``options`` are the MinHash and reader settings."""

    name = "tokenmill dedup signatures"
    type = "Dedup"

    def __init__(
        self,
        inputs: PathLike | Sequence[PathLike],
        work: PathLike,
        buckets: int = 1,
        threads: int = 0,
        **options: Any,
    ) -> None:
        super().__init__()
        self.inputs = _paths(inputs)
        self.work = os.fspath(work)
        self.buckets = buckets
        self.threads = threads
        self.options = dict(options)

    def run(
        self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1
    ) -> DocumentsPipeline:
        done = dedup_signatures(
            self.inputs,
            self.work,
            num_parts=world_size,
            part=rank,
            buckets=self.buckets,
            threads=_threads(self.threads),
            progress=False,
            **self.options,
        )
        self.stat_update("documents", value=done["docs"])
        return data


class TokenmillDedupBuckets(PipelineStep):
    """Dedup stage 2 (`tokenmill.dedup_buckets`): bucket ``rank``; run as
    many tasks as the signatures have buckets."""

    name = "tokenmill dedup buckets"
    type = "Dedup"

    def __init__(self, work: PathLike) -> None:
        super().__init__()
        self.work = os.fspath(work)

    def run(
        self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1
    ) -> DocumentsPipeline:
        done = dedup_buckets(self.work, rank)
        self.stat_update("candidate_pairs", value=done["edges"])
        return data


class TokenmillDedupClusters(PipelineStep):
    """Dedup stage 3 (`tokenmill.dedup_clusters`), as one task; then
    ``TokenmillPrepare(..., exclude=work)`` skips the removed documents."""

    name = "tokenmill dedup clusters"
    type = "Dedup"

    def __init__(self, work: PathLike) -> None:
        super().__init__()
        self.work = os.fspath(work)

    def run(
        self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1
    ) -> DocumentsPipeline:
        if world_size != 1:
            raise _core.InvalidOptionError("TokenmillDedupClusters runs as one task (tasks=1)")
        m = dedup_clusters(self.work)
        self.stat_update("removed", value=m["removed"])
        return data
