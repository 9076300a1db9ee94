"""Attention over packed blocks, one document at a time (varlen SDPA).

In ``doc`` packing a block holds several documents, marked by
``position_ids`` that restart at 0. transformers' ``sdpa`` then builds a
block-diagonal (batch, 1, T, T) mask and computes all T x T scores, most of
them masked: on CPU, and on GPUs without flash-attention, that makes a packed
block of 1024 tokens cost like one 1024-token document however short its
documents are (measured: packed SFT no faster than padded batches on CPU).

``tokenmill_sdpa_varlen`` runs ``scaled_dot_product_attention`` with
``is_causal=True`` on each document segment instead: sum(len^2) work, no
mask built (transformers builds none for an attention it has no mask
function for), exactly the same result (tested against per-document runs).
flash-attention's varlen kernel does the same in one call;
``--attn-implementation flash_attention_2`` still takes precedence.

Without ``position_ids`` (generation, padded batches) it is plain causal
SDPA: right padding never reaches real tokens under a causal mask, and their
outputs carry label -100.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

NAME = "tokenmill_sdpa_varlen"


def _segments(position_ids: torch.Tensor) -> list[list[tuple[int, int]]]:
    """``[start, end)`` of each document in each row (a new one at every 0)."""
    out = []
    length = position_ids.shape[1]
    for row in position_ids.cpu():
        starts = (row == 0).nonzero().squeeze(1).tolist()
        if not starts or starts[0] != 0:
            starts = [0, *starts]
        out.append(list(zip(starts, [*starts[1:], length], strict=True)))
    return out


def varlen_sdpa_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers attention interface: (B, H, T, D) in, (B, T, H, D) out."""
    if query.shape[2] != key.shape[2]:
        raise ValueError(f"{NAME} is for training without a KV cache; generate with sdpa")
    groups = getattr(module, "num_key_value_groups", 1)
    if groups > 1:
        key = key.repeat_interleave(groups, dim=1)
        value = value.repeat_interleave(groups, dim=1)
    dropout = dropout if module.training else 0.0
    position_ids = kwargs.get("position_ids")
    batch = query.shape[0]
    rows_segments = None
    if position_ids is not None:
        rows_segments = _segments(position_ids.expand(batch, -1))
    if rows_segments is None or all(len(r) == 1 for r in rows_segments):
        out = F.scaled_dot_product_attention(
            query, key, value, dropout_p=dropout, scale=scaling, is_causal=True
        )
        return out.transpose(1, 2).contiguous(), None
    rows = []
    for b, segments in enumerate(rows_segments):
        parts = [
            F.scaled_dot_product_attention(
                query[b : b + 1, :, s:e],
                key[b : b + 1, :, s:e],
                value[b : b + 1, :, s:e],
                dropout_p=dropout,
                scale=scaling,
                is_causal=True,
            )
            for s, e in segments
        ]
        rows.append(parts[0] if len(parts) == 1 else torch.cat(parts, dim=2))
    return torch.cat(rows).transpose(1, 2).contiguous(), None


def register() -> str:
    """Makes ``attn_implementation=NAME`` available to transformers models."""
    from transformers import AttentionInterface

    AttentionInterface.register(NAME, varlen_sdpa_attention)
    return NAME
