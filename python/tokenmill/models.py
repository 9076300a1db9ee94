"""Models and tokenizers: building a preset, loading a checkpoint, checking
that its tokenizer is the shards' one."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from tokenmill import _core, attention
from tokenmill.config import PRESETS, TrainConfig


def tokenizer_dir(manifest: dict[str, Any]) -> Path:
    path = Path(manifest["tokenizer"]["path"])
    if not path.exists():
        raise FileNotFoundError(
            f"the shards' tokenizer {path} is gone; it is needed to save a usable model"
        )
    return path.parent


def load_tokenizer(path: Path) -> Any:
    """transformers tokenizer of a directory (or of a bare tokenizer.json)."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if (path / "tokenizer_config.json").is_file():
        return AutoTokenizer.from_pretrained(path)
    return PreTrainedTokenizerFast(tokenizer_file=str(path / "tokenizer.json"))


def check_tokenizer(model_dir: str | Path, manifest: dict[str, Any], data: str) -> None:
    """Refuses a model whose tokenizer is not the one the shards were made
    with (fingerprints differ); the same tokenizer re-saved is accepted."""
    mine = manifest["tokenizer"]
    try:
        theirs = json.loads(_core.tokenizer_info(os.fspath(model_dir)))
    except (_core.TokenmillError, OSError) as e:
        raise ValueError(
            f"cannot check the tokenizer of {model_dir} against the shards in {data}: {e}"
        ) from e
    if theirs["fingerprint"] != mine["fingerprint"]:
        raise ValueError(
            "tokenizer mismatch: the model's tokenizer "
            f"{theirs['path']} (vocab {theirs['vocab_size']}, fingerprint "
            f"{theirs['fingerprint'][:12]}) is not the shards' tokenizer {mine['path']} "
            f"(vocab {mine['vocab_size']}, fingerprint {mine['fingerprint'][:12]}) of {data}; "
            "re-run `tokenmill prepare` with the model's tokenizer"
        )


def build_model(cfg: TrainConfig, manifest: dict[str, Any], quantization: Any = None) -> Any:
    """A preset LLaMA sized to the shards' vocabulary, or a local checkpoint
    (whose tokenizer the caller has checked against the shards), loaded
    quantised when ``quantization`` (a ``BitsAndBytesConfig``) is given."""
    import transformers

    kwargs = {}
    if cfg.attn_implementation:
        kwargs["attn_implementation"] = cfg.attn_implementation
    elif cfg.packing == "doc":
        kwargs["attn_implementation"] = attention.register()  # per-document SDPA
    if cfg.model:
        if quantization is not None:
            kwargs.update(
                quantization_config=quantization,
                device_map={"": int(os.environ.get("LOCAL_RANK", "0"))},
            )
        # An absolute path: LoRA adapters record it as their base model.
        model = transformers.AutoModelForCausalLM.from_pretrained(
            os.path.abspath(cfg.model),
            dtype=torch.float32 if quantization is None else "auto",
            **kwargs,
        )
        vocab = model.get_input_embeddings().weight.shape[0]
        if vocab < manifest["tokenizer"]["vocab_size"]:
            raise ValueError(
                f"{cfg.model} has {vocab} embeddings, the shards' tokenizer "
                f"{manifest['tokenizer']['vocab_size']} tokens"
            )
        return _name_tied_weights(model)
    tok = manifest["tokenizer"]
    config = transformers.LlamaConfig(
        vocab_size=tok["vocab_size"],
        bos_token_id=tok["bos_id"],
        eos_token_id=tok["eos_id"],
        pad_token_id=tok.get("pad_id"),
        tie_word_embeddings=True,
        rms_norm_eps=1e-5,
        **PRESETS[cfg.preset],
    )
    torch.manual_seed(cfg.seed)
    return _name_tied_weights(transformers.LlamaForCausalLM._from_config(config, **kwargs))


def _name_tied_weights(model: Any) -> Any:
    """Lists the model's tied weights (the LM head of tied-embedding models)
    in ``_keys_to_ignore_on_save`` too. Trainer reloads checkpoints (resume,
    best model) non-strictly and re-ties the weights when the missing keys
    are exactly those; otherwise it warns ``missing keys ['lm_head.weight']``.
    Tied weights are never saved, so they are always missing, but
    transformers 5 lists them only in ``all_tied_weights_keys``, which
    Trainer does not read. Saving drops them either way."""
    tied = getattr(model, "all_tied_weights_keys", None)
    if tied:
        model._keys_to_ignore_on_save = set(model._keys_to_ignore_on_save or ()) | set(tied)
    return model
