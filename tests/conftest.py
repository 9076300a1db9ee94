from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import tokenmill
from corpus import (
    build_large_vocab,
    build_llama3_style,
    build_llama_style,
    build_qwen_style,
    real_texts,
)


@pytest.fixture(scope="session")
def texts() -> list[str]:
    return real_texts(1_500_000)


@pytest.fixture(scope="session")
def bpe_tok(tmp_path_factory: pytest.TempPathFactory, texts: list[str]) -> Path:
    """tokenmill's own byte-level BPE (NFKC, ChatML specials, eos <|im_end|>)."""
    out = tmp_path_factory.mktemp("bpe_tok")
    corpus = tmp_path_factory.mktemp("bpe_corpus") / "c.jsonl"
    from corpus import write_jsonl

    write_jsonl(corpus, texts)
    return tokenmill.train_tokenizer(corpus, out, vocab_size=3000, progress=False)


@pytest.fixture(scope="session")
def qwen_tok(tmp_path_factory: pytest.TempPathFactory, texts: list[str]) -> Path:
    return build_qwen_style(tmp_path_factory.mktemp("qwen_tok"), texts)


@pytest.fixture(scope="session")
def qwen_big_tok(tmp_path_factory: pytest.TempPathFactory, texts: list[str]) -> Path:
    """Qwen2-style with a 12k vocabulary: enough merges that some tokens
    start or end inside a CJK character (see test_fast's whole-character tests)."""
    return build_qwen_style(tmp_path_factory.mktemp("qwen_big_tok"), texts, vocab_size=12000)


@pytest.fixture(scope="session")
def llama_tok(tmp_path_factory: pytest.TempPathFactory, texts: list[str]) -> Path:
    return build_llama_style(tmp_path_factory.mktemp("llama_tok"), texts)


@pytest.fixture(scope="session")
def llama3_tok(tmp_path_factory: pytest.TempPathFactory, texts: list[str]) -> Path:
    return build_llama3_style(tmp_path_factory.mktemp("llama3_tok"), texts)


@pytest.fixture(scope="session")
def llama_meta_tok(tmp_path_factory: pytest.TempPathFactory, texts: list[str]) -> Path:
    return build_llama_style(tmp_path_factory.mktemp("llama_meta_tok"), texts, legacy=False)


@pytest.fixture(scope="session")
def large_tok(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_large_vocab(tmp_path_factory.mktemp("large_tok"))


@pytest.fixture(params=["bpe", "qwen", "llama3", "llama", "llama_meta"])
def any_tok(request: pytest.FixtureRequest) -> Path:
    path: Path = request.getfixturevalue(f"{request.param}_tok")
    return path
