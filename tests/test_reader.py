"""The reader: formats, bad-line accounting, strict mode, and round trips."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import zstandard
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tokenmill
from corpus import read_texts, shard_bytes
from tokenmill.cli import main

# Unicode White_Space, the definition of "blank" the reader uses.
WHITE_SPACE = set(
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)


def is_blank(text: str) -> bool:
    return all(c in WHITE_SPACE for c in text)


HOSTILE_LINES: list[bytes] = [
    '\ufeff{"text": "first line after a BOM"}\n'.encode(),
    b'{"text": "unterminated"\n',
    b'{"body": "no text field"}\n',
    b'{"text": 42}\n',
    b'{"text": "\xff\xfe not utf-8"}\n',
    b'{"text": "   \\t  "}\n',
    b"\n",
    b'{"text": "' + b"x" * 2000 + b'"}\n',
    b'{"text": "lone \\ud800 surrogate"}\n',
    b'{"text": "nul \\u0000 inside"}\n',
    b'{"text": "windows line"}\r\n',
    b'{"text": "raw nul \x00 byte"}\n',
    b'{"text": null}\n',
    b"[1, 2]\n",
    '{"text": "中文也可以"}\n'.encode(),
    b'{"text": "last line without newline"}',
]
HOSTILE_SKIPS = {
    "malformed_json": 2,
    "missing_field": 2,
    "not_a_string": 2,
    "invalid_utf8": 1,
    "empty": 2,
    "line_too_long": 1,
}
HOSTILE_TEXTS = [
    "first line after a BOM",
    "lone \ufffd surrogate",
    "nul \x00 inside",
    "windows line",
    "中文也可以",
    "last line without newline",
]


@pytest.fixture
def hostile(tmp_path: Path) -> Path:
    path = tmp_path / "hostile.jsonl"
    path.write_bytes(b"".join(HOSTILE_LINES))
    return path


def test_hostile_file_counts_every_reason(hostile: Path) -> None:
    texts, skipped = read_texts([hostile], max_line_bytes=1000)
    assert texts == HOSTILE_TEXTS
    assert skipped == HOSTILE_SKIPS


def test_hostile_file_through_prepare(tmp_path: Path, hostile: Path, bpe_tok: Path) -> None:
    stats = tokenmill.prepare(
        hostile, bpe_tok, tmp_path / "out", max_line_bytes=1000, val_fraction=0, progress=False
    )
    assert stats.skipped == HOSTILE_SKIPS
    assert stats.docs == len(HOSTILE_TEXTS)
    assert stats.lines == len(HOSTILE_LINES)
    (entry,) = stats.manifest["inputs"]
    assert entry["skipped"] == HOSTILE_SKIPS
    assert entry["repaired_surrogates"] == 1
    assert stats.skipped_examples[0].endswith(
        "hostile.jsonl:2: malformed_json (EOF while parsing an object at line 1 column 23)"
    )


def test_strict_names_file_and_line(tmp_path: Path, hostile: Path, bpe_tok: Path) -> None:
    with pytest.raises(tokenmill.BadLineError, match=r"hostile\.jsonl:2: malformed_json"):
        tokenmill.prepare(hostile, bpe_tok, tmp_path / "out", strict=True, progress=False)
    assert not (tmp_path / "out" / "manifest.json").exists()
    result = CliRunner().invoke(
        main, ["prepare", str(hostile), "-t", str(bpe_tok), "-o", str(tmp_path / "o2"), "--strict"]
    )
    assert result.exit_code == 2
    assert "hostile.jsonl:2: malformed_json" in result.output


def test_dotted_and_chinese_field_names(tmp_path: Path) -> None:
    path = tmp_path / "nested.jsonl"
    rows = [{"meta": {"正文": "嵌套字段"}}, {"meta": {"正文": ["not", "a string"]}}, {"meta": 3}]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    texts, skipped = read_texts([path], text_field="meta.正文")
    assert texts == ["嵌套字段"]
    assert skipped == {"not_a_string": 1, "missing_field": 1}


def test_txt_modes_dirs_and_globs(tmp_path: Path) -> None:
    root = tmp_path / "corpus"
    (root / "sub").mkdir(parents=True)
    (root / "b.txt").write_text("line one\n\nline two\r\n")
    (root / "sub" / "a.txt.gz").write_bytes(gzip.compress(b"gz line\n"))
    (root / "notes.csv").write_text("ignored,by,the,walker\n")
    (root / ".hidden.txt").write_text("hidden files are skipped\n")
    texts, skipped = read_texts([root])
    assert texts == ["line one", "line two", "gz line"]
    assert skipped == {"empty": 1}
    texts, _ = read_texts([root], txt_mode="file")
    assert texts == ["line one\n\nline two\r\n", "gz line\n"]
    texts, _ = read_texts([Path(f"{root}/*.txt")])
    assert texts == ["line one", "line two"]


def test_missing_and_unsupported_inputs(tmp_path: Path, bpe_tok: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.jsonl"):
        tokenmill.prepare(tmp_path / "nope.jsonl", bpe_tok, tmp_path / "o", progress=False)
    bad = tmp_path / "data.csv"
    bad.write_text("a,b\n")
    with pytest.raises(ValueError, match="unsupported input"):
        tokenmill.prepare(bad, bpe_tok, tmp_path / "o", progress=False)
    with pytest.raises(ValueError, match="matched no supported files"):
        tokenmill.prepare(str(tmp_path / "*.jsonl"), bpe_tok, tmp_path / "o", progress=False)


record_text = st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=80)


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    texts=st.lists(record_text, min_size=1, max_size=30),
    ensure_ascii=st.booleans(),
    crlf=st.booleans(),
    bom=st.booleans(),
    final_newline=st.booleans(),
    compression=st.sampled_from(["", ".gz", ".zst"]),
    extra=st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=3),
)
def test_jsonl_round_trip(
    tmp_path_factory: pytest.TempPathFactory,
    texts: list[str],
    ensure_ascii: bool,
    crlf: bool,
    bom: bool,
    final_newline: bool,
    compression: str,
    extra: dict[str, object],
) -> None:
    extra.pop("text", None)
    newline = "\r\n" if crlf else "\n"
    lines = [json.dumps({**extra, "text": t}, ensure_ascii=ensure_ascii) for t in texts]
    data = newline.join(lines) + (newline if final_newline else "")
    raw = ("\ufeff" if bom else "").encode() + data.encode()
    if compression == ".gz":
        raw = gzip.compress(raw)
    elif compression == ".zst":
        raw = zstandard.ZstdCompressor().compress(raw)
    path = tmp_path_factory.mktemp("rt") / f"data.jsonl{compression}"
    path.write_bytes(raw)
    got, skipped = read_texts([path])
    assert got == [t for t in texts if not is_blank(t)]
    assert sum(skipped.values()) == sum(is_blank(t) for t in texts)


def test_a_json_array_file_gives_the_shards_of_its_jsonl(tmp_path: Path, bpe_tok: Path) -> None:
    """alpaca_data.json-style files (one pretty-printed array) were read as
    malformed lines: 0 documents kept. Now element by element, same shards."""
    records = [{"text": f'记录 {i}: [brackets] and "quotes" \\ {i}', "id": i} for i in range(50)]
    array = tmp_path / "data.json"
    array.write_text(json.dumps(records, ensure_ascii=False, indent=2), encoding="utf-8")
    lines = tmp_path / "data.jsonl"
    lines.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    kw = {"val_fraction": 0, "progress": False}
    a = tokenmill.prepare(array, bpe_tok, tmp_path / "a", **kw)
    tokenmill.prepare(lines, bpe_tok, tmp_path / "b", **kw)
    assert a.manifest["totals"]["docs"] == 50
    assert shard_bytes(tmp_path / "a") == shard_bytes(tmp_path / "b")
    texts, skipped = read_texts([array])
    assert texts == [r["text"] for r in records] and skipped == {}


def test_alpaca_array_for_prepare_sft(tmp_path: Path, bpe_tok: Path) -> None:
    rows = [{"instruction": f"翻译 {i}", "input": "", "output": f"answer {i}"} for i in range(20)]
    src = tmp_path / "alpaca_data.json"
    src.write_text(json.dumps(rows, ensure_ascii=False, indent=4), encoding="utf-8")
    stats = tokenmill.prepare_sft(src, bpe_tok, tmp_path / "sft", val_fraction=0, progress=False)
    assert stats.manifest["totals"]["docs"] == 20 and stats.skipped == {}


def test_a_broken_json_array_is_counted_and_strict_names_the_record(
    tmp_path: Path, bpe_tok: Path
) -> None:
    src = tmp_path / "cut.json"
    src.write_text('[{"text": "one"}, {"text": "two"}, {"text": "thr')
    texts, skipped = read_texts([src])
    assert texts == ["one", "two"] and skipped == {"malformed_json": 1}
    with pytest.raises(tokenmill.BadLineError, match=r"cut\.json:3: malformed_json"):
        tokenmill.prepare(src, bpe_tok, tmp_path / "o", strict=True, progress=False)


def test_dedup_output_follows_its_name(tmp_path: Path) -> None:
    """`dedup -o out.jsonl` on .txt input wrote text lines into a .jsonl file."""
    txt = tmp_path / "in.txt"
    txt.write_text("".join(f"line number {i} with some words\n" for i in range(5)) * 2)
    result = tokenmill.dedup(txt, tmp_path / "out.jsonl", text_field="body", progress=False)
    assert result.summary["output_format"] == "jsonl"
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert rows == [{"body": f"line number {i} with some words"} for i in range(5)]
    kept_txt = tmp_path / "out.txt"
    tokenmill.dedup(txt, kept_txt, progress=False)
    assert kept_txt.read_text().splitlines() == [
        f"line number {i} with some words" for i in range(5)
    ]
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text(json.dumps({"text": "a"}) + "\n")
    with pytest.raises(tokenmill.InvalidOptionError, match=r"cannot hold the JSON records"):
        tokenmill.dedup(jsonl, tmp_path / "bad.txt", progress=False)
    with pytest.raises(tokenmill.InvalidOptionError, match=r"name the output \.jsonl"):
        tokenmill.dedup(jsonl, tmp_path / "bad.out", progress=False)
    array = tmp_path / "arr.json"
    array.write_text(
        json.dumps([{"text": "x y z w", "n": 1}, {"text": "x y z w", "n": 2}], indent=2)
    )
    tokenmill.dedup(array, tmp_path / "arr_out.jsonl", progress=False)
    assert (tmp_path / "arr_out.jsonl").read_text() == '{"text":"x y z w","n":1}\n'
