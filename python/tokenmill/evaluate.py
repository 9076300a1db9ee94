"""Evaluation of a saved model (or LoRA adapter directory) on a split of
shards: token-weighted loss and perplexity."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch

from tokenmill.adapters import load_causal_lm
from tokenmill.data import PackedDataset, collate
from tokenmill.loss import chunked_cross_entropy, default_chunk_tokens
from tokenmill.models import check_tokenizer
from tokenmill.shards import read_manifest


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
