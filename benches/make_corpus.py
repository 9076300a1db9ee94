"""Builds the benchmark corpus: real Chinese and English prose as JSONL, offline.

Reads only text that Debian packages and the Python standard library install,
so no data is downloaded from a hub. Install the sources once (as root):

    apt-get update && apt-get install -y --no-install-recommends \\
        debian-handbook manpages-zh debian-reference-zh-cn debian-reference-en \\
        libreoffice-help-zh-cn libreoffice-help-en-us fortunes-zh python3.11-doc \\
        debian-edu-doc-zh-cn debian-edu-doc-en

Chinese: the Debian Administrator's Handbook (zh-CN, zh-TW), Debian Reference
(zh-cn), the LibreOffice help (zh-CN), the Chinese man pages, Tang/Song poems
and sayings (fortunes-zh), the Debian Edu manual (zh-cn), and the CPython test
suite's ``test/cjkencodings/{gb*,big5,hz}-utf8.txt``. English: the same Debian
books in English, the LibreOffice help (en-US) and the Python 3.11 manual
sources (``_sources/*.rst.txt``). Missing sources are skipped with a note.

The base material (~tens of MB) is cut into documents of 1-16 KB at paragraph
boundaries. Two ways to reach the requested size:

- default, for throughput figures: every document is new. Each is 1-16 KB of
  lines drawn at random from all the lines of one language (a line: one line
  of a paragraph), in paragraphs of 1-6 lines. Words and lines recur as they
  do across real documents, but no document, and in practice no run of two
  lines, repeats, so no cache of any tool sees a text it has seen. meta.json
  says how often a line recurs on average (``line_reuse``).
- ``--near-duplicates``, for the dedup benchmark: the base documents are
  repeated; every repetition shuffles the paragraphs of each document and adds
  one paragraph from another document of the same language, so repetitions
  are near-duplicates of each other (never byte-identical).

Output: ``OUT/part-NNNNN.jsonl`` (``{"text": ...}`` per line) and ``OUT/meta.json``.

    python benches/make_corpus.py --size 200M -o bench_out/corpus/200M
    python benches/make_corpus.py --size 40M --near-duplicates -o bench_out/corpus/40M
"""

from __future__ import annotations

import argparse
import glob
import gzip
import hashlib
import html.parser
import itertools
import json
import os
import random
import re
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

# (language, label, glob, kind); kinds are handled by `_extract`.
SOURCES = [
    ("zh", "debian-handbook zh-CN", "/usr/share/doc/debian-handbook/html/zh-CN/*.html", "html"),
    ("zh", "debian-handbook zh-TW", "/usr/share/doc/debian-handbook/html/zh-TW/*.html", "html"),
    ("zh", "debian-reference zh-cn", "/usr/share/debian-reference/*.zh-cn.txt.gz", "text"),
    ("zh", "libreoffice-help zh-CN", "/usr/share/libreoffice/help/zh-CN/text/**/*.html", "html"),
    ("zh", "manpages-zh", "/usr/share/man/zh_CN/man*/*.gz", "man"),
    ("zh", "fortunes-zh", "/usr/share/games/fortunes/*.u8", "fortune"),
    ("zh", "debian-edu-doc zh-cn", "/usr/share/doc/debian-edu-doc-zh-cn/*.html", "html"),
    ("zh", "cpython cjkencodings", "{stdlib}/test/cjkencodings/*-utf8.txt", "text"),
    ("en", "debian-handbook en-US", "/usr/share/doc/debian-handbook/html/en-US/*.html", "html"),
    ("en", "debian-reference en", "/usr/share/debian-reference/*.en.txt.gz", "text"),
    ("en", "libreoffice-help en-US", "/usr/share/libreoffice/help/en-US/text/**/*.html", "html"),
    ("en", "python3.11-doc", "/usr/share/doc/python3.11/html/_sources/**/*.rst.txt", "text"),
    ("en", "debian-edu-doc en", "/usr/share/doc/debian-edu-doc-en/*.html", "html"),
]
# Only the Chinese-script files of cjkencodings (the Japanese/Korean ones are left out).
CJK_FILES = ("gb2312", "gbk", "gb18030", "big5", "hz")

BLOCK_TAGS = {
    "p", "div", "br", "li", "dt", "dd", "tr", "pre", "table", "section",
    "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "title",
}  # fmt: skip
SKIP_TAGS = {"script", "style", "head", "header", "nav", "footer", "noscript"}


class _HtmlText(html.parser.HTMLParser):
    """Visible text of a page, with a blank line at every block boundary."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag: str, attrs: object) -> None:
        if tag in SKIP_TAGS:
            self.skip += 1
        elif tag in BLOCK_TAGS:
            self.parts.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in SKIP_TAGS:
            self.skip = max(0, self.skip - 1)
        elif tag in BLOCK_TAGS:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.parts.append(data)


_MAN_ESCAPES = re.compile(r"\\f(\[[^\]]*\]|\(..|.)|\\[/,&|^]|\\\*\(..|\\\*.")


def _man_to_text(src: str) -> str:
    """Drops troff requests and font escapes, keeps the words of macros."""
    out = []
    for line in src.splitlines():
        if line.startswith(('.\\"', "'\\\"")):
            continue
        if line.startswith((".", "'")):
            words = line.split(None, 1)
            if len(words) < 2 or words[0] in (".de", ".ds", ".nr", ".so", ".if", ".ie", ".el"):
                out.append("")  # paragraph requests (.PP, .TP) end a paragraph
                continue
            line = words[1].replace('"', "")
        line = _MAN_ESCAPES.sub("", line).replace("\\-", "-").replace("\\e", "\\")
        out.append(line.replace("\\ ", " ").replace("\\(em", "—"))
    return "\n".join(out)


def _read(path: str) -> str:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as f:
        return f.read()


def _paragraphs(text: str) -> list[str]:
    """Paragraphs: blank-line separated, inner lines stripped, empties dropped."""
    paras = []
    for block in re.split(r"\n\s*\n", text):
        lines = [ln.strip() for ln in block.splitlines()]
        para = "\n".join(ln for ln in lines if ln)
        if para:
            paras.append(para)
    return paras


def _extract(path: str, kind: str) -> list[list[str]]:
    """Paragraph groups of one file (one group per fortune for fortune files)."""
    raw = _read(path)
    if kind == "html":
        parser = _HtmlText()
        parser.feed(raw)
        return [_paragraphs("".join(parser.parts))]
    if kind == "man":
        return [_paragraphs(_man_to_text(raw))]
    if kind == "fortune":
        return [[f.strip()] for f in re.split(r"^%$", raw, flags=re.M) if f.strip()]
    return [_paragraphs(raw)]


def _files(pattern: str) -> list[str]:
    pattern = pattern.replace("{stdlib}", sysconfig.get_paths()["stdlib"])
    files = sorted(glob.glob(pattern, recursive=True))
    if "cjkencodings" in pattern:
        files = [f for f in files if os.path.basename(f).split("-")[0] in CJK_FILES]
    return files


def base_documents(seed: int = 0) -> tuple[list[tuple[str, list[str]]], dict[str, int]]:
    """(language, paragraphs) documents of 1-16 KB from every installed source."""
    rng = random.Random(seed)
    docs: list[tuple[str, list[str]]] = []
    per_source: dict[str, int] = {}
    for lang, label, pattern, kind in SOURCES:
        files = _files(pattern)
        if not files:
            print(f"make_corpus: {label}: not installed, skipped", file=sys.stderr)
            continue
        size = 0
        for path in files:
            groups = _extract(path, kind)
            if kind == "fortune":
                # Sayings and poems are short: bundle them like an anthology page.
                groups = [
                    [p for g in groups[i : i + 20] for p in g] for i in range(0, len(groups), 20)
                ]
            for paras in groups:
                doc: list[str] = []
                limit, used = rng.randint(1024, 16384), 0
                for p in paras:
                    doc.append(p)
                    used += len(p.encode())
                    if used >= limit:
                        docs.append((lang, doc))
                        doc, limit, used = [], rng.randint(1024, 16384), 0
                if doc and used >= 64:
                    docs.append((lang, doc))
                size += sum(len(p.encode()) for p in paras)
        per_source[label] = size
    rng.shuffle(docs)  # mix languages and sources through every part file
    return docs, per_source


# CJK ideographs, CJK punctuation and full-width forms: what "Chinese text" means in meta.json.
CJK = re.compile("[\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uff00-\uffef]")


def _near_duplicates(base: list[tuple[str, list[str]]], seed: int) -> Iterator[tuple[str, str]]:
    """The base documents, then variants of them, round after round."""
    by_lang: dict[str, list[int]] = {}
    for i, (lang, _) in enumerate(base):
        by_lang.setdefault(lang, []).append(i)
    for rep in itertools.count():
        rng = random.Random(f"{seed}-{rep}")
        for lang, paras in base:
            if rep:
                # Shuffled paragraphs plus one borrowed from a same-language document.
                paras = paras.copy()
                rng.shuffle(paras)
                other = base[rng.choice(by_lang[lang])][1]
                paras.insert(rng.randint(0, len(paras)), rng.choice(other))
            yield lang, "\n\n".join(paras)


def _recombined(base: list[tuple[str, list[str]]], seed: int) -> Iterator[tuple[str, str]]:
    """New documents of 1-16 KB from random lines of one language, in the
    languages' shares of the base text."""
    lines: dict[str, list[str]] = {}
    for lang, paras in base:
        lines.setdefault(lang, []).extend(ln for p in paras for ln in p.split("\n"))
    langs = sorted(lines)
    weights = [sum(len(ln.encode()) for ln in lines[lang]) for lang in langs]
    rng = random.Random(seed)
    while True:
        lang = rng.choices(langs, weights)[0]
        pool, limit, used = lines[lang], rng.randint(1024, 16384), 0
        paras: list[str] = []
        while used < limit:
            para = [rng.choice(pool) for _ in range(rng.randint(1, 6))]
            paras.append("\n".join(para))
            used += sum(len(ln.encode()) + 1 for ln in para)
        yield lang, "\n\n".join(paras)


def build(
    out: Path, size: int, parts: int = 8, seed: int = 0, near_duplicates: bool = False
) -> dict[str, object]:
    """Writes about `size` bytes of JSONL into `parts` files under `out`."""
    base, per_source = base_documents(seed)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("part-*.jsonl"):
        old.unlink()
    files = [open(out / f"part-{i:05d}.jsonl", "w", encoding="utf-8") for i in range(parts)]  # noqa: SIM115
    seen: set[bytes] = set()
    written = docs = text_bytes = cjk_chars = chars = repeats = lines = 0
    lang_bytes = {lang: 0 for lang, _ in base}
    per_part = size / parts
    documents = _near_duplicates(base, seed) if near_duplicates else _recombined(base, seed)
    for lang, text in documents:
        if written >= size:
            break
        digest = hashlib.blake2b(text.encode(), digest_size=16).digest()
        if digest in seen:
            repeats += 1
            continue
        seen.add(digest)
        line = json.dumps({"text": text}, ensure_ascii=False) + "\n"
        files[min(int(written / per_part), parts - 1)].write(line)
        written += len(line.encode())
        docs += 1
        n = len(text.encode())
        text_bytes += n
        lang_bytes[lang] += n
        chars += len(text)
        cjk_chars += len(CJK.findall(text))
        lines += text.count("\n") - text.count("\n\n") + 1
    for f in files:
        f.close()
    base_lines = sum(p.count("\n") + 1 for _, paras in base for p in paras)
    meta = {
        "size_requested": size,
        "jsonl_bytes": written,
        "text_bytes": text_bytes,
        "docs": docs,
        "parts": parts,
        "mode": "near-duplicates" if near_duplicates else "unique documents",
        "exact_repeats_dropped": repeats,
        "base_docs": len(base),
        "base_text_bytes_by_source": per_source,
        # How many times each line of the base text is used, on average.
        "line_reuse": round(lines / max(base_lines, 1), 2),
        "text_bytes_by_language": lang_bytes,
        "cjk_char_share": round(cjk_chars / max(chars, 1), 4),
        # Each of these characters is 3 bytes of UTF-8.
        "cjk_text_byte_share": round(3 * cjk_chars / max(text_bytes, 1), 4),
        "seed": seed,
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
    return meta


def parse_size(s: str) -> int:
    """'100M', '1G', '512K' or a plain byte count (decimal units)."""
    units = {"K": 10**3, "M": 10**6, "G": 10**9}
    s = s.strip().upper().rstrip("B")
    return int(float(s[:-1]) * units[s[-1]]) if s[-1] in units else int(s)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="100M", help="JSONL bytes to write (decimal: 100M, 1G)")
    ap.add_argument("-o", "--output", type=Path, required=True)
    ap.add_argument("--parts", type=int, default=8, help="number of part files")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--near-duplicates",
        action="store_true",
        help="repeat the base documents with small changes (the dedup benchmark's corpus)",
    )
    args = ap.parse_args()
    meta = build(args.output, parse_size(args.size), args.parts, args.seed, args.near_duplicates)
    print(json.dumps(meta, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
