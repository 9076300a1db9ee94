"""Test corpora and tokenizers built on the fly from files every Python
installation has: no downloads."""

from __future__ import annotations

import json
import sysconfig
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from tokenizers.pre_tokenizers import ByteLevel, Split

from tokenmill.demo import _docstrings, _stdlib_sources, chinese_texts

# Split regexes as the public tokenizer.json files of each family spell them.
QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# cl100k as tiktoken writes it (possessive quantifiers), copied by models
# converted straight from tiktoken.
CL100K_PATTERN = (
    r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"
    r"|\s++$|\s*[\r\n]|\s+(?!\S)|\s"
)

_CASED = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+{c}" \
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*{c}"  # fmt: skip

# o200k (GPT-4o, gpt-oss, LLaMA-4, Phi-4-mini, MiniMax).
O200K_PATTERN = _CASED.replace("{c}", r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?") + (
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Mistral's Tekken (Mistral-Nemo, Mistral-Small, Nemotron).
TEKKEN_PATTERN = _CASED.replace("{c}", "") + (
    r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# DeepSeek-V3 and R1: three splits before byte-level (the file holds real
# CR/LF characters in the last regex).
DEEPSEEK_SPLITS = [
    r"\p{N}{1,3}",
    "[一-龥\u3040-ゟ゠-ヿ]+",
    "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+"
    "| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+",
]

# The byte-level test tokenizers (fixtures `<name>_tok`), one per family shape.
BYTE_LEVEL_FAMILIES = [
    *["qwen", "llama3", "cl100k", "o200k", "tekken", "qwen35", "deepseek", "starcoder", "smollm"],
    "bpe",
]

QWEN35_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}"
    r"| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

EMOJI_AND_MIXED = [
    "Qwen2.5 支持中文和 English 混合文本 🤖🚀，包括 emoji 👨‍👩‍👧‍👦 与 代码 `print('你好')`。",
    "全角字符：ＡＢＣ１２３，半角 ABC123；日本語のテキストも。한국어 텍스트.",
    "e\u0301t\u00e9 cafe\u0301 — combining marks and NFC/NFKC ﬁ ligatures ①②③",
    "tabs\tand   spaces\r\nwindows line\r\n\n\n   indented\n\u3000全角空格",
]

ADVERSARIAL = [
    "a" * 5000,
    " " * 3000 + "x",
    "\n" * 2000 + "end",
    "中" * 4000,
    "😀" * 1000,
    "e" + "\u0301" * 500,
    "\ufffd\ufffd invalid-then-replaced \ufffd",
    "<|im_start|>user\nhi<|im_end|></s><s><unk><|endoftext|>",
    "text with NUL \x00 inside and \x01 controls",
    "1234567890" * 300,
    "'s 're 've 'll 'd 'S 'RE",
]


def real_texts(limit_bytes: int = 2_000_000) -> list[str]:
    """Real English prose (stdlib docstrings), code, and Chinese prose."""
    out: list[str] = list(chinese_texts()) + EMOJI_AND_MIXED
    size = sum(len(t.encode()) for t in out)
    for _, source in _stdlib_sources():
        for _, doc in _docstrings(source):
            out.append(doc)
            size += len(doc.encode())
        out.append(source[:20_000])
        size += len(out[-1].encode())
        if size >= limit_bytes:
            break
    return out


def reference(tok_dir: Path, parse_special: bool = False) -> Tokenizer:
    """The Python `tokenizers` reference for a tokenizer directory, treating
    special-token strings as tokenmill does."""
    tok = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
    tok.encode_special_tokens = not parse_special
    return tok


def ref_ids(tok: Tokenizer, texts: list[str]) -> list[list[int]]:
    """Reference ids without BOS/EOS."""
    return [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]


def write_jsonl(path: Path, texts: list[str], field: str = "text") -> Path:
    with path.open("w", encoding="utf-8") as f:
        for t in texts:
            f.write(json.dumps({field: t}, ensure_ascii=False) + "\n")
    return path


def _iter_batches(texts: list[str], n: int = 256) -> Iterator[list[str]]:
    for i in range(0, len(texts), n):
        yield texts[i : i + n]


def _write_config(out: Path, **config: object) -> None:
    (out / "tokenizer_config.json").write_text(json.dumps(config, ensure_ascii=False))


def _split(pattern: str) -> Any:
    return Split(pattern=_regex(pattern), behavior="isolated", invert=False)


def _split_byte_level(
    texts: list[str],
    pre: str | list[Any] | None,
    specials: list[str],
    vocab_size: int,
    normalizer: Any = None,
    full_alphabet: bool = True,
) -> Tokenizer:
    """Byte-level BPE trained on `texts`. `pre`: a split regex, then
    byte-level; or pre-tokenizers, then byte-level with GPT-2's regex; or
    None, GPT-2's regex alone. Without `full_alphabet` the vocabulary holds
    only the bytes the texts use, as StarCoder's and SmolLM's do."""
    tok = Tokenizer(models.BPE())
    if normalizer is not None:
        tok.normalizer = normalizer
    if pre is None:
        tok.pre_tokenizer = ByteLevel(add_prefix_space=False, use_regex=True)
    elif isinstance(pre, str):
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [_split(pre), ByteLevel(add_prefix_space=False, use_regex=False)]
        )
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [*pre, ByteLevel(add_prefix_space=False, use_regex=True)]
        )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=ByteLevel.alphabet() if full_alphabet else [],
        show_progress=False,
    )
    tok.train_from_iterator(_iter_batches(texts), trainer=trainer)
    return tok


def build_qwen_style(out: Path, texts: list[str], vocab_size: int = 2000) -> Path:
    """Qwen2-style: NFC, the Qwen2 split regex + byte-level, ChatML specials,
    no BOS, EOS = <|endoftext|>."""
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = _split_byte_level(texts, QWEN2_PATTERN, specials, vocab_size, normalizers.NFC())
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    _write_config(
        out,
        tokenizer_class="PreTrainedTokenizerFast",
        bos_token=None,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        add_bos_token=False,
    )
    return out


def build_llama3_style(out: Path, texts: list[str], vocab_size: int = 2000) -> Path:
    """LLaMA-3-style: no normaliser, the LLaMA-3 split regex + byte-level, and
    BOS inserted by the post-processor (the config has no add_bos_token)."""
    from tokenizers import processors

    specials = ["<|begin_of_text|>", "<|end_of_text|>"]
    tok = _split_byte_level(texts, LLAMA3_PATTERN, specials, vocab_size)
    tok.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", 0)]
    )
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    _write_config(out, bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>")
    return out


def build_byte_level_style(
    out: Path,
    texts: list[str],
    pre: str | list[Any] | None,
    vocab_size: int = 2000,
    nfc: bool = False,
    full_alphabet: bool = True,
) -> Path:
    """Any other byte-level family (`pre` as for `_split_byte_level`), no
    BOS, EOS <|endoftext|>."""
    normalizer = normalizers.NFC() if nfc else None
    tok = _split_byte_level(texts, pre, ["<|endoftext|>"], vocab_size, normalizer, full_alphabet)
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    _write_config(out, eos_token="<|endoftext|>")
    return out


def convert_to_ranks(tok_dir: Path) -> Path:
    """Rewrites a trained byte-level tokenizer's merges as transformers
    converts tiktoken ranks (Tekken, LLaMA-3): a token's rank is its id, every
    split of a token into two tokens is a merge, ordered by the token's rank,
    then by its parts' ranks, and `ignore_merges` is on. A token can then be
    made by several merges, and a merge can come before those making its
    parts."""
    path = tok_dir / "tokenizer.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    specials = {t["content"] for t in data["added_tokens"]}
    ranks = {t: r for t, r in data["model"]["vocab"].items() if t not in specials}
    merges: list[list[str]] = []
    for token in sorted(ranks, key=ranks.__getitem__):
        splits = [(token[:i], token[i:]) for i in range(1, len(token))]
        splits = [s for s in splits if s[0] in ranks and s[1] in ranks]
        merges += [list(s) for s in sorted(splits, key=lambda s: (ranks[s[0]], ranks[s[1]]))]
    data["model"]["merges"] = merges
    data["model"]["ignore_merges"] = True
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return tok_dir


def build_llama_style(
    out: Path, texts: list[str], vocab_size: int = 2000, layout: str = "legacy"
) -> Path:
    """LLaMA-2-style SentencePiece BPE as HF converts it: byte fallback, BOS
    <s> added by config, and one of three layouts: ``legacy``, the
    Prepend/Replace normaliser with no pre-tokenizer (LLaMA-2, Mistral);
    ``metaspace``, a Metaspace pre-tokenizer; ``gemma``, a Replace(" ", "▁")
    normaliser and a Split on " " merged with the previous piece (Gemma 2-4,
    which never finds a space to split on).

    All but ``gemma`` are trained as sentencepiece trained LLaMA-2 and
    Mistral: on lines, with digits split (``split_digits``), so no token
    holds a newline or a digit next to another character, and the newline is
    a byte-fallback token. Gemma's vocabulary has newline tokens."""
    specials = ["<unk>", "<s>", "</s>"]
    byte_tokens = [f"<0x{i:02X}>" for i in range(256)]
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    # Train on whitespace-split words (as sentencepiece does), then drop the
    # pre-tokenizer like the HF conversion of LLaMA-2 does.
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never")
    if layout != "gemma":
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [tok.pre_tokenizer, pre_tokenizers.Digits(individual_digits=True)]
        )
        texts = [line for text in texts for line in text.split("\n") if line]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials + byte_tokens,
        show_progress=False,
    )
    tok.train_from_iterator(_iter_batches(texts), trainer=trainer)
    if layout == "legacy":
        tok.pre_tokenizer = None
    elif layout == "metaspace":
        tok.normalizer = None
        tok.pre_tokenizer = pre_tokenizers.Metaspace(
            replacement="▁", prepend_scheme="first", split=False
        )
    else:
        tok.normalizer = normalizers.Replace(" ", "▁")
        tok.pre_tokenizer = Split(" ", behavior="merged_with_previous")
    tok.decoder = decoders.Sequence(
        [
            decoders.Replace("▁", " "),
            decoders.ByteFallback(),
            decoders.Fuse(),
            decoders.Strip(" ", 1, 0),
        ]
    )
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    _write_config(
        out,
        tokenizer_class="PreTrainedTokenizerFast",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        add_bos_token=True,
        add_eos_token=False,
    )
    return out


def build_large_vocab(out: Path, size: int = 70_000) -> Path:
    """A byte-level BPE whose vocabulary (with added tokens) exceeds 65536 ids."""
    alphabet = ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    for i in range(len(vocab), size):
        vocab[f"filler{i}"] = i
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<|endoftext|>"])
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    _write_config(out, eos_token="<|endoftext|>")
    return out


def _regex(pattern: str) -> object:
    from tokenizers import Regex

    return Regex(pattern)


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


# ---------------------------------------------------------------- near-duplicates

_CJK_RANGES = (
    (0x3040, 0x30FF), (0x31F0, 0x31FF), (0x3400, 0x4DBF), (0x4E00, 0x9FFF),
    (0xAC00, 0xD7AF), (0x1100, 0x11FF), (0x3130, 0x318F), (0xF900, 0xFAFF),
    (0x20000, 0x3FFFF),
)  # fmt: skip


def _is_cjk(c: str) -> bool:
    o = ord(c)
    return any(lo <= o <= hi for lo, hi in _CJK_RANGES)


def reference_shingles(text: str, kind: str = "auto", n: int = 5) -> tuple[str, list[str]]:
    """An independent Python statement of tokenmill's MinHash normalisation
    and shingles (docs/dedup.md): NFKC, per-character lowercase, characters
    outside the Unicode categories L, M and N separate words; word n-grams
    joined by one space, or character n-grams of the kept characters; `auto`
    takes characters when at least 30% of the kept characters are CJK."""
    import unicodedata

    t = "".join(c.lower() for c in unicodedata.normalize("NFKC", text))
    words: list[str] = []
    cur: list[str] = []
    kept = cjk = 0
    for c in t:
        if unicodedata.category(c)[0] in "LMN":
            cur.append(c)
            kept += 1
            cjk += _is_cjk(c)
        elif cur:
            words.append("".join(cur))
            cur = []
    if cur:
        words.append("".join(cur))
    if kind == "auto":
        kind = "char" if kept and cjk * 10 >= kept * 3 else "word"
    units = list("".join(words)) if kind == "char" else words
    sep = "" if kind == "char" else " "
    if not units:
        return kind, []
    if len(units) <= n:
        return kind, [sep.join(units)]
    return kind, [sep.join(units[i : i + n]) for i in range(len(units) - n + 1)]


def exact_pairs(sets: list[set[Any]], threshold: float) -> dict[tuple[int, int], float]:
    """Every pair (i < j) whose exact Jaccard is at least `threshold`, by
    prefix filtering (a pair that reaches the threshold shares a token in
    the first |x| - ceil(t|x|) + 1 tokens of each set, rarest first), then
    exact intersection. Empty sets take part in no pair."""
    import math
    from collections import Counter, defaultdict

    df = Counter(tok for s in sets for tok in s)
    index: defaultdict[Any, list[int]] = defaultdict(list)
    candidates: set[tuple[int, int]] = set()
    for i, s in enumerate(sets):
        if not s:
            continue
        toks = sorted(s, key=lambda t: (df[t], t))
        for t in toks[: len(toks) - math.ceil(threshold * len(toks) - 1e-9) + 1]:
            candidates.update((j, i) for j in index[t])
            index[t].append(i)
    out = {}
    for i, j in candidates:
        both = len(sets[i] & sets[j])
        sim = both / (len(sets[i]) + len(sets[j]) - both)
        if sim >= threshold:
            out[(i, j)] = sim
    return out


def clusters_from_candidates(n: int, candidates: Callable[[int], Iterable[int]]) -> list[list[int]]:
    """Clusters (of two or more) of documents 0..n-1 joined with each of their
    `candidates(i)`: union-find with the smallest index as root, as tokenmill
    clusters."""
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i in range(n):
        for j in candidates(i):
            a, b = find(i), find(int(j))
            if a != b:
                parent[max(a, b)] = min(a, b)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    return [g for g in groups.values() if len(g) > 1]


def cluster_pairs(clusters: list[list[int]]) -> set[tuple[int, int]]:
    """All pairs (i < j) inside the clusters."""
    out = set()
    for c in clusters:
        c = sorted(c)
        out.update((a, b) for k, a in enumerate(c) for b in c[k + 1 :])
    return out


def planted_corpus(
    seed: int = 0, pairs: int = 300, triples: int = 40, singles: int = 300
) -> list[str]:
    """Random English-word and Chinese-character documents with planted
    near-duplicates: `pairs` originals with one copy each, edited at a rate
    drawn from [0, 0.12] per word/character (substitutions, insertions,
    deletions), so their Jaccard spreads across [~0.3, 1]; `triples`
    originals with two lightly edited copies (rate <= 0.01); `singles`
    unrelated documents. Punctuation and capitals test the normalisation.
    Documents are shuffled."""
    import random

    rng = random.Random(seed)
    en_vocab = sorted(
        {w.lower() for t in real_texts(300_000) for w in t.split() if w.isalpha() and len(w) > 2}
    )
    zh_vocab = [chr(0x4E00 + i) for i in range(0, 6000, 2)]

    def base(lang: str) -> list[str]:
        vocab = en_vocab if lang == "en" else zh_vocab
        return [rng.choice(vocab) for _ in range(rng.randint(80, 250))]

    def edit(units: list[str], rate: float, lang: str) -> list[str]:
        vocab = en_vocab if lang == "en" else zh_vocab
        out: list[str] = []
        for u in units:
            r = rng.random()
            if r < rate / 3:
                continue  # deletion
            if r < 2 * rate / 3:
                out.append(rng.choice(vocab))  # substitution
            elif r < rate:
                out += [u, rng.choice(vocab)]  # insertion
            else:
                out.append(u)
        return out

    def render(units: list[str], lang: str) -> str:
        if lang == "zh":
            return "".join(u + ("，" if rng.random() < 0.05 else "") for u in units) + "。"
        words = [u.capitalize() if rng.random() < 0.1 else u for u in units]
        return " ".join(w + ("," if rng.random() < 0.05 else "") for w in words) + "."

    docs: list[str] = []
    for _ in range(pairs):
        lang = rng.choice(["en", "zh"])
        b = base(lang)
        docs += [render(b, lang), render(edit(b, rng.uniform(0, 0.12), lang), lang)]
    for _ in range(triples):
        lang = rng.choice(["en", "zh"])
        b = base(lang)
        docs += [render(b, lang)] + [
            render(edit(b, rng.uniform(0, 0.01), lang), lang) for _ in range(2)
        ]
    for _ in range(singles):
        lang = rng.choice(["en", "zh"])
        docs.append(render(base(lang), lang))
    rng.shuffle(docs)
    return docs


# Qwen2.5-Instruct's chat template (tools branch included).
QWEN25_TEMPLATE = (
    "{%- if tools %}\n"
    "    {{- '<|im_start|>system\\n' }}\n"
    "    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- messages[0]['content'] }}\n"
    "    {%- else %}\n"
    "        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}\n"
    "    {%- endif %}\n"
    '    {{- "\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user '
    "query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:"
    '\\n<tools>" }}\n'
    "    {%- for tool in tools %}\n"
    '        {{- "\\n" }}\n'
    "        {{- tool | tojson }}\n"
    "    {%- endfor %}\n"
    '    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name '
    'and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": '
    '<function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}\n'
    "{%- else %}\n"
    "    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n"
    "    {%- else %}\n"
    "        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a "
    "helpful assistant.<|im_end|>\\n' }}\n"
    "    {%- endif %}\n"
    "{%- endif %}\n"
    "{%- for message in messages %}\n"
    '    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or '
    '(message.role == "assistant" and not message.tool_calls) %}\n'
    "        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + "
    "'\\n' }}\n"
    '    {%- elif message.role == "assistant" %}\n'
    "        {{- '<|im_start|>' + message.role }}\n"
    "        {%- if message.content %}\n"
    "            {{- '\\n' + message.content }}\n"
    "        {%- endif %}\n"
    "        {%- for tool_call in message.tool_calls %}\n"
    "            {%- if tool_call.function is defined %}\n"
    "                {%- set tool_call = tool_call.function %}\n"
    "            {%- endif %}\n"
    '            {{- \'\\n<tool_call>\\n{"name": "\' }}\n'
    "            {{- tool_call.name }}\n"
    '            {{- \'", "arguments": \' }}\n'
    "            {{- tool_call.arguments | tojson }}\n"
    "            {{- '}\\n</tool_call>' }}\n"
    "        {%- endfor %}\n"
    "        {{- '<|im_end|>\\n' }}\n"
    '    {%- elif message.role == "tool" %}\n'
    '        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}\n'
    "            {{- '<|im_start|>user' }}\n"
    "        {%- endif %}\n"
    "        {{- '\\n<tool_response>\\n' }}\n"
    "        {{- message.content }}\n"
    "        {{- '\\n</tool_response>' }}\n"
    '        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}\n'
    "            {{- '<|im_end|>\\n' }}\n"
    "        {%- endif %}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|im_start|>assistant\\n' }}\n"
    "{%- endif %}\n"
)


def qwen25_tokenizer_config(eos: str) -> dict[str, Any]:
    """Qwen2.5's tokenizer_config.json: no BOS, pad <|endoftext|>, its chat
    template; ``eos`` is <|endoftext|> in base and <|im_end|> in instruct models."""
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None,
        "eos_token": eos,
        "pad_token": "<|endoftext|>",
        "add_bos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 32768,
        "chat_template": QWEN25_TEMPLATE,
    }


def read_texts(paths: list[Path], **kw: object) -> tuple[list[str], dict[str, int]]:
    """The documents the reader yields from ``paths`` (the input layer every
    command shares) and the skipped lines by reason."""
    from tokenmill import _core

    batches = _core.TextBatches([str(p) for p in paths], **kw)  # type: ignore[arg-type]
    return [t for batch in batches for t in batch], batches.skipped


def shard_bytes(out: Path, split: str = "train") -> list[bytes]:
    """The bytes of every file of a split, in name order."""
    return [p.read_bytes() for p in sorted((out / split).iterdir())]
