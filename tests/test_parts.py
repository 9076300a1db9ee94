"""Partitioned prepare and merge (docs/scale-out.md): parts run as separate
processes, one killed midway and rerun, merged into a dataset whose token
stream equals one run over the same inputs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import tokenmill
from corpus import write_jsonl
from tokenmill.cli import main
from tokenmill.data import PackedDataset

# Small shards, so that every part has several and a kill lands between them.
OPTIONS = ["--dedup", "none", "--val-fraction", "0.1", "--shard-size", "64KiB", "--threads", "1"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, texts: list[str]) -> Path:
    """A directory of seven JSONL files of uneven sizes: one of several MB
    (the part that holds it is killed midway), a few documents repeated
    across files (kept: --dedup none), a Chinese-only file."""
    d = tmp_path_factory.mktemp("parts_corpus")
    docs = [t for t in texts if t.strip()]
    big = [f"{t} ({k})" for k in range(4) for t in docs]
    cjk = [t for t in docs if any("\u4e00" <= c <= "\u9fff" for c in t)][:200]
    files = [docs[:50], docs[50:450], big, docs[450:480] + docs[:5], cjk, docs[480:780], []]
    for k, f in enumerate(files):
        write_jsonl(d / f"shard-{k:02d}.jsonl", f)
    return d


def stream(root: Path, split: str) -> tuple[bytes, list[int]]:
    """A split's token bytes in manifest order, and its document lengths."""
    m = tokenmill.read_manifest(root)
    data = b"".join((root / s["bin"]).read_bytes() for s in m["splits"][split]["shards"])
    return data, tokenmill.open_shards(root, split).doc_lengths().tolist()


def prepare_part(corpus: Path, tok: Path, out: Path, n: int, i: int) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "tokenmill", "prepare", str(corpus), "-t", str(tok)]
    cmd += ["-o", str(out / f"part-{i:05d}"), "--num-parts", str(n), "--part", str(i), "-q"]
    return subprocess.Popen(
        cmd + OPTIONS, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finish(p: subprocess.Popen[str]) -> str:
    stdout, stderr = p.communicate(timeout=300)
    assert p.returncode == 0, stderr
    return stdout


def kill_midway(p: subprocess.Popen[str], part: Path) -> None:
    """Kills the part run once its first shard is finished, before its manifest."""
    deadline = time.monotonic() + 120
    while not (part / "train" / "00000.bin").exists():
        assert p.poll() is None, p.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.002)
    os.kill(p.pid, signal.SIGKILL)
    p.communicate()  # reaps it and closes its pipes
    assert not (part / "manifest.json").exists(), "the run finished before it was killed"
    assert list((part / "train").glob("*.bin*")), "nothing was left behind to clean up"


@pytest.mark.parametrize("n", [1, 3, 4])
def test_merged_parts_equal_one_run(tmp_path: Path, corpus: Path, qwen_tok: Path, n: int) -> None:
    single = tmp_path / "single"
    r = CliRunner().invoke(
        main, ["prepare", str(corpus), "-t", str(qwen_tok), "-o", str(single), "-q", *OPTIONS]
    )
    assert r.exit_code == 0, r.output
    # The parts are written inside the input directory: walks skip datasets,
    # so a part that finishes first does not become another part's input.
    out = corpus / f"out{n}"
    runs = [prepare_part(corpus, qwen_tok, out, n, i) for i in range(n)]
    killed = 1 if n > 1 else None
    if killed is not None:
        kill_midway(runs[killed], out / f"part-{killed:05d}")
    for i, p in enumerate(runs):
        if i != killed:
            finish(p)
    if killed is not None:
        finish(prepare_part(corpus, qwen_tok, out, n, killed))
        again = finish(prepare_part(corpus, qwen_tok, out, n, killed))
        assert "already done" in again
    parts = [str(out / f"part-{i:05d}") for i in reversed(range(n))]  # any order
    r = CliRunner().invoke(main, ["merge", *parts, "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert f"merged       {n} dataset" in r.output

    m = tokenmill.read_manifest(out)
    one = tokenmill.read_manifest(single)
    assert [d["path"] for d in m["merged"]] == [f"part-{i:05d}" for i in range(n)]
    for split in ("train", "val"):
        assert stream(out, split) == stream(single, split)
        assert m["splits"][split]["docs"] == one["splits"][split]["docs"]
    assert m["totals"] == one["totals"]
    assert [f["path"] for f in m["inputs"]] == [f["path"] for f in one["inputs"]]
    assert m["args"]["inputs"] == one["args"]["inputs"]
    assert tokenmill.verify(out).ok
    assert tokenmill.inspect(out)["totals"]["docs"] == one["totals"]["docs"]
    packed = PackedDataset(out, block_size=64, mode="concat")
    reference = PackedDataset(single, block_size=64, mode="concat")
    assert len(packed) == len(reference)
    last = len(packed) - 1
    for k in (0, last // 2, last):
        assert np.array_equal(packed[k]["input_ids"], reference[k]["input_ids"])


def test_fewer_files_than_parts_leave_empty_parts(
    tmp_path: Path, texts: list[str], qwen_tok: Path
) -> None:
    out = tmp_path / "out"
    # Two files of the same size.
    files = [
        write_jsonl(tmp_path / f"{k}.jsonl", [f"{k}{t}" for t in texts[:40]]) for k in range(2)
    ]
    for i in range(4):
        stats = tokenmill.prepare(
            files, qwen_tok, out / f"p{i}", num_parts=4, part=i, progress=False, val_fraction=0
        )
        assert len(stats.manifest["inputs"]) == (i % 2)  # [0..0, 0..1, 1..1, 1..2]
    merged = tokenmill.merge([out / f"p{i}" for i in range(4)], out)
    single = tokenmill.prepare(files, qwen_tok, tmp_path / "single", progress=False, val_fraction=0)
    assert stream(out, "train") == stream(tmp_path / "single", "train")
    assert merged.tokens == single.tokens


def test_datasets_that_are_not_parts_merge_in_the_order_given(
    tmp_path: Path, texts: list[str], qwen_tok: Path
) -> None:
    out = tmp_path / "out"
    a, b = (
        write_jsonl(tmp_path / "a.jsonl", texts[:60]),
        write_jsonl(tmp_path / "b.jsonl", texts[60:90]),
    )
    for name, f in (("a", a), ("b", b)):
        tokenmill.prepare(f, qwen_tok, out / name, progress=False, val_fraction=0)
    tokenmill.merge([out / "b", out / "a"], out)
    tokenmill.prepare([b, a], qwen_tok, tmp_path / "single", progress=False, val_fraction=0)
    assert stream(out, "train") == stream(tmp_path / "single", "train")
    m = tokenmill.read_manifest(out)
    assert m["args"]["inputs"] == [str(b), str(a)]
    with pytest.raises(tokenmill.OutputExistsError):
        tokenmill.merge([out / "a"], out)
    tokenmill.merge([out / "a"], out, overwrite=True)
    assert tokenmill.read_manifest(out)["merged"][0]["path"] == "a"


def test_merge_refuses_what_does_not_belong_together(
    tmp_path: Path, texts: list[str], qwen_tok: Path, llama3_tok: Path
) -> None:
    out = tmp_path / "out"
    files = [write_jsonl(tmp_path / f"{k}.jsonl", texts[k * 30 : k * 30 + 30]) for k in range(3)]

    def part(i: int, tok: Path = qwen_tok, name: str | None = None, **kw: object) -> Path:
        root = out / (name or f"part-{i}")
        tokenmill.prepare(files, tok, root, num_parts=3, part=i, progress=False, **kw)
        return root

    p0, p1, p2 = part(0), part(1), part(2)
    other_tok = part(1, llama3_tok, "other-tok")
    other_filter = part(1, name="other-filter", min_chars=5)
    cases = [
        ([p0, other_tok, p2], "tokenizer fingerprint"),
        ([p0, other_filter, p2], "args.min_chars is 5 in the second, 0 in the first"),
        ([p0, p2], "part 1 of 3 is missing"),
        ([p0, p1, p1, p2], "given twice"),
    ]
    for datasets, message in cases:
        with pytest.raises(tokenmill.InvalidOptionError, match=message):
            tokenmill.merge(datasets, out)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with pytest.raises(tokenmill.InvalidOptionError, match="is not inside"):
        tokenmill.merge([p0, p1, p2], elsewhere)
    # A damaged shard is found before anything is written.
    shard = p2 / tokenmill.read_manifest(p2)["splits"]["train"]["shards"][0]["bin"]
    data = bytearray(shard.read_bytes())
    data[0] ^= 1
    shard.write_bytes(bytes(data))
    with pytest.raises(tokenmill.CorruptDatasetError, match="fails verification"):
        tokenmill.merge([p0, p1, p2], out)
    assert not (out / "manifest.json").exists()


def test_part_options_are_checked(tmp_path: Path, texts: list[str], qwen_tok: Path) -> None:
    f = write_jsonl(tmp_path / "a.jsonl", texts[:20])
    for kw, message in [
        ({"num_parts": 2}, "go together"),
        ({"num_parts": 2, "part": 2}, "part 2 does not exist"),
        ({"num_parts": 2, "part": 0, "max_docs": 5}, "max_docs"),
    ]:
        with pytest.raises(tokenmill.InvalidOptionError, match=message):
            tokenmill.prepare(f, qwen_tok, tmp_path / "out", progress=False, **kw)  # type: ignore[arg-type]
    # A finished part rerun with other arguments is not taken as done.
    tokenmill.prepare(f, qwen_tok, tmp_path / "p", num_parts=1, part=0, progress=False)
    with pytest.raises(tokenmill.OutputExistsError):
        tokenmill.prepare(f, qwen_tok, tmp_path / "p", num_parts=1, part=0, seed=3, progress=False)
    done = tokenmill.prepare(f, qwen_tok, tmp_path / "p", num_parts=1, part=0, progress=False)
    assert done.already_complete
    assert json.loads((tmp_path / "p" / "manifest.json").read_text())["part"] == {
        "index": 0,
        "count": 1,
        "input_files": 1,
        "input_bytes": f.stat().st_size,
    }


def test_dedup_stages_across_parts_keep_what_one_machine_keeps(
    tmp_path: Path, qwen_tok: Path
) -> None:
    from corpus import planted_corpus

    docs = planted_corpus(seed=3)
    inputs = tmp_path / "in"
    inputs.mkdir()
    # Every sixth document per file: the copies of a document land in other
    # files, and so in other parts.
    for k in range(6):
        write_jsonl(inputs / f"{k}.jsonl", docs[k::6])
    work = tmp_path / "work"
    for i in range(4):
        r = tokenmill.dedup_signatures(inputs, work, num_parts=4, part=i, buckets=3, progress=False)
        assert not r.get("already_complete")
    again = tokenmill.dedup_signatures(inputs, work, num_parts=4, part=2, buckets=3, progress=False)
    assert again["already_complete"]
    with pytest.raises(tokenmill.InvalidOptionError, match="bucket 0 of 3 is not finished"):
        tokenmill.dedup_clusters(work)
    with pytest.raises(tokenmill.InvalidOptionError, match="bucket 3 does not exist"):
        tokenmill.dedup_buckets(work, 3)
    # The buckets and clusters stages as a user runs them, from the CLI.
    for k in range(3):
        r = CliRunner().invoke(main, ["dedup-buckets", "-w", str(work), "--bucket", str(k)])
        assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["dedup-clusters", "-w", str(work)])
    assert r.exit_code == 0, r.output
    m = json.loads((work / "manifest.json").read_text())

    one = tokenmill.dedup(inputs, report=tmp_path / "report.jsonl", progress=False)
    assert m["removed"] == one.summary["removed"] > 100  # planted copies
    assert m["clusters"] == one.summary["clusters"]
    # The kept documents themselves: prepared in parts without them, merged,
    # the same token stream as one prepare --dedup minhash.
    out = tmp_path / "out"
    for i in range(4):
        tokenmill.prepare(
            inputs,
            qwen_tok,
            out / f"part-{i}",
            num_parts=4,
            part=i,
            dedup="none",
            exclude=work,
            progress=False,
        )
    tokenmill.merge([out / f"part-{i}" for i in range(4)], out)
    single = tokenmill.prepare(
        inputs, qwen_tok, tmp_path / "single", dedup="minhash", progress=False
    )
    for split in ("train", "val"):
        assert stream(out, split) == stream(tmp_path / "single", split)
    merged = tokenmill.read_manifest(out)
    assert merged["totals"]["filtered"] == single.filtered == {"near_duplicate": m["removed"]}
    # Excluding needs the same inputs as the signatures.
    with pytest.raises(tokenmill.InvalidOptionError, match="other input files"):
        tokenmill.prepare(
            inputs / "0.jsonl", qwen_tok, tmp_path / "x", exclude=work, progress=False
        )
    # Stage files are checked, not trusted.
    edges = work / "edges" / "bucket-00000.bin"
    edges.write_bytes(edges.read_bytes()[:-3])
    with pytest.raises(tokenmill.CorruptDatasetError, match="edges"):
        tokenmill.dedup_clusters(work)
