"""prepare end to end: determinism, shard layout, filters, atomicity, verify."""

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


def shard_bytes(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.suffix in (".bin", ".idx")
    }


@pytest.fixture
def corpus(tmp_path: Path, texts: list[str]) -> Path:
    return write_jsonl(tmp_path / "corpus.jsonl", texts[:1500])


def test_byte_identical_across_thread_counts(tmp_path: Path, corpus: Path, qwen_tok: Path) -> None:
    runs = {}
    for threads in (1, 2, 2):
        out = tmp_path / f"out{threads}"
        tokenmill.prepare(
            corpus,
            qwen_tok,
            out,
            threads=threads,
            shard_bytes=64 << 10,
            val_fraction=0.1,
            progress=False,
            overwrite=True,
        )
        runs[threads] = shard_bytes(out)
    assert len([k for k in runs[1] if k.startswith("train/")]) > 4  # several shards
    assert any(k.startswith("val/") for k in runs[1])
    assert runs[1] == runs[2]


def test_layout_matches_manifest(tmp_path: Path, corpus: Path, bpe_tok: Path) -> None:
    stats = tokenmill.prepare(
        corpus, bpe_tok, tmp_path / "out", shard_bytes=100_000, val_fraction=0.05, progress=False
    )
    m = tokenmill.read_manifest(tmp_path / "out")
    assert m["format"] == "tokenmill-shards" and m["format_version"] == 1
    assert m["kind"] == "pretrain" and m["dtype"] == "uint16"
    assert m["tokenizer"]["vocab_size"] == 3000
    assert m["tokenizer"]["eos_token"] == "<|im_end|>" and m["eos_added"]
    assert m["args"]["shard_bytes"] == 100_000
    total = 0
    for split, entry in m["splits"].items():
        for shard in entry["shards"]:
            tokens = np.fromfile(tmp_path / "out" / shard["bin"], dtype="<u2")
            offsets = np.fromfile(tmp_path / "out" / shard["idx"], dtype="<u8")
            assert len(offsets) == shard["docs"] + 1 and offsets[0] == 0
            assert offsets[-1] == len(tokens) == shard["tokens"]
            assert tokens.nbytes <= 100_000 or shard["docs"] == 1
            ends = tokens[offsets[1:] - 1]
            assert (ends == m["tokenizer"]["eos_id"]).all()
            total += shard["tokens"]
        docs = tokenmill.open_shards(tmp_path / "out", split)
        assert len(docs) == entry["docs"] and docs.num_tokens == entry["tokens"]
        assert docs.doc_lengths().sum() == entry["tokens"]
    assert total == stats.tokens == m["totals"]["tokens"]
    assert 0 < stats.splits["val"].docs < 0.15 * stats.docs


def test_filters_dedup_and_max_docs(tmp_path: Path, bpe_tok: Path) -> None:
    texts = [
        "hello world",
        "hello   world\n",
        "短",
        "a much longer document " * 10,
        "unique text",
        "x",
    ]
    corpus = write_jsonl(tmp_path / "in.jsonl", texts)
    stats = tokenmill.prepare(
        corpus, bpe_tok, tmp_path / "a", min_chars=2, max_chars=100, val_fraction=0, progress=False
    )
    assert stats.filtered == {"duplicate": 1, "too_short": 2, "too_long": 1}
    assert stats.docs == 2
    val = tokenmill.open_shards(tmp_path / "a", "val")  # empty split: no shards, still readable
    assert len(val) == 0 and val.num_tokens == 0 and list(val) == []
    assert tokenmill.verify(tmp_path / "a").ok
    assert stats.manifest["dedup"]["removed"] == 1
    stats = tokenmill.prepare(
        corpus, bpe_tok, tmp_path / "b", dedup=False, val_fraction=0, progress=False
    )
    assert stats.docs == 6
    stats = tokenmill.prepare(
        corpus, bpe_tok, tmp_path / "c", max_docs=3, val_fraction=0, progress=False
    )
    assert stats.docs == 3 and stats.lines == 4  # the duplicate on line 2 was read and dropped


def test_bos_eos_switches(tmp_path: Path, llama_tok: Path) -> None:
    corpus = write_jsonl(tmp_path / "in.jsonl", ["some text", "more text"])
    info = tokenmill.tokenizer_info(llama_tok)
    bos, eos = info["bos"]["id"], info["eos"]["id"]
    for mode, flag, first, last in [
        ("auto", True, bos, eos),
        ("never", True, None, eos),
        ("auto", False, bos, None),
    ]:
        out = tmp_path / f"{mode}{flag}"
        tokenmill.prepare(
            corpus, llama_tok, out, bos=mode, eos=flag, val_fraction=0, progress=False
        )
        doc = tokenmill.open_shards(out)[0]
        assert (doc[0] == first) == (first is not None)
        assert (doc[-1] == last) == (last is not None)


def test_uint16_refused_for_large_vocab(tmp_path: Path, large_tok: Path) -> None:
    corpus = write_jsonl(tmp_path / "in.jsonl", ["text"])
    with pytest.raises(ValueError, match=r"dtype='uint16' cannot hold .* 70001"):
        tokenmill.prepare(corpus, large_tok, tmp_path / "o", dtype="uint16", progress=False)
    stats = tokenmill.prepare(corpus, large_tok, tmp_path / "o", progress=False)
    assert stats.dtype == "uint32"
    assert tokenmill.open_shards(tmp_path / "o")[0][-1] == 70_000  # <|endoftext|>


def test_existing_dataset_needs_overwrite(tmp_path: Path, bpe_tok: Path) -> None:
    corpus = write_jsonl(tmp_path / "in.jsonl", ["one", "two"])
    tokenmill.prepare(corpus, bpe_tok, tmp_path / "o", progress=False)
    with pytest.raises(FileExistsError, match="overwrite"):
        tokenmill.prepare(corpus, bpe_tok, tmp_path / "o", progress=False)
    tokenmill.prepare(corpus, bpe_tok, tmp_path / "o", overwrite=True, progress=False)


def test_bad_tokenizer_paths(tmp_path: Path) -> None:
    corpus = write_jsonl(tmp_path / "in.jsonl", ["one"])
    with pytest.raises(FileNotFoundError, match=r"tokenizer\.json"):
        tokenmill.prepare(corpus, tmp_path, tmp_path / "o", progress=False)
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(tokenmill.TokenizerError, match=r"broken\.json"):
        tokenmill.prepare(corpus, tmp_path / "broken.json", tmp_path / "o", progress=False)
    (tmp_path / "latin1.json").write_bytes(b'{"model": "caf\xe9"}')
    with pytest.raises(tokenmill.TokenizerError, match=r"latin1\.json.*not UTF-8.*offset 14"):
        tokenmill.prepare(corpus, tmp_path / "latin1.json", tmp_path / "o", progress=False)


def test_tokenizer_error_names_file_and_line(tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models

    # "<unk>" is not in the vocabulary, so any unknown character is an error.
    tok = Tokenizer(models.BPE(vocab={"a": 0, "b": 1}, merges=[], unk_token="<unk>"))
    tok.save(str(tmp_path / "tokenizer.json"))
    corpus = write_jsonl(tmp_path / "in.jsonl", ["ab", "abc"])
    with pytest.raises(tokenmill.BadLineError, match=r"in\.jsonl:2: tokenizer_error"):
        tokenmill.prepare(corpus, tmp_path / "tokenizer.json", tmp_path / "o", eos=False,
                          progress=False)  # fmt: skip
    assert not (tmp_path / "o" / "manifest.json").exists()
    with pytest.raises(tokenmill.TokenizerError, match=r"tokenizer\.json"):
        tokenmill.Encoder(str(tmp_path / "tokenizer.json")).encode_batch(["abc"])


def test_verify_catches_flipped_bytes(tmp_path: Path, corpus: Path, bpe_tok: Path) -> None:
    out = tmp_path / "out"
    tokenmill.prepare(corpus, bpe_tok, out, val_fraction=0, progress=False)
    assert tokenmill.verify(out).ok
    for name, offset in [("train/00000.bin", 1001), ("train/00000.idx", 17)]:
        path = out / name
        original = path.read_bytes()
        data = bytearray(original)
        data[offset] ^= 0x01
        path.write_bytes(bytes(data))
        report = tokenmill.verify(out)
        assert not report.ok
        assert any(name in e and "sha256" in e for e in report.errors)
        result = CliRunner().invoke(main, ["verify", str(out)])
        assert result.exit_code == 1 and name in result.output
        path.write_bytes(original)
    assert tokenmill.verify(out).ok


def test_verify_reports_manifest_counts_past_any_size(tmp_path: Path, bpe_tok: Path) -> None:
    """Counts from a (hostile) manifest are checked, not multiplied into a
    wrapped number or a panic."""
    out = tmp_path / "out"
    tokenmill.prepare(
        write_jsonl(tmp_path / "in.jsonl", ["abc", "def"]), bpe_tok, out, val_fraction=0,
        progress=False,
    )  # fmt: skip
    m = json.loads((out / "manifest.json").read_text())
    shard = m["splits"]["train"]["shards"][0]
    shard["tokens"] = shard["docs"] = 2**64 - 1
    m["splits"]["train"]["tokens"] = m["splits"]["train"]["docs"] = 2**64 - 1
    (out / "manifest.json").write_text(json.dumps(m))
    errors = tokenmill.verify(out).errors
    assert any("expected 18446744073709551615 tokens" in e for e in errors), errors
    assert any("expected 18446744073709551615 documents + 1 offsets" in e for e in errors), errors


def test_verify_catches_out_of_vocab_ids(tmp_path: Path, bpe_tok: Path) -> None:
    out = tmp_path / "out"
    tokenmill.prepare(
        write_jsonl(tmp_path / "in.jsonl", ["abc"]), bpe_tok, out, val_fraction=0, progress=False
    )
    m = json.loads((out / "manifest.json").read_text())
    m["tokenizer"]["vocab_size"] = 3
    (out / "manifest.json").write_text(json.dumps(m))
    assert any(">= vocab size 3" in e for e in tokenmill.verify(out).errors)


def test_unfinished_directory_is_not_a_dataset(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    with pytest.raises(FileNotFoundError, match="not a finished tokenmill dataset"):
        tokenmill.open_shards(tmp_path)


def test_sigkill_leaves_no_manifest_and_rerun_succeeds(
    tmp_path: Path, texts: list[str], bpe_tok: Path
) -> None:
    big = write_jsonl(tmp_path / "big.jsonl", [f"{i} {t}" for i in range(4) for t in texts])
    out = tmp_path / "out"

    def cmd_for(dest: Path) -> list[str]:
        return [
            sys.executable,
            "-m",
            "tokenmill.cli",
            "prepare",
            str(big),
            "-t",
            str(bpe_tok),
            "-o",
            str(dest),
            "--shard-size",
            "64KiB",
            "--threads",
            "1",
            "--quiet",
        ]

    cmd = cmd_for(out)
    proc = subprocess.Popen(cmd)
    deadline = time.monotonic() + 60
    while not list(out.glob("train/00003.bin")) and time.monotonic() < deadline:
        assert proc.poll() is None, "prepare finished before it could be killed"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert list(out.glob("train/*.bin")), "killed before any shard was written"
    assert not (out / "manifest.json").exists()
    with pytest.raises(FileNotFoundError):
        tokenmill.open_shards(out)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    assert tokenmill.verify(out).ok
    clean = tmp_path / "clean"
    subprocess.run(cmd_for(clean), check=True, stdout=subprocess.DEVNULL)
    assert shard_bytes(out) == shard_bytes(clean)


def test_cli_prepare_inspect_verify(tmp_path: Path, corpus: Path, bpe_tok: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "out"
    r = runner.invoke(main, ["prepare", str(corpus), "-t", str(bpe_tok), "-o", str(out), "-q"])
    assert r.exit_code == 0, r.output
    assert "tokens" in r.output and "MB/s" in r.output
    r = runner.invoke(main, ["inspect", str(out)])
    assert r.exit_code == 0 and "doc length (tokens)" in r.output and "uint16" in r.output
    r = runner.invoke(main, ["inspect", str(out), "--json"])
    info = json.loads(r.output)
    assert (
        info["splits"]["train"]["tokens"] + info["splits"]["val"]["tokens"]
        == info["totals"]["tokens"]
    )
    r = runner.invoke(main, ["verify", str(out)])
    assert r.exit_code == 0 and ": ok:" in r.output


def test_files_tokenmill_did_not_write_are_never_deleted(
    tmp_path: Path, corpus: Path, bpe_tok: Path
) -> None:
    """Without overwrite, foreign files in a split directory are an error
    that names them; with it they stay, and only our own shards go."""
    out = tmp_path / "out"
    (out / "train").mkdir(parents=True)
    theirs = {"megatron_text_document.bin": b"keep", "megatron_text_document.idx": b"me",
              "notes.txt": b"mine", "1.bin": b"short stem"}  # fmt: skip
    for name, data in theirs.items():
        (out / "train" / name).write_bytes(data)
    (out / "train" / "00007.bin.tmp").write_bytes(b"a crashed run's shard")
    with pytest.raises(FileExistsError, match=r"holds files tokenmill did not write \(1\.bin, "):
        tokenmill.prepare(corpus, bpe_tok, out, val_fraction=0, progress=False)
    assert all((out / "train" / n).read_bytes() == d for n, d in theirs.items())
    tokenmill.prepare(corpus, bpe_tok, out, val_fraction=0, progress=False, overwrite=True)
    assert all((out / "train" / n).read_bytes() == d for n, d in theirs.items())
    assert not (out / "train" / "00007.bin.tmp").exists()
    assert tokenmill.verify(out).ok
    # Our own leftovers of a run that never finished (no manifest) are ours to remove.
    (out / "manifest.json").unlink()
    for name in theirs:
        (out / "train" / name).unlink()
    tokenmill.prepare(corpus, bpe_tok, out, val_fraction=0, progress=False)
    assert tokenmill.verify(out).ok
