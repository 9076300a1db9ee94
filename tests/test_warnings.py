"""Third-party warnings that are not the user's business, prevented where
they start: the tied LM head on checkpoint reloads, peft's read of a
deprecated transformers property, galore-torch's AdamW deprecation, DDP's
search for unused parameters, and bitsandbytes' CPU-kernel log line."""

from __future__ import annotations

import importlib.util
import logging
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest

from test_data import tiny_llama
from tokenmill.adapters import add_lora
from tokenmill.config import TrainConfig
from tokenmill.models import build_model, uses_experts
from tokenmill.train import _make_trainer, _training_arguments


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def trainer(model: Any, out: Path, **args: Any) -> Any:
    from transformers import TrainingArguments

    return _make_trainer(
        model=model,
        args=TrainingArguments(output_dir=str(out), report_to="none", use_cpu=True, **args),
    )


def test_a_tied_lm_head_reloads_without_a_missing_keys_warning(tmp_path: Path) -> None:
    manifest = {"tokenizer": {"vocab_size": 300, "bos_id": 1, "eos_id": 2, "pad_id": 2}}
    model = build_model(TrainConfig(preset="llama-micro", max_steps=1), manifest)
    assert model.config.tie_word_embeddings
    model.save_pretrained(tmp_path / "checkpoint-1")  # the tied head is not saved
    records = Records()
    logging.getLogger("transformers").addHandler(records)
    try:
        trainer(model, tmp_path)._load_from_checkpoint(str(tmp_path / "checkpoint-1"))
    finally:
        logging.getLogger("transformers").removeHandler(records)
    assert not [m for m in records.messages if "missing keys" in m]
    assert model.lm_head.weight is model.model.embed_tokens.weight


def test_wrapping_a_model_in_lora_adapters_warns_nothing() -> None:
    cfg = TrainConfig(lora=True, lora_rank=2, max_steps=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        add_lora(tiny_llama(300), cfg)
    assert not [w for w in caught if issubclass(w.category, FutureWarning)], caught


def test_the_galore_optimizer_is_built_without_a_deprecation_warning(tmp_path: Path) -> None:
    pytest.importorskip("galore_torch")
    t = trainer(
        tiny_llama(300).train(),
        tmp_path,
        optim="galore_adamw",
        optim_target_modules=[r".*mlp.*"],
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        optimizer = t.create_optimizer()
    assert type(optimizer).__module__.startswith("galore_torch")
    assert not [w for w in caught if issubclass(w.category, FutureWarning)], caught


def test_ddp_searches_for_unused_parameters_only_in_mixtures_of_experts(tmp_path: Path) -> None:
    import transformers

    cfg = TrainConfig(output_dir=str(tmp_path), max_steps=1)
    dense = uses_experts(tiny_llama(300).config)
    moe = uses_experts(transformers.MixtralConfig(num_local_experts=4))
    assert (dense, moe) == (False, True)
    args = _training_arguments(cfg, dense, 1, 1, False, False, False)
    assert args.ddp_find_unused_parameters is False


def test_importing_bitsandbytes_after_tokenmill_logs_nothing() -> None:
    """bitsandbytes logs the line at import on CPUs with AVX512-BF16 when the
    optional `kernels` package is missing; elsewhere there is nothing to see."""
    pytest.importorskip("bitsandbytes")
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file() or "avx512_bf16" not in cpuinfo.read_text():
        pytest.skip("bitsandbytes probes its CPU kernel only on CPUs with AVX512-BF16")
    if importlib.util.find_spec("kernels") is not None:
        pytest.skip("with `kernels` installed bitsandbytes has nothing to log")
    done = subprocess.run(
        [sys.executable, "-c", "import tokenmill.adapters, bitsandbytes"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "gemm_4bit_forward" not in done.stderr
