"""The ``tokenmill`` command line: a click group over the Python API.

Each option's click name is the API parameter it sets (``--shard-size``
sets ``shard_bytes``), so errors raised below, which name parameters as the
API does, are shown with this command's flags (`_in_flags`).
"""

from __future__ import annotations

import functools
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from tokenmill import _core
from tokenmill._text import counted
from tokenmill.chunk import chunk_files
from tokenmill.config import PRESETS
from tokenmill.dedup import dedup, dedup_buckets, dedup_clusters, dedup_signatures
from tokenmill.shards import format_inspect, inspect, merge, prepare, prepare_sft, verify
from tokenmill.tokenizer import train_tokenizer

F = TypeVar("F", bound=Callable[..., Any])

# The optional extras: the modules each brings (pyproject.toml).
_EXTRAS = {
    **dict.fromkeys(
        ("torch", "transformers", "accelerate", "safetensors", "matplotlib", "tensorboard"),
        "train",
    ),
    **dict.fromkeys(("peft", "galore_torch", "bitsandbytes"), "train,sft"),
    "deepspeed": "train,deepspeed",
}

# A parameter as messages below the CLI name it: `name=value`, or a bare
# snake_case name; not inside a word, a path, quotes or a flag.
_PARAMETER = re.compile(
    r"(?<![\w./'\"-])"
    r"(?P<name>[a-z][a-z0-9]*(?:_[a-z0-9]+)+|[a-z][a-z0-9]*(?==))"
    r"(?:=(?P<value>'[^']*'|\"[^\"]*\"|[^\s,;)]+))?"
    r"(?![\w/-]|\.\w)"
)


def _in_flags(message: str, command: click.Command) -> str:
    """``message`` with the parameters it names written as ``command``'s
    flags: ``name=True`` as ``--flag``, ``name=False`` as ``--no-flag``,
    ``name=value`` as ``--flag value`` and a bare ``name`` as ``--flag``.
    Names the command has no option for are left as they are."""
    options = {p.name: p for p in command.params if isinstance(p, click.Option)}

    def flag(m: re.Match[str]) -> str:
        option = options.get(m["name"])
        if option is None:
            return m[0]
        name = next(o for o in option.opts if o.startswith("--"))
        value = (m["value"] or "True").strip("'\"")
        if value == "True":
            return name
        if value == "False":
            return option.secondary_opts[0] if option.secondary_opts else f"no {name}"
        return f"{name} {value}"

    return _PARAMETER.sub(flag, message)


def _friendly_errors(f: F) -> F:
    """Known failures print one line (file:line where relevant) naming this
    command's flags, no traceback; a missing optional extra names the pip
    command that installs it."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        try:
            return f(*args, **kwargs)
        except ModuleNotFoundError as e:
            module = (e.name or "").split(".")[0]
            extra = _EXTRAS.get(module)
            if extra is None:
                raise
            click.echo(
                f"error: {ctx.info_name} needs {module}, which is not installed: "
                f"pip install 'tokenmill[{extra}]'",
                err=True,
            )
            sys.exit(2)
        except (_core.TokenmillError, OSError, ValueError, KeyError, RuntimeError) as e:
            # A KeyError's str() is the repr of its key; the message is the key.
            message = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
            click.echo(f"error: {_in_flags(message, ctx.command)}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted; no dataset was finished (no manifest.json written)", err=True)
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


def _size(value: str) -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B)?\s*", value, re.IGNORECASE)
    if not m:
        raise click.BadParameter(f"{value!r} is not a size like 512MiB, 1GiB or 1000000")
    scale = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}[m.group(2).upper()]
    return int(float(m.group(1)) * scale)


def _options(*options: Callable[[F], F]) -> Callable[[F], F]:
    """Applies click options in the order given (as if stacked in that order)."""

    def decorate(f: F) -> F:
        for option in reversed(options):
            f = option(f)
        return f

    return decorate


# Counts, seeds and thread numbers: never negative (the data core reads them unsigned).
_COUNT = click.IntRange(min=0)

# Options with the same meaning in several commands, defined once.
_TOKENIZER = click.option(
    "--tokenizer", "-t", required=True, help="tokenizer.json or a directory holding one."
)
_DATASET_OUTPUT = click.option(
    "--output", "-o", required=True, type=click.Path(file_okay=False), help="Dataset directory."
)
_TEXT_FIELD = click.option(
    "--text-field",
    default="text",
    show_default=True,
    help="Dotted path of the text in JSON records.",
)
_INPUT_SPLIT = click.option(
    "--input-split",
    default=None,
    help="The split to read of a DatasetDict directory or a dataset name.",
)
_TXT_MODE = click.option(
    "--txt-mode",
    type=click.Choice(["line", "file"]),
    default="line",
    show_default=True,
    help=".txt inputs: one document per line or per file.",
)
_MAX_LINE_BYTES = click.option(
    "--max-line-bytes",
    type=_size,
    metavar="SIZE",
    default=f"{_core.DEFAULT_MAX_LINE_BYTES >> 20}MiB",
    show_default=True,
    help="Longer lines are skipped (line_too_long) without being held in memory.",
)
_TOKENIZER_BACKEND = click.option(
    "--tokenizer-backend",
    type=click.Choice(["auto", "fast", "reference"]),
    default="auto",
    show_default=True,
    help="Encoder: tokenmill's fast engine where it supports the tokenizer (auto), "
    "always (fast), or the tokenizers crate (reference).",
)


_THREADS = click.option(
    "--threads",
    type=_COUNT,
    default=0,
    show_default=True,
    help="Worker threads (0: TOKENMILL_THREADS or all cores).",
)
_ALLOW_EMPTY = click.option(
    "--allow-empty",
    is_flag=True,
    help="Finish a run that keeps no document (else it is an error naming the likely "
    "cause, and nothing is written).",
)


def _strict(unit: str) -> Callable[[F], F]:
    return click.option(
        "--strict", is_flag=True, help=f"Stop at the first bad {unit}, naming file and line."
    )


def _split_options(units: str) -> Callable[[F], F]:
    """The val split of `prepare` and `prepare-sft`."""
    return _options(
        click.option(
            "--val-fraction",
            type=float,
            default=0.01,
            show_default=True,
            help=f"Share of {units} (by content hash) in the val split.",
        ),
        click.option(
            "--seed", type=_COUNT, default=0, show_default=True, help="Seed of the split hash."
        ),
    )


def _shard_output_options(threads: str) -> Callable[[F], F]:
    """The options `prepare` and `prepare-sft` share: shard width and size,
    threads, overwrite, progress, empty runs."""
    return _options(
        click.option(
            "--dtype",
            type=click.Choice(["auto", "uint16", "uint32"]),
            default="auto",
            show_default=True,
        ),
        click.option(
            "--shard-size",
            "shard_bytes",
            type=_size,
            metavar="SIZE",
            default="1GiB",
            show_default=True,
            help="Size limit of one .bin file.",
        ),
        click.option(
            "--threads",
            type=_COUNT,
            default=0,
            show_default=True,
            help=f"{threads} (0: TOKENMILL_THREADS or all cores).",
        ),
        click.option("--overwrite", is_flag=True, help="Replace an existing dataset in --output."),
        click.option("--quiet", "-q", is_flag=True, help="No progress line."),
        _ALLOW_EMPTY,
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(_core.__version__, prog_name="tokenmill")
def main() -> None:
    """tokenmill: raw text to deduplicated, tokenized, memory-mapped token shards, and
    language models trained on them."""


@main.command("prepare")
@click.argument("inputs", nargs=-1, required=True)
@_INPUT_SPLIT
@_TOKENIZER
@_DATASET_OUTPUT
@_TEXT_FIELD
@_TXT_MODE
@_MAX_LINE_BYTES
@_strict("line")
@click.option(
    "--min-chars", type=_COUNT, default=0, show_default=True, help="Drop shorter documents."
)
@click.option("--max-chars", type=_COUNT, default=None, help="Drop longer documents.")
@click.option(
    "--dedup",
    type=click.Choice(["exact", "minhash", "none"]),
    default="exact",
    show_default=True,
    help="Drop exact duplicates (whitespace-normalised text), near-duplicates "
    "(MinHash LSH, see tokenmill dedup), or nothing; the first is kept.",
)
@click.option("--no-dedup", is_flag=True, help="Same as --dedup none.")
@click.option(
    "--dedup-threshold",
    type=click.FloatRange(0, 1, min_open=True),
    default=0.8,
    show_default=True,
    help="--dedup minhash: Jaccard similarity of near-duplicates.",
)
@click.option(
    "--dedup-num-perm",
    type=_COUNT,
    default=128,
    show_default=True,
    help="--dedup minhash: permutations per signature.",
)
@click.option(
    "--dedup-shingle",
    default="auto",
    show_default=True,
    help="--dedup minhash: auto, word or char, optionally :N (word:5).",
)
@click.option(
    "--dedup-verify",
    is_flag=True,
    help="--dedup minhash: check candidate pairs by exact Jaccard.",
)
@click.option("--max-docs", type=_COUNT, default=None, help="Stop after this many kept documents.")
@_split_options("documents")
@click.option(
    "--bos",
    type=click.Choice(["auto", "always", "never"]),
    default="auto",
    show_default=True,
    help="Prepend BOS: as the tokenizer config says, always or never.",
)
@click.option(
    "--eos/--no-eos", default=True, show_default=True, help="Append EOS to every document."
)
@click.option(
    "--parse-special",
    is_flag=True,
    help="Parse special-token strings in the text as special tokens (default: plain text).",
)
@_TOKENIZER_BACKEND
@click.option(
    "--verify-fraction",
    type=float,
    default=0.0,
    show_default=True,
    metavar="F",
    help="Re-encode this share of documents (by content hash) with the tokenizers crate "
    "and stop at any difference.",
)
@click.option(
    "--num-parts",
    type=click.IntRange(min=1),
    default=None,
    help="Cut the input files into this many parts (contiguous, by size) and make only "
    "--part: a dataset of its own for tokenmill merge (docs/scale-out.md).",
)
@click.option(
    "--part",
    type=_COUNT,
    default=None,
    help="With --num-parts: the part to make, 0-based. Rerunning a finished part with the "
    "same arguments does nothing.",
)
@click.option(
    "--exclude",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="Skip the near-duplicates that the dedup stages in this directory removed "
    "(tokenmill dedup-clusters).",
)
@_shard_output_options("Tokenizer threads")
@_friendly_errors
def prepare_cmd(
    inputs: tuple[str, ...], tokenizer: str, output: str, quiet: bool, **options: Any
) -> None:
    """Tokenize INPUTS (files, directories, globs of .jsonl/.json/.txt[.gz|.zst],
    .parquet, .arrow, save_to_disk directories) into shards."""
    if options.pop("no_dedup"):
        options["dedup"] = "none"
    stats = prepare(list(inputs), tokenizer, output, progress=not quiet, **options)
    click.echo(stats.summary())


@main.command("prepare-sft")
@click.argument("inputs", nargs=-1, required=True)
@_INPUT_SPLIT
@_TOKENIZER
@_DATASET_OUTPUT
@click.option(
    "--format",
    type=click.Choice(["auto", "messages", "sharegpt", "alpaca"]),
    default="auto",
    show_default=True,
    help="Record layout: OpenAI messages, ShareGPT/Belle conversations, alpaca, "
    "or chosen per record from its keys.",
)
@click.option("--system", default=None, help="System message for conversations without one.")
@click.option(
    "--train-on",
    type=click.Choice(["all", "last"]),
    default="all",
    show_default=True,
    help="Assistant turns trained on (mask 1).",
)
@click.option("--max-length", type=_COUNT, default=None, help="Longest conversation in tokens.")
@click.option(
    "--overflow",
    type=click.Choice(["truncate", "drop"]),
    default="truncate",
    show_default=True,
    help="Longer conversations: cut after the last whole turn that fits, or skip.",
)
@_MAX_LINE_BYTES
@_strict("record")
@_split_options("conversations")
@_TOKENIZER_BACKEND
@_shard_output_options("Worker threads")
@_friendly_errors
def prepare_sft_cmd(
    inputs: tuple[str, ...], tokenizer: str, output: str, quiet: bool, **options: Any
) -> None:
    """Render chat INPUTS (.jsonl/.json[.gz|.zst], .parquet, .arrow) with the
    tokenizer's chat template into SFT shards with loss masks (1 on assistant replies)."""
    stats = prepare_sft(list(inputs), tokenizer, output, progress=not quiet, **options)
    click.echo(stats.summary())
    sft = stats.manifest.get("sft") or {}
    click.echo(
        f"sft          template: {sft.get('chat_template')}, truncated: "
        f"{sft.get('truncated', 0):,}, trained-on tokens: {sft.get('masked_tokens', 0):,}"
    )


# The input options shared by dedup and chunk (as for prepare).
_reader_options = _options(
    _TEXT_FIELD,
    click.option(
        "--id-field",
        default="id",
        show_default=True,
        help="Field quoted as the document id when a record has it.",
    ),
    _TXT_MODE,
    _MAX_LINE_BYTES,
    _strict("line"),
    _THREADS,
    click.option("--overwrite", is_flag=True, help="Replace existing output files."),
    click.option("--quiet", "-q", is_flag=True, help="No progress lines."),
    _ALLOW_EMPTY,
)


# The MinHash LSH settings of `dedup` and `dedup-signatures`.
_minhash_options = _options(
    click.option(
        "--threshold",
        type=click.FloatRange(0, 1, min_open=True),
        default=0.8,
        show_default=True,
        help="Jaccard similarity at or above which documents are near-duplicates.",
    ),
    click.option("--num-perm", type=_COUNT, default=128, show_default=True, help="Permutations."),
    click.option(
        "--bands", type=_COUNT, default=None, help="LSH bands (default: from the threshold)."
    ),
    click.option(
        "--rows", type=_COUNT, default=None, help="Rows per band (default: from the threshold)."
    ),
    click.option(
        "--shingle",
        default="auto",
        show_default=True,
        help="auto (characters for CJK documents, else words), word or char, optionally :N.",
    ),
    click.option(
        "--ngram",
        type=_COUNT,
        default=5,
        show_default=True,
        help="Shingle size when --shingle has no :N.",
    ),
    click.option("--seed", type=_COUNT, default=1, show_default=True, help="Seed of the hashes."),
)
_WORK = click.option(
    "--work",
    "-w",
    required=True,
    type=click.Path(file_okay=False),
    help="The dedup stages' shared directory.",
)


@main.command("dedup")
@click.argument("inputs", nargs=-1, required=True)
@_INPUT_SPLIT
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False),
    help="Kept records, unchanged and in order; .gz/.zst compress.",
)
@click.option(
    "--report",
    type=click.Path(dir_okay=False),
    help="One JSON line per cluster: kept and removed documents (file, line, id).",
)
@_minhash_options
@click.option(
    "--verify",
    is_flag=True,
    help="Compute the exact Jaccard of candidate pairs and drop those under the threshold.",
)
@_reader_options
@_friendly_errors
def dedup_cmd(inputs: tuple[str, ...], quiet: bool, **options: Any) -> None:
    """Remove near-duplicates (MinHash LSH) from INPUTS, keeping the first of each cluster."""
    if not options["output"] and not options["report"]:
        raise click.UsageError("give --output, --report or both")
    result = dedup(list(inputs), progress=not quiet, **options)
    click.echo(result.format_summary())


@main.command("chunk")
@click.argument("inputs", nargs=-1, required=True)
@_INPUT_SPLIT
@click.option(
    "--output",
    "-o",
    required=True,
    type=click.Path(dir_okay=False),
    help="Chunk records (source fields, text = chunk, source_id, chunk_index); .gz/.zst compress.",
)
@click.option(
    "--max-chars",
    type=click.IntRange(min=1),
    default=None,
    help="Characters per chunk (default 512 unless --max-tokens).",
)
@click.option(
    "--max-tokens", type=click.IntRange(min=1), default=None, help="Tokens per chunk (needs -t)."
)
@click.option("--tokenizer", "-t", default=None, help="tokenizer.json or a directory holding one.")
@click.option(
    "--overlap",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Characters (or tokens) a chunk may share with the one before it.",
)
@_reader_options
@_friendly_errors
def chunk_cmd(inputs: tuple[str, ...], quiet: bool, **options: Any) -> None:
    """Split the documents of INPUTS at paragraph, sentence, then whitespace boundaries."""
    stats = chunk_files(list(inputs), progress=not quiet, **options)
    click.echo(stats.summary())


@main.command("train-tokenizer")
@click.argument("inputs", nargs=-1, required=True)
@_INPUT_SPLIT
@click.option(
    "--output", "-o", required=True, type=click.Path(file_okay=False), help="Tokenizer directory."
)
@click.option("--vocab-size", type=_COUNT, default=6144, show_default=True)
@click.option("--min-frequency", type=_COUNT, default=2, show_default=True)
@_TEXT_FIELD
@_TXT_MODE
@click.option("--max-docs", type=_COUNT, default=None, help="Train on at most this many documents.")
@click.option("--model-max-length", type=_COUNT, default=2048, show_default=True)
@click.option(
    "--overwrite", is_flag=True, help="Replace a tokenizer already in --output (tokenizer.json)."
)
@click.option("--quiet", "-q", is_flag=True)
@_friendly_errors
def train_tokenizer_cmd(inputs: tuple[str, ...], output: str, quiet: bool, **options: Any) -> None:
    """Train a byte-level BPE tokenizer (NFKC, ChatML specials) on INPUTS."""
    out = train_tokenizer(list(inputs), output, progress=not quiet, **options)
    click.echo(f"tokenizer written to {out}")


@main.command("inspect")
@click.argument("dataset", type=click.Path(exists=True, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@_friendly_errors
def inspect_cmd(dataset: str, as_json: bool) -> None:
    """Sizes, dtype, skipped lines by reason and the document length histogram."""
    info = inspect(dataset)
    click.echo(json.dumps(info, indent=2, ensure_ascii=False) if as_json else format_inspect(info))


@main.command("verify")
@click.argument("dataset", type=click.Path(exists=True, file_okay=False))
@_THREADS
@_friendly_errors
def verify_cmd(dataset: str, threads: int) -> None:
    """Check checksums, .idx offsets and that every id is below the vocab size."""
    report = verify(dataset, threads)
    for e in report.errors:
        click.echo(f"FAIL {e}", err=True)
    status = "ok" if report.ok else f"FAILED ({counted(len(report.errors), 'problem')})"
    click.echo(
        f"verify {dataset}: {status}: {counted(report.shards, 'shard')}, "
        f"{counted(report.docs, 'doc')}, {counted(report.tokens, 'token')}"
    )
    if not report.ok:
        sys.exit(1)


@main.command("merge")
@click.argument("datasets", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option(
    "--output",
    "-o",
    required=True,
    type=click.Path(exists=True, file_okay=False),
    help="The merged dataset: a directory that holds DATASETS; only its manifest.json is written.",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing manifest.json in --output.")
@_THREADS
@_friendly_errors
def merge_cmd(datasets: tuple[str, ...], output: str, overwrite: bool, threads: int) -> None:
    """One dataset over the shards of DATASETS, without copying them: the parts of a
    partitioned prepare (put in part order) or datasets made with the same tokenizer and
    options (in the order given). Checksums are verified first."""
    click.echo(merge(list(datasets), output, overwrite=overwrite, threads=threads).summary())


@main.command("dedup-signatures")
@click.argument("inputs", nargs=-1, required=True)
@_INPUT_SPLIT
@_WORK
@click.option(
    "--num-parts",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Parts of the inputs, cut as prepare --num-parts cuts them.",
)
@click.option("--part", type=_COUNT, default=0, show_default=True, help="This run's part, 0-based.")
@click.option(
    "--buckets",
    type=click.IntRange(1, 65536),
    default=1,
    show_default=True,
    help="Hash ranges; dedup-buckets runs once for each.",
)
@_minhash_options
@_TEXT_FIELD
@_TXT_MODE
@_MAX_LINE_BYTES
@_strict("line")
@_THREADS
@click.option("--quiet", "-q", is_flag=True, help="No progress lines.")
@_friendly_errors
def dedup_signatures_cmd(inputs: tuple[str, ...], quiet: bool, **options: Any) -> None:
    """Dedup stage 1 (one run per part of INPUTS): band hashes of every document,
    bucketed into --work. Then dedup-buckets, dedup-clusters, prepare --exclude."""
    r = dedup_signatures(list(inputs), progress=not quiet, **options)
    state = "already done, nothing to do" if r.get("already_complete") else "written"
    click.echo(
        f"signatures part {r['part']['index']} of {r['part']['count']}: "
        f"{counted(len(r['inputs']), 'input file')}, {counted(r['docs'], 'document')}, "
        f"{counted(len(r['records']), 'bucket')}: {state}"
    )


@main.command("dedup-buckets")
@_WORK
@click.option("--bucket", type=_COUNT, required=True, help="The bucket to run, 0-based.")
@_friendly_errors
def dedup_buckets_cmd(work: str, bucket: int) -> None:
    """Dedup stage 2 (one run per bucket, once every signatures part is done):
    candidate pairs of the documents that share a band hash."""
    r = dedup_buckets(work, bucket)
    state = "already done, nothing to do" if r.get("already_complete") else "written"
    click.echo(
        f"bucket {r['bucket']}: {r['records']:,} band hashes, "
        f"{counted(r['edges'], 'candidate pair')}: {state}"
    )


@main.command("dedup-clusters")
@_WORK
@_friendly_errors
def dedup_clusters_cmd(work: str) -> None:
    """Dedup stage 3 (once every bucket is done): clusters, the first document of
    each kept; prepare --exclude WORK skips the others."""
    m = dedup_clusters(work)
    click.echo(
        f"clusters: {counted(m['docs'], 'document')}, {counted(m['clusters'], 'cluster')} of "
        f"two or more, {m['removed']:,} removed ({m['seconds']:.2f} s); "
        f"skip them with prepare --exclude {work}"
    )


def _training_options(command: str) -> Callable[[F], F]:
    """One flag per `TrainConfig` field of ``command``, named as the field
    with dashes, its help showing ``command``'s own default; a flag left
    out keeps the config file's (or the default) value."""
    from types import UnionType
    from typing import Literal, Union, get_args, get_origin

    from tokenmill.config import ADAPTER_DEFAULTS, fields_for_cli

    def decorate(f: F) -> F:
        for name, hint, default, help in reversed(fields_for_cli(command)):
            flag = "--" + name.replace("_", "-")
            decls = [flag, "--out", name] if name == "output_dir" else [flag, name]
            optional = get_origin(hint) in (Union, UnionType)
            base = next(a for a in get_args(hint) if a is not type(None)) if optional else hint
            shown = f"{default:g}" if isinstance(default, float) else default
            if name in ADAPTER_DEFAULTS and command != "pretrain":
                shown = f"{shown}; {ADAPTER_DEFAULTS[name]:g} with --lora/--qlora/--load-in-8bit"
            if default not in (None, [], {}):
                help = f"{help} [default: {shown}]"
            if name == "packing":  # bare --packing packs whole documents (doc)
                choice = click.Choice(get_args(base))
                f = click.option(*decls, type=choice, is_flag=False, flag_value="doc", help=help)(f)
            elif name == "trainer_args":
                f = click.option(
                    "--trainer-arg", name, multiple=True, metavar="KEY=VALUE", help=help
                )(f)
            elif get_origin(base) is Literal:
                f = click.option(*decls, type=click.Choice(get_args(base)), help=help)(f)
            elif base is bool:
                f = click.option(f"{flag}/--no-{flag[2:]}", name, default=None, help=help)(f)
            elif get_origin(base) is list:
                f = click.option(*decls, multiple=True, metavar="DIR:WEIGHT", help=help)(f)
            else:
                f = click.option(*decls, type=base, help=help)(f)
        return click.option(
            "--config",
            "config_file",
            type=click.Path(exists=True, dir_okay=False),
            help="YAML or JSON file of these options (flags override it); seed 001's "
            "sectioned layout loads as it is.",
        )(f)

    return decorate


def _run_training(command: str, config_file: str | None, flags: dict[str, Any]) -> None:
    import warnings

    from tokenmill.config import ConfigWarning, load_config
    from tokenmill.shards import read_manifest
    from tokenmill.train import parse_sources, train

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConfigWarning)
        cfg = load_config(config_file, flags, command)
    rank = _rank()
    for w in caught:
        if rank == 0:
            click.echo(
                f"warning: {_in_flags(str(w.message), click.get_current_context().command)}",
                err=True,
            )
    if command != "pretrain" and not cfg.model:
        raise click.UsageError(
            f"{command} needs --model (a local Hugging Face directory or a hub id in your cache)"
        )
    if command == "sft":
        data = parse_sources(cfg)[0][0]
        if read_manifest(data).get("kind") != "sft":
            raise click.UsageError(
                f"{data} holds pretraining shards; sft trains on `tokenmill prepare-sft` "
                "output (loss masks on assistant replies)"
            )
    metrics = train(cfg)
    _end_process_group()
    if rank == 0:
        click.echo(json.dumps(metrics, indent=2))


def _rank() -> int:
    import os

    return int(os.environ.get("RANK", "0"))


def _end_process_group() -> None:
    """Under torchrun: wait for every rank, then take the process group down.
    A gloo group left alive at interpreter exit can abort the process
    ("terminate called without an active exception") after a finished run."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


@main.command("pretrain")
@_training_options("pretrain")
@_friendly_errors
def pretrain_cmd(config_file: str | None, **flags: Any) -> None:
    """Pretrain a LLaMA preset from scratch on shards (vocab from their tokenizer)."""
    _run_training("pretrain", config_file, flags)


@main.command("cpt")
@_training_options("cpt")
@_friendly_errors
def cpt_cmd(config_file: str | None, **flags: Any) -> None:
    """Continue pretraining a Hugging Face causal LM (--model) on shards of its
    tokenizer (seed 001's defaults: lr 5e-5, cosine, 5% warmup)."""
    _run_training("cpt", config_file, flags)


@main.command("sft")
@_training_options("sft")
@_friendly_errors
def sft_cmd(config_file: str | None, **flags: Any) -> None:
    """Fine-tune a Hugging Face causal LM (--model) on `prepare-sft` shards: loss on
    assistant replies only, padded batches or --packing, optional --lora /
    --qlora adapters or --optim galore_adamw (--recipe galore-seed002)."""
    _run_training("sft", config_file, flags)


@main.command("merge-lora")
@click.argument("adapter", type=click.Path(exists=True, file_okay=False))
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False))
@click.option("--base", default=None, help="Base model directory (default: the adapter's own).")
@_friendly_errors
def merge_lora_cmd(adapter: str, out: str, base: str | None) -> None:
    """Merge a LoRA adapter (final_adapter/ or a checkpoint) into its base model
    and save a plain Hugging Face model directory with the tokenizer."""
    from tokenmill.adapters import merge_adapter

    click.echo(f"merged into {merge_adapter(adapter, out, base)}")


@main.command("eval")
@click.option("--model", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--split", default="val", show_default=True)
@click.option(
    "--block-size", type=int, default=None, help="Default: the model's context, max 2048."
)
@click.option(
    "--packing", type=click.Choice(["concat", "doc", "pad"]), default="concat", show_default=True
)
@click.option(
    "--per-device-eval-batch-size",
    "batch_size",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
)
@click.option("--max-eval-samples", type=_COUNT, default=None, help="Use only the first N blocks.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_friendly_errors
def eval_cmd(model: str, data: str, as_json: bool, **options: Any) -> None:
    """Token-weighted loss and perplexity of a model on a split of shards."""
    from tokenmill.evaluate import evaluate

    r = evaluate(model, data, **options)
    if as_json:
        click.echo(json.dumps(r, indent=2))
    else:
        click.echo(
            f"{r['model']} on {r['data']} ({r['split']}, {r['packing']}, block {r['block_size']}): "
            f"loss {r['loss']:.4f}, perplexity {r['perplexity']:.2f} over {r['tokens']:,} "
            f"predicted tokens ({r['seconds']:.1f} s on {r['device']})"
        )


@main.command("generate")
@click.option("--model", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--prompt", required=True, help="Prompt text, or FILE:path to read it from a file.")
@click.option("--num-samples", type=int, default=1, show_default=True)
@click.option("--max-new-tokens", type=int, default=256, show_default=True)
@click.option("--temperature", type=float, default=0.8, show_default=True, help="0: greedy.")
@click.option("--top-k", type=_COUNT, default=300, show_default=True)
@click.option("--top-p", type=float, default=None)
@click.option("--seed", type=_COUNT, default=42, show_default=True)
@click.option("--chat", is_flag=True, help="Apply the tokenizer's chat template (a user turn).")
@click.option("--system", default=None, help="System message for --chat.")
@_friendly_errors
def generate_cmd(model: str, prompt: str, **options: Any) -> None:
    """Sample continuations of a prompt from a trained model directory."""
    from tokenmill.generate import generate, read_prompt

    text = read_prompt(prompt)
    for i, sample in enumerate(generate(model, text, **options)):
        click.echo(f"--- sample {i + 1}")
        click.echo(text + sample if not options["chat"] else sample)


@main.command("demo")
@click.option("--out", default="demo_out", show_default=True, type=click.Path(file_okay=False))
@click.option("--vocab-size", type=int, default=4096, show_default=True)
@click.option(
    "--corpus-mb",
    type=click.FloatRange(min=0, min_open=True),
    default=16.0,
    show_default=True,
    help="Size budget of the embedded corpus.",
)
@click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True)
@click.option(
    "--train-steps",
    type=click.IntRange(min=0),
    default=1000,
    show_default=True,
    help="Pretraining steps on the CPU after the data steps (0: data only).",
)
@click.option(
    "--preset",
    type=click.Choice(list(PRESETS)),
    default="llama-micro",
    show_default=True,
    help="Model preset to pretrain.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@_friendly_errors
def demo_cmd(
    out: str,
    vocab_size: int,
    corpus_mb: float,
    threads: int,
    train_steps: int,
    preset: str,
    quiet: bool,
) -> None:
    """Run the whole flow on a corpus built from the Python standard library (no downloads):
    tokenizer, shards, about three CPU minutes of pretraining, perplexity and samples."""
    from tokenmill.demo import run_demo  # only this command needs it

    run_demo(
        Path(out),
        vocab_size=vocab_size,
        corpus_mb=corpus_mb,
        threads=threads,
        progress=not quiet,
        train_steps=train_steps,
        preset=preset,
    )


if __name__ == "__main__":
    main()
