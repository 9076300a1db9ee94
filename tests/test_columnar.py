"""Parquet files and `datasets` directories as inputs: the same documents in
the same order give the shards of the JSON Lines run, whatever the container."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import tokenmill
from corpus import read_texts, shard_bytes


def prepare(src: Path, tok: Path, out: Path, **kw: Any) -> tokenmill.PrepareStats:
    return tokenmill.prepare(src, tok, out, val_fraction=0, progress=False, **kw)


@pytest.fixture(scope="module")
def docs(texts: list[str]) -> list[str]:
    # Real zh/en documents, each once, plus a blank one (counted as empty in
    # every container).
    unique = list(dict.fromkeys(t for t in texts if t.strip()))
    return [*unique[:300], "   ", *unique[300:400]]


def test_every_container_gives_the_shards_of_the_jsonl_run(
    tmp_path: Path, bpe_tok: Path, docs: list[str]
) -> None:
    import datasets

    jsonl = tmp_path / "plain.jsonl"
    jsonl.write_text(
        "".join(
            json.dumps({"text": t, "n": i}, ensure_ascii=False) + "\n" for i, t in enumerate(docs)
        ),
        encoding="utf-8",
    )
    nested = tmp_path / "nested.jsonl"
    nested.write_text(
        "".join(
            json.dumps({"meta": {"n": i}, "content": {"text": t}}, ensure_ascii=False) + "\n"
            for i, t in enumerate(docs)
        ),
        encoding="utf-8",
    )
    table = pa.table({"n": list(range(len(docs))), "text": docs})
    parquet = tmp_path / "zstd.parquet"
    pq.write_table(table, parquet, row_group_size=64, compression="zstd")
    assert pq.ParquetFile(parquet).num_row_groups > 3
    struct = tmp_path / "struct.parquet"
    pq.write_table(
        pa.table({"content": pa.array([{"text": t, "lang": "x"} for t in docs])}),
        struct,
        compression="snappy",
    )
    saved = tmp_path / "saved"
    datasets.Dataset.from_dict({"text": docs, "n": list(range(len(docs)))}).save_to_disk(
        saved, max_shard_size="50KB"
    )
    assert len(list(saved.glob("*.arrow"))) > 1
    arrow_file = tmp_path / "file.arrow"
    with pa.ipc.new_file(arrow_file, table.schema) as w:
        w.write_table(table, max_chunksize=100)

    base = prepare(jsonl, bpe_tok, tmp_path / "base")
    assert base.manifest["totals"]["docs"] == len(docs) - 1
    for src, field in [
        (nested, "content.text"),
        (parquet, "text"),
        (struct, "content.text"),
        (saved, "text"),
        (arrow_file, "text"),
    ]:
        out = tmp_path / f"out_{src.name}"
        stats = prepare(src, bpe_tok, out, text_field=field)
        assert shard_bytes(out) == shard_bytes(tmp_path / "base"), src.name
        assert stats.skipped == {"empty": 1}, src.name


def test_null_texts_are_counted_and_bad_columns_named(tmp_path: Path, bpe_tok: Path) -> None:
    src = tmp_path / "nulls.parquet"
    pq.write_table(
        pa.table(
            {
                "text": ["one two", None, "three four", ""],
                "meta": pa.array([{"body": "x"}, None, {"body": None}, {"body": "y"}]),
                "n": [1, 2, 3, 4],
            }
        ),
        src,
    )
    texts, skipped = read_texts([src])
    assert texts == ["one two", "three four"]
    assert skipped == {"not_a_string": 1, "empty": 1}
    texts, skipped = read_texts([src], text_field="meta.body")
    assert texts == ["x", "y"] and skipped == {"not_a_string": 2}
    with pytest.raises(
        tokenmill.InvalidOptionError, match=r'no column "body" .*columns: text, meta, n'
    ):
        read_texts([src], text_field="body")
    with pytest.raises(tokenmill.InvalidOptionError, match=r'column "n" is Int64, not a string'):
        read_texts([src], text_field="n")
    with pytest.raises(tokenmill.InvalidOptionError, match=r'"meta.other" .*columns: body'):
        read_texts([src], text_field="meta.other")
    with pytest.raises(tokenmill.BadLineError, match=r"nulls\.parquet:2: not_a_string"):
        prepare(src, bpe_tok, tmp_path / "o", strict=True)
    # Row 4 is in the second row group of two rows each (numbered from 0).
    pq.write_table(pa.table({"text": ["a b", "c d", "e f", None]}), src, row_group_size=2)
    with pytest.raises(
        tokenmill.BadLineError,
        match=r"nulls\.parquet:4: not_a_string \(text is null, row group 1\)",
    ):
        prepare(src, bpe_tok, tmp_path / "o", strict=True)


def test_a_damaged_parquet_file_names_itself(tmp_path: Path) -> None:
    src = tmp_path / "cut.parquet"
    pq.write_table(pa.table({"text": [f"document {i}" for i in range(1000)]}), src)
    src.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    with pytest.raises(tokenmill.CorruptDatasetError, match=r"cut\.parquet"):
        read_texts([src])


def test_a_dataset_dict_directory_names_its_splits(tmp_path: Path) -> None:
    import datasets

    dd = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"text": ["a b", "c d"]}),
            "test": datasets.Dataset.from_dict({"text": ["e f"]}),
        }
    )
    dd.save_to_disk(tmp_path / "dd")
    with pytest.raises(tokenmill.InvalidOptionError, match=r"a DatasetDict; .*dd/train, .*dd/test"):
        read_texts([tmp_path / "dd"])
    assert read_texts([tmp_path / "dd" / "test"]) == (["e f"], {})


def test_dedup_and_sft_read_parquet_rows_whole(tmp_path: Path, bpe_tok: Path) -> None:
    base = "the quick brown fox jumps over the lazy dog near the river bank today "
    rows = [
        {"id": i, "text": base * 3 + ("" if i % 2 else f"unique tail {i} " * 4)} for i in range(8)
    ]
    src = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist(rows), src, row_group_size=3)
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    a = tokenmill.dedup(src, tmp_path / "a.jsonl", progress=False)
    b = tokenmill.dedup(jsonl, tmp_path / "b.jsonl", progress=False)
    assert a.summary["output_format"] == "jsonl"

    def kept(path: Path) -> list[Any]:
        return [json.loads(line) for line in path.read_text().splitlines()]

    # Rows come back whole, as JSON records with every column.
    assert kept(tmp_path / "a.jsonl") == kept(tmp_path / "b.jsonl")
    assert a.removed == b.removed > 0
    with pytest.raises(tokenmill.InvalidOptionError, match=r"name the output \.jsonl"):
        tokenmill.dedup(src, tmp_path / "c.parquet", progress=False)

    convs = [
        {
            "messages": [
                {"role": "user", "content": f"问题 {i}: what is {i} + {i}?"},
                {"role": "assistant", "content": f"It is {2 * i}."},
            ]
        }
        for i in range(20)
    ]
    sft_parquet = tmp_path / "chat.parquet"
    pq.write_table(pa.Table.from_pylist(convs), sft_parquet, row_group_size=7)
    sft_jsonl = tmp_path / "chat.jsonl"
    sft_jsonl.write_text("".join(json.dumps(c, ensure_ascii=False) + "\n" for c in convs))
    kw: dict[str, Any] = {"val_fraction": 0, "progress": False}
    tokenmill.prepare_sft(sft_parquet, bpe_tok, tmp_path / "sp", **kw)
    tokenmill.prepare_sft(sft_jsonl, bpe_tok, tmp_path / "sj", **kw)
    assert shard_bytes(tmp_path / "sp") == shard_bytes(tmp_path / "sj")
    import datasets

    tokenmill.prepare_sft(datasets.Dataset.from_list(convs), bpe_tok, tmp_path / "sm", **kw)
    assert shard_bytes(tmp_path / "sm") == shard_bytes(tmp_path / "sj")


def test_chunk_and_train_tokenizer_read_parquet(tmp_path: Path, docs: list[str]) -> None:
    """chunk keeps every source field of a row, as it does of a JSON record."""
    rows = [{"id": f"doc{i}", "text": t, "meta": {"lang": "zh"}} for i, t in enumerate(docs[:60])]
    src = tmp_path / "c.parquet"
    pq.write_table(pa.Table.from_pylist(rows), src, row_group_size=16)
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    for path in (src, jsonl):
        out = tmp_path / f"{path.suffix[1:]}.jsonl"
        tokenmill.chunk_files(path, out, max_chars=40, progress=False)

    def chunks(name: str) -> list[Any]:
        return [json.loads(line) for line in (tmp_path / name).read_text().splitlines()]

    assert chunks("parquet.jsonl") == chunks("jsonl.jsonl")
    assert chunks("parquet.jsonl")[0]["meta"] == {"lang": "zh"}
    import datasets

    in_memory = datasets.Dataset.from_list(rows)
    tokenmill.chunk_files(in_memory, tmp_path / "memory.jsonl", max_chars=40, progress=False)
    assert chunks("memory.jsonl") == chunks("jsonl.jsonl")
    tok = tokenmill.train_tokenizer(src, tmp_path / "tok", vocab_size=300, progress=False)
    assert (tok / "tokenizer.json").exists()


def test_python_api_reads_datasets_and_iterators(
    tmp_path: Path, bpe_tok: Path, docs: list[str]
) -> None:
    """A datasets.Dataset is read from the Arrow files behind it when they
    hold exactly its rows, or from its table in memory (the Arrow C stream
    interface: no copy either), else from its rows written once; an
    iterator yields texts or records. Each gives the shards of the JSON
    Lines run."""
    import datasets

    texts = [t for t in docs if t.strip()][:120]
    jsonl = tmp_path / "base.jsonl"
    jsonl.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts))
    prepare(jsonl, bpe_tok, tmp_path / "base")
    expected = shard_bytes(tmp_path / "base")

    datasets.Dataset.from_dict({"text": texts, "n": list(range(len(texts)))}).save_to_disk(
        tmp_path / "saved"
    )
    loaded = datasets.load_from_disk(str(tmp_path / "saved"))
    stats = prepare(loaded, bpe_tok, tmp_path / "from_files")
    assert shard_bytes(tmp_path / "from_files") == expected
    # Read in place: the manifest names the dataset's own file.
    assert [i["path"] for i in stats.manifest["inputs"]] == [
        f["filename"] for f in loaded.cache_files
    ]

    in_memory = datasets.Dataset.from_dict({"text": texts})
    reordered = loaded.filter(lambda row: True)  # an indices mapping over the same files
    assert reordered._indices is not None
    renamed = datasets.Dataset.from_dict({"body": texts}).rename_column("body", "text")
    for name, source in [
        ("in_memory", in_memory),
        ("reordered", reordered),
        ("renamed", renamed),
        ("texts", iter(texts)),
        ("records", ({"text": t, "extra": 1} for t in texts)),
    ]:
        stats = prepare(source, bpe_tok, tmp_path / name)
        assert shard_bytes(tmp_path / name) == expected, name
        if name in ("in_memory", "renamed"):
            [read] = stats.manifest["inputs"]
            assert read["path"] == f"<datasets.Dataset 0 in memory, {len(texts)} rows>"
            assert read["docs"] == len(texts)
    # A table of several chunks, and two tables beside a file, in order.
    chunked = datasets.concatenate_datasets([in_memory.select(range(50)), in_memory])
    chunked = chunked.flatten_indices().select(range(50, 50 + len(texts))).flatten_indices()
    assert chunked._indices is None and not chunked.cache_files
    prepare(chunked, bpe_tok, tmp_path / "chunked")
    assert shard_bytes(tmp_path / "chunked") == expected
    first = datasets.Dataset.from_dict({"text": texts[:40]})
    last = datasets.Dataset.from_dict({"text": texts[80:]})
    middle = tmp_path / "middle.jsonl"
    middle.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts[40:80]))
    stats = prepare([first, middle, last], bpe_tok, tmp_path / "mixed")
    assert shard_bytes(tmp_path / "mixed") == expected
    assert [i["docs"] for i in stats.manifest["inputs"]] == [40, 40, len(texts) - 80]
    assert stats.manifest["args"]["inputs"] == [{"table": 0}, str(middle), {"table": 1}]
    # Every command reads a table in memory.
    kept = tokenmill.dedup(in_memory, tmp_path / "kept.jsonl", progress=False)
    assert kept.summary["kept"] == len(set(texts))
    rows = [json.loads(x) for x in (tmp_path / "kept.jsonl").read_text().splitlines()]
    assert rows[0] == {"text": texts[0]}
    tok = tokenmill.train_tokenizer(in_memory, tmp_path / "tok", vocab_size=300, progress=False)
    assert (tok / "tokenizer.json").exists()
    half = loaded.select(range(60))
    prepare(half, bpe_tok, tmp_path / "half")
    prepare(iter(texts[:60]), bpe_tok, tmp_path / "half_texts")
    assert shard_bytes(tmp_path / "half") == shard_bytes(tmp_path / "half_texts")

    with pytest.raises(tokenmill.InvalidOptionError, match=r"DatasetDict with splits \['train'\]"):
        prepare(datasets.DatasetDict({"train": in_memory}), bpe_tok, tmp_path / "dd")
    with pytest.raises(tokenmill.InvalidOptionError, match=r"item 1 is int"):
        prepare(iter(["a", 2]), bpe_tok, tmp_path / "bad")
    nested = tokenmill.dedup(
        iter(texts[:10]), tmp_path / "n.jsonl", text_field="a.b", progress=False
    )
    assert nested.summary["output_format"] == "jsonl"
    assert json.loads((tmp_path / "n.jsonl").read_text().splitlines()[0]) == {"a": {"b": texts[0]}}


def test_input_split_and_dataset_names(
    tmp_path: Path, bpe_tok: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import datasets
    from click.testing import CliRunner

    from tokenmill.cli import main

    dd = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"text": ["一 two three", "four five six"]}),
            "test": datasets.Dataset.from_dict({"text": ["seven eight"]}),
        }
    )
    dd.save_to_disk(tmp_path / "dd")
    args = ["prepare", str(tmp_path / "dd"), "--input-split", "test", "-t", str(bpe_tok)]
    r = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "cli"), "--val-fraction", "0"])
    assert r.exit_code == 0, r.output
    assert tokenmill.open_shards(tmp_path / "cli").manifest["totals"]["docs"] == 1
    stats = prepare(dd, bpe_tok, tmp_path / "obj", input_split="train")
    assert stats.manifest["totals"]["docs"] == 2
    with pytest.raises(tokenmill.InvalidOptionError, match=r"has splits \['train', 'test'\]"):
        prepare(tmp_path / "dd", bpe_tok, tmp_path / "x", input_split="validation")
    with pytest.raises(tokenmill.InvalidOptionError, match=r"no input is a DatasetDict"):
        prepare(dd["test"], bpe_tok, tmp_path / "x", input_split="test")

    # A name that is no path goes to datasets.load_dataset, with the split.
    calls = []

    def load_dataset(name: str, split: str | None = None) -> Any:
        calls.append((name, split))
        if name != "someone/corpus":
            raise FileNotFoundError(f"Dataset {name} not found in the cache")
        return dd if split is None else dd[split]

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    stats = prepare("someone/corpus", bpe_tok, tmp_path / "hub", input_split="train")
    assert calls == [("someone/corpus", "train")]
    assert stats.manifest["totals"]["docs"] == 2
    with pytest.raises(tokenmill.InvalidOptionError, match=r"a DatasetDict with splits"):
        prepare("someone/corpus", bpe_tok, tmp_path / "hub2")
    with pytest.raises(tokenmill.TokenmillFileNotFoundError, match=r"not found in the cache") as e:
        prepare("nobody/nothing", bpe_tok, tmp_path / "hub3")
    assert e.value.filename == "nobody/nothing"
    # Names with a file suffix stay paths: the data core names the missing file.
    with pytest.raises(tokenmill.TokenmillFileNotFoundError, match=r"missing\.jsonl"):
        prepare("missing.jsonl", bpe_tok, tmp_path / "hub4")
    assert len(calls) == 3
