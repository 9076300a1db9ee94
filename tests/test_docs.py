"""Every code block of README.md, docs/ and benches/README.md, run as written,
page by page, in order, in one working directory per page that holds tiny
stand-ins for the files the pages name (tests/docs_fixtures.py).

What a block's language tag means:

- ```bash, ```sh, ```console: shell. Run by bash (`set -eo pipefail`) after
  PRELUDE, which keeps runs tiny without changing the text: `tokenmill`
  appends small-scale flags to the training commands (click keeps the last
  value of a repeated option; see SCALE) and runs them in this test process,
  so torch is imported once per session, not once per command. Commands that
  cannot run here are stand-ins, each listed with its reason below.
- ```python: run in order in one namespace per page, in its directory.
- ```yaml / ```json whose first line is `# NAME`: written to NAME (for the
  commands after it); other yaml/json blocks are examples: they must parse,
  and the ones in CHECKS are compared with the file they show.
- ``` (no tag) and ```text: output. `$ tokenmill ... --help` is compared with
  the live help as an 80-column terminal shows it; the blocks in CHECKS with
  real output; the rest illustrate (measured numbers, other machines' paths).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

import tokenmill
from docs_fixtures import build_inputs
from tokenmill.cli import main

REPO = Path(__file__).resolve().parents[1]
HELPER = Path(__file__).with_name("docs_fixtures.py")

# Every documentation page, with what its directory holds besides the inputs
# (outputs the page uses but leaves to other pages to make). All run in the
# default suite (recipes and training take about a minute each), so CI runs
# every block.
PAGES: dict[str, tuple[str, ...]] = {
    "README.md": (),
    "docs/quickstart.md": (),
    "docs/zh/quickstart.md": (),
    "docs/cli.md": ("tok", "cpt_shards", "general_shards", "cpt.yaml"),
    "docs/recipes.md": (),
    "docs/training.md": ("qwen_shards",),
    "docs/shard-format.md": ("tok", "shards"),
    "docs/dedup.md": ("tok",),
    "docs/scale-out.md": ("tok",),
    "docs/tokenizer-engines.md": (),
    "docs/benchmarks.md": (),
    "docs/fuzzing.md": (),
    "benches/README.md": (),
}

# Flags appended to the docs' commands (the last value of an option wins), so
# that training takes seconds: one step of 2 x 32 tokens, then eval, a
# checkpoint, best_model/ and final_model/.
SCALE = {
    "pretrain": "--max-steps 1 --block-size 32 --per-device-train-batch-size 2 "
    "--gradient-accumulation-steps 1 --per-device-eval-batch-size 2 --max-eval-samples 4 "
    "--eval-steps 1 --logging-steps 1",
    "eval": "--block-size 32 --per-device-eval-batch-size 2 --max-eval-samples 4",
    "generate": "--max-new-tokens 8",
    "demo": "--corpus-mb 0.3 --train-steps 2 --preset llama-micro",
}
SCALE["cpt"] = SCALE["pretrain"]
# SFT pads one conversation per sample: blocks long enough to reach the first
# assistant reply after the system and user turns.
SCALE["sft"] = SCALE["pretrain"].replace("--block-size 32", "--block-size 1024")

# Stand-ins: commands that cannot run inside a test (PRELUDE's functions, the
# checks in docs_fixtures.py), and what stands in for them:
#
# bash scripts/*.sh       set up .venv and build (minutes; the demo and test
#                         scripts are what CI runs): the script exists and
#                         `bash -n` parses it
# pip install             installs from PyPI: the extras named exist in the
#                         installed tokenmill's metadata, other names are
#                         dependencies tokenmill declares
# maturin develop/build   builds the wheel (scripts/setup.sh does;
#                         scripts/test.sh checks it in a clean venv): every
#                         flag used is in `maturin SUBCOMMAND --help`
# tensorboard --logdir X  a server: X holds TensorBoard event files
# torchrun ... N          runs with 2 processes (CPU: gloo) and the SCALE flags;
#                         --fsdp without CUDA and --deepspeed without deepspeed
#                         must stop with their documented errors
# --qlora, --load-in-8bit CUDA only: without CUDA they run and must stop with
#                         the documented "needs a CUDA GPU" error
# python benches/*.py     minutes to hours, and the `bench` extra: every --flag
#                         used is in the script's own --help (the two scripts
#                         without a parser: the argument shape their main() reads)
# apt-get                 installs Debian packages as root: the command's shape
# cargo build             benches/engines needs crates.io: its Cargo.toml and
#                         Cargo.lock exist
# engines-bench, the      built and installed by the lines before them: the
# survey venv's pip and   subcommand and engine are ones benches/engines/src/
# python                  main.rs handles; pip and python as above;
#                         `python3 -m venv` runs with --without-pip
# taskset -c N            pins the CPU: the command runs unpinned (so the
#                         stand-ins above apply)

PRELUDE = r"""
set -eo pipefail
_standin() { "$TM_PYTHON" "$TM_HELPER" "$@"; }
tokenmill() {
    case "$1" in
    pretrain|cpt|sft)
        if [ "$TM_CUDA" = 0 ] && [[ " $* " =~ \ --(qlora|load-in-8bit)\  ]]; then
            _without_cuda "$@"
        else
            local scale="TM_SCALE_$1"
            _standin tokenmill "$@" ${!scale}
        fi ;;
    eval) _standin tokenmill "$@" $TM_SCALE_eval ;;
    generate) _standin tokenmill "$@" $TM_SCALE_generate ;;
    demo) _standin tokenmill "$@" $TM_SCALE_demo ;;
    merge-lora) _standin tokenmill "$@" ;;
    *) command tokenmill "$@" ;;
    esac
}
_without_cuda() { _stops "needs a CUDA GPU" "$@"; }
_stops() {
    local expected=$1 out status=0
    shift
    out=$(_standin tokenmill "$@" 2>&1) || status=$?
    if [ "$status" != 2 ] || [[ "$out" != *"$expected"* ]]; then
        echo "$out"; echo "stand-in: expected the error '$expected' (exit 2)" >&2; return 1
    fi
    echo "[stand-in] tokenmill $1 ... stopped as documented: $expected" >&2
}
.venv/bin/tokenmill() { tokenmill "$@"; }
python() {
    case "$1" in
    benches/engines/build_llama.py) command python "$@" ;;
    benches/*) _standin bench "$@" ;;
    *) command python "$@" ;;
    esac
}
.venv/bin/python() { python "$@"; }
pip() { _standin pip "$@"; }
.venv/bin/pip() { pip "$@"; }
maturin() { _standin maturin "$@"; }
tensorboard() { _standin tensorboard "$@"; }
apt-get() { _standin apt-get "$@"; }
cargo() { _standin cargo "$@"; }
bash() {
    case "$1" in
    scripts/*.sh) [ -f "$1" ] && command bash -n "$1" ;;
    *) command bash "$@" ;;
    esac
}
torchrun() {
    if [ "$1" != --nproc_per_node ] || [ "$(basename "$3")" != tokenmill ]; then
        echo "stand-in: torchrun $*: expected --nproc_per_node N \$(which tokenmill) ..." >&2
        return 1
    fi
    local program=$3
    shift 3
    local scale="TM_SCALE_$1"
    if [ "$TM_CUDA" = 0 ] && [[ " $* " =~ \ --fsdp\  ]]; then
        _stops "fsdp needs CUDA GPUs" "$@"
    elif [ "$TM_DEEPSPEED" = 0 ] && [[ " $* " =~ \ --deepspeed\  ]]; then
        _stops "pip install 'tokenmill[train,deepspeed]'" "$@"
    else
        command torchrun --nproc_per_node 2 "$program" "$@" ${!scale}
    fi
}
taskset() { [ "$1" = -c ] && shift 2; "$@"; }
python3() {
    if [ "$1 $2" = "-m venv" ]; then
        command python3 -m venv --without-pip "$3"
    else
        command python3 "$@"
    fi
}
/tmp/engines-target/release/engines-bench() { _standin engines-bench "$@"; }
bench_out/engvenv/bin/pip() { pip "$@"; }
bench_out/engvenv/bin/python() { python "$@"; }
"""

SHELL, PYTHON, FILES, OUTPUT = {"bash", "sh", "console"}, {"python"}, {"yaml", "json"}, {"", "text"}


@dataclass
class Block:
    page: str
    line: int
    lang: str
    text: str

    def __str__(self) -> str:
        return f"{self.page}:{self.line} ({self.lang or 'output'})"


def code_blocks(page: str) -> list[Block]:
    """The fenced blocks of a page, in order."""
    out, current = [], None
    for n, line in enumerate((REPO / page).read_text(encoding="utf-8").splitlines(), 1):
        if current is None:
            if m := re.fullmatch(r"```([\w-]*)\s*", line):
                current, lines, start = m.group(1), [], n
        elif line.strip() == "```":
            out.append(Block(page, start, current, "\n".join(lines) + "\n"))
            current = None
        else:
            lines.append(line)
    assert current is None, f"{page}: unclosed block"
    return out


class InProcess:
    """Runs the `tokenmill` commands the shell blocks send (docs_fixtures.py
    forward_tokenmill) in this process, while the block's bash runs. (A
    `VAR=value` in front of such a command would not reach it; no page has one.)"""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.server = socket.socket(socket.AF_UNIX)
        self.server.bind(str(path))
        self.server.listen()

    def close(self) -> None:
        self.server.close()
        shutil.rmtree(self.path.parent)

    def run(self, argv: list[str], cwd: str) -> tuple[int, str]:
        here = os.getcwd()
        os.chdir(cwd)
        try:
            result = CliRunner().invoke(main, argv, prog_name="tokenmill")
        finally:
            os.chdir(here)
        output = result.output
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            output += "".join(traceback.format_exception(result.exception))
        return result.exit_code, output

    def serve(self, proc: subprocess.Popen[bytes]) -> int:
        while proc.poll() is None:
            if select.select([self.server], [], [], 0.1)[0]:
                conn, _ = self.server.accept()
                with conn, conn.makefile("rwb") as f:
                    request = json.loads(f.readline())
                    code, output = self.run(request["argv"], request["cwd"])
                    f.write(json.dumps({"code": code, "output": output}).encode() + b"\n")
        return proc.returncode


@dataclass
class Page:
    """A page's working directory and what its blocks have done so far."""

    name: str
    root: Path
    env: dict[str, str]
    server: InProcess
    namespace: dict[str, Any]
    stdout: str = ""  # of the last shell block

    def shell(self, block: Block) -> None:
        script = self.root.parent / "block.sh"
        script.write_text(PRELUDE + block.text, encoding="utf-8")
        with (
            open(self.root.parent / "out", "wb") as out,
            open(self.root.parent / "err", "wb") as err,
        ):
            proc = subprocess.Popen(
                ["bash", str(script)],
                cwd=self.root,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
            )
            status = self.server.serve(proc)
        self.stdout = (self.root.parent / "out").read_text(encoding="utf-8", errors="replace")
        log = self.stdout + (self.root.parent / "err").read_text(encoding="utf-8", errors="replace")
        assert status == 0, f"{block} failed (exit {status}):\n{block.text}\n--- output:\n{log}"

    def python(self, block: Block) -> None:
        here = os.getcwd()
        os.chdir(self.root)
        try:
            exec(compile(block.text, str(block), "exec"), self.namespace)
        finally:
            os.chdir(here)


# --- output and example checks ----------------------------------------------


def same_shape(doc: str, real: str, what: str) -> None:
    """Lines equal up to numbers; `...` in the doc stands for anything."""

    def pattern(line: str) -> str:
        parts = re.split(r"(\.\.\.|\d[\d,.]*)", line.rstrip())
        return "".join(
            ".*" if p == "..." else r"\d[\d,.]*" if p[:1].isdigit() else re.escape(p) for p in parts
        )

    doc_lines, real_lines = doc.rstrip().splitlines(), real.rstrip().splitlines()
    mismatch = len(doc_lines) != len(real_lines) or any(
        not re.fullmatch(pattern(d), r) for d, r in zip(doc_lines, real_lines, strict=False)
    )
    assert not mismatch, f"{what} differs from the real output:\n{doc}\n--- real:\n{real}"


def same_keys(example: Any, real: Any, where: str, optional: frozenset[str] = frozenset()) -> None:
    """The same keys at every level, but for `optional` ones the example may
    have (counters by reason are data, not keys); lists compare first items."""
    if isinstance(example, dict):
        assert isinstance(real, dict), where
        keys = set(example) - (optional - set(real))
        assert keys == set(real), f"{where}: {sorted(example)} != {sorted(real)}"
        for k in keys - {"skipped", "filtered"}:
            same_keys(example[k], real[k], f"{where}.{k}", optional)
    elif isinstance(example, list) and example and isinstance(example[0], dict | list):
        assert isinstance(real, list) and real, where
        same_keys(example[0], real[0], f"{where}[0]", optional)


def read_text(path: Path) -> str:
    import gzip

    import zstandard

    data = path.read_bytes()
    if path.suffix == ".zst":
        data = zstandard.ZstdDecompressor().decompressobj().decompress(data)
    elif path.suffix == ".gz":
        data = gzip.decompress(data)
    return data.decode()


def first_jsonl(path: Path) -> Any:
    return json.loads(read_text(path).splitlines()[0])


def corpus_texts(root: Path) -> list[str]:
    """The documents of corpus/, as `prepare` reads them (JSON Lines `text`,
    or one per line of .txt), blank ones left out."""
    texts: list[str] = []
    for path in sorted((root / "corpus").iterdir()):
        lines = read_text(path).splitlines()
        texts += [json.loads(x)["text"] for x in lines] if ".jsonl" in path.name else lines
    return [t for t in texts if t.strip()]


def check_summary(block: Block, page: Page, stdout: str) -> None:
    """The summary `tokenmill prepare` printed in the shell block before."""
    same_shape(block.text, stdout, f"{block}: the summary")


def check_manifest(block: Block, page: Page, stdout: str) -> None:
    real = tokenmill.read_manifest(page.root / "shards")
    same_keys(json.loads(block.text), real, f"{block}: manifest")


def check_fingerprint(block: Block, page: Page, stdout: str) -> None:
    fingerprint = page.namespace["fingerprint"]
    for tok in (page.root / "tok", page.root / "models" / "Qwen2.5-0.5B"):
        want = tokenmill.tokenizer_info(tok)["fingerprint"]
        assert fingerprint(tok / "tokenizer.json") == want, f"{block}: {tok}"


def check_is_val(block: Block, page: Page, stdout: str) -> None:
    """is_val() picks as many of the corpus' distinct documents as `prepare`
    put into val."""
    m = tokenmill.read_manifest(page.root / "shards")
    fraction, seed = m["val_split"]["fraction"], m["val_split"]["seed"]
    distinct = {" ".join(t.split()): t for t in corpus_texts(page.root)}
    picked = sum(page.namespace["is_val"](t, fraction, seed) for t in distinct.values())
    assert picked == m["splits"]["val"]["docs"] > 0, block


def check_read_split(block: Block, page: Page, stdout: str) -> None:
    docs = tokenmill.open_shards(page.root / "shards", "train")
    read = list(page.namespace["read_split"](page.root / "shards", "train"))
    assert len(read) == len(docs) and all((a == b).all() for a, b in zip(read, docs, strict=True))


def check_dedup_example(block: Block, page: Page, stdout: str) -> None:
    res = page.namespace["res"]
    assert res.clusters == [[0, 2]] and list(res.kept) == [True, True, False], block


def check_report(block: Block, page: Page, stdout: str) -> None:
    real = first_jsonl(page.root / "dups.jsonl")  # `id` only for records that have one
    same_keys(json.loads(block.text), real, f"{block}: report", frozenset({"id"}))


def check_chunk(block: Block, page: Page, stdout: str) -> None:
    example, real = json.loads(block.text), first_jsonl(page.root / "chunked.jsonl.zst")
    assert list(example)[-2:] == list(real)[-2:] == ["source_id", "chunk_index"], block
    assert "text" in example and "text" in real, block


def check_run_outputs(block: Block, page: Page, stdout: str) -> None:
    """The tree lists what the page's run wrote (final_adapter: LoRA runs only)."""
    entries = re.findall(r"^  (\S+)", block.text, re.MULTILINE)
    listed = {re.sub(r"-N/$|/$", "", name) for name in entries}
    run = page.root / "runs" / "cpt"
    real = {re.sub(r"-\d+$", "", p.name) for p in run.iterdir()}
    assert real == listed - {"final_adapter"}, f"{block}: {sorted(listed)} vs {run}: {sorted(real)}"


def check_without_cuda(block: Block, page: Page, stdout: str) -> None:
    if page.env["TM_CUDA"] == "1":
        return
    argv = "sft --model models/Qwen2.5-0.5B-Instruct --data sft_shards/ --out runs/q --qlora"
    code, output = page.server.run(argv.split(), str(page.root))
    assert code == 2 and output == block.text, f"{block}:\n{block.text}--- real:\n{output}"


# (page, text of the block, check), run after the page's last block; every
# entry must find its block.
CHECKS: list[tuple[str, str, Callable[[Block, Page, str], None]]] = [
    ("docs/quickstart.md", "dataset      shards", check_summary),
    ("docs/zh/quickstart.md", "dataset      shards", check_summary),
    ("docs/shard-format.md", '"format": "tokenmill-shards"', check_manifest),
    ("docs/shard-format.md", "def fingerprint(", check_fingerprint),
    ("docs/shard-format.md", "def is_val(", check_is_val),
    ("docs/shard-format.md", "def read_split(", check_read_split),
    ("docs/dedup.md", "res = tokenmill.dedup(texts=texts", check_dedup_example),
    ("docs/dedup.md", '"kept"', check_report),
    ("docs/dedup.md", '"chunk_index"', check_chunk),
    ("docs/training.md", "config.resolved.yaml", check_run_outputs),
    ("docs/cli.md", "error: --qlora needs a CUDA GPU", check_without_cuda),
]


def check_help(block: Block, page: Page) -> None:
    """As a terminal of 80 columns (or more) shows it: click wraps at 78."""
    command, *expected = block.text.splitlines()
    argv = command.split()[2:]
    result = CliRunner().invoke(main, argv, prog_name="tokenmill", terminal_width=78)
    assert result.exit_code == 0, result.output
    real = "\n".join(line.rstrip() for line in result.output.splitlines())
    assert "\n".join(expected) == real, (
        f"{block}: `{command[2:]}` differs from the live help; the live help is:\n{real}"
    )


# --- the working directories -------------------------------------------------


@pytest.fixture(scope="session")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("docs_inputs")
    build_inputs(root)
    return root


def make(name: str, root: Path) -> None:
    """An output a page uses without making it."""
    qwen = root / "models" / "Qwen2.5-0.5B"
    quiet: dict[str, Any] = {"progress": False}
    if name == "tok":
        shutil.copytree(root / "bench_out/tokenizers/small", root / "tok")
    elif name == "shards":
        tokenmill.prepare(root / "corpus", root / "tok", root / "shards", **quiet)
    elif name == "qwen_shards":  # a val split of 2048+ tokens for the default eval block
        tokenmill.prepare(root / "corpus", qwen, root / "shards", val_fraction=0.1, **quiet)
    elif name == "cpt_shards":
        tokenmill.prepare(root / "zh_corpus", qwen, root / "cpt_shards", **quiet)
    elif name == "general_shards":
        tokenmill.prepare(root / "general", qwen, root / "general_shards", **quiet)
    elif name == "cpt.yaml":
        block = next(b for b in code_blocks("docs/training.md") if b.text.startswith("# cpt.yaml"))
        (root / "cpt.yaml").write_text(block.text, encoding="utf-8")
    else:
        raise ValueError(name)


def run_page(name: str, inputs: Path, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    root = tmp / "page"
    shutil.copytree(inputs, root)
    for link, target in (("benches", REPO / "benches"), ("scripts", REPO / "scripts")):
        (root / link).symlink_to(target)
    (root / ".venv").symlink_to(sys.prefix)  # for `/usr/bin/time .venv/bin/tokenmill`
    for output in PAGES[name]:
        make(output, root)
    offline = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "COLUMNS": "80"}
    for k, v in offline.items():
        monkeypatch.setenv(k, v)
    server = InProcess(Path(tempfile.mkdtemp(prefix="tm")) / "tokenmill.sock")  # short: AF_UNIX
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "TM_PYTHON": sys.executable,
        "TM_HELPER": str(HELPER),
        "TM_SOCKET": str(server.path),
        "TM_CUDA": "1" if torch.cuda.is_available() else "0",
        "TM_DEEPSPEED": "1" if importlib.util.find_spec("deepspeed") else "0",
        **{f"TM_SCALE_{k}": v for k, v in SCALE.items()},
    }
    try:
        run_blocks(Page(name, root, env, server, {"__name__": "__docs__"}))
    finally:
        server.close()


def run_blocks(page: Page) -> None:
    checks = [(marker, check) for name, marker, check in CHECKS if name == page.name]
    found = []  # (block, stdout of the shell block before it, check)
    for block in code_blocks(page.name):
        first = block.text.split("\n", 1)[0]
        found += [(block, page.stdout, check) for marker, check in checks if marker in block.text]
        if block.lang in SHELL:
            page.shell(block)
        elif block.lang in PYTHON:
            page.python(block)
        elif block.lang in FILES and re.fullmatch(r"# [\w.-]+\.(yaml|yml|json)", first):
            (page.root / first[2:]).write_text(block.text, encoding="utf-8")
        elif block.lang == "yaml":
            yaml.safe_load(block.text)
        elif block.lang == "json":
            json.loads(block.text)
        elif block.lang in OUTPUT and re.fullmatch(r"\$ tokenmill( [\w-]+)? --help", first):
            check_help(block, page)
        else:
            assert block.lang in OUTPUT, f"{block}: unknown language tag"
    for block, stdout, check in found:
        check(block, page, stdout)
    missing = {c for _, c in checks} - {c for _, _, c in found}
    assert not missing, f"{page.name}: no block for {missing}"


@pytest.mark.parametrize("name", list(PAGES))
def test_page_runs_as_written(
    name: str, inputs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_page(name, inputs, tmp_path, monkeypatch)


def test_every_page_is_tested() -> None:
    pages = {str(p.relative_to(REPO)) for p in (REPO / "docs").rglob("*.md")}
    assert pages | {"README.md", "benches/README.md"} == set(PAGES)


def test_quickstarts_list_how_prepare_options_differ_in_python() -> None:
    """The CLI/Python tables of both quickstarts name every `tokenmill prepare`
    option whose keyword is not its name with underscores, or whose value is
    a size (bytes, an int, in Python), and only real options and keywords."""
    import inspect

    import click

    def spellings(p: click.Parameter) -> set[str]:
        return {"INPUTS"} if isinstance(p, click.Argument) else {*p.opts, *p.secondary_opts}

    keywords = set(inspect.signature(tokenmill.prepare).parameters)
    params = [p for p in main.commands["prepare"].params if p.name != "help"]
    known = set().union(*map(spellings, params))
    must = [
        p
        for p in params
        if isinstance(p, click.Argument) or p.name not in keywords or p.metavar == "SIZE"
    ]
    tables = {"docs/quickstart.md": "| CLI |", "docs/zh/quickstart.md": "| 命令行 |"}
    for page, header in tables.items():
        text = (REPO / page).read_text(encoding="utf-8")
        rows = text[text.index(header) :].split("\n\n")[0].splitlines()[2:]
        columns = [row.split("|")[1:3] for row in rows]
        cli = {flag for c, _ in columns for flag in re.findall(r"--?\w[\w-]*|INPUTS", c)}
        python = {word for _, c in columns for word in re.findall(r"`(\w+)[=`]", c)}
        assert cli <= known, f"{page}: not options of tokenmill prepare: {cli - known}"
        assert python <= keywords, f"{page}: not keywords of prepare(): {python - keywords}"
        missing = [sorted(spellings(p))[0] for p in must if not cli & spellings(p)]
        assert not missing, f"{page}: the CLI/Python table does not list {missing}"
        unnamed = keywords - {p.name for p in params} - python
        assert not unnamed, f"{page}: the table does not name prepare()'s {unnamed}"
