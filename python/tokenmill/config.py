"""Training configuration: one dataclass, per-command defaults, config files.

Field names are the Hugging Face ``TrainingArguments`` names the seed scripts
use (``learning_rate``, ``per_device_train_batch_size``, ...); the CLI flag of
a field is its name with dashes (``--max-steps``). Precedence, lowest first:
the field default, the command's defaults (`COMMAND_DEFAULTS`; adapters
raise the learning rate, `ADAPTER_DEFAULTS`), a ``recipe`` (`RECIPES`), the
config file, flags. The resolved config is written into the run directory as
``config.resolved.yaml``.

A config file is YAML or JSON: one mapping of these names, or sections of
them (seed 001's ``{"model": {...}, "data": {...}, "training": {...}}``
layout loads unchanged: sections are flattened and the seeds' other names
mapped, `ALIASES`). Any other ``TrainingArguments`` field is passed to
Trainer as it is (``trainer_args``, also ``--trainer-arg KEY=VALUE``).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tokenmill._text import counted

COMMANDS = ("pretrain", "cpt", "sft")

# Each command's defaults over the field defaults (which are pretraining's:
# the happy-llm recipe, AdamW beta2 0.95, weight decay 0.1, cosine, 2% warmup).
COMMAND_DEFAULTS: dict[str, dict[str, Any]] = {
    "pretrain": {},
    # Seed 001's CPT guide: lr 5e-5 (it recommends 1e-5..5e-5 so the model
    # keeps what it knows), weight decay 0.01, cosine, 5% warmup, Trainer's
    # AdamW betas.
    "cpt": dict(
        learning_rate=5e-5,
        weight_decay=0.01,
        adam_beta2=0.999,
        lr_scheduler_type="cosine",
        warmup_ratio=0.05,
    ),
    # Seed 002 / TRL's SFTConfig: 3 epochs, lr 2e-5, linear decay, no weight
    # decay, 3% warmup; one conversation per sample (padded batches);
    # evaluated and saved once per epoch.
    "sft": dict(
        packing="pad",
        learning_rate=2e-5,
        weight_decay=0.0,
        adam_beta2=0.999,
        lr_scheduler_type="linear",
        warmup_ratio=0.03,
        num_train_epochs=3.0,
        eval_strategy="epoch",
        save_strategy="epoch",
    ),
}
# Over a command's defaults when adapters are trained (lora, qlora,
# load_in_8bit): the LoRA/QLoRA papers' learning rate.
ADAPTER_DEFAULTS: dict[str, Any] = dict(learning_rate=2e-4)

# GaLore, as Trainer takes it (optim_args), with the targets GaLore's
# authors use: attention and MLP linear layers. `optim="galore_adamw"`
# alone gets the Hugging Face documentation's example values; the
# "galore-seed002" recipe is seed 002's full-parameter GaLore SFT.
GALORE_ARGS = "rank=64, update_proj_gap=100, scale=0.10"
GALORE_TARGETS = (r".*attn.*", r".*mlp.*")
RECIPES: dict[str, dict[str, Any]] = {
    "galore-seed002": dict(
        optim="galore_adamw",
        optim_args="rank=1024, update_proj_gap=500, scale=1.8",
        learning_rate=1e-5,
        lr_scheduler_type="linear",
        warmup_ratio=0.1,
    ),
}

# Names other scripts (seed 001's config, Trainer scripts, LLaMA-Factory)
# use for these fields.
ALIASES = {
    "max_length": "block_size",
    "max_seq_length": "block_size",
    "max_seq_len": "block_size",
    "seq_length": "block_size",
    "cutoff_len": "block_size",
    "model_name_or_path": "model",
    "model_name": "model",
    "model_path": "model",
    "tokenizer_name_or_path": "tokenizer",
    "tokenizer_name": "tokenizer",
    "tokenizer_path": "tokenizer",
    "batch_size": "per_device_train_batch_size",
    "train_batch_size": "per_device_train_batch_size",
    "eval_batch_size": "per_device_eval_batch_size",
    "evaluation_strategy": "eval_strategy",
    "dtype": "torch_dtype",
    "lora_r": "lora_rank",
    "output_path": "output_dir",
}
# Options of the data preparation, not of training: accepted in a config
# file (seed 001's holds them) with a warning that names where they belong.
PREPARE_OPTIONS = {
    "min_length": "tokenmill prepare INPUTS -o SHARDS --min-chars N",
    "min_text_length": "tokenmill prepare INPUTS -o SHARDS --min-chars N",
    "filter_duplicates": "tokenmill prepare INPUTS -o SHARDS --dedup (MinHash near-duplicates)",
    "train_file": "tokenmill prepare FILE -o SHARDS, then --data SHARDS",
    "validation_file": "tokenmill prepare FILE -o SHARDS (it writes a val split)",
    "text_column": "tokenmill prepare INPUTS --text-field NAME",
    "preprocessing_num_workers": "tokenmill prepare INPUTS --threads N",
}
MEANINGLESS = {
    "mlm_probability": "masked-LM masking; causal LMs predict every next token",
}
# TrainingArguments fields tokenmill sets itself: the stream, not Trainer's
# sampler, feeds the data, and the loss needs every column.
RESERVED_TRAINER_ARGS = (
    "output_dir",
    "ignore_data_skip",
    "remove_unused_columns",
    "prediction_loss_only",
    "max_steps",
    "disable_tqdm",
)

_ALL = COMMANDS
_TUNED = ("cpt", "sft")  # commands that start from a model


def _f(default: Any, help: str, commands: tuple[str, ...] = _ALL, **kw: Any) -> Any:
    return field(default=default, metadata={"help": help, "commands": commands, **kw})


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
            "help": "More shard directories as DIR:WEIGHT (general:0.2 replays 20% general).",
            "commands": _ALL,
        },
    )
    output_dir: str | None = _f(None, "Run directory (checkpoints, models, logs, metrics).")
    model: str | None = _f(
        None,
        "Model to start from: a local Hugging Face directory or a hub id in your cache.",
        _TUNED,
    )
    tokenizer: str | None = _f(
        None, "Tokenizer directory or hub id, when it is not the model's own.", _TUNED
    )
    trust_remote_code: bool = _f(
        False, "Let transformers run the model repository's own code.", _TUNED
    )
    preset: str = _f("llama-tiny", "Model preset (llama-tiny is happy-llm's model).", ("pretrain",))
    recipe: str | None = _f(
        None,
        "Named defaults over the command's: galore-seed002 (seed 002's GaLore SFT: "
        "optim galore_adamw, rank 1024, update_proj_gap 500, scale 1.8, lr 1e-5, "
        "linear, warmup 0.1).",
        _TUNED,
    )
    block_size: int | None = _f(
        None,
        "Tokens per training block (default: sft shards' --max-length; cpt: the model's "
        "context up to 2048; pretrain: the preset's context).",
    )
    packing: Literal["concat", "doc", "pad"] = _f(
        "concat",
        "concat: stream cut into blocks (group_texts); doc: whole documents packed, no "
        "attention across documents (bare --packing); pad: one document per sample, "
        "batches padded.",
    )
    eval_holdout: int = _f(
        64,
        "When the shards have no val split (or an empty one): samples held out of the "
        "end of train for evaluation, at most a tenth of train (0: no evaluation).",
    )
    torch_dtype: Literal["auto", "bfloat16", "float16", "float32"] = _f(
        "auto",
        "dtype the weights are loaded, trained and saved in (auto: the checkpoint's own "
        "on a GPU with bf16, bf16 for fp16 checkpoints; float32 on CPU and for presets). "
        "bfloat16 trains in pure bf16 (no fp32 master weights).",
    )
    device_map: str | None = _f(
        None,
        "transformers device_map for one-process runs (auto: spread over the GPUs); "
        "ignored, with a warning, under torchrun, DeepSpeed or FSDP.",
        _TUNED,
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
    save_total_limit: int | None = _f(
        3, "Checkpoints kept (best_model/ is written apart, at each new lowest eval_loss)."
    )
    load_best_model_at_end: bool = _f(
        False, "End with the lowest-eval_loss weights in final_model/ too."
    )
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
    deepspeed: str | None = _f(
        None,
        "DeepSpeed: zero2, zero3, zero3-offload (built in, sizes from these options) or a "
        "JSON config file; pip install 'tokenmill[deepspeed]'.",
    )
    fsdp: str | None = _f(
        None, "FSDP options string, passed to Trainer (e.g. 'full_shard auto_wrap'); CUDA only."
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
    lora: bool = _f(False, "Train LoRA adapters instead of the whole model.", _TUNED)
    lora_rank: int = _f(16, "LoRA rank r.", _TUNED)
    lora_alpha: int | None = _f(None, "LoRA alpha (default: 2 x rank).", _TUNED)
    lora_dropout: float = _f(0.05, "Dropout on the LoRA path.", _TUNED)
    lora_target_modules: str = _f(
        "all-linear",
        "Comma-separated module names, or all-linear (every linear but the LM head).",
        _TUNED,
    )
    qlora: bool = _f(
        False, "LoRA over the model loaded in 4-bit NF4 (CUDA + bitsandbytes).", _TUNED
    )
    load_in_8bit: bool = _f(
        False, "LoRA over the model loaded in 8-bit (CUDA + bitsandbytes).", _TUNED
    )
    merge_lora: bool = _f(
        True,
        "Save final_model/ and best_model/ with the adapters merged (plain HF models).",
        _TUNED,
    )
    # Reporting, and every other TrainingArguments field.
    report_to: str = _f(
        "tensorboard",
        "Comma-separated integrations: tensorboard (run_dir/logs), wandb, mlflow, ...; none.",
    )
    trainer_args: dict[str, Any] = field(
        default_factory=dict,
        metadata={
            "help": "Any other TrainingArguments field as KEY=VALUE (VALUE read as YAML), "
            "e.g. --trainer-arg ddp_timeout=7200.",
            "commands": _ALL,
        },
    )

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"preset={self.preset!r} is not one of {', '.join(PRESETS)}")
        if self.recipe is not None and self.recipe not in RECIPES:
            raise ValueError(f"recipe={self.recipe!r} is not one of {', '.join(RECIPES)}")
        if self.eval_holdout < 0:
            raise ValueError("eval_holdout must be 0 or more")
        own = {f.name for f in dataclasses.fields(self)}
        for key in self.trainer_args:
            if key in own:
                raise ValueError(f"trainer_args {key!r} is an option of its own: give {key}=...")
            if key in RESERVED_TRAINER_ARGS:
                raise ValueError(f"trainer_args {key!r} is set by tokenmill and cannot be changed")
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
        """Every option as used (a run from a model has no preset)."""
        import yaml

        values = dataclasses.asdict(self)
        if self.model:
            del values["preset"]
        return yaml.safe_dump(values, sort_keys=False, allow_unicode=True)


def fields_for_cli(command: str) -> list[tuple[str, Any, Any, str]]:
    """``(name, python type, default, help)`` of every flag of ``command``,
    the default being that command's own."""
    out = []
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        if command in f.metadata["commands"]:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            out.append(
                (
                    f.name,
                    hints[f.name],
                    COMMAND_DEFAULTS[command].get(f.name, default),
                    f.metadata["help"],
                )
            )
    return out


class ConfigWarning(UserWarning):
    """A config-file key that is accepted but does nothing in training."""


def load_config(
    path: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    command: str = "pretrain",
) -> TrainConfig:
    """``command``'s defaults, the adapter defaults when adapters are on, the
    ``recipe``, then the config file (YAML or JSON), then ``overrides``
    (flags; None and empty values are not set)."""
    if command not in COMMAND_DEFAULTS:
        raise ValueError(f"command={command!r} is not one of {', '.join(COMMAND_DEFAULTS)}")
    from_file = read_config_file(path) if path is not None else {}
    flags = {k: v for k, v in (overrides or {}).items() if v is not None and v != () and v != {}}
    own = {f.name for f in dataclasses.fields(TrainConfig)}
    for key in flags:
        if key not in own:
            close = difflib.get_close_matches(key, sorted(own), n=2)
            hint = f" (did you mean {' or '.join(close)}?)" if close else ""
            raise ValueError(f"unknown option {key!r}{hint}")
    trainer_args = {
        **from_file.pop("trainer_args", {}),
        **parse_trainer_args(flags.pop("trainer_args", {})),
    }
    chosen = {**from_file, **flags}
    values: dict[str, Any] = dict(COMMAND_DEFAULTS[command])
    if any(chosen.get(k) for k in ("lora", "qlora", "load_in_8bit")):
        values.update(ADAPTER_DEFAULTS)
    recipe = chosen.get("recipe")
    if recipe is not None:
        if recipe not in RECIPES:
            raise ValueError(f"recipe={recipe!r} is not one of {', '.join(RECIPES)}")
        values.update(RECIPES[recipe])
    values.update(chosen)
    if isinstance(values.get("mix"), (tuple, str)):
        values["mix"] = [values["mix"]] if isinstance(values["mix"], str) else list(values["mix"])
    values["trainer_args"] = trainer_args
    _check_types(values)
    return TrainConfig(**values)


def parse_trainer_args(items: dict[str, Any] | list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``KEY=VALUE`` strings (VALUE read as YAML: numbers, booleans, lists)
    as a mapping; a mapping is returned as it is."""
    import yaml

    if isinstance(items, dict):
        return dict(items)
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"trainer_args {item!r} is not KEY=VALUE")
        out[key.strip()] = yaml.safe_load(value) if value.strip() else ""
    return out


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A config file's options under tokenmill's names: sections flattened,
    `ALIASES` mapped, data-preparation keys dropped with a `ConfigWarning`
    naming the command they belong to, other ``TrainingArguments`` fields
    gathered in ``trainer_args``; anything else is an error listing the
    names closest to it."""
    import yaml

    text = Path(path).read_text(encoding="utf-8")
    try:
        loaded = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise ValueError(
            f"{path}: not valid {'JSON' if str(path).endswith('.json') else 'YAML'}: {e}"
        ) from e
    if not isinstance(loaded, dict):
        raise ValueError(f"{path}: a config file holds one mapping of option names")
    flat: dict[str, Any] = {}
    where: dict[str, str] = {}
    for key, value in loaded.items():
        section = isinstance(value, dict) and key != "trainer_args"
        for k, v in value.items() if section else [(key, value)]:
            name = ALIASES.get(k, k)
            place = f"{key}.{k}" if section else k
            if name in flat:
                raise ValueError(f"{path}: {place} and {where[name]} both set {name}")
            flat[name], where[name] = v, place
    own = {f.name for f in dataclasses.fields(TrainConfig)}
    out: dict[str, Any] = {}
    unknown = []
    trainer_fields: set[str] | None = None
    for name, value in flat.items():
        place = where[name]
        if name in own:
            out[name] = value
        elif name == "use_flash_attention":
            if value:
                out["attn_implementation"] = _flash_attention(path, place)
        elif name in PREPARE_OPTIONS:
            warnings.warn(
                f"{path}: {place}={value!r} is a data-preparation option, not a training "
                f"one; ignored here. Apply it when making the shards: {PREPARE_OPTIONS[name]}",
                ConfigWarning,
                stacklevel=2,
            )
        elif name in RESERVED_TRAINER_ARGS:
            warnings.warn(
                f"{path}: {place}={value!r} is ignored: it is set by tokenmill",
                ConfigWarning,
                stacklevel=2,
            )
        elif name in MEANINGLESS:
            warnings.warn(
                f"{path}: {place}={value!r} is ignored: {MEANINGLESS[name]}",
                ConfigWarning,
                stacklevel=2,
            )
        else:
            if trainer_fields is None:
                trainer_fields = _trainer_argument_names()
            if name in trainer_fields and name not in RESERVED_TRAINER_ARGS:
                out.setdefault("trainer_args", {})[name] = value
            else:
                unknown.append(place)
    if unknown:
        known = sorted(own | set(ALIASES) | (trainer_fields or set()))
        hints = [
            f"{u} (did you mean {' or '.join(close)}?)" if close else u
            for u in unknown
            for close in [difflib.get_close_matches(u.rpartition(".")[2], known, n=2)]
        ]
        raise ValueError(f"{path}: {counted(len(unknown), 'unknown option')}: {', '.join(hints)}")
    return out


def _trainer_argument_names() -> set[str]:
    try:
        import transformers
    except ModuleNotFoundError:
        return set()
    return {f.name for f in dataclasses.fields(transformers.TrainingArguments) if f.init}


def _flash_attention(path: str | Path, place: str) -> str | None:
    """flash_attention_2 where it can run (a CUDA GPU and flash-attn);
    elsewhere a warning and transformers' default attention."""
    import importlib.util

    import torch

    if torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    why = "no CUDA GPU" if not torch.cuda.is_available() else "flash-attn is not installed"
    warnings.warn(
        f"{path}: {place}=true: {why} here; using transformers' default attention (sdpa)",
        ConfigWarning,
        stacklevel=3,
    )
    return None


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
