"""Training on token shards: tiny LLaMA from scratch, continued pretraining,
supervised fine-tuning, and evaluation, through Hugging Face ``Trainer``.

One function runs all three flows (`train`); the differences are where the
model comes from (a preset built from the shards' tokenizer, or a local HF
directory whose tokenizer must match the shards'), the data (SFT shards carry
loss masks), adapters (`tokenmill.sft`) and the defaults.

Decisions, and why:
- The training set is a `TrainStream` (an IterableDataset) rather than a
  map-style dataset with Trainer's sampler: its position is one number, so a
  resumed run continues exactly where the checkpoint was taken in O(1)
  (Trainer would fast-forward by drawing and discarding every skipped batch),
  each rank reads only its own batches, and ``num_train_epochs`` becomes
  ``max_steps`` computed here.
- The loss is a chunked cross-entropy over the last hidden states: logits are
  made a chunk of rows at a time (128 MiB of fp32 logits by default) and
  their gradients taken in the same pass (no recompute), so a 152k
  vocabulary never materialises (batch x block x vocab) fp32 logits. It is a
  sum divided by Trainer's ``num_items_in_batch``, the tokens of the whole
  accumulated step, so gradient accumulation and DDP give the loss of one
  big batch.
- Only rank 0 writes files of its own; checkpoints and models go through
  Trainer, which gathers FSDP/DeepSpeed state.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import json
import math
import os
import re
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from tokenmill import _core, attention
from tokenmill._text import counted
from tokenmill.config import PRESETS, TrainConfig
from tokenmill.data import IGNORE_INDEX, PackedDataset, Source, TrainStream, collate
from tokenmill.sft import add_lora, is_adapter_dir, load_causal_lm, merge_adapter
from tokenmill.sft import quantization_config as _quantization
from tokenmill.shards import read_manifest

DATA_STATE = "tokenmill_data.json"
# Files of a checkpoint that belong to the trainer, not to the model.
TRAINER_FILES = re.compile(
    r"^(optimizer\.pt|scheduler\.pt|rng_state.*\.pth|trainer_state\.json|training_args\.bin|"
    + re.escape(DATA_STATE)
    + r"|global_step.*|latest|zero_to_fp32\.py)$"
)


# ---- loss ----


class _LinearCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of ``hidden @ weight.T + bias`` against labels,
    one chunk of rows at a time, with the gradients of hidden, weight and
    bias made in the same pass (softmax minus one-hot, two matmuls), so the
    logits are neither kept nor recomputed for backward."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        labels: torch.Tensor,
        chunk: int,
    ) -> torch.Tensor:
        dtype = hidden.dtype
        w = weight.to(dtype)
        grad_h = torch.empty_like(hidden)
        # A frozen head (LoRA) needs no weight gradient: skip its matmul.
        train_head = ctx.needs_input_grad[1]
        grad_w = (
            torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
            if train_head
            else torch.empty(0)
        )
        grad_b = None if bias is None else torch.zeros_like(bias, dtype=torch.float32)
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for s in range(0, labels.numel(), chunk):
            h, y = hidden[s : s + chunk], labels[s : s + chunk]
            logits = F.linear(h, w, None if bias is None else bias.to(dtype)).float()
            lse = torch.logsumexp(logits, dim=-1)
            rows = torch.arange(y.numel(), device=y.device)
            total += (lse - logits[rows, y]).sum()
            g = logits.sub_(lse.unsqueeze(1)).exp_()  # softmax, in place
            g[rows, y] -= 1.0
            g = g.to(dtype)
            grad_h[s : s + chunk] = g @ w
            if train_head:
                grad_w += (g.t() @ h).float()
            if grad_b is not None and ctx.needs_input_grad[2]:
                grad_b += g.float().sum(0)
        ctx.save_for_backward(grad_h, grad_w, grad_b if grad_b is not None else torch.empty(0))
        ctx.weight_dtype = weight.dtype
        return total

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        grad_h, grad_w, grad_b = ctx.saved_tensors
        scale = grad_out.float()
        return (
            grad_h * scale.to(grad_h.dtype),
            (grad_w * scale).to(ctx.weight_dtype) if ctx.needs_input_grad[1] else None,
            (grad_b * scale).to(ctx.weight_dtype) if ctx.needs_input_grad[2] else None,
            None,
            None,
        )


def chunked_cross_entropy(
    hidden: torch.Tensor, head: torch.nn.Linear, labels: torch.Tensor, chunk_tokens: int
) -> tuple[torch.Tensor, int]:
    """Summed next-token cross-entropy of ``hidden`` (B, T, H) against
    ``labels`` (B, T) shifted by one, -100 ignored, and the count of
    predicted tokens. Peak extra memory: one chunk of fp32 logits (plus a
    weight-sized fp32 gradient when training)."""
    h = hidden[:, :-1, :].reshape(-1, hidden.shape[-1])
    y = labels[:, 1:].reshape(-1)
    keep = (y != IGNORE_INDEX).nonzero().squeeze(1)
    h, y = h.index_select(0, keep), y.index_select(0, keep)
    if torch.is_grad_enabled() and (h.requires_grad or head.weight.requires_grad):
        return _LinearCrossEntropy.apply(h, head.weight, head.bias, y, chunk_tokens), int(y.numel())
    total = torch.zeros((), dtype=torch.float32, device=h.device)
    for s in range(0, y.numel(), chunk_tokens):
        logits = head(h[s : s + chunk_tokens]).float()
        total += F.cross_entropy(logits, y[s : s + chunk_tokens], reduction="sum")
    return total, int(y.numel())


# fp32 logits per loss chunk by default: 128 MiB is ~220 rows of a 152k
# vocabulary, ~1000 of a 32k one; larger chunks gain little speed.
CHUNK_LOGIT_BYTES = 128 << 20


def default_chunk_tokens(vocab_size: int) -> int:
    return max(64, CHUNK_LOGIT_BYTES // (4 * vocab_size))


def enable_chunked_loss(model: Any, chunk_tokens: int | None = None) -> bool:
    """Makes ``model(…, labels=…)`` compute its loss with
    `chunked_cross_entropy` (no full logits). Models that transform logits
    before the loss (soft-capping, logit scales) keep their own forward;
    returns whether chunking is on."""
    config = model.config
    head = model.get_output_embeddings()
    if not isinstance(head, torch.nn.Linear):
        return False
    chunk = chunk_tokens or default_chunk_tokens(head.weight.shape[0])
    if any(
        getattr(config, k, None) not in (None, 1.0)
        for k in ("final_logit_softcapping", "logit_scale", "logits_scaling")
    ):
        return False
    decoder = model.get_decoder()
    if decoder is None:
        return False
    own_forward = model.forward

    from transformers.modeling_outputs import CausalLMOutputWithPast

    def forward(
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        num_items_in_batch: torch.Tensor | int | None = None,
        **kwargs: Any,
    ) -> Any:
        if labels is None:
            return own_forward(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                **kwargs,
            )
        out = decoder(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=False,
            **kwargs,
        )
        total, count = chunked_cross_entropy(out.last_hidden_state, head, labels, chunk)
        denominator = num_items_in_batch if num_items_in_batch is not None else max(count, 1)
        return CausalLMOutputWithPast(loss=total / denominator)

    model.forward = forward
    return True


# ---- models and tokenizers ----


def _tokenizer_dir(manifest: dict[str, Any]) -> Path:
    path = Path(manifest["tokenizer"]["path"])
    if not path.exists():
        raise FileNotFoundError(
            f"the shards' tokenizer {path} is gone; it is needed to save a usable model"
        )
    return path.parent


def load_tokenizer(path: Path) -> Any:
    """transformers tokenizer of a directory (or of a bare tokenizer.json)."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if (path / "tokenizer_config.json").is_file():
        return AutoTokenizer.from_pretrained(path)
    return PreTrainedTokenizerFast(tokenizer_file=str(path / "tokenizer.json"))


def check_tokenizer(model_dir: str | Path, manifest: dict[str, Any], data: str) -> None:
    """Refuses a model whose tokenizer is not the one the shards were made
    with (fingerprints differ); the same tokenizer re-saved is accepted."""
    mine = manifest["tokenizer"]
    try:
        theirs = json.loads(_core.tokenizer_info(os.fspath(model_dir)))
    except (_core.TokenmillError, OSError) as e:
        raise ValueError(
            f"cannot check the tokenizer of {model_dir} against the shards in {data}: {e}"
        ) from e
    if theirs["fingerprint"] != mine["fingerprint"]:
        raise ValueError(
            "tokenizer mismatch: the model's tokenizer "
            f"{theirs['path']} (vocab {theirs['vocab_size']}, fingerprint "
            f"{theirs['fingerprint'][:12]}) is not the shards' tokenizer {mine['path']} "
            f"(vocab {mine['vocab_size']}, fingerprint {mine['fingerprint'][:12]}) of {data}; "
            "re-run `tokenmill prepare` with the model's tokenizer"
        )


def build_model(cfg: TrainConfig, manifest: dict[str, Any]) -> Any:
    """A preset LLaMA sized to the shards' vocabulary, or a local checkpoint
    (whose tokenizer the caller has checked against the shards)."""
    import transformers

    kwargs = {}
    if cfg.attn_implementation:
        kwargs["attn_implementation"] = cfg.attn_implementation
    elif cfg.packing == "doc":
        kwargs["attn_implementation"] = attention.register()  # per-document SDPA
    if cfg.model:
        quantization = _quantization(cfg)
        if quantization is not None:
            kwargs.update(
                quantization_config=quantization,
                device_map={"": int(os.environ.get("LOCAL_RANK", "0"))},
            )
        # An absolute path: LoRA adapters record it as their base model.
        model = transformers.AutoModelForCausalLM.from_pretrained(
            os.path.abspath(cfg.model),
            dtype=torch.float32 if quantization is None else "auto",
            **kwargs,
        )
        vocab = model.get_input_embeddings().weight.shape[0]
        if vocab < manifest["tokenizer"]["vocab_size"]:
            raise ValueError(
                f"{cfg.model} has {vocab} embeddings, the shards' tokenizer "
                f"{manifest['tokenizer']['vocab_size']} tokens"
            )
        return _name_tied_weights(model)
    tok = manifest["tokenizer"]
    config = transformers.LlamaConfig(
        vocab_size=tok["vocab_size"],
        bos_token_id=tok["bos_id"],
        eos_token_id=tok["eos_id"],
        pad_token_id=tok.get("pad_id"),
        tie_word_embeddings=True,
        rms_norm_eps=1e-5,
        **PRESETS[cfg.preset],
    )
    torch.manual_seed(cfg.seed)
    return _name_tied_weights(transformers.LlamaForCausalLM._from_config(config, **kwargs))


def _name_tied_weights(model: Any) -> Any:
    """Lists the model's tied weights (the LM head of tied-embedding models)
    in ``_keys_to_ignore_on_save`` too. Trainer reloads checkpoints (resume,
    best model) non-strictly and re-ties the weights when the missing keys
    are exactly those; otherwise it warns ``missing keys ['lm_head.weight']``.
    Tied weights are never saved, so they are always missing, but
    transformers 5 lists them only in ``all_tied_weights_keys``, which
    Trainer does not read. Saving drops them either way."""
    tied = getattr(model, "all_tied_weights_keys", None)
    if tied:
        model._keys_to_ignore_on_save = set(model._keys_to_ignore_on_save or ()) | set(tied)
    return model


# ---- data ----


def parse_sources(cfg: TrainConfig) -> list[tuple[str, float | None]]:
    """``(directory, weight or None)`` of ``data`` then each ``mix`` entry."""
    out: list[tuple[str, float | None]] = []
    for spec in [cfg.data or "", *cfg.mix]:
        path, sep, weight = spec.rpartition(":")
        if sep and weight and re.fullmatch(r"\d*\.?\d+(e-?\d+)?", weight):
            out.append((path, float(weight)))
        else:
            out.append((spec, None))
    if not out[0][0]:
        raise ValueError("no training data: give data=DIR")
    for path, weight in out[1:]:
        if weight is None:
            raise ValueError(f"mix={path!r} has no weight: give DIR:WEIGHT")
    return out


def resolve_weights(specs: list[tuple[str, float | None]]) -> list[float]:
    """Mix weights: given ones as they are; an unweighted ``data`` takes
    what the mixes leave of 1 (``--mix general:0.2`` means 20% general)."""
    mixed = sum(w for _, w in specs[1:] if w is not None)
    first = specs[0][1]
    if first is None:
        if mixed >= 1:
            raise ValueError(f"the mix weights sum to {mixed:g}; give data=DIR:WEIGHT too")
        first = 1.0 - mixed
    weights = [first] + [w for _, w in specs[1:] if w is not None]
    if any(w <= 0 for w in weights):
        raise ValueError("mix weights must be > 0")
    return weights


def _world() -> tuple[int, int]:
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def latest_checkpoint(out: Path) -> Path | None:
    """The checkpoint-N with the highest N that holds a trainer state."""
    found = [
        (int(p.name.split("-")[1]), p)
        for p in out.glob("checkpoint-*")
        if p.name.split("-")[1].isdigit() and (p / "trainer_state.json").is_file()
    ]
    return max(found)[1] if found else None


# ---- the run ----


def _run_callback(stream: TrainStream, out: Path) -> Any:
    """Saves the loader position into each checkpoint and redraws loss.png
    whenever there is something new to show."""
    from transformers import TrainerCallback

    # args.process_index, not state.is_world_process_zero: transformers 5.23
    # rebuilds the state at train start with that flag True on every rank.
    class RunCallback(TrainerCallback):  # type: ignore[misc]
        def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if args.process_index != 0:
                return
            ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if ckpt.is_dir():
                ga = args.gradient_accumulation_steps
                stream.position = state.global_step * stream.batch_size * ga
                _write_json(ckpt / DATA_STATE, stream.state_dict())
            plot_losses(state.log_history, out / "loss.png")

        def on_evaluate(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if args.process_index == 0:
                plot_losses(state.log_history, out / "loss.png")

    return RunCallback()


def _write_json(path: Path, value: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _precision(cfg: TrainConfig) -> tuple[bool, bool]:
    cuda = torch.cuda.is_available()
    bf16_ok = cuda and torch.cuda.is_bf16_supported()
    bf16 = cfg.bf16 == "true" or (cfg.bf16 == "auto" and bf16_ok)
    fp16 = not bf16 and (cfg.fp16 == "true" or (cfg.fp16 == "auto" and cuda))
    return bf16, fp16


def train(cfg: TrainConfig, callbacks: Sequence[Any] = (), console: bool = True) -> dict[str, Any]:
    """Runs one training job (pretrain when ``cfg.model`` is None, else CPT)
    and returns the final metrics; see docs/recipes.md for the outputs.
    ``callbacks`` are extra ``transformers.TrainerCallback`` objects;
    ``console=False`` prints nothing (no plan, progress bar or log lines),
    for callers that show progress their own way."""
    from transformers.integrations import TensorBoardCallback

    if not cfg.output_dir:
        raise ValueError("no run directory: give output_dir=DIR")
    out = Path(cfg.output_dir)
    rank, world = _world()
    specs = parse_sources(cfg)
    weights = resolve_weights(specs)
    manifest = read_manifest(specs[0][0])
    if (cfg.lora or cfg.optim.startswith("galore")) and not cfg.model:
        raise ValueError("LoRA and GaLore fine-tune a model: give model=DIR")
    if cfg.optim.startswith("galore"):
        # Before anything loads; Trainer would raise a bare ImportError later.
        import galore_torch  # noqa: F401
    for path, _ in specs[1:]:
        other = read_manifest(path)["tokenizer"]["fingerprint"]
        if other != manifest["tokenizer"]["fingerprint"]:
            raise ValueError(f"mix={path!r} was tokenized with another tokenizer than {cfg.data}")
    block = cfg.block_size or (
        PRESETS[cfg.preset]["max_position_embeddings"] if not cfg.model else 1024
    )
    sources = [
        Source(PackedDataset(path, "train", block, cfg.packing), w)
        for (path, _), w in zip(specs, weights, strict=True)
    ]
    if cfg.max_train_samples:
        sources[0].dataset.limit(cfg.max_train_samples)
    b, ga = cfg.per_device_train_batch_size, cfg.gradient_accumulation_steps
    stream = TrainStream(sources, b, seed=cfg.seed, rank=rank, world_size=world)
    global_batch = b * ga * world
    steps_per_epoch = max(1, math.ceil(stream.samples_per_epoch() / global_batch))
    max_steps = (
        cfg.max_steps if cfg.max_steps > 0 else math.ceil(cfg.num_train_epochs * steps_per_epoch)
    )

    eval_set = None
    if cfg.eval_strategy != "no" and "val" in manifest["splits"]:
        eval_set = PackedDataset(specs[0][0], "val", block, cfg.packing)
        if cfg.max_eval_samples:
            eval_set.limit(cfg.max_eval_samples)
        if len(eval_set) == 0:
            eval_set = None
    if eval_set is None and cfg.load_best_model_at_end:
        raise ValueError(
            f"load_best_model_at_end needs a val split of {block}+ tokens in {cfg.data}"
        )

    if cfg.model:
        check_tokenizer(cfg.model, manifest, cfg.data or "")
    tokenizer = load_tokenizer(Path(cfg.model) if cfg.model else _tokenizer_dir(manifest))
    model = build_model(cfg, manifest)
    chunked = cfg.chunked_loss and enable_chunked_loss(model, cfg.loss_chunk_tokens)
    if cfg.lora:
        model = add_lora(model, cfg)

    bf16, fp16 = _precision(cfg)
    args = _training_arguments(
        cfg, model, max_steps, steps_per_epoch, eval_set is not None, bf16, fp16, console
    )
    if args.world_size != world:
        raise RuntimeError(
            f"{world} processes were launched but Trainer sees a world of {args.world_size}; "
            "the ranks would train separate models"
        )
    start_step = 0
    resume = _resume_point(cfg, out)
    if resume is not None:
        state = json.loads((resume / "trainer_state.json").read_text())
        data_state = resume / DATA_STATE
        if not data_state.is_file():
            raise ValueError(f"{resume} has no {DATA_STATE}; it was not written by tokenmill")
        stream.load_state_dict(json.loads(data_state.read_text()))
        start_step = int(state["global_step"])
        if stream.position != start_step * b * ga:
            raise ValueError(f"{resume}: loader position and global step disagree")

    trainer = _make_trainer(
        model=model,
        args=args,
        train_dataset=stream,
        eval_dataset=eval_set,
        data_collator=functools.partial(collate, pad_id=sources[0].dataset.pad_id),
        processing_class=tokenizer,
    )
    trainer.add_callback(_run_callback(stream, out))
    if not console:  # without a progress bar Trainer prints every log dict instead
        from transformers import PrinterCallback

        trainer.remove_callback(PrinterCallback)
    for callback in callbacks:
        trainer.add_callback(callback)
    if trainer.is_world_process_zero():
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.resolved.yaml").write_text(cfg.to_yaml(), encoding="utf-8")
        board = TensorBoardCallback()
        board.logging_dir = str(out / "logs")
        trainer.add_callback(board)
        _write_run_manifest(out, cfg, sources, eval_set, model, max_steps, chunked, bf16, fp16)
        if console:
            _announce(cfg, sources, model, max_steps, global_batch, block, resume, chunked)

    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    seconds = time.perf_counter() - started
    merge = cfg.lora and cfg.merge_lora  # final_model/ will be the merged model
    trainer.save_model(str(out / ("final_adapter" if merge else "final_model")))
    metrics: dict[str, Any] = {
        "train_loss": result.training_loss,
        "global_step": trainer.state.global_step,
        "steps_this_run": trainer.state.global_step - start_step,
        "train_seconds": round(seconds, 2),
        **trainer.throughput(seconds),
    }
    if eval_set is not None:
        ev = trainer.evaluate()
        metrics["eval_loss"] = ev["eval_loss"]
        metrics["perplexity"] = math.exp(min(ev["eval_loss"], 50.0))
    best = trainer.state.best_model_checkpoint
    if trainer.is_world_process_zero():
        if merge:
            tokenizer.save_pretrained(out / "final_adapter")
            merge_adapter(out / "final_adapter", out / "final_model", base=cfg.model)
        else:
            tokenizer.save_pretrained(out / "final_model")
        if best and merge and is_adapter_dir(best):
            merge_adapter(best, out / "best_model", base=cfg.model)
        elif best:
            _copy_model(Path(best), out / "best_model")
        if best:
            metrics["best_model_checkpoint"] = Path(best).name
            metrics["best_eval_loss"] = trainer.state.best_metric
        _write_json(out / "metrics.json", metrics)
        plot_losses(trainer.state.log_history, out / "loss.png")
    return metrics


def _training_arguments(
    cfg: TrainConfig,
    model: Any,
    max_steps: int,
    steps_per_epoch: int,
    has_eval: bool,
    bf16: bool,
    fp16: bool,
    console: bool = True,
) -> Any:
    """Trainer's arguments from the config: epochs already turned into
    steps, per-epoch evaluation/saving into every ``steps_per_epoch``."""
    import transformers

    def in_steps(strategy: str, every: int) -> tuple[str, int]:
        return ("steps", steps_per_epoch) if strategy == "epoch" else (strategy, every)

    eval_strategy, eval_steps = in_steps(cfg.eval_strategy if has_eval else "no", cfg.eval_steps)
    save_strategy, save_steps = in_steps(cfg.save_strategy, cfg.save_steps or cfg.eval_steps)
    extra: dict[str, Any] = {}
    if _world()[1] > 1 and not torch.cuda.is_available():
        # CPU DDP: without use_cpu accelerate sets up no process group at all
        # and every rank would train alone.
        extra.update(use_cpu=True, ddp_backend="gloo")
    if cfg.gradient_checkpointing:  # named activation_checkpointing since transformers 5.x
        names = {f.name for f in dataclasses.fields(transformers.TrainingArguments)}
        new = "activation_checkpointing"
        extra[new if new in names else "gradient_checkpointing"] = True
    return transformers.TrainingArguments(
        output_dir=str(cfg.output_dir),
        learning_rate=cfg.learning_rate,
        weight_decay=cfg.weight_decay,
        adam_beta2=cfg.adam_beta2,
        max_steps=max_steps,
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        per_device_eval_batch_size=cfg.per_device_eval_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        lr_scheduler_type=cfg.lr_scheduler_type,
        warmup_steps=round(cfg.warmup_ratio * max_steps),
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        disable_tqdm=not console,
        eval_strategy=eval_strategy,
        eval_steps=eval_steps,
        eval_on_start=cfg.eval_on_start and has_eval,
        save_strategy=save_strategy,
        save_steps=save_steps,
        save_total_limit=cfg.save_total_limit,
        load_best_model_at_end=cfg.load_best_model_at_end and has_eval,
        metric_for_best_model="eval_loss" if has_eval else None,
        greater_is_better=False,
        bf16=bf16,
        fp16=fp16,
        max_grad_norm=cfg.max_grad_norm,
        seed=cfg.seed,
        optim=cfg.optim,
        optim_args=cfg.optim_args,
        optim_target_modules=cfg.optim_target_modules.split(",")
        if cfg.optim_target_modules
        else None,
        deepspeed=cfg.deepspeed,
        fsdp=cfg.fsdp or "",
        fsdp_config=cfg.fsdp_config,
        dataloader_num_workers=cfg.dataloader_num_workers,
        dataloader_pin_memory=torch.cuda.is_available(),
        # DDP looks for parameters a step left unused only where some can
        # be: mixture-of-experts layers (an expert may get no token). In a
        # dense model the search is a graph walk per step, and a warning.
        ddp_find_unused_parameters=any(
            getattr(model.config, k, None) for k in ("num_experts", "num_local_experts")
        ),
        report_to="none",
        ignore_data_skip=True,  # the stream resumes by position instead
        prediction_loss_only=True,
        remove_unused_columns=False,
        **extra,
    )


def _resume_point(cfg: TrainConfig, out: Path) -> Path | None:
    choice = cfg.resume_from_checkpoint
    if choice in ("none", "no", "false", ""):
        return None
    if choice == "auto":
        return latest_checkpoint(out) if out.is_dir() else None
    path = Path(choice)
    if not (path / "trainer_state.json").is_file():
        raise FileNotFoundError(f"{path} is not a checkpoint (no trainer_state.json)")
    return path


def _make_trainer(**kwargs: Any) -> Any:
    from torch.utils.data import DataLoader
    from transformers import Trainer

    class StreamTrainer(Trainer):  # type: ignore[misc]
        """Trainer over a rank-aware `TrainStream`, logging tokens/s: input
        tokens (padding excluded) and trained tokens (those with a label,
        the figure that compares padded and packed SFT)."""

        # Counted on the device and read only when logging (no sync per step).
        _seen: torch.Tensor | int = 0
        _trained: torch.Tensor | int = 0

        @staticmethod
        def get_optimizer_cls_and_kwargs(args: Any, model: Any = None) -> tuple[Any, Any]:
            # galore-torch's AdamW (HF's old AdamW, which GaLore builds on)
            # warns on construction that it is deprecated unless told
            # no_deprecation_warning; Trainer passes no way to tell it.
            cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(args, model)
            if "no_deprecation_warning" in inspect.signature(cls).parameters:
                kwargs["no_deprecation_warning"] = True
            return cls, kwargs

        def get_train_dataloader(self) -> DataLoader[Any]:
            # Not passed through accelerate's prepare: the stream already gives
            # each rank its own batches (prepare would make every rank read all).
            return DataLoader(
                self.train_dataset,
                batch_size=self._train_batch_size,
                collate_fn=self.data_collator,
                num_workers=self.args.dataloader_num_workers,
                pin_memory=self.args.dataloader_pin_memory,
                persistent_workers=self.args.dataloader_num_workers > 0,
            )

        def compute_loss(self, model: Any, inputs: dict[str, Any], *a: Any, **kw: Any) -> Any:
            if model.training:
                mask = inputs.get("attention_mask")
                self._seen += inputs["input_ids"].numel() if mask is None else mask.sum()
                self._trained += (inputs["labels"][:, 1:] != IGNORE_INDEX).sum()
            return super().compute_loss(model, inputs, *a, **kw)

        def throughput(self, seconds: float) -> dict[str, float]:
            """Tokens/s of this process's training so far, times the world size."""
            world = self.args.world_size
            return {
                "tokens_per_second": round(int(self._seen) * world / seconds, 1),
                "trained_tokens_per_second": round(int(self._trained) * world / seconds, 1),
            }

        def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
            if "loss" in logs and start_time is not None:
                elapsed = time.time() - start_time
                if elapsed > 0:
                    logs.update(self.throughput(elapsed))
            super().log(logs, start_time)

    return StreamTrainer(**kwargs)


@contextlib.contextmanager
def atomic_dir(dest: Path) -> Iterator[Path]:
    """A fresh directory beside ``dest`` to fill; it replaces ``dest`` when the
    block ends without an error (so ``dest`` is never half written)."""
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    yield tmp
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)


def _copy_model(checkpoint_dir: Path, dest: Path) -> None:
    """The model and tokenizer files of a checkpoint, as a plain HF directory."""
    with atomic_dir(dest) as tmp:
        for f in checkpoint_dir.iterdir():
            if f.is_file() and not TRAINER_FILES.match(f.name):
                shutil.copy2(f, tmp / f.name)


def _write_run_manifest(
    out: Path,
    cfg: TrainConfig,
    sources: list[Source],
    eval_set: PackedDataset | None,
    model: Any,
    max_steps: int,
    chunked: bool,
    bf16: bool,
    fp16: bool,
) -> None:
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    _write_json(
        out / "manifest.json",
        {
            "kind": "tokenmill-run",
            "tokenmill_version": _core.__version__,
            "torch_version": torch.__version__,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "model": {
                "from": cfg.model or f"preset {cfg.preset}",
                "architecture": type(model).__name__,
                "parameters": params,
                "trainable_parameters": trainable,
                "config": model.config.to_dict(),
            },
            "data": [
                {**s.dataset.fingerprint, "weight": s.weight, "tokens": s.dataset.num_tokens}
                for s in sources
            ],
            "eval": eval_set.fingerprint if eval_set else None,
            "max_steps": max_steps,
            "chunked_loss": chunked,
            "adapters": "qlora"
            if cfg.qlora
            else "lora-8bit"
            if cfg.load_in_8bit
            else "lora"
            if cfg.lora
            else None,
            "optimizer": {"name": cfg.optim, "args": cfg.optim_args},
            "precision": "bf16" if bf16 else "fp16" if fp16 else "fp32",
            "world_size": _world()[1],
            "config": asdict(cfg),
        },
    )


def _announce(
    cfg: TrainConfig,
    sources: list[Source],
    model: Any,
    max_steps: int,
    global_batch: int,
    block: int,
    resume: Path | None,
    chunked: bool,
) -> None:
    params = sum(p.numel() for p in model.parameters())
    print(f"model        {cfg.model or cfg.preset}: {params / 1e6:,.2f}M parameters")
    for s in sources:
        d = s.dataset
        samples = (
            f"{counted(len(d), 'document')} of up to"
            if cfg.packing == "pad"
            else f"{counted(len(d), 'block')} of"
        )
        print(
            f"data         {d.shards.path} ({d.mode}, weight {s.weight:g}): "
            f"{samples} {block} tokens"
        )
    print(
        f"plan         {counted(max_steps, 'step')} x {counted(global_batch, 'sample')} "
        f"of up to {block} tokens; loss " + ("chunked" if chunked else "the model's own")
    )
    if resume:
        print(f"resume       from {resume}")


def plot_losses(history: list[dict[str, Any]], path: Path) -> None:
    """Train and eval loss against the step, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(h["step"], h["loss"]) for h in history if "loss" in h]
    evals = [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h]
    if not train and not evals:
        return
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train, strict=True), label="train loss")
    if evals:
        ax.plot(*zip(*evals, strict=True), marker="o", label="eval loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


# ---- evaluation ----


@torch.no_grad()
def evaluate(
    model_dir: str | Path,
    data: str | Path,
    split: str = "val",
    block_size: int | None = None,
    packing: str = "concat",
    batch_size: int = 8,
    max_eval_samples: int | None = None,
    loss_chunk_tokens: int | None = None,
) -> dict[str, Any]:
    """Token-weighted loss and perplexity of a model (or LoRA adapter
    directory) on one split."""
    manifest = read_manifest(data)
    check_tokenizer(model_dir, manifest, str(data))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    model = load_causal_lm(model_dir, dtype).to(device)
    model.eval()
    block = block_size or min(getattr(model.config, "max_position_embeddings", 1024), 2048)
    dataset = PackedDataset(data, split, block, packing)  # type: ignore[arg-type]
    if max_eval_samples:
        dataset.limit(max_eval_samples)
    if len(dataset) == 0:
        raise ValueError(f"{data} ({split}) has no block of {block} tokens")
    head = model.get_output_embeddings()
    total, count = 0.0, 0
    started = time.perf_counter()
    for s in range(0, len(dataset), batch_size):
        items = [dataset[i] for i in range(s, min(s + batch_size, len(dataset)))]
        batch = collate(items, pad_id=dataset.pad_id)
        batch = {k: v.to(device) for k, v in batch.items()}
        labels = batch.pop("labels")
        hidden = model.get_decoder()(**batch, use_cache=False).last_hidden_state
        chunk = loss_chunk_tokens or default_chunk_tokens(head.weight.shape[0])
        loss_sum, n = chunked_cross_entropy(hidden, head, labels, chunk)
        total += float(loss_sum)
        count += n
    loss = total / max(count, 1)
    return {
        "model": str(model_dir),
        "data": str(data),
        "split": split,
        "block_size": block,
        "packing": packing,
        "blocks": len(dataset),
        "tokens": count,
        "loss": loss,
        "perplexity": math.exp(min(loss, 50.0)),
        "seconds": round(time.perf_counter() - started, 2),
        "device": device,
    }
