"""Token shards: build them (`prepare`), read them (`open_shards`), check them
(`verify`, `inspect`).

Format v1 (docs/shard-format.md): ``SPLIT/NNNNN.bin`` holds little-endian
token ids (uint16 when the vocabulary fits, else uint32), ``SPLIT/NNNNN.idx``
little-endian uint64 document start offsets (docs + 1 entries). Reading is a
``numpy.memmap`` of each file, so opening a 100 GB dataset costs no RAM and
every document is a zero-copy view. numpy is imported where it is used,
so ``import tokenmill`` (and the CLI's start-up) does not pay for it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from tokenmill import _core
from tokenmill._text import counted
from tokenmill.inputs import Inputs, PathLike, resolved_inputs

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class SplitStats:
    """Size of one split."""

    tokens: int
    docs: int
    shards: int


def _split_stats(manifest: dict[str, Any]) -> dict[str, SplitStats]:
    return {
        name: SplitStats(s["tokens"], s["docs"], len(s["shards"]))
        for name, s in manifest["splits"].items()
    }


@dataclass(frozen=True)
class PrepareStats:
    """What `prepare` did: totals, per-split sizes, skipped lines and timings.

    ``manifest`` is the full manifest.json written into the output directory.
    """

    output: Path
    splits: dict[str, SplitStats]
    lines: int
    docs: int
    tokens: int
    text_bytes: int
    skipped: dict[str, int]
    filtered: dict[str, int]
    skipped_examples: list[str]
    dtype: str
    threads: int
    seconds: float
    text_mb_per_s: float
    tokens_per_s: float
    manifest: dict[str, Any] = field(repr=False)
    already_complete: bool = False
    """A part (``num_parts``) that an earlier run with the same arguments had
    finished: nothing was done, the figures are that run's."""

    @classmethod
    def _from_summary(cls, summary: dict[str, Any]) -> PrepareStats:
        m = summary["manifest"]
        totals = m["totals"]
        return cls(
            output=Path(summary["output"]),
            splits=_split_stats(m),
            lines=totals["lines"],
            docs=totals["docs"],
            tokens=totals["tokens"],
            text_bytes=totals["text_bytes"],
            skipped=dict(totals["skipped"]),
            filtered=dict(totals["filtered"]),
            skipped_examples=list(m["skipped_examples"]),
            dtype=m["dtype"],
            threads=summary["threads"],
            seconds=summary["seconds"],
            text_mb_per_s=summary["text_mb_per_s"],
            tokens_per_s=summary["tokens_per_s"],
            manifest=m,
            already_complete=summary.get("already_complete", False),
        )

    def summary(self) -> str:
        """A one-screen, human-readable report."""
        lines = [f"dataset      {self.output}"]
        part = self.manifest.get("part")
        if part:
            lines.append(
                f"part         {part['index']} of {part['count']} (0-based): "
                f"{counted(len(self.manifest['inputs']), 'input file')} "
                f"of {part['input_files']:,}"
            )
        if self.already_complete:
            lines.append(
                "already done: an earlier run with the same arguments finished this part; "
                "nothing was done"
            )
            return "\n".join(lines)
        lines += [
            f"read         {counted(self.lines, 'line')}, kept {counted(self.docs, 'document')} "
            f"({self.text_bytes / 1e6:,.1f} MB of text)",
            f"tokens       {self.tokens:,} ({self.dtype})",
            f"tokenizer    {_backend_line(self.manifest['tokenizer'])}",
        ]
        for name, s in self.splits.items():
            lines.append(f"  {name:<10} {_split_sizes(s.tokens, s.docs, s.shards)}")
        skipped = ", ".join(f"{k}={v:,}" for k, v in sorted(self.skipped.items())) or "none"
        filtered = ", ".join(f"{k}={v:,}" for k, v in sorted(self.filtered.items())) or "none"
        lines += [f"skipped      {skipped}", f"filtered     {filtered}"]
        lines += [f"  e.g. {e}" for e in self.skipped_examples[:3]]
        lines.append(
            f"speed        {self.seconds:.2f} s, {self.text_mb_per_s:.2f} MB/s of text, "
            f"{self.tokens_per_s:,.0f} tokens/s on {counted(self.threads, 'thread')}"
        )
        return "\n".join(lines)


def _split_sizes(tokens: int, docs: int, shards: int) -> str:
    return f"{counted(tokens, 'token')}, {counted(docs, 'doc')}, {counted(shards, 'shard')}"


def prepare(
    inputs: Inputs,
    tokenizer: PathLike,
    output: PathLike,
    *,
    text_field: str = "text",
    txt_mode: Literal["line", "file"] = "line",
    max_line_bytes: int = _core.DEFAULT_MAX_LINE_BYTES,
    strict: bool = False,
    min_chars: int = 0,
    max_chars: int | None = None,
    dedup: bool | Literal["exact", "minhash", "none"] = "exact",
    dedup_threshold: float = 0.8,
    dedup_num_perm: int = 128,
    dedup_shingle: str = "auto",
    dedup_verify: bool = False,
    max_docs: int | None = None,
    val_fraction: float = 0.01,
    seed: int = 0,
    bos: Literal["auto", "always", "never"] = "auto",
    eos: bool = True,
    parse_special: bool = False,
    tokenizer_backend: Literal["auto", "fast", "reference"] = "auto",
    verify_fraction: float = 0.0,
    dtype: Literal["auto", "uint16", "uint32"] = "auto",
    shard_bytes: int = 1 << 30,
    threads: int = 0,
    overwrite: bool = False,
    progress: bool = True,
    allow_empty: bool = False,
    input_split: str | None = None,
    num_parts: int | None = None,
    part: int | None = None,
    exclude: PathLike | None = None,
) -> PrepareStats:
    """Turns JSONL/text files into token shards in ``output``.

    Args:
        inputs: files, directories (walked recursively) or globs of ``.jsonl``,
            ``.json``, ``.ndjson`` or ``.txt``, optionally ``.gz``/``.zst``;
            ``.parquet``/``.arrow`` files and ``Dataset.save_to_disk``
            directories (one record per row); or a ``datasets.Dataset`` (its
            Arrow files read in place when they hold exactly its rows), or
            an iterator of texts or records (see `tokenmill.inputs`).
        tokenizer: a ``tokenizer.json`` or a directory holding one (its
            ``tokenizer_config.json`` gives BOS/EOS/PAD).
        output: the dataset directory; it holds a dataset only once
            ``manifest.json`` is written, which happens last.
        text_field: dotted path of the text in each JSON record.
        input_split: the split to read of a ``DatasetDict`` (object or
            ``save_to_disk`` directory) or of a dataset name.
        txt_mode: ``.txt`` inputs hold one document per line or per file.
        max_line_bytes: longer lines are skipped without being held in memory.
        strict: raise `BadLineError` (naming file and line) at the first bad
            line instead of counting it.
        min_chars, max_chars: drop documents outside this length (characters).
        dedup: ``exact`` (or True) drops exact duplicates (whitespace-normalised),
            keeping the first; ``minhash`` drops near-duplicates found by MinHash
            LSH in a first pass over the inputs (docs/dedup.md), keeping the
            first of each cluster; ``none`` (or False) keeps everything.
        dedup_threshold, dedup_num_perm, dedup_shingle, dedup_verify: the
            ``minhash`` settings (Jaccard threshold, permutations, ``auto`` |
            ``word`` | ``char`` with optional ``:N``, exact check of candidate pairs).
        max_docs: stop after this many kept documents.
        val_fraction: share of documents, chosen by content hash, for ``val``.
        seed: seed of that hash.
        bos: prepend BOS as the tokenizer config says, always, or never.
        eos: append EOS to every document.
        parse_special: treat special-token strings inside the text as special
            tokens; by default they are encoded as ordinary text.
        tokenizer_backend: ``auto`` uses tokenmill's fast engine where it
            supports the tokenizer and the ``tokenizers`` crate otherwise (the
            manifest says which, and why); ``fast`` makes an unsupported
            tokenizer an error; ``reference`` always uses ``tokenizers``.
        verify_fraction: share of documents (chosen by content hash) that the
            ``tokenizers`` crate re-encodes to check the fast engine; any
            difference raises `BadLineError` naming the file and line.
        dtype: token width; ``uint16`` with a vocabulary over 65536 is an error.
        shard_bytes: size limit of one ``.bin`` file.
        threads: tokenizer threads (0: ``TOKENMILL_THREADS`` or all cores).
        overwrite: replace an existing dataset in ``output``.
        progress: draw a progress line on stderr.
        allow_empty: finish a run that keeps no document; otherwise it raises
            `NoDocumentsError` naming the commonest reason lines gave none,
            and writes no manifest.
        num_parts, part: make only part ``part`` (0-based) of ``num_parts``:
            a contiguous run of the input files, cut by size
            (docs/scale-out.md), written as a dataset of its own for `merge`.
            Rerunning a finished part with the same arguments does nothing
            (``already_complete``); a part cut short is redone. Exact dedup
            and ``minhash`` work within the part.
        exclude: the work directory of finished dedup stages
            (`tokenmill.dedup_clusters`) over the same inputs: the documents
            they removed are skipped as ``near_duplicate`` (with or without
            parts). Not with ``dedup="minhash"``.
    """
    config = {
        "tokenizer": os.fspath(tokenizer),
        "output": os.fspath(output),
        "text_field": text_field,
        "txt_mode": txt_mode,
        "max_line_bytes": max_line_bytes,
        "strict": strict,
        "min_chars": min_chars,
        "max_chars": max_chars,
        "dedup": dedup,
        "dedup_threshold": dedup_threshold,
        "dedup_num_perm": dedup_num_perm,
        "dedup_shingle": dedup_shingle,
        "dedup_verify": dedup_verify,
        "max_docs": max_docs,
        "val_fraction": val_fraction,
        "seed": seed,
        "bos": bos,
        "eos": eos,
        "parse_special": parse_special,
        "tokenizer_backend": tokenizer_backend,
        "verify_fraction": verify_fraction,
        "dtype": dtype,
        "shard_bytes": shard_bytes,
        "threads": threads,
        "overwrite": overwrite,
        "progress": progress,
        "allow_empty": allow_empty,
        "num_parts": num_parts,
        "part": part,
        "exclude": None if exclude is None else os.fspath(exclude),
    }
    with resolved_inputs(inputs, text_field, input_split) as r:
        summary = json.loads(_core.prepare(json.dumps({"inputs": r.specs, **config}), r.tables))
    return PrepareStats._from_summary(summary)


def prepare_sft(
    inputs: Inputs,
    tokenizer: PathLike,
    output: PathLike,
    *,
    format: Literal["auto", "messages", "sharegpt", "alpaca"] = "auto",
    system: str | None = None,
    train_on: Literal["all", "last"] = "all",
    max_length: int | None = None,
    overflow: Literal["truncate", "drop"] = "truncate",
    max_line_bytes: int = _core.DEFAULT_MAX_LINE_BYTES,
    strict: bool = False,
    val_fraction: float = 0.01,
    seed: int = 0,
    tokenizer_backend: Literal["auto", "fast", "reference"] = "auto",
    dtype: Literal["auto", "uint16", "uint32"] = "auto",
    shard_bytes: int = 1 << 30,
    threads: int = 0,
    overwrite: bool = False,
    progress: bool = True,
    allow_empty: bool = False,
    input_split: str | None = None,
) -> PrepareStats:
    """Turns chat JSONL into SFT shards (manifest kind ``sft``) in ``output``.

    Each record is rendered with the tokenizer's own ``chat_template`` (from
    its tokenizer_config.json; ChatML when it has none), tokenized with
    special tokens parsed, so the ids equal transformers'
    ``apply_chat_template(messages, tokenize=True)``, and written with a
    ``.mask`` file: 1 on assistant replies and their end-of-turn token.

    Args:
        inputs: files, directories or globs of ``.jsonl``/``.json``/``.ndjson``,
            optionally ``.gz``/``.zst``, or ``.parquet``/``.arrow`` files and
            ``save_to_disk`` directories whose rows hold the conversation
            (``messages`` as a list of structs).
        tokenizer: a ``tokenizer.json`` or a directory holding one.
        output: the dataset directory.
        format: ``messages`` (OpenAI ``[{role, content}]``), ``sharegpt``
            (ShareGPT/Belle ``conversations [{from, value}]``), ``alpaca``
            (``instruction``/``input``/``output``, optional ``system`` and
            ``history``), or ``auto`` (chosen per record from its keys).
        system: system message added to conversations that have none.
        train_on: train on ``all`` assistant turns or only the ``last``.
        max_length: longest conversation in tokens.
        overflow: a longer conversation is cut after the last whole assistant
            turn that fits (``truncate``, counted in the manifest) or skipped
            (``drop``, counted as ``too_long``).
        max_line_bytes: longer lines are skipped without being held in memory.
        strict: raise `BadLineError` (naming file and line) at the first bad
            record instead of counting it by reason.
        val_fraction: share of conversations, chosen by content hash, for ``val``.
        seed: seed of that hash.
        tokenizer_backend: as for `prepare`.
        dtype: token width.
        shard_bytes: size limit of one ``.bin`` file.
        threads: worker threads (0: ``TOKENMILL_THREADS`` or all cores).
        overwrite: replace an existing dataset in ``output``.
        progress: draw a progress line on stderr.
        allow_empty: as for `prepare` (no conversation kept).
        input_split: as for `prepare`.
    """
    config = {
        "tokenizer": os.fspath(tokenizer),
        "output": os.fspath(output),
        "format": format,
        "system": system,
        "train_on": train_on,
        "max_length": max_length,
        "overflow": overflow,
        "max_line_bytes": max_line_bytes,
        "strict": strict,
        "val_fraction": val_fraction,
        "seed": seed,
        "tokenizer_backend": tokenizer_backend,
        "dtype": dtype,
        "shard_bytes": shard_bytes,
        "threads": threads,
        "overwrite": overwrite,
        "progress": progress,
        "allow_empty": allow_empty,
    }
    with resolved_inputs(inputs, split=input_split) as r:
        summary = json.loads(_core.prepare_sft(json.dumps({"inputs": r.specs, **config}), r.tables))
    return PrepareStats._from_summary(summary)


def _backend_line(tok: dict[str, Any]) -> str:
    """Which engine encoded a dataset, why, and how much of it was cross-checked."""
    if tok["backend"] == "fast":
        line = "fast engine"
        if tok.get("verify_fraction", 0) > 0:
            line += f", {tok['verified_docs']:,} documents checked against tokenizers: identical"
        return line
    reason = tok.get("reference_reason")
    return "tokenizers crate" + (f" (fast engine: {reason})" if reason else "")


def read_manifest(path: PathLike) -> dict[str, Any]:
    """The manifest of the dataset at ``path``; a directory without one is no dataset."""
    manifest = Path(path) / "manifest.json"
    if not manifest.is_file():
        raise _core.TokenmillFileNotFoundError(
            f"{manifest}: no manifest.json, so {path} is not a finished tokenmill dataset"
        )
    # Checked in Rust before anything in it is used: format, dtype, shard
    # paths inside the dataset, split totals (a manifest may be downloaded).
    m: dict[str, Any] = json.loads(_core.read_manifest(str(path)))
    return m


def _memmap(path: Path, dtype: np.dtype[Any], count: int) -> np.ndarray:
    import numpy as np

    if count == 0:
        return np.zeros(0, dtype=dtype)
    arr = np.memmap(path, dtype=dtype, mode="r")
    if arr.shape[0] != count:
        raise _core.CorruptDatasetError(
            f"{path}: holds {arr.shape[0]} items, the manifest says {count}"
        )
    return arr


class ShardSet:
    """The documents of one split, read through memory maps.

    ``shards[i]`` is the i-th document as a read-only numpy view into the
    ``.bin`` file (no copy). Works with any number of shards; nothing is
    loaded into RAM until a view is read.
    """

    def __init__(self, path: PathLike, split: str = "train") -> None:
        import numpy as np

        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        if split not in self.manifest["splits"]:
            known = ", ".join(self.manifest["splits"])
            raise KeyError(f"{self.path} has no split {split!r} (splits: {known})")
        self.split = split
        self.dtype = np.dtype(self.manifest["dtype"]).newbyteorder("<")
        tok = self.manifest["tokenizer"]
        self.vocab_size: int = tok["vocab_size"]
        self.bos_id: int | None = tok["bos_id"]
        self.eos_id: int | None = tok["eos_id"]
        self._bins: list[np.ndarray] = []
        self._offsets: list[np.ndarray] = []
        self._masks: list[np.ndarray] | None = None
        shards = self.manifest["splits"][split]["shards"]
        if shards and all(s.get("mask") for s in shards):
            self._masks = [
                _memmap(self.path / s["mask"], np.dtype("u1"), s["tokens"]) for s in shards
            ]
        for shard in shards:
            self._bins.append(_memmap(self.path / shard["bin"], self.dtype, shard["tokens"]))
            # Offsets are trusted only after they start at 0, never decrease
            # and end at the token count (a damaged .idx would give wrong
            # slices, or negative lengths to the packer).
            idx = self.path / shard["idx"]
            _core.check_index(str(idx), shard["docs"], shard["tokens"])
            self._offsets.append(_memmap(idx, np.dtype("<u8"), shard["docs"] + 1))
        counts = [len(o) - 1 for o in self._offsets]
        self._doc_starts = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])

    def __len__(self) -> int:
        return int(self._doc_starts[-1])

    @property
    def num_tokens(self) -> int:
        """Tokens in the split."""
        return sum(len(b) for b in self._bins)

    @property
    def has_mask(self) -> bool:
        """Whether the split has ``.mask`` files (SFT datasets)."""
        return self._masks is not None

    @property
    def masks(self) -> list[np.ndarray] | None:
        """The uint8 ``.mask`` memmap of each shard (1 = trained on), or None."""
        return None if self._masks is None else list(self._masks)

    def mask(self, i: int) -> np.ndarray:
        """The loss mask of document ``i`` (uint8, 1 where trained on)."""
        if self._masks is None:
            raise _core.InvalidOptionError(f"{self.path} has no .mask files (not an SFT dataset)")
        s, local = self._locate(i)
        off = self._offsets[s]
        return self._masks[s][int(off[local]) : int(off[local + 1])]

    def _locate(self, i: int) -> tuple[int, int]:
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"document {i} out of range for {n} documents")
        import numpy as np

        s = int(np.searchsorted(self._doc_starts, i, side="right")) - 1
        return s, i - int(self._doc_starts[s])

    @property
    def shards(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """(tokens, offsets) memmaps of each shard, for bulk access."""
        return list(zip(self._bins, self._offsets, strict=True))

    def __getitem__(self, i: int) -> np.ndarray:
        s, local = self._locate(i)
        off = self._offsets[s]
        return self._bins[s][int(off[local]) : int(off[local + 1])]

    def __iter__(self) -> Iterator[np.ndarray]:
        for tokens, off in zip(self._bins, self._offsets, strict=True):
            for j in range(len(off) - 1):
                yield tokens[int(off[j]) : int(off[j + 1])]

    def doc_lengths(self) -> np.ndarray:
        """Length in tokens of every document, as one int64 array."""
        import numpy as np

        if not self._offsets:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate([np.diff(o.astype(np.int64)) for o in self._offsets])

    def __repr__(self) -> str:
        return (
            f"ShardSet({str(self.path)!r}, split={self.split!r}, docs={len(self)}, "
            f"tokens={self.num_tokens}, dtype={self.dtype.name})"
        )


def open_shards(path: PathLike, split: str = "train") -> ShardSet:
    """Opens one split of a dataset for zero-copy reading."""
    return ShardSet(path, split)


@dataclass(frozen=True)
class MergeStats:
    """What `merge` wrote: one manifest over the shards of ``datasets``."""

    output: Path
    datasets: list[str]
    """The merged datasets, relative to ``output``, in order."""
    splits: dict[str, SplitStats]
    docs: int
    tokens: int
    seconds: float
    manifest: dict[str, Any] = field(repr=False)

    def summary(self) -> str:
        """A one-screen, human-readable report."""
        lines = [
            f"dataset      {self.output}",
            f"merged       {counted(len(self.datasets), 'dataset')}: "
            + ", ".join(self.datasets[:4])
            + (", ..." if len(self.datasets) > 4 else ""),
            f"tokens       {self.tokens:,} ({self.manifest['dtype']}), "
            f"{counted(self.docs, 'document')}",
        ]
        for name, s in self.splits.items():
            lines.append(f"  {name:<10} {_split_sizes(s.tokens, s.docs, s.shards)}")
        lines.append(f"checked      every shard's checksums in {self.seconds:.2f} s")
        return "\n".join(lines)


def merge(
    datasets: Sequence[PathLike],
    output: PathLike,
    *,
    overwrite: bool = False,
    threads: int = 0,
) -> MergeStats:
    """Writes ``output/manifest.json`` over the shards of ``datasets``, without
    copying or moving a token: the parts of a partitioned `prepare` (put in
    part order, all of them required) or any datasets made with the same
    tokenizer and options (kept in the order given).

    Each dataset must be a directory inside ``output`` (``prepare -o
    OUT/part-00000``, then ``merge([...], OUT)``); every shard is checked
    against its checksums first. The merged dataset reads like any other.

    Args:
        datasets: the dataset directories.
        output: the merged dataset's directory; only its manifest is written.
        overwrite: replace an existing ``output/manifest.json``.
        threads: checksum threads (0: ``TOKENMILL_THREADS`` or all cores).
    """
    config = {
        "datasets": [os.fspath(d) for d in datasets],
        "output": os.fspath(output),
        "overwrite": overwrite,
        "threads": threads,
    }
    summary = json.loads(_core.merge(json.dumps(config)))
    m = summary["manifest"]
    return MergeStats(
        output=Path(summary["output"]),
        datasets=[d["path"] for d in m["merged"]],
        splits=_split_stats(m),
        docs=m["totals"]["docs"],
        tokens=m["totals"]["tokens"],
        seconds=summary["seconds"],
        manifest=m,
    )


@dataclass(frozen=True)
class VerifyReport:
    """Outcome of `verify`: ``ok`` is true when ``errors`` is empty."""

    ok: bool
    errors: list[str]
    shards: int
    docs: int
    tokens: int


def verify(path: PathLike, threads: int = 0) -> VerifyReport:
    """Checks every shard against the manifest: sha256, sizes, monotone
    offsets, and every id below the vocabulary size."""
    read_manifest(path)
    r = json.loads(_core.verify(os.fspath(path), threads))
    return VerifyReport(r["ok"], r["errors"], r["shards"], r["docs"], r["tokens"])


def inspect(path: PathLike) -> dict[str, Any]:
    """Summary of a dataset: sizes per split, tokenizer, skipped lines by
    reason, and the document length distribution (tokens)."""
    import numpy as np

    m = read_manifest(path)
    out: dict[str, Any] = {
        "path": str(path),
        "kind": m.get("kind", "pretrain"),
        "sft": m.get("sft"),
        "dtype": m["dtype"],
        "tokenizer": m["tokenizer"],
        "bos_added": m["bos_added"],
        "eos_added": m["eos_added"],
        "totals": m["totals"],
        "skipped_examples": m["skipped_examples"],
        "splits": {},
    }
    for split in m["splits"]:
        shards = open_shards(path, split)
        lengths = shards.doc_lengths()
        entry: dict[str, Any] = {
            "docs": len(lengths),
            "tokens": int(lengths.sum()),
            "shards": len(m["splits"][split]["shards"]),
        }
        if shards.masks is not None:
            entry["trained_tokens"] = sum(int(np.count_nonzero(k)) for k in shards.masks)
        if len(lengths):
            q = np.percentile(lengths, [50, 90, 99])
            entry.update(
                min=int(lengths.min()),
                mean=float(lengths.mean()),
                p50=float(q[0]),
                p90=float(q[1]),
                p99=float(q[2]),
                max=int(lengths.max()),
                histogram=_log2_histogram(lengths),
            )
        out["splits"][split] = entry
    return out


def _log2_histogram(lengths: np.ndarray) -> list[tuple[int, int, int]]:
    """(low, high, count) buckets [2^k, 2^(k+1)) of document lengths."""
    import numpy as np

    buckets = np.floor(np.log2(np.maximum(lengths, 1))).astype(np.int64)
    counts = np.bincount(buckets)
    return [(1 << k, (1 << (k + 1)) - 1, int(c)) for k, c in enumerate(counts) if c]


def format_inspect(info: dict[str, Any]) -> str:
    """Renders `inspect` output for a terminal."""
    tok = info["tokenizer"]
    t = info["totals"]
    lines = [
        f"dataset    {info['path']}",
        f"tokenizer  {tok['path']} (vocab {tok['vocab_size']:,}, "
        f"fingerprint {tok['fingerprint'][:12]})",
        f"dtype      {info['dtype']}  bos_added={info['bos_added']} eos_added={info['eos_added']}"
        f"  kind={info.get('kind', 'pretrain')}",
        f"inputs     {counted(t['lines'], 'line')} read, {counted(t['docs'], 'doc')} kept",
        "skipped    "
        + (", ".join(f"{k}={v:,}" for k, v in sorted(t["skipped"].items())) or "none"),
        "filtered   "
        + (", ".join(f"{k}={v:,}" for k, v in sorted(t["filtered"].items())) or "none"),
    ]
    lines += [f"  e.g. {e}" for e in info["skipped_examples"][:5]]
    sft = info.get("sft")
    if sft:
        lines.append(
            f"sft        template: {sft['chat_template']}, train on: {sft['train_on']}, "
            f"truncated: {sft['truncated']:,}"
        )
    for name, s in info["splits"].items():
        lines.append(f"split {name}: {_split_sizes(s['tokens'], s['docs'], s['shards'])}")
        if "trained_tokens" in s:
            share = s["trained_tokens"] / max(s["tokens"], 1)
            lines.append(f"  trained on (mask 1): {s['trained_tokens']:,} tokens ({share:.1%})")
        if s["docs"]:
            lines.append(
                f"  doc length (tokens): min {s['min']:,} mean {s['mean']:,.1f} "
                f"p50 {s['p50']:,.0f} p90 {s['p90']:,.0f} p99 {s['p99']:,.0f} max {s['max']:,}"
            )
            peak = max(c for _, _, c in s["histogram"])
            for lo, hi, c in s["histogram"]:
                bar = "#" * max(1, round(40 * c / peak))
                lines.append(f"  {lo:>9,}-{hi:<9,} {c:>10,} {bar}")
    return "\n".join(lines)
