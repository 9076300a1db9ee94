"""What a run directory holds besides Trainer's checkpoints: the run
manifest, metrics, loss.png, the loader position in each checkpoint, and
plain model directories copied out of checkpoints (best_model/)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from tokenmill import _core
from tokenmill.config import TrainConfig
from tokenmill.data import PackedDataset, Source

DATA_STATE = "tokenmill_data.json"
# Files of a checkpoint that belong to the trainer, not to the model.
TRAINER_FILES = re.compile(
    r"^(optimizer\.pt|scheduler\.pt|rng_state.*\.pth|trainer_state\.json|training_args\.bin|"
    + re.escape(DATA_STATE)
    + r"|global_step.*|latest|zero_to_fp32\.py)$"
)


def latest_checkpoint(out: Path) -> Path | None:
    """The checkpoint-N with the highest N that holds a trainer state."""
    found = [
        (int(p.name.split("-")[1]), p)
        for p in out.glob("checkpoint-*")
        if p.name.split("-")[1].isdigit() and (p / "trainer_state.json").is_file()
    ]
    return max(found)[1] if found else None


def write_json(path: Path, value: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


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


def copy_model(checkpoint_dir: Path, dest: Path) -> None:
    """The model and tokenizer files of a checkpoint, as a plain HF directory."""
    with atomic_dir(dest) as tmp:
        for f in checkpoint_dir.iterdir():
            if f.is_file() and not TRAINER_FILES.match(f.name):
                shutil.copy2(f, tmp / f.name)


def write_run_manifest(
    out: Path,
    cfg: TrainConfig,
    sources: list[Source],
    eval_set: PackedDataset | None,
    model: Any,
    max_steps: int,
    chunked: bool,
    bf16: bool,
    fp16: bool,
    world_size: int,
) -> None:
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    write_json(
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
            "world_size": world_size,
            "config": asdict(cfg),
        },
    )


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
