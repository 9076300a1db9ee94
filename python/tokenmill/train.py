"""Training on token shards: tiny LLaMA from scratch, continued pretraining,
supervised fine-tuning, and evaluation, through Hugging Face ``Trainer``.

One function runs all three flows (`train`); the differences are where the
model comes from (a preset built from the shards' tokenizer, or a checkpoint
whose tokenizer must match the shards': `tokenmill.models`), the data (SFT
shards carry loss masks), adapters (`tokenmill.adapters`) and the defaults
(`tokenmill.config`). The loss is `tokenmill.loss`; the files a run writes
besides Trainer's are `tokenmill.rundir`.

Decisions, and why:
- The training set is a `TrainStream` (an IterableDataset) rather than a
  map-style dataset with Trainer's sampler: its position is one number, so a
  resumed run continues exactly where the checkpoint was taken in O(1)
  (Trainer would fast-forward by drawing and discarding every skipped batch),
  each rank reads only its own batches, and ``num_train_epochs`` becomes
  ``max_steps`` computed here.
- Only rank 0 writes files of its own; checkpoints and models go through
  Trainer, which gathers FSDP/DeepSpeed state.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import math
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from tokenmill._text import counted
from tokenmill.adapters import add_lora, is_adapter_dir, merge_adapter, quantization_config
from tokenmill.config import PRESETS, TrainConfig
from tokenmill.data import IGNORE_INDEX, PackedDataset, Source, TrainStream, collate
from tokenmill.loss import enable_chunked_loss
from tokenmill.models import build_model, check_tokenizer, load_tokenizer, tokenizer_dir
from tokenmill.rundir import (
    DATA_STATE,
    copy_model,
    latest_checkpoint,
    plot_losses,
    write_json,
    write_run_manifest,
)
from tokenmill.shards import read_manifest

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
                write_json(ckpt / DATA_STATE, stream.state_dict())
            plot_losses(state.log_history, out / "loss.png")

        def on_evaluate(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if args.process_index == 0:
                plot_losses(state.log_history, out / "loss.png")

    return RunCallback()


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
    tokenizer = load_tokenizer(Path(cfg.model) if cfg.model else tokenizer_dir(manifest))
    model = build_model(cfg, manifest, quantization_config(cfg))
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
        write_run_manifest(
            out, cfg, sources, eval_set, model, max_steps, chunked, bf16, fp16, world
        )
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
            copy_model(Path(best), out / "best_model")
        if best:
            metrics["best_model_checkpoint"] = Path(best).name
            metrics["best_eval_loss"] = trainer.state.best_metric
        write_json(out / "metrics.json", metrics)
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
