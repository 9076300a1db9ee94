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
from tokenmill.models import (
    build_model,
    check_tokenizer,
    context_length,
    load_dtype,
    load_tokenizer,
    model_config,
    parameter_counts,
    resolve_model,
    tokenizer_dir,
    uses_experts,
)
from tokenmill.rundir import (
    DATA_STATE,
    copy_model,
    latest_checkpoint,
    plot_losses,
    read_best,
    save_best,
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


def _run_callback(
    trainer: Any, stream: TrainStream, out: Path, best_dir: Path, tokenizer: Any
) -> Any:
    """Saves the loader position into each checkpoint, writes ``best_dir``
    at each new lowest eval_loss (whatever the checkpoint schedule, as seed
    002's BestModelCheckpointCallback does), and redraws loss.png whenever
    there is something new to show."""
    from transformers import TrainerCallback

    best = read_best(best_dir)

    # args.process_index, not state.is_world_process_zero: transformers 5.23
    # rebuilds the state at train start with that flag True on every rank.
    class RunCallback(TrainerCallback):  # type: ignore[misc]
        best_loss = best["eval_loss"] if best else math.inf

        def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if args.process_index != 0:
                return
            ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if ckpt.is_dir():
                ga = args.gradient_accumulation_steps
                stream.position = state.global_step * stream.batch_size * ga
                write_json(ckpt / DATA_STATE, stream.state_dict())
            plot_losses(state.log_history, out / "loss.png")

        def on_evaluate(
            self, args: Any, state: Any, control: Any, metrics: dict[str, float], **kw: Any
        ) -> None:
            loss = metrics.get("eval_loss", math.inf)
            if loss < self.best_loss:  # every rank: saving gathers sharded weights
                self.best_loss = loss
                save_best(trainer, best_dir, tokenizer, state.global_step, loss)
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
    """Runs one training job (pretrain when ``cfg.model`` is None, else CPT
    or SFT, by the shards' kind) and returns the final metrics; see
    docs/training.md for the outputs. ``callbacks`` are extra
    ``transformers.TrainerCallback`` objects; ``console=False`` prints
    nothing (no plan, progress bar or log lines), for callers that show
    progress their own way. Only rank 0 prints."""
    if not cfg.output_dir:
        raise ValueError("no run directory: give output_dir=DIR")
    out = Path(cfg.output_dir)
    rank, world = _world()
    console = console and rank == 0
    if not torch.cuda.is_available():
        # DeepSpeed's CPU accelerator, said up front: where deepspeed is
        # installed, Trainer imports it and it would warn on every CPU run
        # that it found no GPU.
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    if rank != 0:  # one set of loading and saving bars, rank 0's
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
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
    if cfg.model:
        check_tokenizer(resolve_model(cfg.tokenizer or cfg.model), manifest, cfg.data or "")
    config = model_config(cfg, manifest)
    block = _block_size(cfg, manifest, config)
    sources = [
        Source(PackedDataset(path, "train", block, cfg.packing), w)
        for (path, _), w in zip(specs, weights, strict=True)
    ]
    eval_set, held_out = _eval_set(cfg, specs[0][0], manifest, sources[0].dataset, block)
    if cfg.max_train_samples:
        sources[0].dataset.limit(cfg.max_train_samples)
    if console:
        _warn_cut(sources[0].dataset, cfg, config)
    b, ga = cfg.per_device_train_batch_size, cfg.gradient_accumulation_steps
    stream = TrainStream(sources, b, seed=cfg.seed, rank=rank, world_size=world)
    global_batch = b * ga * world
    samples_per_epoch = stream.samples_per_epoch()
    steps_per_epoch = max(1, math.ceil(samples_per_epoch / global_batch))
    max_steps = (
        cfg.max_steps if cfg.max_steps > 0 else math.ceil(cfg.num_train_epochs * steps_per_epoch)
    )
    if eval_set is None and cfg.load_best_model_at_end:
        raise ValueError(
            f"load_best_model_at_end needs evaluation: a val split of {block}+ tokens in "
            f"{cfg.data} or eval_holdout > 0"
        )
    merge = cfg.lora and cfg.merge_lora  # final_model/ will be the merged model
    resume = _resume_point(cfg, out)
    start_step = 0
    if resume is not None:
        start_step = int(json.loads((resume / "trainer_state.json").read_text())["global_step"])
        if start_step >= max_steps:
            return _finished(cfg, out, resume, start_step, merge, console)

    bf16, fp16 = _precision(cfg)
    # Trainer's arguments before the model: under DeepSpeed ZeRO-3 they make
    # transformers partition the weights while loading them.
    has_eval = eval_set is not None
    moe = uses_experts(config)
    args = _training_arguments(cfg, moe, max_steps, steps_per_epoch, has_eval, bf16, fp16, console)
    if args.world_size != world:
        raise RuntimeError(
            f"{world} processes were launched but Trainer sees a world of {args.world_size}; "
            "the ranks would train separate models"
        )
    tokenizer = load_tokenizer(
        resolve_model(cfg.tokenizer or cfg.model) if cfg.model else tokenizer_dir(manifest),
        cfg.trust_remote_code,
    )
    model = build_model(
        cfg, manifest, config if cfg.model else None, quantization_config(cfg), _device_map(cfg)
    )
    loss_note = "the model's own (chunked_loss=False)"
    if cfg.chunked_loss:
        chunked = enable_chunked_loss(model, cfg.loss_chunk_tokens)
        loss_note = "chunked" if chunked else "the model's own (it transforms its logits)"
    if cfg.lora:
        model = add_lora(model, cfg, console)

    if resume is not None:
        data_state = resume / DATA_STATE
        if not data_state.is_file():
            raise ValueError(f"{resume} has no {DATA_STATE}; it was not written by tokenmill")
        stream.load_state_dict(json.loads(data_state.read_text()))
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
    trainer.samples_per_epoch = samples_per_epoch
    trainer.global_batch = global_batch
    best_dir = out / ("best_adapter" if merge else "best_model")
    trainer.add_callback(_run_callback(trainer, stream, out, best_dir, tokenizer))
    if not console:  # without a progress bar Trainer prints every log dict instead
        from transformers import PrinterCallback, ProgressCallback

        trainer.remove_callback(PrinterCallback)
        trainer.remove_callback(ProgressCallback)
    for callback in callbacks:
        trainer.add_callback(callback)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.resolved.yaml").write_text(cfg.to_yaml(), encoding="utf-8")
        if "tensorboard" in _reporters(cfg):
            from transformers.integrations import TensorBoardCallback

            board = TensorBoardCallback()
            board.logging_dir = str(out / "logs")
            trainer.add_callback(board)
        write_run_manifest(
            out, cfg, sources, eval_set, model, max_steps, loss_note, args, world, held_out
        )
        if console:
            _announce(cfg, sources, model, max_steps, global_batch, block, resume, loss_note)
            if held_out:
                print(
                    f"eval         no val split in {specs[0][0]}: the last "
                    f"{counted(held_out, 'sample')} of train are held out for evaluation"
                )

    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    seconds = time.perf_counter() - started
    trainer.save_model(str(out / ("final_adapter" if merge else "final_model")))
    metrics: dict[str, Any] = {
        "train_loss": result.training_loss,
        "global_step": trainer.state.global_step,
        "steps_this_run": trainer.state.global_step - start_step,
        "epoch": round(trainer.state.global_step * global_batch / samples_per_epoch, 4),
        "train_seconds": round(seconds, 2),
        **trainer.throughput(seconds),
    }
    if eval_set is not None:
        ev = trainer.evaluate()
        metrics["eval_loss"] = ev["eval_loss"]
        metrics["perplexity"] = math.exp(min(ev["eval_loss"], 50.0))
    if rank == 0:
        if merge:
            dtype = load_dtype(cfg, config)  # the one trained in
            tokenizer.save_pretrained(out / "final_adapter")
            merge_adapter(out / "final_adapter", out / "final_model", base=cfg.model, dtype=dtype)
            if best_dir.is_dir():
                merge_adapter(best_dir, out / "best_model", base=cfg.model, dtype=dtype)
        else:
            tokenizer.save_pretrained(out / "final_model")
        best = read_best(best_dir)
        if best:
            metrics["best_model_step"] = best["step"]
            metrics["best_eval_loss"] = best["eval_loss"]
        write_json(out / "metrics.json", metrics)
        plot_losses(trainer.state.log_history, out / "loss.png")
    return metrics


def _block_size(cfg: TrainConfig, manifest: dict[str, Any], config: Any) -> int:
    """``block_size``, or: SFT shards' ``--max-length``; a checkpoint's
    context up to 2048; a preset's context. Never past the model's positions."""
    context = context_length(config)
    block = cfg.block_size
    if block is None:
        sft_max = (
            manifest.get("args", {}).get("max_length") if manifest.get("kind") == "sft" else None
        )
        if sft_max:
            block = int(sft_max)
        else:
            block = (
                min(context or 2048, 2048)
                if cfg.model
                else PRESETS[cfg.preset]["max_position_embeddings"]
            )
    if context is not None and block > context:
        raise ValueError(
            f"block_size={block} is longer than the {context} positions of "
            f"{cfg.model or cfg.preset}; give block_size={context} or less"
            + (
                " (the shards were prepared with a longer --max-length)"
                if cfg.block_size is None
                else ""
            )
        )
    return block


def _eval_set(
    cfg: TrainConfig, data: str, manifest: dict[str, Any], train_set: PackedDataset, block: int
) -> tuple[PackedDataset | None, int]:
    """The val split, or (none or empty) the last samples of train held out
    (``eval_holdout``, at most a tenth of train); and how many were held out."""
    if cfg.eval_strategy == "no":
        return None, 0
    if "val" in manifest["splits"]:
        eval_set = PackedDataset(data, "val", block, cfg.packing)
        if len(eval_set):
            if cfg.max_eval_samples:
                eval_set.limit(cfg.max_eval_samples)
            return eval_set, 0
    count = min(cfg.eval_holdout, len(train_set) // 10, cfg.max_eval_samples or len(train_set))
    if count < 1:
        return None, 0
    return train_set.hold_out(count), count


def _warn_cut(dataset: PackedDataset, cfg: TrainConfig, config: Any) -> None:
    cut, docs = dataset.documents_cut()
    if cut:
        how = "truncated" if dataset.mode == "pad" else "split across blocks"
        context = context_length(config)
        print(
            f"warning      {cut:,} of {counted(docs, 'document')} are longer than block_size "
            f"{dataset.block_size} and are {how}; raise --block-size"
            + (f" (the model has {context} positions)" if context else "")
        )


def _device_map(cfg: TrainConfig) -> Any:
    """``device_map`` for one process without a sharding engine; each rank
    of a distributed run holds its own copy (or shard) on its own device."""
    if cfg.device_map is None:
        return None
    if _world()[1] > 1 or cfg.deepspeed or cfg.fsdp:
        if _world()[0] == 0:
            print(
                f"warning      device_map={cfg.device_map!r} is ignored: a distributed run "
                "places each rank's model itself"
            )
        return None
    return cfg.device_map


def _reporters(cfg: TrainConfig) -> list[str]:
    names = [n.strip() for n in cfg.report_to.split(",") if n.strip()]
    return [] if names == ["none"] else names


def _finished(
    cfg: TrainConfig, out: Path, checkpoint: Path, step: int, merge: bool, console: bool
) -> dict[str, Any]:
    """A rerun of a run that reached its last step trains nothing: it says
    so and returns the run's metrics (making final_model/ from the last
    checkpoint first if the run stopped before writing it)."""
    final = out / "final_model"
    if not final.is_dir() and _world()[0] == 0:
        if merge and is_adapter_dir(checkpoint):
            merge_adapter(checkpoint, final, base=cfg.model)
        else:
            copy_model(checkpoint, final)
    metrics_file = out / "metrics.json"
    metrics = (
        json.loads(metrics_file.read_text()) if metrics_file.is_file() else {"global_step": step}
    )
    metrics.update(steps_this_run=0, already_finished=True)
    if console:
        best = " and best_model/" if (out / "best_model").is_dir() else ""
        print(
            f"finished     {out} reached step {step} of {step} ({checkpoint.name}); nothing to "
            f"train. The models are in final_model/{best}; to train longer, raise --max-steps "
            "or --num-train-epochs, or start a new --output-dir"
        )
    return metrics


def _training_arguments(
    cfg: TrainConfig,
    moe: bool,
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
    best_at_end = cfg.load_best_model_at_end and has_eval
    save_strategy, save_steps = in_steps(cfg.save_strategy, cfg.save_steps or cfg.eval_steps)
    # Checked (and deepspeed imported) before anything below changes the
    # process's accelerate state.
    deepspeed = deepspeed_config(cfg.deepspeed) if cfg.deepspeed else None
    extra: dict[str, Any] = {}
    cpu = not torch.cuda.is_available()
    if cpu and cfg.fsdp:
        raise ValueError(
            "fsdp needs CUDA GPUs: accelerate builds no FSDP plugin for CPU processes and "
            "Trainer would train plain DDP without saying so; on CPU use deepspeed=zero3"
        )
    if cpu and cfg.deepspeed:
        if bf16:
            raise ValueError(
                "bf16=true with deepspeed needs a GPU: DeepSpeed on CPU trains with fp32 "
                "autocast off here (torch_dtype=bfloat16 gives bf16 weights)"
            )
        # accelerate gives DeepSpeed no process group on CPU (it counts one
        # process while DeepSpeed sees the world): make a gloo one and tell
        # Trainer's accelerator to use it.
        from accelerate import PartialState

        os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"
        PartialState(backend="gloo")
        extra["accelerator_config"] = {"use_configured_state": True}
    elif cpu:
        # use_cpu: Trainer's bf16 autocast on a CPU needs it, and for CPU DDP
        # accelerate sets up no process group without it (every rank would
        # train alone).
        extra["use_cpu"] = True
        if _world()[1] > 1:
            extra["ddp_backend"] = "gloo"
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
        load_best_model_at_end=best_at_end,
        # best_model/ is written by tokenmill at each new best; Trainer's own
        # tracking would keep the best checkpoint from rotation instead of
        # the latest (save_total_limit 1 would then resume from the best).
        metric_for_best_model="eval_loss" if best_at_end else None,
        greater_is_better=False if best_at_end else None,
        bf16=bf16,
        fp16=fp16,
        max_grad_norm=cfg.max_grad_norm,
        seed=cfg.seed,
        optim=cfg.optim,
        optim_args=cfg.optim_args,
        optim_target_modules=cfg.optim_target_modules.split(",")
        if cfg.optim_target_modules
        else None,
        deepspeed=deepspeed,
        fsdp=cfg.fsdp or "",
        fsdp_config=fsdp_config(cfg.fsdp_config) if cfg.fsdp else cfg.fsdp_config,
        dataloader_num_workers=cfg.dataloader_num_workers,
        dataloader_pin_memory=torch.cuda.is_available(),
        # DDP looks for parameters a step left unused only where some can
        # be: mixture-of-experts layers (an expert may get no token). In a
        # dense model the search is a graph walk per step, and a warning.
        ddp_find_unused_parameters=moe,
        # TensorBoard goes to run_dir/logs through tokenmill's own callback.
        report_to=[r for r in _reporters(cfg) if r != "tensorboard"] or "none",
        ignore_data_skip=True,  # the stream resumes by position instead
        prediction_loss_only=True,
        remove_unused_columns=False,
        **{**extra, **cfg.trainer_args},
    )


# Built-in DeepSpeed configs (``deepspeed=zero3``): every size "auto", which
# Trainer fills from its own arguments; ZeRO-3 saves 16-bit consolidated
# weights so final_model/ and best_model/ are plain HF directories.
DEEPSPEED_CONFIGS: dict[str, dict[str, Any]] = {
    "zero2": {"zero_optimization": {"stage": 2, "overlap_comm": True}},
    "zero3": {
        "zero_optimization": {
            "stage": 3,
            "overlap_comm": True,
            "stage3_gather_16bit_weights_on_model_save": True,
        }
    },
    "zero3-offload": {
        "zero_optimization": {
            "stage": 3,
            "offload_param": {"device": "cpu", "pin_memory": True},
            "offload_optimizer": {"device": "cpu", "pin_memory": True},
            "stage3_gather_16bit_weights_on_model_save": True,
        }
    },
}
_DEEPSPEED_AUTO = {
    "train_micro_batch_size_per_gpu": "auto",
    "train_batch_size": "auto",
    "gradient_accumulation_steps": "auto",
    "gradient_clipping": "auto",
    "bf16": {"enabled": "auto"},
    "fp16": {"enabled": "auto"},
}


def deepspeed_config(choice: str) -> dict[str, Any]:
    """A built-in config by name, or a JSON file, checked: a ZeRO-3 config
    must gather 16-bit weights on save, else ``save_model`` writes only
    DeepSpeed's partitions and final_model/ holds no weights."""
    import deepspeed  # noqa: F401  (before Trainer, which would raise a bare ImportError)

    if choice in DEEPSPEED_CONFIGS:
        return {**_DEEPSPEED_AUTO, **DEEPSPEED_CONFIGS[choice]}
    path = Path(choice)
    if not path.is_file():
        raise FileNotFoundError(
            f"deepspeed={choice!r} is neither a JSON file nor one of {', '.join(DEEPSPEED_CONFIGS)}"
        )
    config = json.loads(path.read_text())
    zero = config.get("zero_optimization", {})
    if zero.get("stage") == 3 and not zero.get("stage3_gather_16bit_weights_on_model_save"):
        raise ValueError(
            f"{path}: ZeRO-3 without zero_optimization.stage3_gather_16bit_weights_on_model_save"
            " = true saves no usable final_model/; set it (or use deepspeed=zero3)"
        )
    return dict(config)


def fsdp_config(path: str | None) -> dict[str, Any]:
    """The FSDP config file's settings with full (consolidated) state dicts
    by default: Trainer's ``save_model`` writes nothing at all for sharded
    ones, so final_model/ and best_model/ would be empty."""
    config = json.loads(Path(path).read_text()) if path else {}
    kind = config.setdefault("state_dict_type", "FULL_STATE_DICT")
    if kind != "FULL_STATE_DICT":
        raise ValueError(
            f"{path}: state_dict_type {kind!r}: Trainer saves no final_model/ or best_model/ "
            "from sharded state dicts; use FULL_STATE_DICT (the default)"
        )
    return dict(config)


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

        # Set by train(): the epoch in logs is samples seen / samples_per_epoch.
        samples_per_epoch = 1
        global_batch = 1
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
            # The real share of an epoch seen: Trainer counts epochs of
            # max_steps steps over an IterableDataset of unknown length.
            seen = self.state.global_step * self.global_batch
            self.state.epoch = round(seen / self.samples_per_epoch, 4)
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
    loss: str,
) -> None:
    total, trainable = parameter_counts(model)
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    share = "" if trainable == total else f", {trainable / 1e6:,.2f}M trainable"
    print(
        f"model        {cfg.model or cfg.preset}: {total / 1e6:,.2f}M parameters{share}, "
        f"weights in {dtype} (--torch-dtype {cfg.torch_dtype})"
    )
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
        f"of up to {block} tokens; loss {loss}"
    )
    if resume:
        print(f"resume       from {resume}")
