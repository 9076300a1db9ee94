"""GPU acceptance check: tokenmill's training paths on a CUDA machine, in minutes.

Why: the test suite runs on CPUs, so bf16 training, QLoRA/8-bit adapters
(bitsandbytes), DeepSpeed ZeRO-3 and FSDP are never exercised there. This
script runs each of them once through the ``tokenmill`` CLI, as a user
would, and reports whether it trained and how fast (issue 15, item 8). It
needs no network: ``scripts/gpu_check.sh`` installs the wheels it brings and
calls it; it fits 10 minutes on one H100/H200.

What it does, all under ``--work`` (default /tmp/gpu_check):

1. data: the demo corpus (tokenmill.demo.build_corpus: standard-library
   sources, docstrings, Chinese text), a 32k byte-level BPE
   (``tokenmill train-tokenizer``), pretraining shards (``tokenmill
   prepare``) and synthetic chat conversations made of docstrings turned
   into SFT shards (``tokenmill prepare-sft``);
2. a model: a Qwen2-style 0.4B model (hidden 896, 24 layers, 14 heads, 2 KV
   heads, FFN 4864: Qwen2.5-0.5B's shape with a 32k vocabulary), randomly
   initialised, saved in bf16 with the very tokenizer files the shards were
   made with (so the tokenizer check of cpt/sft passes);
3. the cases, each a fresh ``python -m tokenmill`` process (``torchrun``
   with one process per GPU for ZeRO-3 and FSDP), 30 optimizer steps of
   8 x 2048 tokens, no checkpoints, with a timeout; a failure records the
   end of the case's stderr and the next case runs:

   cpt_bf16      cpt, --torch-dtype bfloat16 (pure bf16 weights)
   cpt_doc       the same with --packing doc (attention within documents)
   sft_lora      sft --lora --packing doc --gradient-checkpointing
   sft_qlora     sft --qlora --packing doc (needs bitsandbytes)
   sft_8bit      sft --load-in-8bit --packing doc (needs bitsandbytes)
   cpt_zero3     cpt under DeepSpeed ZeRO-3, bf16 (needs deepspeed)
   cpt_fsdp      cpt under FSDP, full_shard auto_wrap of Qwen2DecoderLayer

The figures per case: tokens/s over the whole ``trainer.train()`` call
(metrics.json: it includes setup, e.g. DeepSpeed's initialisation), tokens/s
in the steady state (between the logged steps after the first, from the wall
times of the TensorBoard events the run wrote; tokens per step from
metrics.json), MFU from the steady figure, and peak GPU memory as nvidia-smi
sees it (sampled twice a second, so a short peak can be missed). MFU is
FLOPs per token x tokens/s / (peak bf16 dense FLOP/s x GPUs), FLOPs per
token 6 x parameters for full training and 4 x parameters for adapters
(no weight gradients of the frozen base); attention FLOPs and the
recomputation of gradient checkpointing are not counted.

    bash scripts/gpu_check.sh                     # on the GPU machine
    python benches/gpu_check.py --dry-run         # anywhere: tiny model, 3 steps, CPU

``--dry-run`` checks the script itself: a tiny model, a small corpus, 3
steps on the CPU; the cases that need CUDA are reported as skipped.
"""

from __future__ import annotations

import argparse
import functools
import gzip
import importlib.util
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Dense bf16 tensor-core FLOP/s per GPU, by a part of the name torch reports
# (first match wins, so "H100 PCIe" comes before "H100").
PEAK_FLOPS = [
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100", 989e12),  # SXM
    ("A100", 312e12),
]


@dataclass
class Scale:
    """Sizes of one run: the real check or the dry run."""

    corpus_mb: float
    vocab_size: int
    conversations: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    ffn: int
    block: int
    batch: int
    steps: int
    logging_steps: int
    case_timeout: int


FULL = Scale(
    corpus_mb=16,
    vocab_size=32000,
    conversations=8000,
    hidden=896,
    layers=24,
    heads=14,
    kv_heads=2,
    ffn=4864,
    block=2048,
    batch=8,
    steps=30,
    logging_steps=5,
    case_timeout=180,
)
DRY = Scale(
    corpus_mb=2,
    vocab_size=2048,
    conversations=300,
    hidden=64,
    layers=2,
    heads=4,
    kv_heads=2,
    ffn=128,
    block=256,
    batch=2,
    steps=3,
    logging_steps=1,
    case_timeout=300,
)


@dataclass
class Case:
    name: str
    command: str  # cpt or sft
    flags: list[str]
    adapters: bool = False  # trains LoRA adapters over a frozen base (4N FLOPs per token)
    distributed: bool = False  # launched with torchrun, one process per GPU
    needs: list[str] = field(default_factory=list)  # "cuda" and/or importable modules


@dataclass
class Result:
    case: str
    status: str  # ok, failed, timeout, skipped
    reason: str = ""
    world: int = 1
    steps: int | None = None
    train_loss: float | None = None
    tokens_per_second: float | None = None  # whole train() call
    steady_tokens_per_second: float | None = None  # logged steps after the first
    mfu: float | None = None
    peak_memory_mib: int | None = None
    wall_seconds: float | None = None
    stderr_tail: list[str] = field(default_factory=list)


def cases(work: Path) -> list[Case]:
    fsdp_config = work / "fsdp.json"
    return [
        Case("cpt_bf16", "cpt", ["--torch-dtype", "bfloat16"]),
        Case("cpt_doc", "cpt", ["--torch-dtype", "bfloat16", "--packing", "doc"]),
        Case(
            "sft_lora",
            "sft",
            ["--lora", "--packing", "doc", "--gradient-checkpointing"],
            adapters=True,
        ),
        Case(
            "sft_qlora",
            "sft",
            ["--qlora", "--packing", "doc"],
            adapters=True,
            needs=["cuda", "bitsandbytes"],
        ),
        Case(
            "sft_8bit",
            "sft",
            ["--load-in-8bit", "--packing", "doc"],
            adapters=True,
            needs=["cuda", "bitsandbytes"],
        ),
        Case(
            "cpt_zero3",
            "cpt",
            ["--deepspeed", "zero3", "--bf16", "true"],
            distributed=True,
            needs=["cuda", "deepspeed"],
        ),
        Case(
            "cpt_fsdp",
            "cpt",
            ["--fsdp", "full_shard auto_wrap", "--fsdp-config", str(fsdp_config)],
            distributed=True,
            needs=["cuda"],
        ),
    ]


def write_configs(work: Path) -> None:
    """The FSDP JSON config the FSDP case reads (DeepSpeed uses tokenmill's
    built-in zero3: bf16, 16-bit weights gathered on save)."""
    fsdp = {"transformer_layer_cls_to_wrap": ["Qwen2DecoderLayer"]}
    (work / "fsdp.json").write_text(json.dumps(fsdp, indent=2))


# ---- data and model ----


def tokenmill_cli(*args: str) -> None:
    """Runs ``python -m tokenmill ARGS``, printing its output; stops the
    script if it fails (without data there is nothing to check)."""
    started = time.perf_counter()
    print(f"$ tokenmill {' '.join(args)}", flush=True)
    done = subprocess.run(
        [sys.executable, "-m", "tokenmill", *args], capture_output=True, text=True, env=child_env()
    )
    for line in (done.stdout + done.stderr).strip().splitlines()[-6:]:
        print(f"  {line}")
    if done.returncode != 0:
        raise SystemExit(f"tokenmill {args[0]} failed (exit {done.returncode})")
    print(f"  ({time.perf_counter() - started:.1f} s)", flush=True)


def write_chats(corpus: Path, out: Path, n: int) -> None:
    """``n`` conversations in the OpenAI messages layout: questions about a
    standard-library name, answered with its docstring(s); 1-3 exchanges,
    a third with a system message, some answers in Chinese."""
    docs = []
    with gzip.open(corpus / "docstrings.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            record = json.loads(line)
            docs.append((record["meta"]["name"], record["meta"]["path"], record["text"]))
    chinese = [p for p in (corpus / "zh.txt").read_text(encoding="utf-8").splitlines() if p]
    rng = random.Random(0)
    with out.open("w", encoding="utf-8") as f:
        for _ in range(n):
            messages = []
            if rng.random() < 0.3:
                messages.append({"role": "system", "content": "You are a helpful assistant."})
            for _ in range(rng.choice((1, 1, 2, 3))):
                name, path, doc = rng.choice(docs)
                more = [rng.choice(docs)[2] for _ in range(rng.randint(0, 3))]
                answer = "\n\n".join([doc, *more])
                if chinese and rng.random() < 0.2:
                    answer = "\n".join(rng.choice(chinese) for _ in range(rng.randint(2, 8)))
                messages.append({"role": "user", "content": f"What does {name} in {path} do?"})
                messages.append({"role": "assistant", "content": answer})
            f.write(json.dumps({"messages": messages}, ensure_ascii=False) + "\n")


def make_data(work: Path, scale: Scale) -> tuple[Path, Path, Path]:
    """Tokenizer, pretraining shards and SFT shards under ``work``."""
    from tokenmill.demo import build_corpus

    started = time.perf_counter()
    corpus = work / "corpus"
    files = build_corpus(corpus, scale.corpus_mb)
    chats = work / "chats.jsonl"
    write_chats(corpus, chats, scale.conversations)
    print(f"corpus: {len(files)} files and {scale.conversations:,} conversations "
          f"in {time.perf_counter() - started:.1f} s")  # fmt: skip
    tok, shards, sft = work / "tokenizer", work / "shards", work / "sft_shards"
    # Chats are not in the tokenizer's training text, as for a real model.
    tokenmill_cli(
        "train-tokenizer", *map(str, files), "-o", str(tok),
        "--vocab-size", str(scale.vocab_size), "--model-max-length", str(scale.block),
        "--overwrite", "--quiet",
    )  # fmt: skip
    tokenmill_cli(
        "prepare", *map(str, files), "-t", str(tok), "-o", str(shards),
        "--val-fraction", "0.01", "--overwrite", "--quiet",
    )  # fmt: skip
    tokenmill_cli(
        "prepare-sft", str(chats), "-t", str(tok), "-o", str(sft),
        "--max-length", str(scale.block), "--val-fraction", "0.01", "--overwrite", "--quiet",
    )  # fmt: skip
    return tok, shards, sft


def make_model(work: Path, tok: Path, scale: Scale) -> tuple[Path, int]:
    """A randomly initialised Qwen2-style model in bf16, saved with the
    tokenizer's own files; returns its directory and parameter count."""
    import torch
    import transformers

    vocab = json.loads((work / "shards" / "manifest.json").read_text())["tokenizer"]["vocab_size"]
    tokenizer = transformers.AutoTokenizer.from_pretrained(tok)
    config = transformers.Qwen2Config(
        vocab_size=vocab,
        hidden_size=scale.hidden,
        num_hidden_layers=scale.layers,
        num_attention_heads=scale.heads,
        num_key_value_heads=scale.kv_heads,
        intermediate_size=scale.ffn,
        max_position_embeddings=max(4096, scale.block),
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        dtype="bfloat16",
    )
    started = time.perf_counter()
    transformers.utils.logging.disable_progress_bar()
    torch.manual_seed(0)
    model = transformers.Qwen2ForCausalLM(config).to(torch.bfloat16)
    params = sum(p.numel() for p in model.parameters())
    model_dir = work / "model"
    model.save_pretrained(model_dir)
    # The same files (so the same fingerprint) the shards were prepared with.
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (tok / name).is_file():
            shutil.copy(tok / name, model_dir / name)
    print(
        f"model: Qwen2-style, {params / 1e6:,.1f}M parameters (hidden {scale.hidden}, "
        f"{scale.layers} layers, vocab {vocab:,}), bf16, in {time.perf_counter() - started:.1f} s"
    )
    return model_dir, params


# ---- running a case ----


def child_env(gpu: str | None = None) -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    return env


@functools.cache
def import_error(module: str) -> str:
    """Why ``import module`` fails ('' when it works), tried in a child
    process (bitsandbytes and deepspeed look for the GPU when imported)."""
    if importlib.util.find_spec(module) is None:
        return f"{module} is not installed"
    done = subprocess.run(
        [sys.executable, "-c", f"import {module}"], capture_output=True, text=True, env=child_env()
    )
    if done.returncode == 0:
        return ""
    last = (done.stderr.strip().splitlines() or ["?"])[-1]
    return f"import {module} fails: {last}"


def missing(needs: list[str], gpus: int) -> str:
    """Why a case cannot run here ('' when it can)."""
    for need in needs:
        if need == "cuda" and gpus == 0:
            return "no CUDA GPU"
        if need != "cuda" and import_error(need):
            return import_error(need)
    return ""


def case_command(case: Case, model: Path, data: Path, out: Path, scale: Scale, world: int):
    if case.distributed:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                    f"--nproc_per_node={world}", "-m", "tokenmill"]  # fmt: skip
    else:
        launcher = [sys.executable, "-m", "tokenmill"]
    return [
        *launcher, case.command, "--model", str(model), "--data", str(data), "--out", str(out),
        "--max-steps", str(scale.steps), "--per-device-train-batch-size", str(scale.batch),
        "--block-size", str(scale.block), "--logging-steps", str(scale.logging_steps),
        "--eval-strategy", "no", "--save-strategy", "no", "--max-eval-samples", "16",
        "--resume-from-checkpoint", "none", *case.flags,
    ]  # fmt: skip


def watch_memory() -> subprocess.Popen[str] | None:
    """nvidia-smi printing the used memory of every GPU twice a second."""
    if shutil.which("nvidia-smi") is None:
        return None
    return subprocess.Popen(
        ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-lms", "500"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def peak_memory(watcher: subprocess.Popen[str] | None) -> int | None:
    """Stops the watcher; the most MiB any GPU used while it ran."""
    if watcher is None:
        return None
    watcher.terminate()
    text, _ = watcher.communicate()
    values = [int(v) for v in text.split() if v.strip().isdigit()]
    return max(values) if values else None


def steady_tokens_per_second(out: Path, metrics: dict[str, Any]) -> float | None:
    """Tokens/s between the first logged step after step 1 and the last,
    from the wall times of the run's TensorBoard loss events; tokens per
    step are metrics.json's average (exact for concat packing)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "logs"))
    events.Reload()
    if "train/loss" not in events.Tags()["scalars"]:
        return None
    logged = [e for e in events.Scalars("train/loss") if e.step > 1]
    if len(logged) < 2 or not metrics.get("global_step"):
        return None
    first, last = logged[0], logged[-1]
    tokens = metrics["tokens_per_second"] * metrics["train_seconds"]
    per_step = tokens / metrics["global_step"]
    return per_step * (last.step - first.step) / (last.wall_time - first.wall_time)


def run_case(
    case: Case, work: Path, model: Path, data: Path, scale: Scale, gpus: int, timeout: float
) -> Result:
    world = max(gpus, 1) if case.distributed else 1
    result = Result(case.name, "skipped", world=world)
    why = missing(case.needs, gpus)
    if why:
        result.reason = why
        return result
    out = work / "runs" / case.name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    command = case_command(case, model, data, out, scale, world)
    (out / "command.txt").write_text(" ".join(command) + "\n")
    env = child_env(None if case.distributed or gpus == 0 else "0")
    stderr_at_timeout = None  # its size then: what follows is the traceback of the kill
    watcher = watch_memory()
    started = time.perf_counter()
    with (out / "stdout.log").open("w") as stdout, (out / "stderr.log").open("w") as stderr:
        proc = subprocess.Popen(command, stdout=stdout, stderr=stderr, env=env,
                                start_new_session=True)  # fmt: skip
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            code = None
            stderr.flush()
            stderr_at_timeout = (out / "stderr.log").stat().st_size
            # SIGTERM first: torchrun then ends its workers, which run in
            # sessions of their own; SIGKILL to the group if that hangs.
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    result.wall_seconds = round(time.perf_counter() - started, 1)
    result.peak_memory_mib = peak_memory(watcher)
    metrics_file = out / "metrics.json"
    if code != 0 or not metrics_file.is_file():
        result.status = "timeout" if code is None else "failed"
        result.reason = f"no end within {timeout:.0f} s" if code is None else f"exit {code}"
        with (out / "stderr.log").open("rb") as f:
            text = f.read(stderr_at_timeout).decode(errors="replace")
        result.stderr_tail = text.splitlines()[-20:]
        return result
    metrics = json.loads(metrics_file.read_text())
    result.status = "ok"
    result.steps = metrics.get("global_step")
    result.train_loss = metrics.get("train_loss")
    result.tokens_per_second = metrics.get("tokens_per_second")
    result.steady_tokens_per_second = steady_tokens_per_second(out, metrics)
    return result


# ---- report ----


def gpu_info() -> tuple[int, str, float | None]:
    """Number of GPUs, the first one's name, and its peak bf16 FLOP/s (None
    if not in the table). Asked in a child process, so that this one holds
    no GPU memory while the cases run."""
    ask = (
        "import torch; n = torch.cuda.device_count(); "
        "print(n, torch.cuda.get_device_name(0) if n else '')"
    )
    done = subprocess.run([sys.executable, "-c", ask], capture_output=True, text=True, check=True)
    count, _, name = done.stdout.strip().partition(" ")
    if int(count) == 0:
        return 0, "none (CPU)", None
    peak = next((flops for key, flops in PEAK_FLOPS if key in name), None)
    return int(count), name, peak


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(results: list[Result]) -> None:
    print()
    print(
        f"{'case':<10} {'status':<8} {'steps':>5} {'tok/s run':>10} {'tok/s steady':>12} "
        f"{'MFU':>6} {'peak GiB':>8} {'wall s':>7}"
    )
    for r in results:
        memory = None if r.peak_memory_mib is None else r.peak_memory_mib / 1024
        print(
            f"{r.case:<10} {r.status:<8} {fmt(r.steps, 'd'):>5} "
            f"{fmt(r.tokens_per_second, ',.0f'):>10} "
            f"{fmt(r.steady_tokens_per_second, ',.0f'):>12} {fmt(r.mfu, '.1%'):>6} "
            f"{fmt(memory, '.1f'):>8} {fmt(r.wall_seconds, '.0f'):>7}"
        )
    for r in results:
        if r.reason:
            print(f"{r.case}: {r.status}: {r.reason}")
        for line in r.stderr_tail:
            print(f"  | {line}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--work", default="/tmp/gpu_check", help="Scratch directory (replaced).")
    p.add_argument("--json", default=None, help="Write the figures to this JSON file.")
    p.add_argument("--cases", default=None, help="Comma-separated case names (default: all).")
    p.add_argument(
        "--budget",
        type=float,
        default=480,
        help="Seconds for everything; a case gets what is left, up to its own timeout.",
    )
    p.add_argument("--peak-tflops", type=float, default=None, help="Override the GPU table.")
    p.add_argument(
        "--dry-run", action="store_true", help="Tiny model, 3 steps, CPU; CUDA cases skipped."
    )
    a = p.parse_args()
    started = time.perf_counter()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the GPU machine has no network
    scale = DRY if a.dry_run else FULL

    gpus, gpu_name, peak = gpu_info()
    if a.dry_run:
        gpus, gpu_name, peak = 0, "none (dry run: CPU)", None
    if a.peak_tflops:
        peak = a.peak_tflops * 1e12
    if peak:
        print(f"GPU: {gpus} x {gpu_name}; MFU against {peak / 1e12:,.0f} TFLOP/s bf16 dense each")
    else:
        print(f"GPU: {gpus} x {gpu_name}; peak FLOP/s unknown (--peak-tflops): no MFU")

    work = Path(a.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    tok, shards, sft_shards = make_data(work, scale)
    model, params = make_model(work, tok, scale)
    write_configs(work)

    chosen = cases(work)
    if a.cases:
        names = a.cases.split(",")
        chosen = [c for c in chosen if c.name in names]
    results = []
    for case in chosen:
        left = a.budget - (time.perf_counter() - started)
        timeout = min(scale.case_timeout, left)
        if timeout < 30 and not missing(case.needs, gpus):
            results.append(Result(case.name, "skipped", f"time budget of {a.budget:.0f} s spent"))
            print(f"{case.name}: skipped, time budget spent", flush=True)
            continue
        data = sft_shards if case.command == "sft" else shards
        r = run_case(case, work, model, data, scale, gpus, timeout)
        if r.steady_tokens_per_second and peak:
            flops_per_token = (4 if case.adapters else 6) * params
            r.mfu = flops_per_token * r.steady_tokens_per_second / (peak * r.world)
        results.append(r)
        print(
            f"{case.name}: {r.status}"
            + (f" ({r.reason})" if r.reason else "")
            + (f", {r.wall_seconds:.0f} s" if r.wall_seconds is not None else ""),
            flush=True,
        )

    print_table(results)
    total = time.perf_counter() - started
    print(f"done in {total:.0f} s; runs in {work}/runs (command.txt, stdout.log, stderr.log)")
    if a.json:
        report = {
            "gpu": gpu_name,
            "gpus": gpus,
            "peak_flops": peak,
            "params": params,
            "scale": scale.__dict__,
            "seconds": round(total, 1),
            "cases": [r.__dict__ for r in results],
        }
        Path(a.json).write_text(json.dumps(report, indent=2))
        print(f"figures written to {a.json}")
    if any(r.status in ("failed", "timeout") for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
