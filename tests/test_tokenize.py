"""Ids from the data core equal the Python `tokenizers` library's, through
the Encoder and through shards on disk."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

import tokenmill
from corpus import ADVERSARIAL, EMOJI_AND_MIXED, ref_ids, reference, write_jsonl


@pytest.mark.parametrize("backend", ["fast", "reference"])
@pytest.mark.parametrize("parse_special", [False, True])
def test_encoder_matches_python_tokenizers(
    any_tok: Path, texts: list[str], parse_special: bool, backend: str
) -> None:
    sample = texts[:400] + EMOJI_AND_MIXED + ADVERSARIAL
    enc = tokenmill.Encoder(str(any_tok), parse_special=parse_special, backend=backend)
    assert enc.encode_batch(sample, threads=2) == ref_ids(reference(any_tok, parse_special), sample)


def test_special_strings_are_text_by_default(qwen_tok: Path) -> None:
    text = "<|im_start|>user\nhi<|im_end|><|endoftext|>"
    ref = Tokenizer.from_file(str(qwen_tok / "tokenizer.json"))
    special_ids = {ref.token_to_id(t) for t in ("<|im_start|>", "<|im_end|>", "<|endoftext|>")}
    plain = tokenmill.Encoder(str(qwen_tok)).encode_batch([text])[0]
    parsed = tokenmill.Encoder(str(qwen_tok), parse_special=True).encode_batch([text])[0]
    assert not special_ids & set(plain)
    assert special_ids <= set(parsed)
    assert parsed == ref.encode(text, add_special_tokens=False).ids


def test_shards_hold_reference_ids(tmp_path: Path, any_tok: Path, texts: list[str]) -> None:
    sample = list(dict.fromkeys(t for t in texts[:300] + EMOJI_AND_MIXED if t.strip()))
    corpus = write_jsonl(tmp_path / "in.jsonl", sample)
    stats = tokenmill.prepare(corpus, any_tok, tmp_path / "out", val_fraction=0, progress=False)
    info = tokenmill.tokenizer_info(any_tok)
    bos = [info["bos"]["id"]] if info["adds_bos"] else []
    eos = [info["eos"]["id"]]
    docs = tokenmill.open_shards(tmp_path / "out")
    assert len(docs) == len(sample) == stats.docs
    expected = [bos + ids + eos for ids in ref_ids(reference(any_tok), sample)]
    assert [d.tolist() for d in docs] == expected
    assert stats.manifest["bos_added"] == bool(bos)


def test_llama3_style_adds_bos_from_post_processor(llama3_tok: Path) -> None:
    info = tokenmill.tokenizer_info(llama3_tok)
    assert info["adds_bos"] is True
    assert info["bos"] == {"token": "<|begin_of_text|>", "id": 0}


def test_llama_style_adds_bos_from_config(llama_tok: Path) -> None:
    info = tokenmill.tokenizer_info(llama_tok)
    assert info["adds_bos"] is True
    assert info["bos"]["token"] == "<s>"


def test_decode_round_trip(tmp_path: Path, qwen_tok: Path) -> None:
    import unicodedata

    sample = [*EMOJI_AND_MIXED, "纯中文的一段话，没有任何英文。", "plain ascii text"]
    corpus = write_jsonl(tmp_path / "in.jsonl", sample)
    tokenmill.prepare(corpus, qwen_tok, tmp_path / "out", val_fraction=0, progress=False)
    ref = Tokenizer.from_file(str(qwen_tok / "tokenizer.json"))
    docs = tokenmill.open_shards(tmp_path / "out")
    decoded = [ref.decode(d[:-1].tolist()) for d in docs]  # drop EOS
    assert decoded == [unicodedata.normalize("NFC", t) for t in sample]


def _long_document(texts: list[str], size: int) -> str:
    base = "\n".join(texts)
    return (base * (size // len(base) + 1))[:size]


@pytest.mark.parametrize("name", ["bpe", "qwen", "llama3", "llama", "llama_meta"])
def test_long_document_pieces_keep_ids(
    request: pytest.FixtureRequest, texts: list[str], name: str
) -> None:
    tok_dir: Path = request.getfixturevalue(f"{name}_tok")
    doc = _long_document(texts, 1_500_000)
    enc = tokenmill.Encoder(str(tok_dir), backend="reference")
    pieces = enc.pieces(doc)
    assert len(pieces) > 10
    assert pieces[0][0] == 0 and pieces[-1][1] == len(doc.encode())
    assert all(a[1] == b[0] for a, b in itertools.pairwise(pieces))
    assert (
        enc.encode_batch([doc], threads=2)[0]
        == reference(tok_dir).encode(doc, add_special_tokens=False).ids
    )


@pytest.mark.parametrize("backend", ["fast", "reference"])
@pytest.mark.parametrize("name", ["qwen", "llama"])
def test_long_document_with_parsed_specials(
    request: pytest.FixtureRequest, texts: list[str], name: str, backend: str
) -> None:
    tok_dir: Path = request.getfixturevalue(f"{name}_tok")
    specials = ["<|im_end|>\n", "<|im_start|>user\n", "</s> Next", "<s>\nA"]
    mixed = [t + specials[i % len(specials)] for i, t in enumerate(texts[:400])]
    doc = _long_document(mixed, 900_000)
    enc = tokenmill.Encoder(str(tok_dir), parse_special=True, backend=backend)
    want = reference(tok_dir, parse_special=True).encode(doc, add_special_tokens=False).ids
    assert enc.encode_batch([doc], threads=2)[0] == want


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["fast", "reference"])
@pytest.mark.parametrize("name", ["bpe", "qwen", "llama3", "llama", "llama_meta"])
def test_multi_megabyte_documents_keep_ids(
    request: pytest.FixtureRequest, texts: list[str], name: str, backend: str
) -> None:
    tok_dir: Path = request.getfixturevalue(f"{name}_tok")
    zh = "".join(t for t in texts if any("\u4e00" <= c <= "\u9fff" for c in t))
    for doc in (_long_document(texts, 6_000_000), _long_document([zh] * 3, 3_000_000)):
        got = tokenmill.Encoder(str(tok_dir), backend=backend).encode_batch([doc], threads=2)[0]
        assert got == reference(tok_dir).encode(doc, add_special_tokens=False).ids


@pytest.mark.parametrize("name", ["bpe", "llama"])
def test_long_document_through_prepare(
    request: pytest.FixtureRequest, tmp_path: Path, texts: list[str], name: str
) -> None:
    tok_dir: Path = request.getfixturevalue(f"{name}_tok")
    doc = _long_document(texts, 800_000)
    corpus = write_jsonl(tmp_path / "in.jsonl", ["before", doc, "short one"])
    stats = tokenmill.prepare(
        corpus,
        tok_dir,
        tmp_path / "out",
        val_fraction=0,
        dedup="none",
        bos="always" if name == "llama" else "never",
        progress=False,
        tokenizer_backend="reference",
    )
    assert stats.manifest["chunking"]["documents_in_pieces"] == 1
    tok = stats.manifest["tokenizer"]
    bos = [tok["bos_id"]] if name == "llama" else []
    eos = [tok["eos_id"]]
    ref = reference(tok_dir)
    docs = tokenmill.open_shards(tmp_path / "out")
    for got, text in zip(docs, ["before", doc, "short one"], strict=True):
        # BOS before the first piece, EOS after the last, nothing between pieces.
        assert got.tolist() == bos + ref.encode(text, add_special_tokens=False).ids + eos


texts_strategy = st.lists(
    st.text(
        alphabet=st.characters(blacklist_categories=["Cs"]),
        min_size=1,
        max_size=200,
    ),
    min_size=1,
    max_size=20,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(sample=texts_strategy)
def test_hypothesis_ids_match(qwen_tok: Path, sample: list[str]) -> None:
    enc = tokenmill.Encoder(str(qwen_tok))
    assert enc.encode_batch(sample) == ref_ids(reference(qwen_tok), sample)


def test_fingerprint_survives_save_pretrained(tmp_path: Path, bpe_tok: Path) -> None:
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(str(bpe_tok)).save_pretrained(str(tmp_path / "resaved"))
    a = tokenmill.tokenizer_info(bpe_tok)["fingerprint"]
    b = tokenmill.tokenizer_info(tmp_path / "resaved")["fingerprint"]
    assert a == b
    other = json.loads((bpe_tok / "tokenizer.json").read_text())
    other["model"]["vocab"]["zzzz-new"] = len(other["model"]["vocab"]) + 100
    (tmp_path / "changed").mkdir()
    (tmp_path / "changed" / "tokenizer.json").write_text(json.dumps(other))
    assert tokenmill.tokenizer_info(tmp_path / "changed")["fingerprint"] != a
