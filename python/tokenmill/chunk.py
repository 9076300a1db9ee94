"""Chunking: split long documents into pieces of at most N characters or N
tokens at paragraph, then sentence (``。！？.!?``), then whitespace
boundaries, never inside a UTF-8 character or a grapheme cluster."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, overload

from tokenmill import _core
from tokenmill._text import counted
from tokenmill.inputs import Inputs, PathLike, resolved_inputs


@overload
def chunk_spans(
    text: str,
    *,
    max_chars: int | None = None,
    max_tokens: int | None = None,
    tokenizer: PathLike | None = None,
    overlap: int = 0,
    threads: int = 0,
) -> list[tuple[int, int]]: ...
@overload
def chunk_spans(
    text: Sequence[str],
    *,
    max_chars: int | None = None,
    max_tokens: int | None = None,
    tokenizer: PathLike | None = None,
    overlap: int = 0,
    threads: int = 0,
) -> list[list[tuple[int, int]]]: ...
def chunk_spans(
    text: str | Sequence[str],
    *,
    max_chars: int | None = None,
    max_tokens: int | None = None,
    tokenizer: PathLike | None = None,
    overlap: int = 0,
    threads: int = 0,
) -> list[tuple[int, int]] | list[list[tuple[int, int]]]:
    """``(start, end)`` character offsets of the chunks of a text (or of each
    of several texts). Without ``overlap`` they tile the text exactly."""
    single = isinstance(text, str)
    texts = [text] if isinstance(text, str) else list(text)
    tok = None if tokenizer is None else os.fspath(tokenizer)
    spans = _core.chunk_spans(texts, max_chars, max_tokens, tok, overlap, threads)
    return spans[0] if single else spans


@overload
def chunk(
    text: str,
    *,
    max_chars: int | None = None,
    max_tokens: int | None = None,
    tokenizer: PathLike | None = None,
    overlap: int = 0,
    threads: int = 0,
) -> list[str]: ...
@overload
def chunk(
    text: Sequence[str],
    *,
    max_chars: int | None = None,
    max_tokens: int | None = None,
    tokenizer: PathLike | None = None,
    overlap: int = 0,
    threads: int = 0,
) -> list[list[str]]: ...
def chunk(
    text: str | Sequence[str],
    *,
    max_chars: int | None = None,
    max_tokens: int | None = None,
    tokenizer: PathLike | None = None,
    overlap: int = 0,
    threads: int = 0,
) -> list[str] | list[list[str]]:
    """Chunks of a text (or of each of several texts).

    Args:
        max_chars: limit in characters (default 512 when no limit is given).
        max_tokens: limit in tokens of ``tokenizer`` (without BOS/EOS).
        overlap: characters (or tokens) that a chunk may share with the one
            before it; the chunk starts at a word start inside that span where
            there is one.
        threads: worker threads for several texts.

    Only a single grapheme cluster longer than the limit makes a chunk
    exceed it.
    """
    if isinstance(text, str):
        spans = chunk_spans(
            text,
            max_chars=max_chars,
            max_tokens=max_tokens,
            tokenizer=tokenizer,
            overlap=overlap,
            threads=threads,
        )
        return [text[s:e] for s, e in spans]
    texts = list(text)
    all_spans = chunk_spans(
        texts,
        max_chars=max_chars,
        max_tokens=max_tokens,
        tokenizer=tokenizer,
        overlap=overlap,
        threads=threads,
    )
    return [[t[s:e] for s, e in spans] for t, spans in zip(texts, all_spans, strict=True)]


@dataclass(frozen=True)
class ChunkStats:
    """What `chunk_files` did."""

    output: str
    docs: int
    chunks: int
    docs_split: int
    unit: str
    max: int
    overlap: int
    threads: int
    seconds: float
    inputs: list[dict[str, Any]] = field(repr=False)

    def summary(self) -> str:
        skipped: dict[str, int] = {}
        for f in self.inputs:
            for k, v in f["skipped"].items():
                skipped[k] = skipped.get(k, 0) + v
        return "\n".join(
            [
                f"output       {self.output}",
                f"chunks       {self.chunks:,} from {counted(self.docs, 'document')} "
                f"({self.docs_split:,} split), at most "
                f"{counted(self.max, self.unit.removesuffix('s'))}, "
                f"overlap {self.overlap}",
                "skipped      "
                + (", ".join(f"{k}={v:,}" for k, v in sorted(skipped.items())) or "none"),
                f"speed        {self.seconds:.2f} s on {counted(self.threads, 'thread')}",
            ]
        )


def chunk_files(
    inputs: Inputs,
    output: PathLike,
    *,
    max_chars: int | None = None,
    max_tokens: int | None = None,
    tokenizer: PathLike | None = None,
    overlap: int = 0,
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
) -> ChunkStats:
    """Writes the chunks of every document of ``inputs`` to ``output`` as
    JSON lines, in input order: each is the source record (every field, in
    its order) with the text field holding the chunk, plus ``source_id`` and
    ``chunk_index``; ``source_id`` is the record's ``id_field`` when it has
    one, else ``"file:line"``. Plain-text inputs give ``{"text", "source_id",
    "chunk_index"}``. The output is compressed as its name says and written
    atomically. A run that reads no document raises `NoDocumentsError`
    (naming the commonest reason lines gave none) and writes nothing, unless
    ``allow_empty``.

    Documents are chunked in batches of at most 1024 documents and 64 MiB of
    text and raw JSON lines (a larger document alone), so memory stays near
    that budget, or the largest document, plus the batch's chunks."""
    config = {
        "output": os.fspath(output),
        "text_field": text_field,
        "id_field": id_field,
        "txt_mode": txt_mode,
        "max_line_bytes": max_line_bytes,
        "strict": strict,
        "max_chars": max_chars,
        "max_tokens": max_tokens,
        "tokenizer": None if tokenizer is None else os.fspath(tokenizer),
        "overlap": overlap,
        "threads": threads,
        "overwrite": overwrite,
        "progress": progress,
        "allow_empty": allow_empty,
    }
    with resolved_inputs(inputs, text_field, input_split) as r:
        s = json.loads(_core.chunk_files(json.dumps({"inputs": r.specs, **config}), r.tables))
    return ChunkStats(**s)
