"""One exception policy (issue 16): every failure the data core raises is a
TokenmillError subclass; I/O errors are also OSErrors with errno and filename;
a Rust panic is an InternalError, not pyo3's PanicException (a BaseException)."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest

import tokenmill
from tokenmill import _core


@pytest.mark.parametrize("in_worker", [False, True])
def test_panic_is_internal_error(in_worker: bool) -> None:
    with pytest.raises(tokenmill.InternalError, match="boom from the test") as info:
        _core._panic_for_tests("boom from the test", in_worker=in_worker)
    assert isinstance(info.value, Exception)
    assert "bug in tokenmill" in str(info.value)


def test_missing_input_is_file_not_found_with_errno(tmp_path: Path, bpe_tok: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(tokenmill.TokenmillFileNotFoundError) as info:
        tokenmill.prepare(str(missing), bpe_tok, tmp_path / "out")
    e = info.value
    assert isinstance(e, FileNotFoundError) and isinstance(e, tokenmill.TokenmillError)
    assert e.errno == errno.ENOENT
    assert e.filename == str(missing)


def test_io_error_keeps_errno(tmp_path: Path, bpe_tok: Path) -> None:
    """An output path under a regular file fails with ENOTDIR, told apart by errno."""
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"text": "hello world"}) + "\n")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(tokenmill.TokenmillOSError) as info:
        tokenmill.prepare(str(src), bpe_tok, blocker / "out")
    assert isinstance(info.value, OSError)
    assert info.value.errno == errno.ENOTDIR
    assert info.value.filename is not None and str(blocker) in info.value.filename


def test_existing_output_is_tokenmill_and_file_exists(tmp_path: Path, bpe_tok: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"text": "hello world"}) + "\n")
    out = tmp_path / "out"
    tokenmill.prepare(str(src), bpe_tok, out)
    with pytest.raises(tokenmill.OutputExistsError) as info:
        tokenmill.prepare(str(src), bpe_tok, out)
    assert isinstance(info.value, FileExistsError)
    assert isinstance(info.value, tokenmill.TokenmillError)


def test_invalid_option_is_tokenmill_and_value_error(tmp_path: Path) -> None:
    with pytest.raises(tokenmill.InvalidOptionError) as info:
        _core.prepare("{not json")
    assert isinstance(info.value, ValueError)
    with pytest.raises(tokenmill.InvalidOptionError):
        tokenmill.dedup(texts=["a"], inputs=["b.jsonl"])
