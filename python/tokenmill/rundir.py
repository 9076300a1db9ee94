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
from tokenmill.models import parameter_counts

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
    loss: str,
    args: Any,
    world_size: int,
    held_out: int,
) -> None:
    params, trainable = parameter_counts(model)
    # What this process holds: a partition under DeepSpeed ZeRO-3.
    local = sum(getattr(p, "ds_tensor", p).numel() * p.element_size() for p in model.parameters())
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
                "parameter_bytes_on_rank_0": local,
                "config": model.config.to_dict(),
            },
            "data": [
                {**s.dataset.fingerprint, "weight": s.weight, "tokens": s.dataset.num_tokens}
                for s in sources
            ],
            "eval": eval_set.fingerprint if eval_set else None,
            "eval_held_out_of_train": held_out,
            "max_steps": max_steps,
            "loss": loss,
            "adapters": "qlora"
            if cfg.qlora
            else "lora-8bit"
            if cfg.load_in_8bit
            else "lora"
            if cfg.lora
            else None,
            "optimizer": {"name": cfg.optim, "args": cfg.optim_args},
            "precision": {
                "weights": str(next(model.parameters()).dtype).removeprefix("torch."),
                "autocast": "bf16" if args.bf16 else "fp16" if args.fp16 else None,
            },
            "engine": "deepspeed"
            if args.deepspeed
            else "fsdp"
            if args.fsdp
            else "ddp"
            if world_size > 1
            else "single process",
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


BEST = "tokenmill_best.json"


def read_best(best_dir: Path) -> dict[str, Any] | None:
    """``{"step", "eval_loss"}`` of the model in ``best_dir``, if one is there."""
    try:
        return dict(json.loads((best_dir / BEST).read_text()))
    except (OSError, ValueError):
        return None


def save_best(trainer: Any, best_dir: Path, tokenizer: Any, step: int, loss: float) -> None:
    """Saves the model being trained as ``best_dir`` (with its tokenizer and
    `BEST`), replacing the previous one only once complete. Every rank
    calls it: Trainer gathers sharded weights to rank 0, which writes."""
    tmp = best_dir.with_name(best_dir.name + ".tmp")
    trainer.save_model(str(tmp))
    if trainer.args.process_index == 0:
        tokenizer.save_pretrained(tmp)
        write_json(tmp / BEST, {"step": step, "eval_loss": loss})
        shutil.rmtree(best_dir, ignore_errors=True)
        os.replace(tmp, best_dir)
