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

Built by the same functions the tests use (tests/corpus.py), so a fuzz
fixture and a test tokenizer of one family cannot drift apart.

Trained on a few kB of English, Chinese, code and emoji written below plus
some standard-library source, so that the merges cover every script the
fuzzer mixes. Why so small: a fuzz target re-encodes every input, and a 1.5k
vocabulary keeps each file under 200 kB while still producing multi-level
merges and unknown characters (byte fallback).
"""

from __future__ import annotations

import inspect
import json
import shutil
import sys
import tempfile
import textwrap
from pathlib import Path

from tokenizers import AddedToken, Tokenizer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from corpus import build_llama_style, build_qwen_style  # noqa: E402

OUT = ROOT / "fuzz" / "tokenizers"
VOCAB_SIZE = 1500

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


def byte_level(texts: list[str], work: Path) -> Tokenizer:
    """Qwen2 layout, built as the tests build it (tests/corpus.py), plus the
    plain added token Qwen2 ships (<tool_call>)."""
    out = build_qwen_style(work / "qwen", texts, VOCAB_SIZE)
    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    tok.add_tokens([AddedToken("<tool_call>", special=False, normalized=False)])
    return tok


def sentencepiece(texts: list[str], legacy: bool, work: Path) -> Tokenizer:
    """LLaMA-2 layout (legacy) or Metaspace, as tests/corpus.py builds them;
    the 256 byte tokens come on top of VOCAB_SIZE."""
    out = build_llama_style(work / f"llama-{legacy}", texts, VOCAB_SIZE + 256, legacy=legacy)
    return Tokenizer.from_file(str(out / "tokenizer.json"))


def main() -> None:
    texts = corpus()
    OUT.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp())
    for name, tok in [
        ("byte_level", byte_level(texts, work)),
        ("sentencepiece", sentencepiece(texts, legacy=True, work=work)),
        ("metaspace", sentencepiece(texts, legacy=False, work=work)),
    ]:
        path = OUT / f"{name}.json"
        tok.save(str(path), pretty=False)
        print(f"{path}: {path.stat().st_size:,} bytes, vocabulary {tok.get_vocab_size():,}")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
