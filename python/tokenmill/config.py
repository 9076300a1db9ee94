"""Training configuration: one dataclass, read from YAML/JSON, overridden by flags.

Field names are the Hugging Face ``TrainingArguments`` names the seed scripts
use (``learning_rate``, ``per_device_train_batch_size``, ...), so a seed config
file loads unchanged; the CLI flag of a field is its name with dashes
(``--max-steps``). Precedence: field default < command default (``cpt``
learns slower than ``pretrain``) < config file < flags. The resolved config
is written into the run directory as ``config.resolved.yaml``.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tokenmill._text import counted

# GaLore preset: the values of the Hugging Face Trainer documentation's
# galore_adamw example, the ones SFT scripts usually copy: projection rank
# 64, a new projection every 100 steps, update scale 0.1, on the attention
# and MLP linear layers.
GALORE_ARGS = "rank=64, update_proj_gap=100, scale=0.10"
GALORE_TARGETS = (r".*attn.*", r".*mlp.*")


def _f(default: Any, help: str, **kw: Any) -> Any:
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class TrainConfig:
    """Everything a training run reads; each field documents itself (``help``)."""

    # What to train on and where to write.
    data: str | None = _f(
        None, "Shard directory (from `tokenmill prepare`), optionally DIR:WEIGHT."
    )
    mix: list[str] = field(
        default_factory=list,
        metadata={
            "help": "More shard directories as DIR:WEIGHT (general:0.2 replays 20% general)."
        },
    )
    output_dir: str | None = _f(None, "Run directory (checkpoints, models, logs, metrics).")
    model: str | None = _f(None, "Local HF causal-LM directory to start from (cpt).")
    preset: str = _f("llama-tiny", "Model preset for pretraining from scratch.", cli=False)
    block_size: int | None = _f(None, "Tokens per training block (default: the preset's context).")
    packing: Literal["concat", "doc", "pad"] = _f(
        "concat",
        "concat: stream cut into blocks (group_texts); doc: whole documents packed, no "
        "attention across documents (bare --packing); pad: one document per sample, "
        "batches padded (SFT default).",
    )
    # The seeds' TrainingArguments, same names.
    learning_rate: float = _f(3e-4, "Peak learning rate.")
    weight_decay: float = _f(0.1, "AdamW weight decay.")
    adam_beta2: float = _f(0.95, "AdamW beta2.")
    num_train_epochs: float = _f(1.0, "Passes over the (first) dataset when max_steps < 0.")
    max_steps: int = _f(-1, "Optimizer steps; overrides num_train_epochs when > 0.")
    per_device_train_batch_size: int = _f(8, "Blocks per device per micro-batch.")
    per_device_eval_batch_size: int = _f(8, "Blocks per device per eval batch.")
    gradient_accumulation_steps: int = _f(1, "Micro-batches per optimizer step.")
    lr_scheduler_type: str = _f("cosine", "linear, cosine, constant_with_warmup, ...")
    warmup_ratio: float = _f(0.02, "Share of steps spent warming up the learning rate.")
    logging_steps: int = _f(10, "Log train loss every N steps.")
    eval_strategy: Literal["no", "steps", "epoch"] = _f("steps", "When to evaluate.")
    eval_steps: int = _f(200, "Evaluate every N steps (eval_strategy=steps).")
    eval_on_start: bool = _f(
        False, "Evaluate once before the first step (the starting loss in logs and loss.png)."
    )
    save_strategy: Literal["no", "steps", "epoch"] = _f(
        "steps", "When to save checkpoints (steps: every save_steps)."
    )
    save_steps: int | None = _f(None, "Save every N steps (default: eval_steps).")
    save_total_limit: int | None = _f(3, "Checkpoints kept (the best one is always kept).")
    load_best_model_at_end: bool = _f(False, "Load the lowest-eval_loss checkpoint at the end.")
    bf16: Literal["auto", "true", "false"] = _f(
        "auto", "bf16 mixed precision (auto: where the GPU supports it)."
    )
    fp16: Literal["auto", "true", "false"] = _f(
        "auto", "fp16 mixed precision (auto: on GPUs without bf16)."
    )
    gradient_checkpointing: bool = _f(False, "Recompute activations to save memory.")
    max_grad_norm: float = _f(1.0, "Gradient clipping norm (0: off).")
    seed: int = _f(42, "Seed of model init, data order and dropout.")
    resume_from_checkpoint: str = _f(
        "auto", "auto: the latest checkpoint-* in output_dir; a path; or none."
    )
    max_train_samples: int | None = _f(None, "Use only this many training blocks.")
    max_eval_samples: int | None = _f(None, "Use only this many eval blocks.")
    dataloader_num_workers: int = _f(0, "DataLoader worker processes.")
    optim: str = _f("adamw_torch", "Trainer optimizer name (e.g. adamw_torch_fused, galore_adamw).")
    deepspeed: str | None = _f(None, "DeepSpeed JSON config, passed to Trainer.")
    fsdp: str | None = _f(
        None, "FSDP options string, passed to Trainer (e.g. 'full_shard auto_wrap')."
    )
    fsdp_config: str | None = _f(None, "FSDP JSON config, passed to Trainer.")
    chunked_loss: bool = _f(True, "Chunked cross-entropy (no full logits); off: the model's own.")
    loss_chunk_tokens: int | None = _f(
        None, "Rows per loss chunk (default: as many as 128 MiB of fp32 logits hold)."
    )
    attn_implementation: str | None = _f(
        None, "sdpa, eager, flash_attention_2, ... (default: transformers' choice)."
    )
    optim_args: str | None = _f(
        None,
        f"Optimizer arguments as Trainer takes them; galore_* default to '{GALORE_ARGS}'.",
    )
    optim_target_modules: str | None = _f(
        None,
        "Comma-separated module-name regexes the optimizer targets (galore_* default: "
        f"{','.join(GALORE_TARGETS)}).",
    )
    # Parameter-efficient fine-tuning (peft).
    lora: bool = _f(False, "Train LoRA adapters instead of the whole model.")
    lora_rank: int = _f(16, "LoRA rank r.")
    lora_alpha: int | None = _f(None, "LoRA alpha (default: 2 x rank).")
    lora_dropout: float = _f(0.05, "Dropout on the LoRA path.")
    lora_target_modules: str = _f(
        "all-linear", "Comma-separated module names, or all-linear (every linear but the LM head)."
    )
    qlora: bool = _f(False, "LoRA over the model loaded in 4-bit NF4 (CUDA + bitsandbytes).")
    load_in_8bit: bool = _f(False, "LoRA over the model loaded in 8-bit (CUDA + bitsandbytes).")
    merge_lora: bool = _f(
        True, "Save final_model/ and best_model/ with the adapters merged (plain HF models)."
    )

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"preset={self.preset!r} is not one of {', '.join(PRESETS)}")
        if self.max_steps <= 0 and self.num_train_epochs <= 0:
            raise ValueError("set max_steps > 0 or num_train_epochs > 0")
        if self.block_size is not None and self.block_size < 2:
            raise ValueError("block_size must be at least 2")
        for name in (
            "per_device_train_batch_size",
            "per_device_eval_batch_size",
            "gradient_accumulation_steps",
            "logging_steps",
            "eval_steps",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.qlora and self.load_in_8bit:
            raise ValueError("choose one of qlora=True (4-bit) and load_in_8bit=True")
        if self.qlora or self.load_in_8bit:
            self.lora = True  # quantized weights cannot be trained themselves
        if self.lora_rank < 1:
            raise ValueError("lora_rank must be at least 1")
        if self.lora_alpha is None:
            self.lora_alpha = 2 * self.lora_rank
        if self.optim.startswith("galore"):
            if self.lora:
                raise ValueError(
                    f"optim={self.optim!r} (GaLore) trains the full weights; it cannot be "
                    "combined with LoRA adapters (lora=True, qlora=True or load_in_8bit=True)"
                )
            self.optim_args = self.optim_args or GALORE_ARGS
            self.optim_target_modules = self.optim_target_modules or ",".join(GALORE_TARGETS)
        if self.save_steps is None:
            self.save_steps = self.eval_steps
        if self.load_best_model_at_end:
            if self.eval_strategy == "no":
                raise ValueError(
                    "load_best_model_at_end needs evaluation (eval_strategy other than 'no')"
                )
            if self.save_strategy != self.eval_strategy or (
                self.save_strategy == "steps" and self.save_steps % self.eval_steps
            ):
                raise ValueError(
                    "load_best_model_at_end needs checkpoints where evaluations happen: "
                    "the same save_strategy and eval_strategy, and save_steps a multiple "
                    "of eval_steps"
                )

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(dataclasses.asdict(self), sort_keys=False, allow_unicode=True)


def fields_for_cli() -> list[tuple[str, Any, Any, str]]:
    """``(name, python type, default, help)`` of every flag-settable field."""
    out = []
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        if f.metadata.get("cli", True):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            out.append((f.name, hints[f.name], default, f.metadata["help"]))
    return out


def load_config(
    path: str | Path | None, defaults: dict[str, Any], overrides: dict[str, Any]
) -> TrainConfig:
    """Command defaults, then the config file (YAML or JSON), then flags."""
    import yaml

    values: dict[str, Any] = dict(defaults)
    if path is not None:
        text = Path(path).read_text(encoding="utf-8")
        loaded = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: a config file holds one mapping of option names")
        known = {f.name for f in dataclasses.fields(TrainConfig)}
        unknown = sorted(set(loaded) - known)
        if unknown:
            raise ValueError(
                f"{path}: {counted(len(unknown), 'unknown option')}: {', '.join(unknown)}"
            )
        values.update(loaded)
    values.update({k: v for k, v in overrides.items() if v is not None and v != ()})
    if isinstance(values.get("mix"), tuple):
        values["mix"] = list(values["mix"])
    _check_types(values)
    return TrainConfig(**values)


def _check_types(values: dict[str, Any]) -> None:
    """Config-file values against the field types click enforces for flags."""
    hints = typing.get_type_hints(TrainConfig)
    for name, value in values.items():
        hint = hints[name]
        if typing.get_origin(hint) is Literal:
            options = typing.get_args(hint)
            if isinstance(value, bool) and "true" in options:
                value = values[name] = str(value).lower()
            if value not in options:
                raise ValueError(f"option {name}: {value!r} is not one of {', '.join(options)}")
        elif hint is float and isinstance(value, int) and not isinstance(value, bool):
            values[name] = float(value)


# Model presets for pretraining from scratch (transformers.LlamaConfig fields).
# "llama-tiny" is the happy-llm chapter's model: dim 288, 8 layers, 8 heads,
# 4 KV heads, FFN 768 (4 * dim * 2/3 rounded up to a multiple of 32), context
# 256, embeddings tied with the output layer.
PRESETS: dict[str, dict[str, Any]] = {
    "llama-micro": dict(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=192,
        max_position_embeddings=128,
    ),
    "llama-tiny": dict(
        hidden_size=288,
        num_hidden_layers=8,
        num_attention_heads=8,
        num_key_value_heads=4,
        intermediate_size=768,
        max_position_embeddings=256,
    ),
    "llama-small": dict(
        hidden_size=512,
        num_hidden_layers=8,
        num_attention_heads=8,
        num_key_value_heads=8,
        intermediate_size=1376,
        max_position_embeddings=1024,
    ),
    "llama-base": dict(
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        num_key_value_heads=12,
        intermediate_size=2048,
        max_position_embeddings=1024,
    ),
}
