"""Chunking: the chunks tile the text, respect the limit, never split a
grapheme cluster, prefer paragraph, sentence, then whitespace boundaries;
overlap; token limits; `tokenmill chunk` over files."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import pytest
import regex
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

import tokenmill
from corpus import reference, write_jsonl
from tokenmill.cli import main

# Letters, CJK, spaces, newlines, sentence ends, a combining mark, emoji with
# ZWJ and skin tone, regional indicators (flags are pairs).
ALPHABET = [
    *list("abcXYZ 中文字\n\n.!?。！？,"),
    "́",
    "\u200d",
    "👨",
    "👩",
    "🏽",
    "🇨",
    "🇳",
    "\u3000",
    "\r",
]
texts = st.text(alphabet=ALPHABET, max_size=300)


def graphemes(s: str) -> list[str]:
    return regex.findall(r"\X", s)


def boundaries(s: str) -> set[int]:
    out, pos = {0}, 0
    for g in graphemes(s):
        pos += len(g)
        out.add(pos)
    return out


@settings(max_examples=300, deadline=None)
@given(text=texts, limit=st.integers(1, 40))
def test_chunks_tile_the_text_within_the_limit(text: str, limit: int) -> None:
    spans = tokenmill.chunk_spans(text, max_chars=limit)
    chunks = [text[s:e] for s, e in spans]
    assert "".join(chunks) == text
    assert all(c for c in chunks)
    cuts = boundaries(text)
    for (s, e), c in zip(spans, chunks, strict=True):
        assert s in cuts and e in cuts, (s, e)
        assert len(c) <= limit or len(graphemes(c)) == 1, c


@settings(max_examples=200, deadline=None)
@given(text=texts, limit=st.integers(2, 40), data=st.data())
def test_overlap(text: str, limit: int, data: st.DataObject) -> None:
    overlap = data.draw(st.integers(0, limit - 1))
    spans = tokenmill.chunk_spans(text, max_chars=limit, overlap=overlap)
    if not text:
        assert spans == []
        return
    assert spans[0][0] == 0 and spans[-1][1] == len(text)
    restored = text[spans[0][0] : spans[0][1]]
    for (s0, e0), (s1, e1) in itertools.pairwise(spans):
        assert s0 < s1 <= e0 < e1  # progress, and no gap
        assert e0 - s1 <= overlap
        restored += text[e0:e1]
    assert restored == text


def test_boundary_preference() -> None:
    text = "First paragraph here.\n\nSecond one. It goes on and on"
    assert tokenmill.chunk(text, max_chars=30) == [
        "First paragraph here.\n\n",
        "Second one. It goes on and on",
    ]
    assert tokenmill.chunk("One two. Three four five six", max_chars=20) == [
        "One two. ",
        "Three four five six",
    ]
    assert tokenmill.chunk("今天天气很好。我们去公园散步吧", max_chars=10) == [
        "今天天气很好。",
        "我们去公园散步吧",
    ]
    assert tokenmill.chunk("alpha beta gamma delta", max_chars=12) == ["alpha beta ", "gamma delta"]
    assert tokenmill.chunk("x" * 1000) == ["x" * 512, "x" * 488]  # default 512 characters
    assert tokenmill.chunk(["ab", "cde"], max_chars=2) == [["ab"], ["cd", "e"]]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="overlap"):
        tokenmill.chunk("abc", max_chars=3, overlap=3)
    with pytest.raises(ValueError, match="tokenizer"):
        tokenmill.chunk("abc", max_tokens=3)
    with pytest.raises(ValueError, match="not both"):
        tokenmill.chunk("abc", max_chars=3, max_tokens=3, tokenizer="x")


def test_max_tokens(qwen_tok: Path, texts: list[str]) -> None:
    ref = reference(qwen_tok)
    docs = [t for t in texts if len(t) > 300][:40]
    for limit, overlap in [(16, 0), (64, 8)]:
        for doc, spans in zip(
            docs,
            tokenmill.chunk_spans(docs, max_tokens=limit, tokenizer=qwen_tok, overlap=overlap),
            strict=True,
        ):
            for s, e in spans:
                n = len(ref.encode(doc[s:e], add_special_tokens=False).ids)
                assert n <= limit or len(graphemes(doc[s:e])) == 1
            if overlap == 0:
                assert "".join(doc[s:e] for s, e in spans) == doc


def test_chunk_files(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(
        json.dumps(
            {"url": "u", "id": 7, "text": "句子一。句子二。" * 20, "meta": {"lang": "zh"}},
            ensure_ascii=False,
        )
        + "\n{bad\n"
        + json.dumps({"text": "short"})
        + "\n",
        encoding="utf-8",
    )
    out = tmp_path / "chunks.jsonl.gz"
    res = CliRunner().invoke(
        main, ["chunk", str(src), "-o", str(out), "--max-chars", "50", "--overlap", "5", "-q"]
    )
    assert res.exit_code == 0, res.output
    import gzip

    rows = [json.loads(x) for x in gzip.decompress(out.read_bytes()).decode().splitlines()]
    first = [r for r in rows if r["source_id"] == 7]
    assert [r["chunk_index"] for r in first] == list(range(len(first))) and len(first) > 3
    # Every other field of the source record, in its order, the text replaced.
    assert all(
        list(r) == ["url", "id", "text", "meta", "source_id", "chunk_index"]
        and r["url"] == "u"
        and r["meta"] == {"lang": "zh"}
        for r in first
    )
    assert all(len(r["text"]) <= 50 for r in rows)
    assert rows[-1] == {"text": "short", "source_id": f"{src}:3", "chunk_index": 0}
    assert "malformed_json=1" in res.output
    res = CliRunner().invoke(main, ["chunk", str(src), "-o", str(tmp_path / "s.jsonl"), "--strict"])
    assert res.exit_code == 2 and "in.jsonl:2: malformed_json" in res.output
    stats = tokenmill.chunk_files(write_jsonl(tmp_path / "w.jsonl", ["a b"]), tmp_path / "w.out")
    assert stats.chunks == 1 and stats.unit == "chars" and stats.max == 512


# Hostile inputs (issue 16): each took minutes to days before it was made
# linear. The time limits are generous guards for a loaded machine, not
# benchmarks.


def _prose(n_bytes: int) -> str:
    """Short English sentences and paragraphs, some CJK, about `n_bytes` long."""
    words = ["alpha", "beta", "gamma", "the", "of", "and", "tokenizer", "中文", "字"]
    seps = [" ", " ", " ", ". ", ", ", "\n", "\n\n"]
    unit = "".join(w + seps[i % len(seps)] for i, w in enumerate(words * 7))
    return unit * (n_bytes // len(unit.encode()) + 1)


def test_a_huge_document_by_tokens_is_linear(qwen_tok: Path) -> None:
    # The old chunker measured the whole rest of the document before every
    # chunk: more than a day for 20 MB at 16 tokens (1.8 s for 80 kB, growing
    # with the square).
    doc = _prose(20 << 20)
    started = time.perf_counter()
    spans = tokenmill.chunk_spans(doc, max_tokens=16, tokenizer=qwen_tok)
    assert time.perf_counter() - started < 60
    assert spans[0][0] == 0 and spans[-1][1] == len(doc) and len(spans) > 500_000
    assert all(e0 == s1 for (_, e0), (s1, _) in itertools.pairwise(spans))
    ref = reference(qwen_tok)
    for s, e in spans[:: len(spans) // 200]:
        assert len(ref.encode(doc[s:e], add_special_tokens=False).ids) <= 16


def test_overlap_of_a_long_document_is_linear() -> None:
    # Character offsets of overlapping chunks were counted again from the
    # start of the text for every chunk: over 3 TB recounted for these 16 MB
    # (400k chunks), several minutes at the least.
    doc = _prose(16 << 20)
    started = time.perf_counter()
    spans = tokenmill.chunk_spans(doc, max_chars=64, overlap=16)
    assert time.perf_counter() - started < 30
    assert spans[0][0] == 0 and spans[-1][1] == len(doc)
    for (s0, e0), (s1, e1) in itertools.pairwise(spans):
        assert s0 < s1 <= e0 < e1 and e0 - s1 <= 16 and e1 - s1 <= 64


def test_a_long_run_of_flags_is_linear() -> None:
    # Each grapheme boundary test counted a run of regional indicators back
    # from its start: about 6 minutes for 8 MB of flags.
    doc = "🇨🇳" * (1 << 20)
    started = time.perf_counter()
    spans = tokenmill.chunk_spans(doc, max_chars=63, overlap=10)
    assert time.perf_counter() - started < 30
    assert spans[0] == (0, 62) and spans[-1][1] == len(doc)
    assert all(s % 2 == 0 and e % 2 == 0 for s, e in spans)  # never half a flag
