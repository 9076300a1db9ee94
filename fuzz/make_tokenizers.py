"""Writes the small tokenizer.json fixtures of the fast_tokenizer and
chat_render fuzz targets into fuzz/tokenizers/ (committed; rerun only to
change them):

    .venv/bin/python fuzz/make_tokenizers.py

- byte_level.json: Qwen2 layout (NFC, the Qwen2 split regex, byte-level BPE),
  ChatML specials and one plain added token;
- sentencepiece.json: LLaMA-2 layout as HF converts it (byte fallback, fused
  unk, the legacy Prepend/Replace normaliser, no pre-tokenizer);
- metaspace.json: the same model behind a Metaspace pre-tokenizer (Mistral's
  newer files).

Trained on a few kB of English, Chinese, code and emoji written below plus
some standard-library source, so that the merges cover every script the
fuzzer mixes. Why so small: a fuzz target re-encodes every input, and a 1.5k
vocabulary keeps each file under 200 kB while still producing multi-level
merges and unknown characters (byte fallback).
"""

from __future__ import annotations

import inspect
import json
import textwrap
from pathlib import Path

from tokenizers import (
    AddedToken,
    Regex,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    trainers,
)

OUT = Path(__file__).resolve().parent / "tokenizers"
VOCAB_SIZE = 1500

QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

TEXTS = [
    "The quick brown fox jumps over the lazy dog. It's what we'll do, isn't it?",
    "Tokenizers split text into pieces; BPE merges the most frequent pairs first.",
    "数据预处理是训练语言模型的第一步。我们把原始文本切分、去重，然后转换成词元。",
    "中文和 English 混合的句子，包括数字 12345 与标点符号：“引号”、（括号）。",
    "日本語のテキストも少し。한국어 문장도 조금. Ünïcödé àccents and ﬁ ligatures ①②③.",
    "Emoji: 🤖🚀🎉 👨‍👩‍👧‍👦 ❤️ 👍🏽 and flags 🇨🇳🇺🇸; symbols ™ © ° ± × ÷ → ∞.",
    "def tokenize(text: str) -> list[int]:\n    return [ord(c) for c in text]\n",
    "for (int i = 0; i < n; ++i) {\n\tsum += a[i] * b[i];\n}\n",
    '{"messages": [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "hi"}]}',
    "   indented\twith\ttabs\r\nwindows lines\r\n\n\n  trailing spaces   \n\u3000全角空格",
]


def corpus() -> list[str]:
    texts = list(TEXTS) * 20
    for module in (json.decoder, textwrap, inspect):
        texts.append(inspect.getsource(module))
    return texts


def batches(texts: list[str], n: int = 64):
    for i in range(0, len(texts), n):
        yield texts[i : i + n]


def byte_level(texts: list[str]) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(batches(texts), trainer=trainer)
    # Qwen2 ships <tool_call> as a plain (not special) added token.
    tok.add_tokens([AddedToken("<tool_call>", special=False, normalized=False)])
    return tok


def sentencepiece(texts: list[str], legacy: bool) -> Tokenizer:
    specials = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)]
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    # Trained on whitespace-split words, as sentencepiece is.
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never")
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE + 256, special_tokens=specials, show_progress=False
    )
    tok.train_from_iterator(batches(texts), trainer=trainer)
    if legacy:
        tok.pre_tokenizer = None
    else:
        tok.normalizer = None
        tok.pre_tokenizer = pre_tokenizers.Metaspace(
            replacement="▁", prepend_scheme="first", split=False
        )
    tok.decoder = decoders.Sequence(
        [
            decoders.Replace("▁", " "),
            decoders.ByteFallback(),
            decoders.Fuse(),
            decoders.Strip(" ", 1, 0),
        ]
    )
    return tok


def main() -> None:
    texts = corpus()
    OUT.mkdir(exist_ok=True)
    for name, tok in [
        ("byte_level", byte_level(texts)),
        ("sentencepiece", sentencepiece(texts, legacy=True)),
        ("metaspace", sentencepiece(texts, legacy=False)),
    ]:
        path = OUT / f"{name}.json"
        tok.save(str(path), pretty=False)
        print(f"{path}: {path.stat().st_size:,} bytes, vocabulary {tok.get_vocab_size():,}")


if __name__ == "__main__":
    main()
