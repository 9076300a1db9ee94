"""Helpers of tests/test_docs.py.

1. Tiny stand-ins for the files and directories the docs' examples use
   (`corpus/`, `chats.jsonl`, `models/Qwen2.5-0.5B`, `bench_out/...`), built
   once per test session from real text of the Python installation (no
   downloads) and copied into each page's working directory.
2. The stand-in commands the docs' shell blocks call through the prelude of
   tests/test_docs.py (`python docs_fixtures.py pip install ...`): each one
   checks what can be checked offline; the table in test_docs.py says why.
   This part imports nothing heavy: it runs once per command.
"""

from __future__ import annotations

import gzip
import itertools
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

# The Qwen2.5 checkpoints the docs name, as tiny random-init Qwen2 models
# sharing one Qwen2-style tokenizer (as the real base and instruct models do).
QWEN_MODELS = {
    "Qwen2.5-0.5B": "<|endoftext|>",  # base checkpoints end documents with <|endoftext|>
    "Qwen2.5-0.5B-Instruct": "<|im_end|>",  # instruct checkpoints with <|im_end|>
    "Qwen2.5-7B-Instruct": "<|im_end|>",  # the QLoRA recipe's model
}


def _jsonl(path: Path, records: list[Any]) -> Path:
    """JSON Lines, compressed as the name says (.gz, .zst)."""
    import zstandard

    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()
    if path.suffix == ".gz":
        data = gzip.compress(data)
    elif path.suffix == ".zst":
        data = zstandard.ZstdCompressor().compress(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _zh_documents(n: int) -> list[str]:
    """n distinct Chinese documents: three real sentences each, in varied order
    (enough documents that `--val-fraction 0.001` still gives a val split)."""
    from tokenmill.demo import chinese_texts

    sentences = sorted(
        {s for p in chinese_texts() for s in re.split(r"(?<=[。！？])", p) if len(s.strip()) > 4}
    )
    return ["".join(t) for t in itertools.islice(itertools.permutations(sentences, 3), n)]


def _chats(n: int) -> list[list[dict[str, str]]]:
    """n distinct English/Chinese conversations (OpenAI messages)."""
    from test_sft_data import conversations

    base = conversations()
    out = []
    for i in range(n):
        messages = [dict(m) for m in base[i % len(base)]]
        first_user = next(m for m in messages if m["role"] == "user")
        first_user["content"] += f" (#{i})"
        out.append(messages)
    return out


def _sharegpt(chats: list[list[dict[str, str]]]) -> list[dict[str, Any]]:
    names = {"system": "system", "user": "human", "assistant": "gpt"}
    return [
        {"conversations": [{"from": names[m["role"]], "value": m["content"]} for m in c]}
        for c in chats
    ]


def _alpaca(chats: list[list[dict[str, str]]]) -> list[dict[str, str]]:
    out = []
    for c in chats:
        user = next(m["content"] for m in c if m["role"] == "user")
        reply = next(m["content"] for m in c if m["role"] == "assistant")
        out.append({"instruction": user, "input": "", "output": reply})
    return out


def _chatml(messages: list[dict[str, str]]) -> str:
    return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)


def build_qwen_models(root: Path, texts: list[str]) -> None:
    """models/Qwen2.5-*: a Qwen2-style tokenizer (2,000 ids, ChatML specials,
    the Qwen2.5 chat template) and a 2-layer random-init Qwen2 model each."""
    import torch
    import transformers

    from corpus import build_qwen_style, qwen25_tokenizer_config

    tok_dir = build_qwen_style(root / "qwen-tokenizer", texts)
    vocab = json.loads((tok_dir / "tokenizer.json").read_text(encoding="utf-8"))
    # As in Qwen2.5's own tokenizer.json (and as transformers' save_pretrained
    # writes them); `tokenizers` saves null.
    vocab["model"].update(continuing_subword_prefix="", end_of_word_suffix="")
    (tok_dir / "tokenizer.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    ids = {t["content"]: t["id"] for t in vocab["added_tokens"]}
    vocab_size = max(max(vocab["model"]["vocab"].values()), *ids.values()) + 1
    for name, eos in QWEN_MODELS.items():
        out = root / name
        out.mkdir(parents=True)
        shutil.copy(tok_dir / "tokenizer.json", out / "tokenizer.json")
        config = qwen25_tokenizer_config(eos)
        (out / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
        torch.manual_seed(0)
        model = transformers.Qwen2ForCausalLM(
            transformers.Qwen2Config(
                vocab_size=vocab_size,
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
                max_position_embeddings=4096,
                tie_word_embeddings=True,
                bos_token_id=None,
                eos_token_id=ids[eos],
                pad_token_id=ids["<|endoftext|>"],
            )
        )
        model.save_pretrained(out)
    shutil.rmtree(tok_dir)


def build_inputs(root: Path) -> None:
    """Every input file the docs' commands read, in ``root``."""
    import tokenmill
    from corpus import build_qwen_style, real_texts, write_jsonl
    from test_sft_data import write_records
    from tokenmill.demo import build_corpus

    texts = real_texts(600_000)
    english = [t for t in texts if t.isascii() and len(t) > 40]
    build_corpus(root / "corpus", max_mb=0.4)  # code.jsonl.zst, docstrings.jsonl.gz, zh.txt
    zh = _zh_documents(5000)
    _jsonl(root / "zh_corpus" / "zh.jsonl.zst", [{"text": t} for t in zh])
    _jsonl(root / "general" / "en.jsonl.gz", [{"text": t} for t in english])
    _jsonl(root / "zh" / "zh.jsonl", [{"text": t, "id": i} for i, t in enumerate(zh[:500])])
    # `--text-field content` in one example, the default `text` in another.
    records = [{"id": i, "content": t, "text": t} for i, t in enumerate(english)]
    _jsonl(root / "data" / "part-00000.jsonl.zst", records[::2])
    _jsonl(root / "data" / "part-00001.jsonl.gz", records[1::2])
    _jsonl(root / "a.jsonl.gz", [{"text": t} for t in english[:200]])
    _jsonl(root / "b.jsonl.gz", [{"text": t} for t in english[200:400]])
    write_jsonl(root / "docs.jsonl", [t for t in texts if len(t) > 2000][:20])
    (root / "books").mkdir()
    for i, t in enumerate(english[:5]):
        (root / "books" / f"book{i}.txt").write_text(t, encoding="utf-8")
    (root / "prompt.txt").write_text("def main():\n", encoding="utf-8")
    chats = _chats(400)
    write_records(root / "chats.jsonl", [{"messages": c} for c in chats])
    write_records(root / "belle.jsonl", _sharegpt(chats))
    (root / "belle").mkdir()
    write_records(root / "belle" / "belle_0.jsonl", _sharegpt(_chats(450)[400:]))
    write_records(root / "alpaca_zh.json", _alpaca(chats))
    write_jsonl(root / "chat_text.jsonl", [_chatml(c) for c in chats])
    build_qwen_models(root / "models", texts)
    # benches/: three part files per corpus size and the two tokenizers the
    # scripts would build on first use.
    for size in ("40M", "100M", "1G", "u250M", "u2G"):
        (root / f"bench_out/corpus/{size}").mkdir(parents=True)
        for part in range(3):
            write_jsonl(root / f"bench_out/corpus/{size}/part-{part:05d}.jsonl", english[part::3])
    tokenmill.train_tokenizer(root / "corpus", root / "bench_out/tokenizers/small", progress=False)
    build_qwen_style(root / "bench_out/tokenizers/large", texts)


# --- stand-in commands (the table in test_docs.py says why) -----------------


def _fail(message: str) -> None:
    sys.exit(f"stand-in check failed: {message}")


def _name(requirement: str) -> str:
    """The normalised distribution name of a requirement string."""
    m = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
    return re.sub(r"[-_.]+", "-", m.group(0)).lower() if m else ""


def forward_tokenmill(argv: list[str]) -> None:
    """Runs `tokenmill ARGV` in the test process (one torch import for the
    whole session) and prints its output with its exit status."""
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(os.environ["TM_SOCKET"])
        f = s.makefile("rwb")
        f.write(json.dumps({"argv": argv, "cwd": os.getcwd()}).encode() + b"\n")
        f.flush()
        reply = json.loads(f.readline())
    sys.stdout.write(reply["output"])
    sys.exit(reply["code"])


def pip(argv: list[str]) -> None:
    """`pip install ...`: extras of tokenmill exist in the installed
    distribution's metadata; other names are dependencies tokenmill declares."""
    if argv[:1] != ["install"]:
        _fail(f"pip {argv[:1]}: only `pip install` is documented")
    dist = metadata.metadata("tokenmill")
    extras = set(dist.get_all("Provides-Extra") or [])
    declared = {_name(r) for r in dist.get_all("Requires-Dist") or []}
    for arg in argv[1:]:
        if arg.startswith("-"):
            continue
        if m := re.fullmatch(r"(?:tokenmill|\.)\[([\w,-]+)\]", arg):
            if missing := set(m.group(1).split(",")) - extras:
                _fail(f"{arg}: no extra {sorted(missing)} (extras: {sorted(extras)})")
        elif arg.endswith(".whl"):
            if not re.fullmatch(r"target/wheels/tokenmill-\*\.whl", arg):
                _fail(f"{arg}: maturin writes the wheel to target/wheels/tokenmill-*.whl")
        elif _name(arg) not in declared:
            _fail(f"{arg}: not a dependency tokenmill declares")


def maturin(argv: list[str]) -> None:
    """`maturin SUBCOMMAND --flags`: every flag is in `maturin SUBCOMMAND --help`."""
    help = subprocess.run(
        ["maturin", argv[0], "--help"], capture_output=True, text=True, check=True
    ).stdout
    for flag in (a.split("=")[0] for a in argv[1:] if a.startswith("--")):
        if flag not in help:
            _fail(f"maturin {argv[0]} has no {flag}")


def tensorboard(argv: list[str]) -> None:
    """`tensorboard --logdir X`: X holds TensorBoard event files."""
    logdir = Path(argv[argv.index("--logdir") + 1])
    if not list(logdir.rglob("events.out.tfevents.*")):
        _fail(f"no TensorBoard event files in {logdir}")


def apt_get(argv: list[str]) -> None:
    """`apt-get update` / `apt-get install -y --no-install-recommends PKG...`:
    the shape of the command line (package lists are not checkable offline)."""
    if argv == ["update"]:
        return
    if argv[:1] != ["install"]:
        _fail(f"apt-get {argv[:1]}")
    packages = [a for a in argv[1:] if not a.startswith("-")]
    flags = set(argv[1:]) - set(packages)
    if flags - {"-y", "--no-install-recommends"} or not packages:
        _fail(f"apt-get install {argv[1:]}")
    for p in packages:
        if not re.fullmatch(r"[a-z0-9][a-z0-9+.-]+", p):
            _fail(f"{p!r} is not a Debian package name")


def cargo(argv: list[str]) -> None:
    """`cargo build --release` in a workspace of its own: the manifest and
    lock file are there (building needs crates.io)."""
    if argv != ["build", "--release"]:
        _fail(f"cargo {argv}")
    for name in ("Cargo.toml", "Cargo.lock"):
        if not Path(name).is_file():
            _fail(f"no {name} in {os.getcwd()}")


# Scripts without an argument parser: the argument shapes their main() reads.
USAGE = {
    "benches/eval_permutations.py": r"(planted|bench) \d+( \d+)?",
    "benches/engines/pybench.py": r"(check|bench) \S+ \S+/tokenizer\.json( \S+\.jsonl)+",
}


def bench(argv: list[str]) -> None:
    """`python benches/SCRIPT ARGS`: every --flag is one of the script's own
    argparse options (its --help), or the arguments have the shape its main()
    reads (USAGE)."""
    script, args = argv[0], argv[1:]
    if not Path(script).is_file():
        _fail(f"no {script}")
    if script in USAGE:
        if not re.fullmatch(USAGE[script], " ".join(args)):
            _fail(f"{script} {' '.join(args)}: expected {USAGE[script]}")
        return
    help = subprocess.run(
        [sys.executable, script, "--help"], capture_output=True, text=True, check=True
    ).stdout
    for flag in (a.split("=")[0] for a in args if a.startswith("--")):
        if flag not in help:
            _fail(f"{script} has no option {flag}")


def engines_bench(argv: list[str]) -> None:
    """The survey's Rust harness: the subcommand and engine are ones
    benches/engines/src/main.rs handles, the tokenizer file exists."""
    source = "benches/engines/src/main.rs"
    main_rs = Path(source).read_text(encoding="utf-8")
    command, engine, tok = argv[:3]
    if f'"{command}" =>' not in main_rs or f'"{engine}"' not in main_rs:
        _fail(f"engines-bench {command} {engine}: not handled by {source}")
    if not Path(tok).is_file():
        _fail(f"no tokenizer {tok}")


COMMANDS = {
    "tokenmill": forward_tokenmill,
    "pip": pip,
    "maturin": maturin,
    "tensorboard": tensorboard,
    "apt-get": apt_get,
    "cargo": cargo,
    "bench": bench,
    "engines-bench": engines_bench,
}

if __name__ == "__main__":
    COMMANDS[sys.argv[1]](sys.argv[2:])
