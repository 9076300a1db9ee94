"""Hostile inputs beyond JSONL (issue 16): damaged or crafted datasets,
templates and records end in a specific error or a counted skip, quickly, and
never abort the interpreter. Each test fails on the code before its fix."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import tokenmill
from corpus import write_jsonl
from tokenmill import _core
from tokenmill.data import PackedDataset


@pytest.fixture
def dataset(tmp_path: Path, bpe_tok: Path) -> Path:
    out = tmp_path / "ds"
    texts = [f"document number {i} " * (i % 7 + 1) for i in range(40)]
    tokenmill.prepare(
        write_jsonl(tmp_path / "in.jsonl", texts), bpe_tok, out, val_fraction=0, progress=False
    )
    return out


def _shard(ds: Path) -> dict:
    return json.loads((ds / "manifest.json").read_text())["splits"]["train"]["shards"][0]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("decreasing", "offsets decrease at entry 6"),
        ("past_end", "last offset"),
        ("first", "first offset is 3"),
        ("truncated", r"320 bytes, expected 40 documents \+ 1 offsets"),
    ],
)
def test_damaged_idx_is_refused_on_open(dataset: Path, damage: str, message: str) -> None:
    """Before: decreasing offsets gave wrong slices silently and negative lengths
    reached the packer, which aborted the process allocating ~2^64 blocks."""
    idx = dataset / _shard(dataset)["idx"]
    offsets = np.fromfile(idx, dtype="<u8")
    if damage == "decreasing":
        offsets[5] = offsets[6] + 1
    elif damage == "past_end":
        offsets[-1] += 1000
    elif damage == "first":
        offsets[0] = 3
    else:
        offsets = offsets[:-1]
    offsets.tofile(idx)
    with pytest.raises(tokenmill.CorruptDatasetError, match=message) as info:
        tokenmill.open_shards(dataset)
    assert str(idx) in str(info.value)
    with pytest.raises(tokenmill.CorruptDatasetError):
        PackedDataset(dataset, block_size=16, mode="doc")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m, s: s.update(bin="../../../etc/passwd"), "leaves the dataset"),
        (lambda m, s: s.update(idx="/etc/passwd"), "leaves the dataset"),
        (lambda m, s: m.update(dtype="float64"), "dtype"),
        (lambda m, s: s.update(tokens=2**64 - 1), "its shards hold"),
    ],
)
def test_crafted_manifest_is_refused(dataset: Path, edit, message: str) -> None:
    """Before: shard paths were joined unchecked (`..` or an absolute path read
    any file) and any dtype string reached numpy."""
    path = dataset / "manifest.json"
    m = json.loads(path.read_text())
    edit(m, m["splits"]["train"]["shards"][0])
    path.write_text(json.dumps(m))
    with pytest.raises(tokenmill.CorruptDatasetError, match=message):
        tokenmill.open_shards(dataset)
    with pytest.raises(tokenmill.CorruptDatasetError, match=message):
        tokenmill.verify(dataset)


def test_absurd_packing_lengths_are_an_error() -> None:
    """Before: 2^63-token lengths made pack_documents allocate until the process
    aborted (with the GIL released)."""
    lengths = np.array([2**63, 5], dtype="<u8").tobytes()
    with pytest.raises(tokenmill.InvalidOptionError, match="too big for memory"):
        _core.pack_documents(lengths, 1)


def test_a_failed_run_leaves_no_shard(tmp_path: Path, bpe_tok: Path) -> None:
    """Before: a run stopped by --strict after several shards renamed its last,
    partial shard to a final name and left the finished ones beside it."""
    src = tmp_path / "in.jsonl"
    lines = [json.dumps({"text": f"line {i} " * 20}) for i in range(3000)]
    src.write_text("\n".join(lines) + "\n{broken\n")
    out = tmp_path / "out"
    with pytest.raises(tokenmill.BadLineError, match=r"in\.jsonl:3001"):
        tokenmill.prepare(
            src, bpe_tok, out, strict=True, shard_bytes=4096, threads=1, progress=False
        )
    assert not [p for p in out.rglob("*") if p.is_file()]


def test_an_output_inside_the_input_directory_is_never_read(tmp_path: Path, bpe_tok: Path) -> None:
    """Before: `prepare data/ -o data/shards` read its own manifest.json (a .json
    file) as input on the next run, and dedup read its own output file."""
    data = tmp_path / "data"
    data.mkdir()
    write_jsonl(data / "a.jsonl", [f"text {i} " * 5 for i in range(30)])
    first = tokenmill.prepare(data, bpe_tok, data / "shards", val_fraction=0, progress=False)
    again = tokenmill.prepare(
        data, bpe_tok, data / "shards", val_fraction=0, overwrite=True, progress=False
    )
    assert [i["path"] for i in again.manifest["inputs"]] == [str(data / "a.jsonl")]
    assert again.manifest["totals"] == first.manifest["totals"]
    tokenmill.dedup(data, data / "kept.jsonl", progress=False)
    result = tokenmill.dedup(data, data / "kept.jsonl", overwrite=True, progress=False)
    assert len(result.roots) == 30
