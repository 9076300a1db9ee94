"""tokenmill `prepare` against the tools a user would otherwise pick, on one corpus.

Tools, all on the same JSONL files, the same tokenizer.json and the same
number of cores, one EOS appended per document, no BOS, no dedup, no val split:

- ``tokenmill``: ``tokenmill.prepare(..., threads=N, dedup=False, val_fraction=0)``,
  end to end (tokenizer load, JSONL read, shards, index and manifest written).
- ``reference``: the same with ``tokenizer_backend="reference"`` (the
  ``tokenizers`` crate inside tokenmill's pipeline).
- ``encoder``: tokenmill's bare encoder, ``Encoder(tok).encode_flat(texts)``
  over texts already in memory (tokenizer load timed, JSON parsing not).
- ``ceiling``: Python ``tokenizers`` ``Tokenizer.encode_batch_fast`` over texts
  already in memory (RAYON_NUM_THREADS=N); load timed, JSON parsing not.
- ``fastokens``: the fastokens PyPI package, ``encode_batch_flat`` over texts
  in memory (FASTOKENS_BPE_THREADS=N), special-token strings split as text.
- ``gigatoken``: the gigatoken PyPI package, ``Tokenizer.encode_files`` on the
  JSONL files themselves (it reads them), RAYON_NUM_THREADS=N.
- ``llama2c``: llama2.c ``tinystories.py pretokenize`` style: a
  ``multiprocessing.Pool(N)`` over the part files, each worker loads its part,
  encodes document by document and writes a uint16/uint32 ``.bin``.
- ``base``: ``tokenmill`` as built from another git revision (``--base REV``:
  a release wheel built once into ``bench_out/builds/``, unpacked and put first
  on the child's PYTHONPATH): this build against an older one, interleaved in
  one run, with a check that both wrote the same shards.
- ``seed``: the seed recipe: ``datasets.load_dataset("json")`` ->
  ``.map(tokenize, batched=True, num_proc=N)`` (transformers ``AutoTokenizer``)
  -> ``.map(group_texts, batched=True, num_proc=N)`` with block_size 1024 ->
  ``save_to_disk``.

Each tool runs in a fresh child process (``python bench_prepare.py _child ...``)
that times its own pipeline (imports excluded) and counts tokens before any
grouping. No tool uses BLAS, so every child runs with
``OPENBLAS_NUM_THREADS=1``: otherwise importing numpy (as tokenmill and most
runners do just before their timer starts) starts OpenBLAS threads that spin
on the other core for about 0.1 s of the timed run. With ``--threads 1`` the
child is pinned to one core (every thread of it, tokenmill's reader
included), so "1" means one core. The parent
polls the child's process tree with psutil every 20 ms and reports the peak
of the summed RSS (forked workers' shared pages are counted once per process,
as ``ps`` would). Text MB/s uses the UTF-8 bytes of
the text field (``meta.json`` of the corpus) for every tool.

    python benches/bench_prepare.py --corpus bench_out/corpus/100M --repeat 3
    python benches/bench_prepare.py --tokenizer large llama --threads 1 2 \
        --tools tokenmill reference encoder ceiling fastokens gigatoken --repeat 3
    python benches/bench_prepare.py --rss-vs-size --tokenizer small large
    python benches/bench_prepare.py --corpus bench_out/corpus/u250M --tokenizer large \
        --threads 1 2 --tools tokenmill --base 8677cee --repeat 5

Every tool also runs on the corpus's first document alone, in a fresh process
of its own, right after each full run: that is its fixed cost (tokenizer load,
set-up, output written), and each round's full time less it is the time
without fixed cost. Both are reported (medians), with ratios for both.

Tokenizers: ``small`` (32k, ``tokenmill train-tokenizer``, NFKC), ``large``
(Qwen2-style, NFC, 100k), ``llama3`` (LLaMA-3 / GPT-4 cl100k-style, 128k),
``o200k`` (GPT-4o / LLaMA-4-style, 128k), all byte-level BPE trained on the
corpus's first three part files; ``llama`` (LLaMA-2 / Mistral-style
SentencePiece BPE with byte fallback, 32k, built like the tests'
``build_llama_style``: trained on lines with digits split, as sentencepiece
trained those, so no token holds a newline); or a path, such as Mistral-7B's
own vocabulary written by ``mistral_tokenizers.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH_OUT = ROOT / "bench_out"
TOOLS = [
    "tokenmill",
    "reference",
    "encoder",
    "ceiling",
    "fastokens",
    "gigatoken",
    "llama2c",
    "seed",
]
# Set per child by the parent (--threads).
THREADS = int(os.environ.get("BENCH_THREADS", "2"))
BLOCK_SIZE = 1024

# Split regexes of the byte-level families, as their tokenizer.json files spell them.
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
LLAMA3_SPLIT = QWEN2_SPLIT.replace(r"|\p{N}|", r"|\p{N}{1,3}|")
_CASED = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+{c}"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*{c}"
)
O200K_SPLIT = _CASED.replace("{c}", r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?") + (
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# Byte-level families: name -> (split regex, NFC normaliser, vocabulary size).
BYTE_LEVEL = {
    "large": (QWEN2_SPLIT, True, 100_000),  # Qwen2-style
    "llama3": (LLAMA3_SPLIT, False, 128_000),  # LLaMA-3 / GPT-4 (cl100k) style
    "o200k": (O200K_SPLIT, False, 128_000),  # GPT-4o / LLaMA-4 style
}
LARGE_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


# ---------------------------------------------------------------- tokenizers


def _texts(files: list[Path], batch: int = 1000):
    """Batches of the text field of JSONL files."""
    buf: list[str] = []
    for f in files:
        with open(f, encoding="utf-8") as fh:
            for line in fh:
                buf.append(json.loads(line)["text"])
                if len(buf) == batch:
                    yield buf
                    buf = []
    if buf:
        yield buf


def build_small(corpus: Path) -> Path:
    """32k byte-level BPE from `tokenmill train-tokenizer` on the first part file."""
    out = BENCH_OUT / "tokenizers" / "small"
    if not (out / "tokenizer.json").is_file():
        import tokenmill

        # One part (~12 MB) is plenty for 32k merges and keeps training under a minute.
        tokenmill.train_tokenizer(_parts(corpus)[0], out, vocab_size=32000, progress=False)
    return out


def build_byte_level(name: str, corpus: Path) -> Path:
    """A byte-level BPE of one family (`BYTE_LEVEL`): its split regex +
    ByteLevel, trained on the first three part files of the corpus."""
    out = BENCH_OUT / "tokenizers" / name
    if (out / "tokenizer.json").is_file():
        return out
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    split, nfc, vocab = BYTE_LEVEL[name]
    tok = Tokenizer(models.BPE())
    if nfc:
        tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(split), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        min_frequency=2,
        special_tokens=LARGE_SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_texts(_parts(corpus)[:3]), trainer=trainer)
    learned = tok.get_vocab_size(with_added_tokens=True)
    if learned < vocab:
        # Too little distinct text for all merges: pad with added tokens so the
        # vocabulary (and so the uint32 dtype and the embedding-sized id space) is real.
        tok.add_tokens([f"<|extra_{i}|>" for i in range(vocab - learned)])
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None,
        "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "add_bos_token": False,
        "model_max_length": 32768,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out / "build.json").write_text(json.dumps({"learned": learned, "vocab": vocab}) + "\n")
    return out


def build_llama(corpus: Path) -> Path:
    """LLaMA-2-style SentencePiece BPE (byte fallback, 32k), trained on the lines
    of ~10 MB of the corpus."""
    out = BENCH_OUT / "tokenizers" / "llama_lines"
    if (out / "tokenizer.json").is_file():
        return out
    sys.path.insert(0, str(ROOT / "tests"))
    from corpus import build_llama_style

    texts: list[str] = []
    size = 0
    for batch in _texts(_parts(corpus)[2:3]):
        texts += batch
        size += sum(len(t.encode()) for t in batch)
        if size >= 10_000_000:
            break
    return build_llama_style(out, texts, vocab_size=32000)


def resolve_tokenizer(name: str, corpus: Path) -> Path:
    if name == "small":
        return build_small(corpus)
    if name in BYTE_LEVEL:
        return build_byte_level(name, corpus)
    if name == "llama":
        return build_llama(corpus)
    return Path(name)


def _parts(corpus: Path) -> list[Path]:
    parts = sorted(corpus.glob("part-*.jsonl"))
    if not parts:
        sys.exit(f"{corpus}: no part-*.jsonl (make it with benches/make_corpus.py)")
    return parts


def _eos_id(tokdir: Path) -> int:
    """The EOS id the way tokenmill picks it: tokenizer_config.json's eos_token."""
    from tokenizers import Tokenizer

    config = json.loads((tokdir / "tokenizer_config.json").read_text())
    eos = config["eos_token"]
    eos = eos["content"] if isinstance(eos, dict) else eos
    return Tokenizer.from_file(str(tokdir / "tokenizer.json")).token_to_id(eos)


# ---------------------------------------------------------------- the tools (child side)


def run_tokenmill(parts: list[Path], tokdir: Path, work: Path, backend: str = "auto") -> dict:
    import tokenmill

    t0 = time.perf_counter()
    stats = tokenmill.prepare(
        [str(p) for p in parts],
        tokdir,
        work / "tokenmill",
        threads=THREADS,
        dedup=False,
        val_fraction=0.0,
        progress=False,
        overwrite=True,
        tokenizer_backend=backend,
        bos="never",  # as every other tool (a LLaMA-style config asks for BOS)
    )
    seconds = time.perf_counter() - t0
    shards = [s for split in stats.manifest["splits"].values() for s in split["shards"]]
    digest = hashlib.sha256("".join(s["bin_sha256"] + s["idx_sha256"] for s in shards).encode())
    return {
        "seconds": seconds,
        "module": tokenmill.__file__,
        "shards_sha256": digest.hexdigest(),
        "tokens": stats.tokens,
        "docs": stats.docs,
        "text_bytes": stats.text_bytes,
        "dtype": stats.dtype,
        "backend": stats.manifest["tokenizer"]["backend"],
    }


def run_reference(parts: list[Path], tokdir: Path, work: Path) -> dict:
    return run_tokenmill(parts, tokdir, work, backend="reference")


def run_encoder(parts: list[Path], tokdir: Path, work: Path) -> dict:
    import numpy as np

    import tokenmill

    texts = [t for batch in _texts(parts) for t in batch]  # untimed
    t0 = time.perf_counter()
    enc = tokenmill.Encoder(str(tokdir))
    _, offsets = enc.encode_flat(texts, threads=THREADS)
    seconds = time.perf_counter() - t0
    tokens = int(np.frombuffer(offsets, np.uint64)[-1]) + len(texts)  # + one EOS per doc
    return {"seconds": seconds, "tokens": tokens, "docs": len(texts), "backend": enc.backend}


def run_fastokens(parts: list[Path], tokdir: Path, work: Path) -> dict:
    import numpy as np
    from fastokens._native import Tokenizer

    texts = [t for batch in _texts(parts) for t in batch]  # untimed
    t0 = time.perf_counter()
    tok = Tokenizer.from_file(str(tokdir / "tokenizer.json"))
    _, offsets = tok.encode_batch_flat(texts, add_special_tokens=False, split_special_tokens=True)
    seconds = time.perf_counter() - t0
    tokens = int(np.frombuffer(offsets, np.uint64)[-1]) + len(texts)
    return {"seconds": seconds, "tokens": tokens, "docs": len(texts)}


def run_gigatoken(parts: list[Path], tokdir: Path, work: Path) -> dict:
    import gigatoken as gt

    t0 = time.perf_counter()
    tok = gt.Tokenizer(str(tokdir / "tokenizer.json"))
    tokens = docs = 0
    for ids in tok.encode_files(gt.JsonlFileSource([str(p) for p in parts], field="text")):
        tokens += len(ids) + 1  # + one EOS per doc
        docs += 1
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "tokens": tokens, "docs": docs}


def run_ceiling(parts: list[Path], tokdir: Path, work: Path) -> dict:
    from tokenizers import Tokenizer

    # Untimed: reading and parsing the JSONL; the ceiling is tokenization alone.
    batches = list(_texts(parts, batch=1000))
    tokens = docs = 0
    t0 = time.perf_counter()
    tok = Tokenizer.from_file(str(tokdir / "tokenizer.json"))
    tok.encode_special_tokens = True  # as tokenmill: special-token strings are plain text
    for batch in batches:
        encodings = tok.encode_batch_fast(batch, add_special_tokens=False)
        # len(Encoding) is the id count without building a Python list; +1 EOS per doc.
        tokens += sum(len(e) for e in encodings) + len(batch)
        docs += len(batch)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "tokens": tokens, "docs": docs}


def _llama2c_shard(job: tuple[str, str, str, int]) -> tuple[int, int]:
    """One worker of the llama2.c-style pretokenizer: a whole part in, one .bin out."""
    import numpy as np
    from tokenizers import Tokenizer

    part, tokjson, out, eos = job
    enc = Tokenizer.from_file(tokjson)
    enc.encode_special_tokens = True
    # llama2.c json.load()s its whole shard; a JSONL part is read the same way, at once.
    with open(part, encoding="utf-8") as f:
        data = [json.loads(line) for line in f]
    all_tokens: list[int] = []
    for example in data:
        all_tokens.extend(enc.encode(example["text"], add_special_tokens=False).ids)
        all_tokens.append(eos)
    dtype = np.uint16 if enc.get_vocab_size(with_added_tokens=True) <= 65536 else np.uint32
    np.array(all_tokens, dtype=dtype).tofile(out)
    return len(all_tokens), len(data)


def run_llama2c(parts: list[Path], tokdir: Path, work: Path) -> dict:
    import multiprocessing

    out = work / "llama2c"
    out.mkdir(parents=True, exist_ok=True)
    eos = _eos_id(tokdir)
    jobs = [
        (str(p), str(tokdir / "tokenizer.json"), str(out / f"{p.stem}.bin"), eos) for p in parts
    ]
    t0 = time.perf_counter()
    with multiprocessing.Pool(THREADS) as pool:
        counts = pool.map(_llama2c_shard, jobs, chunksize=1)
    seconds = time.perf_counter() - t0
    return {
        "seconds": seconds,
        "tokens": sum(c[0] for c in counts),
        "docs": sum(c[1] for c in counts),
    }


def run_seed(parts: list[Path], tokdir: Path, work: Path) -> dict:
    from itertools import chain

    import pyarrow.compute as pc
    from datasets import load_dataset
    from transformers import AutoTokenizer

    cache = work / "hf_cache"
    shutil.rmtree(cache, ignore_errors=True)  # a warm cache would skip the JSON->Arrow step
    t0 = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(str(tokdir))
    eos = tokenizer.eos_token_id
    ds = load_dataset(
        "json", data_files=[str(p) for p in parts], split="train", cache_dir=str(cache)
    )

    def tokenize(examples):
        out = tokenizer(examples["text"], add_special_tokens=False)
        # One EOS per document, as every other tool here.
        out["input_ids"] = [[*ids, eos] for ids in out["input_ids"]]
        out["attention_mask"] = [[*m, 1] for m in out["attention_mask"]]
        return out

    tokenized = ds.map(tokenize, batched=True, num_proc=THREADS, remove_columns=ds.column_names)

    def group_texts(examples):
        # run_clm.py's group_texts: concatenate, drop the remainder, cut into blocks.
        concatenated = {k: list(chain(*examples[k])) for k in examples}
        total = len(concatenated["input_ids"]) // BLOCK_SIZE * BLOCK_SIZE
        result = {
            k: [t[i : i + BLOCK_SIZE] for i in range(0, total, BLOCK_SIZE)]
            for k, t in concatenated.items()
        }
        result["labels"] = result["input_ids"].copy()
        return result

    grouped = tokenized.map(group_texts, batched=True, num_proc=THREADS)
    grouped.save_to_disk(str(work / "seed"))
    seconds = time.perf_counter() - t0
    # Untimed: tokens before grouping (group_texts drops each batch's remainder).
    lengths = pc.list_value_length(tokenized.data.column("input_ids"))
    return {"seconds": seconds, "tokens": pc.sum(lengths).as_py(), "docs": len(tokenized)}


RUNNERS = {
    "tokenmill": run_tokenmill,
    "reference": run_reference,
    "encoder": run_encoder,
    "ceiling": run_ceiling,
    "fastokens": run_fastokens,
    "gigatoken": run_gigatoken,
    "llama2c": run_llama2c,
    "seed": run_seed,
    "base": run_tokenmill,  # with PYTHONPATH set to the --base build
}


def build_base(rev: str) -> Path:
    """tokenmill as built from git revision `rev` (a release wheel, unpacked),
    for `--base`: a folder to put first on PYTHONPATH. Cached by commit."""
    sha = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--verify", f"{rev}^{{commit}}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    out = BENCH_OUT / "builds" / sha
    pkg = out / "pkg"
    if (pkg / "tokenmill").is_dir():
        return pkg
    tree = out / "src"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    print(f"building tokenmill at {rev} ({sha[:10]}) into {out} (a few minutes)", flush=True)
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), sha], check=True
    )
    try:
        maturin = Path(sys.executable).parent / "maturin"
        subprocess.run(
            [str(maturin), "build", "--release", "--locked", "-q", "-o", str(out / "wheel")],
            cwd=tree,
            check=True,
            env={**os.environ, "CARGO_TARGET_DIR": str(ROOT / "target" / "base")},
        )
    finally:
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=True
        )
    (wheel,) = (out / "wheel").glob("*.whl")
    with zipfile.ZipFile(wheel) as z:
        z.extractall(out / "unpacking")
    (out / "unpacking").rename(pkg)
    return pkg


def child(tool: str, corpus: Path, tokdir: Path, work: Path) -> None:
    if THREADS == 1:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core for every thread
    work.mkdir(parents=True, exist_ok=True)
    result = RUNNERS[tool](_parts(corpus), tokdir, work)
    result["self_maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(result), flush=True)


# ---------------------------------------------------------------- parent side


def _cpu(who: int) -> float:
    ru = resource.getrusage(who)
    return ru.ru_utime + ru.ru_stime


def _busy_cpu() -> float:
    """Non-idle CPU seconds of the whole machine so far."""
    import psutil

    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def measure(tool: str, corpus: Path, tokdir: Path, threads: int, base: Path | None = None) -> dict:
    """Runs one tool in a fresh child; returns its result plus the tree's peak RSS.
    `base`: the unpacked build the tool "base" imports tokenmill from."""
    import psutil

    work = BENCH_OUT / "work" / tool
    shutil.rmtree(work, ignore_errors=True)
    env = dict(os.environ)
    env.update(
        BENCH_THREADS=str(threads),
        RAYON_NUM_THREADS=str(threads),
        FASTOKENS_BPE_THREADS=str(threads),
        TOKENIZERS_PARALLELISM="true",
        OPENBLAS_NUM_THREADS="1",
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        HF_DATASETS_DISABLE_PROGRESS_BARS="1",
        TRANSFORMERS_VERBOSITY="error",
    )
    if tool == "base":
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(base), env.get("PYTHONPATH")]))
    cmd = [sys.executable, __file__, "_child", tool, str(corpus), str(tokdir), str(work)]
    busy0, own0 = _busy_cpu(), _cpu(resource.RUSAGE_SELF)
    kids0 = _cpu(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ps = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        try:
            tree = [ps, *ps.children(recursive=True)]
            rss = 0
            for p in tree:
                with contextlib.suppress(psutil.Error):  # a worker may exit meanwhile
                    rss += p.memory_info().rss
            peak = max(peak, rss)
        except psutil.Error:
            pass
        time.sleep(0.02)
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - t0
    # CPU time of the tool's whole tree (its waited-for workers included), and
    # whatever else ran on the machine meanwhile: a busy neighbour skews timings.
    tool_cpu = _cpu(resource.RUSAGE_CHILDREN) - kids0
    other_cpu = _busy_cpu() - busy0 - tool_cpu - (_cpu(resource.RUSAGE_SELF) - own0)
    lines = [ln for ln in stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.exit(f"{tool} failed (exit {proc.returncode}):\n{stderr[-4000:]}")
    result = json.loads(lines[-1][len("RESULT ") :])
    if tool == "base" and not result["module"].startswith(str(base)):
        sys.exit(f"base imported tokenmill from {result['module']}, not from {base}")
    result.update(
        tool=tool,
        threads=threads,
        peak_rss_mb=peak / 2**20,
        process_wall=wall,
        cpu_s=tool_cpu,
        other_cpu_s=other_cpu,
    )
    if other_cpu > 0.05 * wall:
        print(f"  warning: {other_cpu:.1f} CPU s of other processes during {tool}", flush=True)
    shutil.rmtree(work, ignore_errors=True)  # outputs are big; only the numbers matter
    return result


def one_doc_corpus(corpus: Path) -> Path:
    """The corpus's first document alone: a run on it is a tool's fixed cost
    (start-up inside the timer, tokenizer load, output set-up)."""
    out = BENCH_OUT / "corpus" / "one-doc" / corpus.name
    out.mkdir(parents=True, exist_ok=True)
    with open(_parts(corpus)[0], encoding="utf-8") as f:
        line = f.readline()
    (out / "part-00000.jsonl").write_text(line, encoding="utf-8")
    meta = {"jsonl_bytes": len(line.encode()), "docs": 1}
    meta["text_bytes"] = len(json.loads(line)["text"].encode())
    (out / "meta.json").write_text(json.dumps(meta) + "\n")
    return out


def summarize(runs: list[dict]) -> dict:
    """One tool's repeats: median time, time without the fixed cost (each
    round's full run less its one-document run) and CPU, the time range,
    the highest peak RSS."""
    secs = sorted(r["seconds"] for r in runs)
    return {
        **runs[0],
        "seconds": statistics.median(secs),
        "fixed_s": statistics.median(r["fixed_s"] for r in runs),
        "marginal_s": statistics.median(r["seconds"] - r["fixed_s"] for r in runs),
        "seconds_min": secs[0],
        "seconds_max": secs[-1],
        "cpu_s": statistics.median(r["cpu_s"] for r in runs),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
        "runs": len(runs),
    }


def table(results: list[dict], text_bytes: int) -> str:
    """Markdown table of medians; the ratios are tokenmill's speed over each
    tool's, end to end and without the fixed cost."""
    tm = next((r for r in results if r["tool"] == "tokenmill"), None)
    head = (
        "| tool | seconds (median [min-max]) | one document (s) | text MB/s | "
        "text MB/s without fixed cost | tokens | peak RSS (MB) | CPU s "
        "| tokenmill speed / tool speed | same, without fixed cost |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    rows = [head]
    for r in results:
        ratio = f"{r['seconds'] / tm['seconds']:.2f}x" if tm else "-"
        ratio_marginal = f"{r['marginal_s'] / tm['marginal_s']:.2f}x" if tm else "-"
        spread = f" [{r['seconds_min']:.1f}-{r['seconds_max']:.1f}]" if r["runs"] > 1 else ""
        rows.append(
            f"| {r['tool']} | {r['seconds']:.1f}{spread} | {r['fixed_s']:.2f} "
            f"| {text_bytes / 1e6 / r['seconds']:.1f} | {text_bytes / 1e6 / r['marginal_s']:.1f} "
            f"| {r['tokens']:,} | {r['peak_rss_mb']:,.0f} | {r['cpu_s']:.1f} "
            f"| {ratio} | {ratio_marginal} |"
        )
    return "\n".join(rows)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import psutil
    import tokenizers

    mem = psutil.virtual_memory().total / 2**30
    return (
        f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, Python {platform.python_version()}, "
        f"tokenizers {tokenizers.__version__}"
    )


def main() -> None:
    import tokenmill

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, nargs="+", default=[BENCH_OUT / "corpus" / "100M"])
    ap.add_argument(
        "--tokenizer",
        nargs="+",
        default=["small", "large"],
        help="small (32k, tokenmill train-tokenizer), large (Qwen2-style 100k), llama3 "
        "(LLaMA-3/cl100k-style 128k), o200k (GPT-4o-style 128k), llama (LLaMA-2/Mistral-style "
        "SentencePiece 32k) or a path",
    )
    ap.add_argument("--tools", nargs="+", default=TOOLS, choices=[*TOOLS, "base"])
    ap.add_argument(
        "--base",
        metavar="REV",
        help="also run tokenmill as built from git revision REV (tool 'base', built once "
        "into bench_out/builds/): this build against an older one, A/B in one run",
    )
    ap.add_argument(
        "--first-corpus-only",
        nargs="*",
        default=["ceiling", "llama2c", "seed"],
        help="tools run on the first --corpus only (the slow or memory-bound ones)",
    )
    ap.add_argument(
        "--rss-vs-size",
        action="store_true",
        help="shorthand: --corpus bench_out/corpus/100M bench_out/corpus/1G --tools tokenmill",
    )
    ap.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs per tool, round-robin over the tools so drift hits all alike; medians reported",
    )
    ap.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=[2],
        help="thread counts to run every tool with (1 pins the tool to one core)",
    )
    ap.add_argument("--json", type=Path, help="also write all results here")
    args = ap.parse_args()
    if args.rss_vs_size:
        args.corpus = [BENCH_OUT / "corpus" / "100M", BENCH_OUT / "corpus" / "1G"]
        args.tools = ["tokenmill"]
    base = build_base(args.base) if args.base else None
    if base and "base" not in args.tools:
        args.tools.append("base")
    elif "base" in args.tools and not base:
        ap.error("the tool 'base' needs --base REV")

    print(f"machine: {machine()}; threads per tool: {args.threads}")
    all_results = []
    for tok_name in args.tokenizer:
        tokdir = resolve_tokenizer(tok_name, args.corpus[0])
        vocab = tokenmill.tokenizer_info(tokdir)["vocab_size"]
        for i, corpus in enumerate(args.corpus):
            meta = json.loads((corpus / "meta.json").read_text())
            for p in _parts(corpus):  # same warm page cache for every tool
                with open(p, "rb") as f:
                    while f.read(1 << 24):
                        pass
            tools = [t for t in args.tools if i == 0 or t not in args.first_corpus_only]
            speed: dict[tuple[str, int], float] = {}
            for threads in args.threads:
                print(
                    f"\n## tokenizer {tok_name} (vocab {vocab:,}), corpus {corpus} "
                    f"({meta['jsonl_bytes'] / 1e6:,.0f} MB JSONL, "
                    f"{meta['text_bytes'] / 1e6:,.1f} MB text, {meta['docs']:,} docs), "
                    f"{threads} thread(s)",
                    flush=True,
                )
                runs: dict[str, list[dict]] = {t: [] for t in tools}
                one_doc = one_doc_corpus(corpus)
                for _ in range(args.repeat):
                    for tool in tools:
                        r = measure(tool, corpus, tokdir, threads, base)
                        r["fixed_s"] = measure(tool, one_doc, tokdir, threads, base)["seconds"]
                        r.update(tokenizer=tok_name, vocab=vocab, corpus=str(corpus), **meta)
                        runs[tool].append(r)
                        print(
                            f"  {tool:<10} {r['seconds']:8.2f} s (one document: "
                            f"{r['fixed_s']:.2f} s)  {r['tokens']:>13,} tokens  "
                            f"peak RSS {r['peak_rss_mb']:,.0f} MB  CPU {r['cpu_s']:.1f} s "
                            f"(other processes {r['other_cpu_s']:.1f} s)",
                            flush=True,
                        )
                        if r.get("text_bytes", meta["text_bytes"]) != meta["text_bytes"]:
                            print(f"note: {tool} read {r['text_bytes']:,} text bytes", flush=True)
                results = [summarize(rs) for rs in runs.values()]
                print()
                print(table(results, meta["text_bytes"]))
                by = {r["tool"]: r for r in results}
                for r in results:
                    speed[(r["tool"], threads)] = meta["text_bytes"] / r["marginal_s"]
                report_targets(by)
                all_results += [r for rs in runs.values() for r in rs]
            if len(args.threads) > 1:
                lo, hi = min(args.threads), max(args.threads)
                for tool in tools:
                    if (tool, lo) in speed and (tool, hi) in speed:
                        print(
                            f"{tool}: {hi} threads / {lo} thread(s) throughput "
                            f"{speed[(tool, hi)] / speed[(tool, lo)]:.2f}x"
                        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(all_results, indent=2) + "\n")


def report_targets(by: dict[str, dict]) -> None:
    """The ratios the issues set as targets, and token counts that disagree."""
    tm = by.get("tokenmill")
    if tm is None:
        return
    targets = {"gigatoken": 2.0, "fastokens": 2.0, "ceiling": 30.0, "seed": 100.0, "base": 1.0}
    for name, target in targets.items():
        if name in by:
            ratio = by[name]["seconds"] / tm["seconds"]
            marginal = by[name]["marginal_s"] / tm["marginal_s"]
            print(
                f"tokenmill prepare / {name} throughput: {ratio:.2f}x end to end, "
                f"{marginal:.2f}x without fixed cost (target >= {target:g}x)"
            )
    for name, r in by.items():
        if r["tokens"] != tm["tokens"]:
            print(f"note: {name} counted {r['tokens']:,} tokens, tokenmill {tm['tokens']:,}")
    if "base" in by and by["base"]["shards_sha256"] != tm["shards_sha256"]:
        print("note: the base build wrote different shards (sha256 of the manifests' checksums)")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        child(sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]), Path(sys.argv[5]))
    else:
        main()
