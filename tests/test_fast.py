"""The fast tokenization backend: ids identical to Python `tokenizers` for
every tokenizer layout it accepts, a clear fallback for the ones it does
not, and the --verify-fraction cross-check."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers, trainers

import tokenmill
from corpus import (
    ADVERSARIAL,
    BYTE_LEVEL_FAMILIES,
    EMOJI_AND_MIXED,
    ref_ids,
    reference,
    write_jsonl,
)

TRICKY = [
    *ADVERSARIAL,
    "\u00a0中文 \u00a0abc \u3000x",
    "'ſ 'S 'LL 'Ve it'S don'T",
    " \t \u3000\n \u2028 \u2029\u0085 x\r\n\r\n  y  \n",
    "a\u0301\u0302 \u0301start Å Å ﬁ ㎏ ① Ａ",
    "\u200d\u200b\ufeff\U0010ffff\U0001f468\u200d\U0001f469\u200d\U0001f467",
    "x" + "\u00a0" * 300 + "y",
    "<|im_start|>system\n<|im_end|>\n<s></s> <unk><0x41>",
    "",
    " ",
    "▁▁ leading ▁ meta ▁▁▁x  spaces",
    "12,345.6789 ١٢٣ ²³ 一二三 Ⅻ",
    "HelloWorld JSONParser ǅungla ʰx ªb I'M don'T x's/y//z\n/",
    "bytes no vocabulary has: \x04\x06\x13\x14\x16\x1d \U00040000\U00050000 \U000fffff",
    "trailing whitespace \n  \n ",
]


def fast(tok_dir: Path, parse_special: bool = False) -> tokenmill.Encoder:
    enc = tokenmill.Encoder(str(tok_dir), parse_special=parse_special, backend="fast")
    assert enc.backend == "fast"
    return enc


def variant(src: Path, dst: Path, edit: Any) -> Path:
    """A copy of the tokenizer in `src` with its tokenizer.json edited."""
    dst.mkdir(parents=True, exist_ok=True)
    data = json.loads((src / "tokenizer.json").read_text(encoding="utf-8"))
    edit(data)
    (dst / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    shutil.copy(src / "tokenizer_config.json", dst / "tokenizer_config.json")
    return dst


def test_auto_picks_fast_for_every_test_layout(any_tok: Path) -> None:
    info = tokenmill.tokenizer_info(any_tok)
    assert info["backend"] == "fast", info["reference_reason"]


@pytest.mark.parametrize("parse_special", [False, True])
def test_tricky_strings(any_tok: Path, parse_special: bool) -> None:
    got = fast(any_tok, parse_special).encode_batch(TRICKY)
    assert got == ref_ids(reference(any_tok, parse_special), TRICKY)


def _set(path: str, value: Any) -> Any:
    def edit(data: dict[str, Any]) -> None:
        node = data
        *parents, last = path.split(".")
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        node[last] = value

    return edit


# Layout variants the fast engine must get right: byte-level with the GPT-2
# regex and add_prefix_space, LLaMA-3's ignore_merges, NFKC + Qwen2 regex,
# Metaspace with every prepend scheme and with split.
def _byte_level(prefix_space: bool, regex: bool) -> dict[str, Any]:
    return {
        "type": "ByteLevel",
        "add_prefix_space": prefix_space,
        "trim_offsets": True,
        "use_regex": regex,
    }


def _nfkc_first(data: dict[str, Any]) -> None:
    data["normalizer"] = {
        "type": "Sequence",
        "normalizers": [{"type": "NFKC"}, data["normalizer"]],
    }


def _unk_no_fuse(data: dict[str, Any]) -> None:
    data["model"]["unk_token"] = "<|endoftext|>"
    data["model"]["fuse_unk"] = False


def _byte_fallback_tokens(data: dict[str, Any]) -> None:
    """Byte fallback on a byte-level vocabulary that lacks some byte
    characters: those fall back to the <0xXX> tokens of their UTF-8 bytes."""
    vocab = data["model"]["vocab"]
    top = max(vocab.values()) + 1 + len(data["added_tokens"])
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = top + b
    data["model"]["byte_fallback"] = True


VARIANTS = {
    "qwen_ignore_merges": ("qwen", _set("model.ignore_merges", True)),
    "qwen_nfkc": ("qwen", _set("normalizer", {"type": "NFKC"})),
    "qwen_no_normalizer": ("qwen", _set("normalizer", None)),
    "qwen_gpt2_prefix_space": ("qwen", _set("pre_tokenizer", _byte_level(True, True))),
    "qwen_byte_level_no_regex": ("qwen", _set("pre_tokenizer", _byte_level(False, False))),
    "meta_always": ("llama_meta", _set("pre_tokenizer.prepend_scheme", "always")),
    "meta_never": ("llama_meta", _set("pre_tokenizer.prepend_scheme", "never")),
    "meta_split": ("llama_meta", _set("pre_tokenizer.split", True)),
    "llama_no_fuse_unk": ("llama", _set("model.fuse_unk", False)),
    "llama_nfkc_first": ("llama", _nfkc_first),
    "starcoder_unk": ("starcoder", _set("model.unk_token", "<|endoftext|>")),
    "starcoder_unk_no_fuse": ("starcoder", _unk_no_fuse),
    "starcoder_byte_fallback": ("starcoder", _byte_fallback_tokens),
}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_layout_variants(
    request: pytest.FixtureRequest, tmp_path: Path, texts: list[str], name: str
) -> None:
    base, edit = VARIANTS[name]
    tok_dir = variant(request.getfixturevalue(f"{base}_tok"), tmp_path / name, edit)
    sample = texts[:200] + EMOJI_AND_MIXED + TRICKY
    for parse_special in (False, True):
        got = fast(tok_dir, parse_special).encode_batch(sample, threads=2)
        assert got == ref_ids(reference(tok_dir, parse_special), sample), parse_special


@pytest.mark.parametrize("name", ["starcoder", "smollm"])
def test_byte_level_vocabulary_missing_bytes_stays_fast(
    request: pytest.FixtureRequest, texts: list[str], name: str
) -> None:
    """A byte-level vocabulary without some of the 256 byte characters (as
    StarCoder's and SmolLM's): the crate drops those bytes, and so does the
    fast engine, word by word."""
    tok_dir: Path = request.getfixturevalue(f"{name}_tok")
    vocab = json.loads((tok_dir / "tokenizer.json").read_text(encoding="utf-8"))["model"]
    missing = [c for c in pre_tokenizers.ByteLevel.alphabet() if c not in vocab["vocab"]]
    assert len(missing) >= 10
    assert tokenmill.tokenizer_info(tok_dir)["backend"] == "fast"
    sample = texts[:300] + TRICKY
    assert fast(tok_dir).encode_batch(sample) == ref_ids(reference(tok_dir), sample)


def test_unknown_characters_without_byte_fallback(
    tmp_path: Path, llama_tok: Path, texts: list[str]
) -> None:
    """unk handling (fused and not) when characters are missing from the vocab."""

    def drop(data: dict[str, Any]) -> None:
        data["model"]["byte_fallback"] = False
        vocab = data["model"]["vocab"]
        for t in [t for t in vocab if any("\u4e00" <= c <= "\u9fff" for c in t)]:
            del vocab[t]
        data["model"]["merges"] = [
            m for m in data["model"]["merges"] if all(p in vocab for p in m) and "".join(m) in vocab
        ]

    for fuse in (True, False):
        tok_dir = variant(llama_tok, tmp_path / f"fuse{fuse}", drop)
        _set("model.fuse_unk", fuse)(data := json.loads((tok_dir / "tokenizer.json").read_text()))
        (tok_dir / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False))
        sample = texts[:100] + EMOJI_AND_MIXED + TRICKY
        assert fast(tok_dir).encode_batch(sample) == ref_ids(reference(tok_dir), sample)


@pytest.mark.parametrize("name", ["qwen", "bpe", "llama"])
def test_added_tokens_of_every_kind(
    request: pytest.FixtureRequest, tmp_path: Path, texts: list[str], name: str
) -> None:
    """Non-special and normalised added tokens (under NFC, NFKC and the
    SentencePiece normaliser), lstrip/rstrip/single_word: documents holding
    them take the crate's added-vocabulary split."""
    base: Path = request.getfixturevalue(f"{name}_tok")
    tok = Tokenizer.from_file(str(base / "tokenizer.json"))
    tok.add_tokens(
        [
            AddedToken("<tool_call>", special=False, normalized=False),
            AddedToken("Ｆancy", special=False, normalized=True),
            AddedToken("word", special=False, single_word=True),
        ]
    )
    tok.add_special_tokens(
        [AddedToken("<mask>", lstrip=True, rstrip=True), AddedToken("<|fim|>", normalized=True)]
    )
    out = tmp_path / "added"
    out.mkdir()
    tok.save(str(out / "tokenizer.json"))
    shutil.copy(base / "tokenizer_config.json", out / "tokenizer_config.json")
    sample = [
        "call <tool_call>{json}</tool_call> now",
        "Fancy ﬁ Ｆancy Fancy",
        "a word, words, sword word",
        "left   <mask>   right<mask>",
        "<|fim|> and <|im_start|>x<|im_end|>",
        *texts[:50],
        *TRICKY,
    ]
    for parse_special in (False, True):
        got = fast(out, parse_special).encode_batch(sample)
        assert got == ref_ids(reference(out, parse_special), sample), parse_special


def _wordpiece(tmp_path: Path, texts: list[str]) -> Path:
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(
        texts[:200], trainers.WordPieceTrainer(vocab_size=500, special_tokens=["[UNK]", "[SEP]"])
    )
    out = tmp_path / "wordpiece"
    out.mkdir()
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps({"eos_token": "[SEP]"}))
    return out


def test_unsupported_tokenizer_falls_back_and_says_why(tmp_path: Path, texts: list[str]) -> None:
    tok_dir = _wordpiece(tmp_path, texts)
    info = tokenmill.tokenizer_info(tok_dir)
    assert info["backend"] == "tokenizers"
    assert "not BPE" in info["reference_reason"]
    with pytest.raises(tokenmill.TokenizerError, match="fast backend does not support"):
        tokenmill.Encoder(str(tok_dir), backend="fast")
    corpus = write_jsonl(tmp_path / "in.jsonl", texts[:50])
    stats = tokenmill.prepare(corpus, tok_dir, tmp_path / "out", val_fraction=0, progress=False)
    assert stats.manifest["tokenizer"]["backend"] == "tokenizers"
    assert "not BPE" in stats.manifest["tokenizer"]["reference_reason"]
    assert "fast engine: model is not BPE" in stats.summary()


def test_unknown_split_regex_falls_back(tmp_path: Path, qwen_tok: Path) -> None:
    tok_dir = variant(
        qwen_tok,
        tmp_path / "odd",
        _set("pre_tokenizer.pretokenizers.0.pattern.Regex", r"\p{L}+|\p{N}+|[^\p{L}\p{N}]+"),
    )
    info = tokenmill.tokenizer_info(tok_dir)
    assert info["backend"] == "tokenizers"
    assert "regex" in info["reference_reason"]


def _bins(out: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.glob("*/*.bin"))}


@pytest.mark.parametrize("name", ["bpe", "qwen", "llama"])
def test_fast_and_reference_shards_are_byte_identical(
    request: pytest.FixtureRequest, tmp_path: Path, texts: list[str], name: str
) -> None:
    tok_dir: Path = request.getfixturevalue(f"{name}_tok")
    corpus = write_jsonl(tmp_path / "in.jsonl", texts[:1500] + EMOJI_AND_MIXED + TRICKY)
    runs = {}
    for backend in ("fast", "reference"):
        stats = tokenmill.prepare(
            corpus,
            tok_dir,
            tmp_path / backend,
            tokenizer_backend=backend,
            progress=False,
            threads=2,
        )
        runs[backend] = _bins(tmp_path / backend)
        assert stats.manifest["tokenizer"]["backend"] == (
            "fast" if backend == "fast" else "tokenizers"
        )
    assert runs["fast"] == runs["reference"]


def test_verify_fraction_counts_checked_documents(
    tmp_path: Path, qwen_tok: Path, texts: list[str]
) -> None:
    corpus = write_jsonl(tmp_path / "in.jsonl", texts[:400])
    all_checked = tokenmill.prepare(
        corpus, qwen_tok, tmp_path / "all", verify_fraction=1.0, progress=False
    )
    tok = all_checked.manifest["tokenizer"]
    assert tok["backend"] == "fast"
    assert tok["verified_docs"] == all_checked.docs > 0
    assert "documents checked against tokenizers: identical" in all_checked.summary()
    some = tokenmill.prepare(
        corpus, qwen_tok, tmp_path / "some", verify_fraction=0.25, progress=False
    )
    assert 0.1 * some.docs < some.manifest["tokenizer"]["verified_docs"] < 0.4 * some.docs
    with pytest.raises(ValueError, match="verify_fraction"):
        tokenmill.prepare(corpus, qwen_tok, tmp_path / "bad", verify_fraction=1.5, progress=False)


texts_strategy = st.lists(
    st.text(alphabet=st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=200),
    min_size=1,
    max_size=20,
)

# Characters that stress the scanners and SentencePiece cuts.
tricky_alphabet = st.sampled_from(
    list("aZ é中文1２٣ \t\n\r\u00a0\u3000'sSſ.,!?▁\u0301\u200d😀<>|_/Aǅʰ\x04\U00040000")
)


@pytest.mark.parametrize("name", [*BYTE_LEVEL_FAMILIES, "llama", "llama_meta", "gemma"])
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(sample=texts_strategy, tricky=st.lists(st.text(tricky_alphabet, max_size=60), max_size=10))
def test_hypothesis_fast_ids_match(
    request: pytest.FixtureRequest, name: str, sample: list[str], tricky: list[str]
) -> None:
    tok_dir: Path = request.getfixturevalue(f"{name}_tok")
    texts = sample + tricky
    assert fast(tok_dir).encode_batch(texts) == ref_ids(reference(tok_dir), texts)


def test_encode_flat_matches_encode_batch(qwen_tok: Path, texts: list[str]) -> None:
    import numpy as np

    enc = tokenmill.Encoder(str(qwen_tok), add_eos=True)
    sample = [*texts[:50], "", *TRICKY]
    ids, offsets = enc.encode_flat(sample, threads=2)
    flat = np.frombuffer(ids, np.uint32)
    off = np.frombuffer(offsets, np.uint64)
    assert len(off) == len(sample) + 1 and off[-1] == len(flat)
    docs = [flat[off[i] : off[i + 1]].tolist() for i in range(len(sample))]
    assert docs == enc.encode_batch(sample)


@pytest.mark.parametrize("name", ["qwen_big", "tekken"])
def test_whole_characters_keep_ids(
    request: pytest.FixtureRequest, name: str, texts: list[str]
) -> None:
    """With a larger vocabulary some tokens hold part of a CJK character next
    to other bytes; the characters they can reach must not start whole."""
    tok_dir: Path = request.getfixturevalue(f"{name}_tok")
    assert fast(tok_dir).encode_batch(texts) == ref_ids(reference(tok_dir), texts)


@pytest.mark.parametrize("name", [*BYTE_LEVEL_FAMILIES, "qwen_big"])
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_hypothesis_cjk_runs(
    request: pytest.FixtureRequest, texts: list[str], name: str, data: st.DataObject
) -> None:
    """Long unsplit CJK runs, where whole characters start as one symbol
    (see `Bpe::whole_chars`): ids still equal the reference's."""
    tok_dir: Path = request.getfixturevalue(f"{name}_tok")
    zh = sorted({c for t in texts for c in t if "\u4e00" <= c <= "\u9fff"})[:400]
    alphabet = st.sampled_from([*zh, *"，。、（）：的了是 a1\n😀é"])
    sample = data.draw(st.lists(st.text(alphabet, min_size=1, max_size=120), max_size=8))
    assert fast(tok_dir).encode_batch(sample) == ref_ids(reference(tok_dir), sample)
