"""Text generation from a trained model directory (HF ``generate``, KV cache)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


def read_prompt(prompt: str) -> str:
    """The prompt itself, or the contents of ``FILE:path``."""
    if prompt.startswith("FILE:"):
        return Path(prompt[5:]).read_text(encoding="utf-8")
    return prompt


def generate(
    model_dir: str | Path,
    prompt: str,
    *,
    num_samples: int = 1,
    max_new_tokens: int = 256,
    temperature: float = 0.8,
    top_k: int | None = 300,
    top_p: float | None = None,
    seed: int = 42,
    chat: bool = False,
    system: str | None = None,
) -> list[str]:
    """``num_samples`` continuations of ``prompt`` (without the prompt).

    ``temperature`` 0 decodes greedily; otherwise sampling with ``top_k`` /
    ``top_p``, reproducible for a ``seed`` on the same machine. ``chat``
    wraps the prompt as a user turn in the tokenizer's chat template, with
    the generation prompt added.
    """
    import transformers

    from tokenmill.adapters import load_causal_lm
    from tokenmill.models import load_tokenizer

    if num_samples < 1 or max_new_tokens < 1:
        raise ValueError("num_samples and max_new_tokens must be at least 1")
    if temperature < 0:
        raise ValueError("temperature must be >= 0")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    tokenizer = load_tokenizer(Path(model_dir))
    model = load_causal_lm(model_dir, dtype).to(device)
    model.eval()
    if chat:
        if not tokenizer.chat_template:
            raise ValueError(f"{model_dir}: the tokenizer has no chat template for chat=True")
        messages = [{"role": "system", "content": system}] if system else []
        messages.append({"role": "user", "content": prompt})
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids
    else:
        ids = tokenizer(prompt, return_tensors="pt").input_ids
    ids = ids.to(device)
    sample = temperature > 0
    options: dict[str, Any] = dict(
        max_new_tokens=max_new_tokens,
        do_sample=sample,
        num_return_sequences=num_samples,
        pad_token_id=tokenizer.pad_token_id
        if tokenizer.pad_token_id is not None
        else tokenizer.eos_token_id,
        use_cache=True,
    )
    if sample:
        options.update(temperature=temperature, top_k=top_k or 0, top_p=top_p or 1.0)
    else:
        options.update(temperature=None, top_k=None, top_p=None)
    transformers.set_seed(seed)
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), **options)
    return [tokenizer.decode(row[ids.shape[1] :], skip_special_tokens=True) for row in out]
