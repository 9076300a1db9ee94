"""train-tokenizer writes a directory transformers loads, with ChatML specials."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import pytest
from click.testing import CliRunner

import tokenmill
from corpus import write_jsonl
from tokenmill.cli import main
from tokenmill.tokenizer import SPECIAL_TOKENS


def test_special_tokens_and_autotokenizer(bpe_tok: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(bpe_tok))
    assert [tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|im_end|>"
    assert len(tok) == 3000
    text = "训练一个分词器 tokenizer，中文和 English。"
    # NFKC folds full-width punctuation to ASCII (the happy-llm choice).
    assert tok.decode(tok(text)["input_ids"]) == unicodedata.normalize("NFKC", text)
    chat = tok.apply_chat_template(
        [{"role": "user", "content": "你好"}], tokenize=False, add_generation_prompt=True
    )
    assert chat == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n你好<|im_end|>\n<|im_start|>assistant\n"
    )
    config = json.loads((bpe_tok / "tokenizer.json").read_text())
    assert config["normalizer"]["type"] == "NFKC"
    assert config["pre_tokenizer"] == {
        "type": "ByteLevel",
        "add_prefix_space": False,
        "trim_offsets": True,
        "use_regex": True,
    }


def test_cli_train_tokenizer(tmp_path: Path, texts: list[str]) -> None:
    corpus = write_jsonl(tmp_path / "c.jsonl", texts[:300])
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\nnot json\n')
    result = CliRunner().invoke(
        main,
        [
            "train-tokenizer",
            str(corpus),
            str(tmp_path / "bad.jsonl"),
            "-o",
            str(tmp_path / "tok"),
            "--vocab-size",
            "600",
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "skipped lines: malformed_json=1" in result.output
    info = tokenmill.tokenizer_info(tmp_path / "tok")
    assert info["vocab_size"] == 600
    record = json.loads((tmp_path / "tok" / "tokenmill.json").read_text())
    assert record["documents"] == 301 and record["skipped_lines"] == {"malformed_json": 1}
    assert record["fingerprint"] == info["fingerprint"]
    assert info["eos"] == {"token": "<|im_end|>", "id": 4}
    assert info["backend"] == "fast"  # tokenmill's own tokenizers get the fast engine


def test_no_documents_is_a_no_documents_error(tmp_path: Path) -> None:
    """Like every other stage: a run that finds no document raises
    NoDocumentsError (a TokenmillError), and writes nothing."""
    src = tmp_path / "bad.jsonl"
    src.write_text('{"other": "x"}\n')
    with pytest.raises(tokenmill.NoDocumentsError, match="missing_field=1"):
        tokenmill.train_tokenizer(src, tmp_path / "tok", vocab_size=300, progress=False)
    assert not (tmp_path / "tok").exists()
