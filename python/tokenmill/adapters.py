"""Adapters: LoRA / QLoRA / 8-bit LoRA (``peft``), merging them into plain
Hugging Face models, and loading either kind of directory.

The SFT run itself is `tokenmill.train.train` over ``prepare-sft`` shards
(``tokenmill sft``): same Trainer, stream, chunked loss and outputs as
pretraining; the ``.mask`` turns labels to -100 outside assistant replies.

Decisions, and why:
- Adapters target every linear layer but the LM head by default (peft's
  ``all-linear``): the QLoRA paper found all-layer adapters needed to match
  full fine-tuning; attention-only LoRA is one ``--lora-target-modules`` away.
- A LoRA run's ``final_model/`` and ``best_model/`` hold the adapters merged
  into the base weights (plain HF directories that ``generate``, ``eval`` and
  any HF tool load); the adapters themselves are kept in ``final_adapter/``,
  ``best_adapter/`` and each ``checkpoint-*``. Merging reloads the base in
  the dtype the run trained in (a QLoRA run: the checkpoint's own), so a
  QLoRA run merges into full-precision weights, not into the 4-bit ones.
- 4-bit/8-bit loading exists only on CUDA (bitsandbytes); elsewhere it is an
  error before anything loads, not a silent fp32 run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from tokenmill.config import TrainConfig
from tokenmill.models import load_tokenizer, resolve_model
from tokenmill.rundir import atomic_dir

ADAPTER_CONFIG = "adapter_config.json"

# transformers' Trainer imports peft when it is installed, and peft imports
# bitsandbytes, whose CPU backend logs at import time, on CPUs with
# AVX512-BF16, that it cannot load a 4-bit matmul kernel from the optional
# `kernels` package. tokenmill never runs 4-bit layers on a CPU (QLoRA
# needs CUDA) and the import is not ours to defer, so that one record is
# dropped; this module is imported before any Trainer or peft import.
logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(
    lambda record: not record.getMessage().startswith("Failed to load CPU gemm_4bit_forward")
)


@contextlib.contextmanager
def _peft_wrapping() -> Iterator[None]:
    """Around peft building a ``PeftModel``: peft 0.21 reads the model's
    ``is_gradient_checkpointing``, which transformers 5 deprecated, so every
    adapter load printed a FutureWarning meant for peft's authors."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning
        )
        yield


def is_adapter_dir(path: str | Path) -> bool:
    return (Path(path) / ADAPTER_CONFIG).is_file()


def quantization_config(cfg: TrainConfig) -> Any:
    """bitsandbytes settings for ``qlora`` (NF4, double quantisation, bf16
    compute) or ``load_in_8bit``; None when neither is asked for."""
    if not (cfg.qlora or cfg.load_in_8bit):
        return None
    option = "qlora=True" if cfg.qlora else "load_in_8bit=True"
    if not torch.cuda.is_available():
        raise ValueError(
            f"{option} needs a CUDA GPU (bitsandbytes quantises on the GPU); on this machine "
            "pass lora=True for adapters over the full-precision model"
        )
    try:
        import bitsandbytes  # noqa: F401
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError(
            f"{option} needs bitsandbytes: pip install 'tokenmill[train,sft]'", name=e.name
        ) from e
    from transformers import BitsAndBytesConfig

    if cfg.load_in_8bit:
        return BitsAndBytesConfig(load_in_8bit=True)
    compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute,
    )


def add_lora(model: Any, cfg: TrainConfig, console: bool = True) -> Any:
    """Wraps ``model`` in LoRA adapters (peft), prints the trainable share,
    and returns the ``PeftModel``. Quantised models are first prepared for
    k-bit training (norms in fp32, input gradients on)."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if cfg.qlora or cfg.load_in_8bit:
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=cfg.gradient_checkpointing
        )
    elif cfg.gradient_checkpointing:
        # Frozen embeddings give checkpointed blocks inputs without grad;
        # the adapters inside them would then get none.
        model.enable_input_require_grads()
    targets = cfg.lora_target_modules
    lora = LoraConfig(
        r=cfg.lora_rank,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=targets if targets == "all-linear" else targets.split(","),
        bias="none",
        task_type="CAUSAL_LM",
    )
    with _peft_wrapping():
        model = get_peft_model(model, lora)
    if console:
        trainable, total = model.get_nb_trainable_parameters()
        print(
            f"lora         rank {cfg.lora_rank}, alpha {cfg.lora_alpha}, targets {targets}: "
            f"{trainable:,} trainable of {total:,} parameters ({100 * trainable / total:.3f}%)"
        )
    return model


def merge_adapter(
    adapter_dir: str | Path,
    dest: str | Path,
    base: str | Path | None = None,
    dtype: torch.dtype | str = "auto",
) -> Path:
    """Merges the LoRA adapter in ``adapter_dir`` into its base model (``base``,
    default: the path the adapter records), loaded in ``dtype`` (auto: the
    base checkpoint's), and saves a plain HF model with the tokenizer in
    ``dest``, atomically (a temporary directory renamed)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    adapter_dir = Path(adapter_dir)
    if not is_adapter_dir(adapter_dir):
        raise FileNotFoundError(f"{adapter_dir} holds no LoRA adapter ({ADAPTER_CONFIG})")
    if base is None:
        base = json.loads((adapter_dir / ADAPTER_CONFIG).read_text())["base_model_name_or_path"]
    if not base:
        raise FileNotFoundError(f"{adapter_dir} names no base model; give it as base=DIR")
    model = AutoModelForCausalLM.from_pretrained(resolve_model(str(base)), dtype=dtype)
    with _peft_wrapping():
        merged = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    dest = Path(dest)
    tok_source = adapter_dir if (adapter_dir / "tokenizer.json").is_file() else Path(base)
    with atomic_dir(dest) as tmp:
        merged.save_pretrained(tmp)
        load_tokenizer(tok_source).save_pretrained(tmp)
    return dest


def load_causal_lm(path: str | Path, dtype: torch.dtype) -> Any:
    """A causal LM from a model directory, or from an adapter directory
    (its base model with the adapter merged in)."""
    from transformers import AutoModelForCausalLM

    if is_adapter_dir(path):
        from peft import AutoPeftModelForCausalLM

        with _peft_wrapping():
            model = AutoPeftModelForCausalLM.from_pretrained(path, dtype=dtype)
        return model.merge_and_unload()
    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
