"""Messages a user can act on: `python -m tokenmill`, errors that name the
command's flags (the API's name its parameters), the preset list, runs that
keep no document, train-tokenizer refusing an existing output, plurals, and
a start-up that imports neither torch nor numpy, with one line naming the
extra to install when training is asked for without it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import tokenmill
from corpus import write_jsonl
from tokenmill._text import counted
from tokenmill.cli import _in_flags, main
from tokenmill.config import PRESETS, load_config


def run_cli(*args: object) -> tuple[int, str]:
    r = CliRunner().invoke(main, [str(a) for a in args])
    return r.exit_code, r.output


def run_python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60
    )


def test_python_m_tokenmill_is_the_cli() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tokenmill", "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Usage: tokenmill ")
    assert "prepare-sft" in done.stdout


def test_errors_name_flags_in_the_cli_and_parameters_in_the_api(
    tmp_path: Path, bpe_tok: Path, texts: list[str]
) -> None:
    corpus = write_jsonl(tmp_path / "c.jsonl", texts[:20])
    out = tmp_path / "shards"
    tokenmill.prepare(corpus, bpe_tok, out, progress=False)
    with pytest.raises(FileExistsError, match=r"pass overwrite=True to replace it"):
        tokenmill.prepare(corpus, bpe_tok, out, progress=False)
    code, output = run_cli("prepare", corpus, "-t", bpe_tok, "-o", out, "-q")
    assert code == 2
    assert "already holds a dataset (manifest.json); pass --overwrite to replace it" in output
    assert "overwrite=True" not in output

    with pytest.raises(ValueError, match="shard_bytes must be at least 8"):
        tokenmill.prepare(corpus, bpe_tok, tmp_path / "o", shard_bytes=4, progress=False)
    code, output = run_cli(
        "prepare", corpus, "-t", bpe_tok, "-o", tmp_path / "o", "--shard-size", 4
    )
    assert code == 2 and "error: --shard-size must be at least 8" in output

    code, output = run_cli(
        "prepare", corpus, "-t", bpe_tok, "-o", tmp_path / "o", "--dedup", "minhash",
        "--dedup-num-perm", 5000, "-q",
    )  # fmt: skip
    assert code == 2 and "error: --dedup-num-perm 5000 must be in 1..=4096" in output
    with pytest.raises(ValueError, match=r"dedup_num_perm=5000 must be in 1\.\.=4096"):
        tokenmill.prepare(corpus, bpe_tok, tmp_path / "o", dedup="minhash", dedup_num_perm=5000,
                          progress=False)  # fmt: skip

    code, output = run_cli("chunk", corpus, "-o", tmp_path / "ch.jsonl", "--max-tokens", 8)
    assert code == 2 and "error: --max-tokens needs --tokenizer PATH" in output
    with pytest.raises(ValueError, match="max_tokens needs tokenizer=PATH"):
        tokenmill.chunk_files(corpus, tmp_path / "ch.jsonl", max_tokens=8, progress=False)

    code, output = run_cli("dedup", corpus, "-o", corpus, "-q")
    assert code == 2 and "already exists; pass --overwrite to replace it" in output

    # A negative count is refused by the option, not by a configuration parser.
    code, output = run_cli(
        "prepare", corpus, "-t", bpe_tok, "-o", tmp_path / "o", "--min-chars", -1
    )
    assert code == 2 and "'--min-chars'" in output and "invalid configuration" not in output


def test_parameter_names_become_the_commands_flags() -> None:
    prepare = main.commands["prepare"]
    message = (
        "pass eos=False or dtype='uint32'; shard_bytes; seed=3; /a/shard_bytes.txt; no_such_name"
    )
    assert _in_flags(message, prepare) == (
        "pass --no-eos or --dtype uint32; --shard-size; --seed 3; /a/shard_bytes.txt; no_such_name"
    )
    # Training flags are the config fields; --output-dir is the long name of --out.
    cpt = main.commands["cpt"]
    assert _in_flags("give output_dir=DIR and lora=True", cpt) == (
        "give --output-dir DIR and --lora"
    )


def test_an_unknown_preset_lists_the_presets(tmp_path: Path) -> None:
    code, output = run_cli("pretrain", "--preset", "llama-huge", "--data", tmp_path, "--out", "x")
    assert code == 2
    assert "error: --preset llama-huge is not one of" in output
    assert all(name in output for name in PRESETS)
    with pytest.raises(ValueError, match=r"preset='llama-huge' is not one of llama-micro, "):
        load_config(None, {"preset": "llama-huge"})


def test_a_run_that_keeps_no_document_is_an_error_unless_allowed(
    tmp_path: Path, bpe_tok: Path
) -> None:
    array = tmp_path / "array.jsonl"
    array.write_text('[{"text": "one"},\n {"text": "two"}]\n')
    out = tmp_path / "shards"
    code, output = run_cli("prepare", array, "-t", bpe_tok, "-o", out, "-q")
    assert code == 2
    assert "error: no documents kept from 2 lines (2 malformed_json): " in output
    assert "JSON Lines" in output and "--allow-empty" in output
    assert f"e.g. {array}:1: malformed_json" in output
    assert not (out / "manifest.json").exists()
    code, output = run_cli("prepare", array, "-t", bpe_tok, "-o", out, "-q", "--allow-empty")
    assert code == 0, output
    assert tokenmill.read_manifest(out)["totals"]["docs"] == 0

    wrong_field = write_jsonl(tmp_path / "body.jsonl", ["some text", "more text"], field="body")
    with pytest.raises(tokenmill.NoDocumentsError, match=r"\(2 missing_field\): check text_field"):
        tokenmill.prepare(wrong_field, bpe_tok, tmp_path / "s2", progress=False)
    assert issubclass(tokenmill.NoDocumentsError, tokenmill.TokenmillError)
    assert not (tmp_path / "s2" / "manifest.json").exists()
    with pytest.raises(tokenmill.NoDocumentsError, match="instruction"):
        tokenmill.prepare_sft(wrong_field, bpe_tok, tmp_path / "s3", progress=False)
    assert not (tmp_path / "s3" / "manifest.json").exists()

    for command in ("dedup", "chunk"):
        target = tmp_path / f"{command}.jsonl"
        code, output = run_cli(command, wrong_field, "-o", target, "-q")
        assert code == 2 and "check --text-field" in output, output
        assert not target.exists() and not target.with_name(target.name + ".tmp").exists()
        code, output = run_cli(command, wrong_field, "-o", target, "-q", "--text-field", "body")
        assert code == 0 and target.read_text().count("\n") == 2, output
        code, output = run_cli(command, wrong_field, "-o", target, "-q", "--overwrite",
                               "--allow-empty")  # fmt: skip
        assert code == 0 and target.read_text() == "", output


def test_train_tokenizer_refuses_an_existing_tokenizer(tmp_path: Path, texts: list[str]) -> None:
    corpus = write_jsonl(tmp_path / "c.jsonl", texts[:100])
    out = tmp_path / "tok"
    args = ("train-tokenizer", corpus, "-o", out, "--vocab-size", 300, "-q")
    assert run_cli(*args)[0] == 0
    before = (out / "tokenizer.json").read_bytes()
    code, output = run_cli(*args, "--vocab-size", 400)
    assert code == 2
    assert "already holds a tokenizer (tokenizer.json); pass --overwrite to replace it" in output
    assert (out / "tokenizer.json").read_bytes() == before
    with pytest.raises(FileExistsError, match="pass overwrite=True"):
        tokenmill.train_tokenizer(corpus, out, vocab_size=400, progress=False)
    code, output = run_cli(*args, "--vocab-size", 400, "--overwrite")
    assert code == 0, output
    assert tokenmill.tokenizer_info(out)["vocab_size"] == 400


def test_counts_are_worded_in_the_singular_for_one(tmp_path: Path, bpe_tok: Path) -> None:
    assert [counted(n, "line") for n in (0, 1, 2, 1234)] == [
        "0 lines", "1 line", "2 lines", "1,234 lines",
    ]  # fmt: skip
    one = write_jsonl(tmp_path / "one.jsonl", ["a single document"])
    stats = tokenmill.prepare(one, bpe_tok, tmp_path / "s", val_fraction=0, threads=1,
                              progress=False)  # fmt: skip
    summary = stats.summary()
    assert "read 1 line, kept 1 document " in " ".join(summary.split())
    assert "1 doc, 1 shard" in summary and "on 1 thread" in summary
    assert "(s)" not in summary and "1 lines" not in summary
    code, output = run_cli("verify", tmp_path / "s")
    assert code == 0 and ": ok: 1 shard, 1 doc, " in output
    code, output = run_cli("inspect", tmp_path / "s")
    assert "1 line read, 1 doc kept" in output and "(s)" not in output


def test_import_tokenmill_loads_no_training_stack_and_no_numpy() -> None:
    done = run_python(
        "import sys, tokenmill, tokenmill.cli\n"
        "heavy = ('torch', 'transformers', 'bitsandbytes', 'peft', 'numpy', 'yaml')\n"
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# Runs the CLI with some packages made unimportable, as if not installed
# (None in sys.modules: an import fails, importlib.util.find_spec is None).
WITHOUT = """
import sys
for name in sys.argv.pop(1).split(","):
    sys.modules[name] = None
sys.argv[0] = "tokenmill"
from tokenmill.cli import main
main()
"""


def test_training_without_its_extra_names_the_pip_command(tmp_path: Path) -> None:
    done = run_python(WITHOUT, "torch,transformers", "pretrain", "--help")
    assert done.returncode == 0 and "--max-steps" in done.stdout, done.stderr
    done = run_python(WITHOUT, "torch,transformers", "pretrain", "--data", "x", "--out", "y")
    assert done.returncode == 2
    assert done.stderr == (
        "error: pretrain needs torch, which is not installed: pip install 'tokenmill[train]'\n"
    )
    done = run_python(WITHOUT, "peft", "merge-lora", str(tmp_path), "--out", str(tmp_path / "m"))
    assert done.returncode == 2
    assert done.stderr == (
        "error: merge-lora needs peft, which is not installed: pip install 'tokenmill[train,sft]'\n"
    )
