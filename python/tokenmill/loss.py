"""The training loss: a chunked cross-entropy over the last hidden states.

Logits are made a chunk of rows at a time (128 MiB of fp32 logits by
default) and their gradients taken in the same pass (no recompute), so a
152k vocabulary never materialises (batch x block x vocab) fp32 logits. The
sum is divided by Trainer's ``num_items_in_batch``, the tokens of the whole
accumulated step, so gradient accumulation and DDP give the loss of one big
batch.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from tokenmill.data import IGNORE_INDEX


class _LinearCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of ``hidden @ weight.T + bias`` against labels,
    one chunk of rows at a time, with the gradients of hidden, weight and
    bias made in the same pass (softmax minus one-hot, two matmuls), so the
    logits are neither kept nor recomputed for backward."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        labels: torch.Tensor,
        chunk: int,
    ) -> torch.Tensor:
        dtype = hidden.dtype
        w = weight.to(dtype)
        grad_h = torch.empty_like(hidden)
        # A frozen head (LoRA) needs no weight gradient: skip its matmul.
        train_head = ctx.needs_input_grad[1]
        grad_w = (
            torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
            if train_head
            else torch.empty(0)
        )
        grad_b = None if bias is None else torch.zeros_like(bias, dtype=torch.float32)
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for s in range(0, labels.numel(), chunk):
            h, y = hidden[s : s + chunk], labels[s : s + chunk]
            logits = F.linear(h, w, None if bias is None else bias.to(dtype)).float()
            lse = torch.logsumexp(logits, dim=-1)
            rows = torch.arange(y.numel(), device=y.device)
            total += (lse - logits[rows, y]).sum()
            g = logits.sub_(lse.unsqueeze(1)).exp_()  # softmax, in place
            g[rows, y] -= 1.0
            g = g.to(dtype)
            grad_h[s : s + chunk] = g @ w
            if train_head:
                grad_w += (g.t() @ h).float()
            if grad_b is not None and ctx.needs_input_grad[2]:
                grad_b += g.float().sum(0)
        ctx.save_for_backward(grad_h, grad_w, grad_b if grad_b is not None else torch.empty(0))
        ctx.weight_dtype = weight.dtype
        return total

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        grad_h, grad_w, grad_b = ctx.saved_tensors
        scale = grad_out.float()
        return (
            grad_h * scale.to(grad_h.dtype),
            (grad_w * scale).to(ctx.weight_dtype) if ctx.needs_input_grad[1] else None,
            (grad_b * scale).to(ctx.weight_dtype) if ctx.needs_input_grad[2] else None,
            None,
            None,
        )


def chunked_cross_entropy(
    hidden: torch.Tensor, head: torch.nn.Linear, labels: torch.Tensor, chunk_tokens: int
) -> tuple[torch.Tensor, int]:
    """Summed next-token cross-entropy of ``hidden`` (B, T, H) against
    ``labels`` (B, T) shifted by one, -100 ignored, and the count of
    predicted tokens. Peak extra memory: one chunk of fp32 logits (plus a
    weight-sized fp32 gradient when training)."""
    h = hidden[:, :-1, :].reshape(-1, hidden.shape[-1])
    y = labels[:, 1:].reshape(-1)
    keep = (y != IGNORE_INDEX).nonzero().squeeze(1)
    h, y = h.index_select(0, keep), y.index_select(0, keep)
    if torch.is_grad_enabled() and (h.requires_grad or head.weight.requires_grad):
        return _LinearCrossEntropy.apply(h, head.weight, head.bias, y, chunk_tokens), int(y.numel())
    total = torch.zeros((), dtype=torch.float32, device=h.device)
    for s in range(0, y.numel(), chunk_tokens):
        logits = head(h[s : s + chunk_tokens]).float()
        total += F.cross_entropy(logits, y[s : s + chunk_tokens], reduction="sum")
    return total, int(y.numel())


# fp32 logits per loss chunk by default: 128 MiB is ~220 rows of a 152k
# vocabulary, ~1000 of a 32k one; larger chunks gain little speed.
CHUNK_LOGIT_BYTES = 128 << 20


def default_chunk_tokens(vocab_size: int) -> int:
    return max(64, CHUNK_LOGIT_BYTES // (4 * vocab_size))


def enable_chunked_loss(model: Any, chunk_tokens: int | None = None) -> bool:
    """Makes ``model(…, labels=…)`` compute its loss with
    `chunked_cross_entropy` (no full logits). Models that transform logits
    before the loss (soft-capping, logit scales) keep their own forward;
    returns whether chunking is on."""
    config = model.config
    head = model.get_output_embeddings()
    if not isinstance(head, torch.nn.Linear):
        return False
    # Under DeepSpeed ZeRO-3 the weight is a partition (shape [0]); ds_shape
    # is its real one. The loss runs inside the model's top-level forward,
    # where ZeRO-3 gathers a parameter read outside its own module: it is
    # registered as such, so the gather does not depend on DeepSpeed
    # noticing the read.
    vocab = getattr(head.weight, "ds_shape", head.weight.shape)[0]
    chunk = chunk_tokens or default_chunk_tokens(vocab)
    if hasattr(head.weight, "ds_shape"):
        from deepspeed.runtime.zero import register_external_parameter

        register_external_parameter(model, head.weight)
    if any(
        getattr(config, k, None) not in (None, 1.0)
        for k in ("final_logit_softcapping", "logit_scale", "logits_scaling")
    ):
        return False
    decoder = model.get_decoder()
    if decoder is None:
        return False
    own_forward = model.forward

    from transformers.modeling_outputs import CausalLMOutputWithPast

    def forward(
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        num_items_in_batch: torch.Tensor | int | None = None,
        **kwargs: Any,
    ) -> Any:
        if labels is None:
            return own_forward(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                **kwargs,
            )
        out = decoder(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=False,
            **kwargs,
        )
        total, count = chunked_cross_entropy(out.last_hidden_state, head, labels, chunk)
        # A step whose samples hold no trained token (SFT conversations cut
        # before any reply) has a zero count: its loss is 0, not 0/0.
        if num_items_in_batch is None:
            denominator: torch.Tensor | int = max(count, 1)
        elif isinstance(num_items_in_batch, torch.Tensor):
            denominator = num_items_in_batch.clamp(min=1)
        else:
            denominator = max(num_items_in_batch, 1)
        return CausalLMOutputWithPast(loss=total / denominator)

    model.forward = forward
    return True
