"""MinHash near-duplicate removal: shingles against an independent Python
reference, signatures, recall/precision against exact Jaccard on a corpus
with planted near-duplicates (English and Chinese), determinism across
thread counts, kept records byte for byte, the report, strict mode, and
`prepare --dedup minhash`."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import zstandard
from click.testing import CliRunner

import tokenmill
from corpus import (
    EMOJI_AND_MIXED,
    cluster_pairs,
    exact_pairs,
    planted_corpus,
    real_texts,
    reference_shingles,
)
from tokenmill.cli import main


@pytest.fixture(scope="module")
def planted() -> list[str]:
    return planted_corpus(seed=0)


@pytest.fixture(scope="module")
def truth(planted: list[str]) -> set[tuple[int, int]]:
    sets = [set(reference_shingles(d)[1]) for d in planted]
    pairs = set(exact_pairs(sets, 0.8))
    assert len(pairs) > 150  # the corpus plants enough pairs to measure
    return pairs


def _scores(result: tokenmill.DedupResult, truth: set[tuple[int, int]]) -> tuple[float, float]:
    predicted = cluster_pairs(result.clusters)
    hits = len(predicted & truth)
    return hits / len(truth), hits / max(len(predicted), 1)


def test_shingles_match_the_python_reference(planted: list[str]) -> None:
    texts = planted[:200] + real_texts(200_000)[:300] + EMOJI_AND_MIXED
    texts += [
        "Hello, World!",
        "ＡＢＣ１２３：全角",
        "ﬁne Straße",
        "",
        "?!",
        "中文 and English 混合",
    ]
    for text in texts:
        for kind, n in [("auto", 5), ("word", 3), ("char", 4), ("auto", 1)]:
            assert tokenmill._core.shingles(text, kind, n) == reference_shingles(text, kind, n), (
                text[:80],
                kind,
                n,
            )


def test_auto_shingles_per_document() -> None:
    assert tokenmill._core.shingles("今天天气很好，我们去公园。")[0] == "char"
    assert tokenmill._core.shingles("The weather is nice today, 好.")[0] == "word"


def test_minhash_array_without_copy(planted: list[str]) -> None:
    sig = tokenmill.minhash(planted[:50], num_perm=64)
    assert sig.dtype == np.dtype("<u4") and sig.shape == (50, 64)
    assert not sig.flags.writeable and isinstance(sig.base.base, bytes)  # wraps the bytes
    again = tokenmill.minhash(planted[:50], num_perm=64, threads=1)
    assert (sig == again).all()
    assert not (tokenmill.minhash(planted[:50], num_perm=64, seed=2) == sig).all()
    assert (tokenmill.minhash(["!!!"], num_perm=8) == 0xFFFFFFFF).all()
    assert tokenmill.minhash([], num_perm=8).shape == (0, 8)
    # Many tasks of 64 texts on several workers: the rows stay in input order.
    docs = [(d + " ")[:-1] for d in planted]  # new str objects, not yet UTF-8 encoded
    many = tokenmill.minhash(docs, num_perm=16, threads=3)
    one = np.stack([tokenmill.minhash([d], num_perm=16, threads=1)[0] for d in planted[::97]])
    assert (many[::97] == one).all() and (many == tokenmill.minhash(planted, 16, threads=1)).all()
    # A str that has no UTF-8 (a lone surrogate) raises, wherever it is.
    with pytest.raises(UnicodeEncodeError):
        tokenmill.minhash([*planted[:200], "bad \ud800", *planted[:10]], num_perm=8, threads=2)


def test_signature_agreement_estimates_jaccard(planted: list[str]) -> None:
    docs = planted[:400]
    sig = tokenmill.minhash(docs, num_perm=256)
    sets = [set(reference_shingles(d)[1]) for d in docs]
    errors = []
    for (i, j), sim in exact_pairs(sets, 0.3).items():
        errors.append(abs((sig[i] == sig[j]).mean() - sim))
    assert len(errors) > 30
    assert np.mean(errors) < 0.03 and np.max(errors) < 0.12


def test_recall_and_precision_with_verify(planted: list[str], truth: set) -> None:
    result = tokenmill.dedup(texts=planted, threshold=0.8, verify=True)
    recall, precision = _scores(result, truth)
    assert recall >= 0.95 and precision >= 0.9, (recall, precision)
    assert result.rejected_pairs > 0  # verify did drop candidates under the threshold


def test_recall_and_precision_without_verify(planted: list[str], truth: set) -> None:
    # Without verify, the LSH S-curve (9 bands x 13 rows at 0.8) misses some
    # pairs just above the threshold and admits some just below it.
    result = tokenmill.dedup(texts=planted, threshold=0.8)
    assert (result.bands, result.rows) == (9, 13)
    recall, precision = _scores(result, truth)
    assert recall >= 0.85 and precision >= 0.85, (recall, precision)


def test_kept_is_first_and_deterministic(planted: list[str]) -> None:
    for verify in (False, True):
        runs = [tokenmill.dedup(texts=planted, verify=verify, threads=t) for t in (1, 2, 2)]
        assert all((r.roots == runs[0].roots).all() for r in runs)
        roots = runs[0].roots
        assert (roots <= np.arange(len(roots))).all()  # the root comes first
        for c in runs[0].clusters:
            assert c == sorted(c) and roots[c].tolist() == [c[0]] * len(c)


def _write(path: Path, records: list[dict], extra_lines: dict[int, str] | None = None) -> Path:
    lines = [json.dumps(r, ensure_ascii=False) for r in records]
    for at, line in sorted((extra_lines or {}).items()):
        lines.insert(at, line)
    path.write_text("\r\n".join(lines) + "\r\n", encoding="utf-8")
    return path


@pytest.fixture
def files(tmp_path: Path, planted: list[str]) -> list[Path]:
    recs = [
        {"id": f"doc-{i}", "text": t, "meta": {"n": i, "tags": ["a", "中"]}}
        for i, t in enumerate(planted)
    ]
    half = len(recs) // 2
    a = _write(tmp_path / "a.jsonl", recs[:half], {3: "not json", 10: ""})
    b = tmp_path / "b.jsonl.gz"
    with gzip.open(b, "wt", encoding="utf-8") as f:
        for r in recs[half:]:
            f.write(json.dumps(r) + "\n")  # ASCII escapes: kept records stay as written
    return [a, b]


def _lines(path: Path) -> list[bytes]:
    raw = path.read_bytes()
    if path.name.endswith(".zst"):
        raw = zstandard.ZstdDecompressor().decompressobj().decompress(raw)
    elif path.name.endswith(".gz"):
        raw = gzip.decompress(raw)
    return raw.split(b"\n")[:-1]


def test_files_output_unchanged_and_report(
    tmp_path: Path, files: list[Path], planted: list[str]
) -> None:
    out, report = tmp_path / "kept.jsonl.zst", tmp_path / "dups.jsonl"
    result = tokenmill.dedup(files, out, report=report, progress=False)
    same = tokenmill.dedup(texts=planted)
    assert (result.roots == same.roots).all()  # files and texts agree
    kept = np.flatnonzero(result.kept)
    src = [ln for ln in files[0].read_bytes().split(b"\n")[:-1] if ln.startswith(b"{")]
    src += gzip.decompress(files[1].read_bytes()).split(b"\n")[:-1]
    assert _lines(out) == [src[i] for i in kept]  # byte for byte, \r included
    s = result.summary
    assert s["docs"] == len(planted) and s["kept"] == len(kept)
    assert s["inputs"][0]["skipped"] == {"malformed_json": 1, "empty": 1}
    assert sum(f["filtered"].get("near_duplicate", 0) for f in s["inputs"]) == result.removed
    clusters = [json.loads(x) for x in report.read_text(encoding="utf-8").splitlines()]
    assert len(clusters) == len(result.clusters) > 0
    for entry, members in zip(clusters, result.clusters, strict=True):
        docs = [entry["kept"]] + entry["removed"]
        assert [d["doc"] for d in docs] == members
        assert [d["id"] for d in docs] == [f"doc-{m}" for m in members]
        for d in docs:
            path = Path(d["file"])
            assert path in files
            if path == files[0]:
                line = files[0].read_bytes().split(b"\n")[d["line"] - 1]
                assert json.loads(line)["id"] == d["id"]


def test_files_deterministic_across_threads(tmp_path: Path, files: list[Path]) -> None:
    outs = []
    for i, threads in enumerate((1, 2)):
        out = tmp_path / f"out{i}.jsonl.gz"
        rep = tmp_path / f"rep{i}.jsonl"
        tokenmill.dedup(files, out, report=rep, verify=True, threads=threads, progress=False)
        outs.append((_lines(out), rep.read_bytes()))
    assert outs[0] == outs[1]


def test_strict_and_overwrite(tmp_path: Path, files: list[Path]) -> None:
    with pytest.raises(tokenmill.BadLineError, match=r"a\.jsonl:4: malformed_json"):
        tokenmill.dedup(files, tmp_path / "o.jsonl", strict=True, progress=False)
    assert not (tmp_path / "o.jsonl").exists() and not (tmp_path / "o.jsonl.tmp").exists()
    tokenmill.dedup(files, tmp_path / "o.jsonl", progress=False)
    with pytest.raises(ValueError, match="already exists"):
        tokenmill.dedup(files, tmp_path / "o.jsonl", progress=False)
    with pytest.raises(ValueError, match="either inputs"):
        tokenmill.dedup(files, texts=["a"])
    with pytest.raises(ValueError, match=r"bands=20 x rows=10 must be .* num_perm=128"):
        tokenmill.dedup(texts=["a"], bands=20, rows=10)
    # A product past usize wraps to 0 unchecked (then allocates 2^32 bands).
    with pytest.raises(ValueError, match=r"bands=4294967296 x rows=4294967296 must be"):
        tokenmill.dedup(texts=["a"], bands=1 << 32, rows=1 << 32)


def test_cli_dedup(tmp_path: Path, files: list[Path]) -> None:
    runner = CliRunner()
    out = tmp_path / "cli.jsonl"
    args = ["dedup", *map(str, files), "-o", str(out), "--threshold", "0.8", "-q"]
    res = runner.invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "removed" in res.output and "9 bands x 13 rows" in res.output
    res = runner.invoke(main, args)
    assert res.exit_code == 2 and "already exists" in res.output
    res = runner.invoke(main, ["dedup", str(files[0])])
    assert res.exit_code == 2 and "--output, --report" in res.output


def test_prepare_minhash(tmp_path: Path, files: list[Path], qwen_tok: Path) -> None:
    expected = tokenmill.dedup(files, progress=False, report=tmp_path / "r.jsonl")
    shards = {}
    for threads in (1, 2):
        out = tmp_path / f"shards{threads}"
        stats = tokenmill.prepare(
            files, qwen_tok, out, dedup="minhash", threads=threads, progress=False
        )
        m = stats.manifest
        assert m["dedup"]["method"] == "minhash" and not m["dedup"]["exact"]
        mh = m["dedup"]["minhash"]
        assert (mh["bands"], mh["rows"], mh["threshold"]) == (9, 13, 0.8)
        assert mh["removed"] == expected.removed == m["dedup"]["removed"]
        assert stats.filtered == {"near_duplicate": expected.removed}
        assert stats.docs == expected.kept.sum()
        shards[threads] = sorted(
            (p.name, p.read_bytes()) for p in out.rglob("*") if p.suffix in (".bin", ".idx")
        )
    assert shards[1] == shards[2]
    res = CliRunner().invoke(
        main,
        ["prepare", str(files[0]), "-t", str(qwen_tok), "-o", str(tmp_path / "nd"), "--no-dedup"],
    )
    assert res.exit_code == 0, res.output
    assert tokenmill.read_manifest(tmp_path / "nd")["dedup"]["method"] == "none"
