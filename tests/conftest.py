from __future__ import annotations

import sys
from pathlib import Path

import pytest
from tokenizers import Regex
from tokenizers.pre_tokenizers import Digits, Split

sys.path.insert(0, str(Path(__file__).parent))

import tokenmill
from corpus import (
    BYTE_LEVEL_FAMILIES,
    CL100K_PATTERN,
    DEEPSEEK_SPLITS,
    O200K_PATTERN,
    QWEN35_PATTERN,
    TEKKEN_PATTERN,
    build_byte_level_style,
    build_large_vocab,
    build_llama3_style,
    build_llama_style,
    build_qwen_style,
    convert_to_ranks,
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
    return build_llama_style(tmp_path_factory.mktemp("llama_meta_tok"), texts, layout="metaspace")


@pytest.fixture(scope="session")
def gemma_tok(tmp_path_factory: pytest.TempPathFactory, texts: list[str]) -> Path:
    return build_llama_style(tmp_path_factory.mktemp("gemma_tok"), texts, layout="gemma")


@pytest.fixture(scope="session")
def large_tok(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_large_vocab(tmp_path_factory.mktemp("large_tok"))


@pytest.fixture(scope="session")
def cl100k_tok(tmp_path_factory: pytest.TempPathFactory, texts: list[str]) -> Path:
    """tiktoken's own cl100k regex (possessive quantifiers)."""
    return build_byte_level_style(tmp_path_factory.mktemp("cl100k_tok"), texts, CL100K_PATTERN)


@pytest.fixture(scope="session")
def o200k_tok(tmp_path_factory: pytest.TempPathFactory, texts: list[str]) -> Path:
    return build_byte_level_style(tmp_path_factory.mktemp("o200k_tok"), texts, O200K_PATTERN)


@pytest.fixture(scope="session")
def tekken_tok(tmp_path_factory: pytest.TempPathFactory, texts: list[str]) -> Path:
    """Tekken's shape: its split regex, merges converted from ranks, 12k tokens
    (enough that some tokens hold part of a CJK character next to other bytes)."""
    out = tmp_path_factory.mktemp("tekken_tok")
    return convert_to_ranks(build_byte_level_style(out, texts, TEKKEN_PATTERN, vocab_size=12000))


@pytest.fixture(scope="session")
def qwen35_tok(tmp_path_factory: pytest.TempPathFactory, texts: list[str]) -> Path:
    return build_byte_level_style(
        tmp_path_factory.mktemp("qwen35_tok"), texts, QWEN35_PATTERN, nfc=True
    )


@pytest.fixture(scope="session")
def deepseek_tok(tmp_path_factory: pytest.TempPathFactory, texts: list[str]) -> Path:
    splits = [Split(pattern=Regex(p), behavior="isolated") for p in DEEPSEEK_SPLITS]
    return build_byte_level_style(tmp_path_factory.mktemp("deepseek_tok"), texts, splits)


@pytest.fixture(scope="session")
def starcoder_tok(tmp_path_factory: pytest.TempPathFactory, texts: list[str]) -> Path:
    """GPT-2's regex over a vocabulary that lacks the bytes its training
    text never used, as StarCoder's does."""
    return build_byte_level_style(
        tmp_path_factory.mktemp("starcoder_tok"), texts, None, full_alphabet=False
    )


@pytest.fixture(scope="session")
def smollm_tok(tmp_path_factory: pytest.TempPathFactory, texts: list[str]) -> Path:
    """SmolLM's shape: single digits, then GPT-2's regex, over a vocabulary
    that lacks some bytes."""
    digits = [Digits(individual_digits=True)]
    return build_byte_level_style(
        tmp_path_factory.mktemp("smollm_tok"), texts, digits, full_alphabet=False
    )


@pytest.fixture(params=[*BYTE_LEVEL_FAMILIES, "llama", "llama_meta", "gemma"])
def any_tok(request: pytest.FixtureRequest) -> Path:
    path: Path = request.getfixturevalue(f"{request.param}_tok")
    return path
