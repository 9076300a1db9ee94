"""Training configuration: per-command defaults shown truthfully in --help,
seed 001's sectioned config file, aliases, close matches for unknown keys,
flags over the file, --trainer-arg and recipes. No training here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from tokenmill.cli import main
from tokenmill.config import (
    COMMAND_DEFAULTS,
    ConfigWarning,
    TrainConfig,
    fields_for_cli,
    load_config,
    read_config_file,
)

# Seed 001's cpt_config.json layout: sections, its own names, and options
# that belong to data preparation.
SEED_001 = {
    "model": {
        "model_name_or_path": "Qwen/Qwen2.5-7B",
        "torch_dtype": "bfloat16",
        "device_map": "auto",
        "use_flash_attention": True,
    },
    "data": {
        "max_length": 2048,
        "min_length": 10,
        "filter_duplicates": True,
        "mlm_probability": 0.15,
    },
    "training": {
        "output_dir": "./output/cpt",
        "num_train_epochs": 1,
        "batch_size": 4,
        "gradient_accumulation_steps": 8,
        "learning_rate": 5e-5,
        "weight_decay": 0.01,
        "warmup_ratio": 0.05,
        "lr_scheduler_type": "cosine",
        "logging_steps": 10,
        "save_steps": 500,
        "eval_steps": 500,
        "save_total_limit": 3,
        "bf16": True,
        "fp16": False,
        "gradient_checkpointing": True,
        "dataloader_num_workers": 4,
        "remove_unused_columns": False,
        "report_to": "tensorboard",
        "ddp_timeout": 7200,
    },
}


def test_seed_001_config_loads_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "cpt_config.json"
    path.write_text(json.dumps(SEED_001, indent=2))
    with pytest.warns(ConfigWarning) as caught:
        cfg = load_config(path, {"data": "shards"}, "cpt")
    messages = [str(w.message) for w in caught]
    assert any("data.min_length=10" in m and "--min-chars" in m for m in messages)
    assert any("data.filter_duplicates=True" in m and "--dedup" in m for m in messages)
    assert any("mlm_probability" in m and "causal" in m for m in messages)
    assert any("remove_unused_columns" in m and "set by tokenmill" in m for m in messages)
    # No GPU here: flash attention is asked for but cannot run.
    assert any("use_flash_attention" in m and "no CUDA GPU" in m for m in messages)
    assert cfg.model == "Qwen/Qwen2.5-7B" and cfg.block_size == 2048
    assert cfg.torch_dtype == "bfloat16" and cfg.device_map == "auto"
    assert cfg.per_device_train_batch_size == 4 and cfg.gradient_accumulation_steps == 8
    assert (cfg.bf16, cfg.fp16) == ("true", "false")
    # remove_unused_columns is tokenmill's own (the stream needs every column);
    # ddp_timeout is a TrainingArguments field tokenmill has no option for: passed on.
    assert cfg.trainer_args == {"ddp_timeout": 7200}


def test_unknown_keys_list_close_matches_and_sections_must_not_collide(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("learning_rat: 0.1\ntraining:\n  warmup_ratoi: 0.1\n  colour: blue\n")
    with pytest.raises(ValueError) as e:
        read_config_file(path)
    message = str(e.value)
    assert "3 unknown options" in message
    assert "learning_rat (did you mean learning_rate" in message
    assert "training.warmup_ratoi (did you mean warmup_ratio" in message
    assert "training.colour" in message
    path.write_text("model:\n  max_length: 512\ndata:\n  block_size: 256\n")
    with pytest.raises(ValueError, match=r"data\.block_size and model\.max_length both set"):
        read_config_file(path)


def test_defaults_per_command_then_adapters_recipe_file_and_flags(tmp_path: Path) -> None:
    assert load_config(None, {}, "pretrain").learning_rate == TrainConfig().learning_rate
    cpt = load_config(None, {}, "cpt")
    assert (cpt.learning_rate, cpt.weight_decay, cpt.warmup_ratio) == (5e-5, 0.01, 0.05)
    sft = load_config(None, {}, "sft")
    assert (sft.packing, sft.learning_rate, sft.lr_scheduler_type) == ("pad", 2e-5, "linear")
    assert load_config(None, {"lora": True}, "sft").learning_rate == 2e-4
    galore = load_config(None, {"recipe": "galore-seed002"}, "sft")
    assert galore.optim == "galore_adamw" and galore.learning_rate == 1e-5
    assert galore.optim_args == "rank=1024, update_proj_gap=500, scale=1.8"
    assert galore.warmup_ratio == 0.1 and galore.lr_scheduler_type == "linear"
    # The file beats the recipe; flags beat the file (preset included).
    path = tmp_path / "c.yaml"
    path.write_text("learning_rate: 3.0e-5\npreset: llama-small\n")
    cfg = load_config(path, {"recipe": "galore-seed002", "preset": "llama-micro"}, "sft")
    assert cfg.learning_rate == 3e-5 and cfg.preset == "llama-micro"
    with pytest.raises(ValueError, match="unknown option 'learnig_rate' \\(did you mean"):
        load_config(None, {"learnig_rate": 1.0})


def test_trainer_args_reach_any_field_but_not_ours() -> None:
    cfg = load_config(None, {"trainer_args": ("ddp_timeout=7200", "run_name=cpt one")})
    assert cfg.trainer_args == {"ddp_timeout": 7200, "run_name": "cpt one"}
    with pytest.raises(ValueError, match="'learning_rate' is an option of its own"):
        load_config(None, {"trainer_args": ("learning_rate=1",)})
    with pytest.raises(ValueError, match="'remove_unused_columns' is set by tokenmill"):
        load_config(None, {"trainer_args": ("remove_unused_columns=true",)})
    with pytest.raises(ValueError, match="is not KEY=VALUE"):
        load_config(None, {"trainer_args": ("ddp_timeout",)})


def _help(command: str) -> str:
    r = CliRunner().invoke(main, [command, "--help"], terminal_width=2000)
    assert r.exit_code == 0, r.output
    return " ".join(r.output.split())


@pytest.mark.parametrize("command", ["pretrain", "cpt", "sft"])
def test_help_shows_each_commands_own_defaults(command: str) -> None:
    text = _help(command)
    resolved = load_config(None, {}, command)
    flags = ["--" + f[0].replace("_", "-") + " " for f in fields_for_cli(command)]
    for name in ("learning_rate", "weight_decay", "warmup_ratio", "packing", "lr_scheduler_type"):
        value = getattr(resolved, name)
        shown = f"{value:g}" if isinstance(value, float) else value
        flag = "--" + name.replace("_", "-") + " "
        following = flags[flags.index(flag) + 1]
        own_help = text[text.index(flag) : text.index(following)]
        assert f"[default: {shown}" in own_help, (command, name, own_help)
    assert ("--model" in text) == (command != "pretrain")
    assert ("--preset" in text) == (command == "pretrain")
    assert ("--lora " in text) == (command != "pretrain")
    if command != "pretrain":
        assert "0.0002 with --lora/--qlora/--load-in-8bit" in text
    assert set(COMMAND_DEFAULTS) == {"pretrain", "cpt", "sft"}


def test_sharded_engines_configs_are_checked_before_training(tmp_path: Path) -> None:
    """DeepSpeed ZeRO-3 and FSDP must save consolidated weights, or
    final_model/ would hold none."""
    from tokenmill.train import deepspeed_config, fsdp_config

    assert fsdp_config(None) == {"state_dict_type": "FULL_STATE_DICT"}
    sharded = tmp_path / "fsdp.json"
    sharded.write_text('{"state_dict_type": "SHARDED_STATE_DICT"}')
    with pytest.raises(ValueError, match="SHARDED_STATE_DICT"):
        fsdp_config(str(sharded))
    pytest.importorskip("deepspeed")
    zero3 = deepspeed_config("zero3")["zero_optimization"]
    assert zero3["stage"] == 3 and zero3["stage3_gather_16bit_weights_on_model_save"]
    partitions_only = tmp_path / "ds.json"
    partitions_only.write_text('{"zero_optimization": {"stage": 3}}')
    with pytest.raises(ValueError, match="stage3_gather_16bit_weights_on_model_save"):
        deepspeed_config(str(partitions_only))


def test_auto_dtype_is_the_checkpoints_own_on_a_bf16_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch
    import transformers

    from tokenmill.models import load_dtype

    def checkpoint(dtype: str) -> transformers.PretrainedConfig:
        return transformers.LlamaConfig(dtype=dtype)

    auto = TrainConfig(max_steps=1)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert load_dtype(auto, checkpoint("bfloat16")) == torch.float32  # CPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert load_dtype(auto, checkpoint("bfloat16")) == torch.bfloat16
    assert load_dtype(auto, checkpoint("float32")) == torch.float32
    # fp16 weights would train without loss scaling: bf16 instead.
    assert load_dtype(auto, checkpoint("float16")) == torch.bfloat16
    assert load_dtype(auto, None) == torch.float32  # a preset from scratch
    assert load_dtype(TrainConfig(max_steps=1, torch_dtype="float16"), None) == torch.float16
