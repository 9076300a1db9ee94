"""Models and tokenizers: building a preset, loading a checkpoint, checking
that its tokenizer is the shards' one."""

from __future__ import annotations

import functools
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


def load_tokenizer(path: Path, trust_remote_code: bool = False) -> Any:
    """transformers tokenizer of a directory (or of a bare tokenizer.json)."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if (path / "tokenizer_config.json").is_file():
        return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
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


@functools.lru_cache(maxsize=16)
def resolve_model(name: str) -> Path:
    """A model (or tokenizer) as a local directory: a directory as it is
    (absolute: LoRA adapters record it as their base), a hub id as its
    snapshot in the user's Hugging Face cache (fetched when the hub can be
    reached and ``HF_HUB_OFFLINE`` is not set). Remembered per process: a
    run asks for the same name several times (tokenizer check, config,
    weights), and a hub lookup is network I/O."""
    path = Path(name)
    if path.is_dir():
        return path.resolve()
    if path.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise FileNotFoundError(f"{name} is not a model directory")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(name, allow_patterns=MODEL_FILES))
    except (HFValidationError, LocalEntryNotFoundError, OSError) as e:
        raise FileNotFoundError(
            f"{name} is neither a local directory nor a hub model in the Hugging Face cache "
            f"({type(e).__name__}: {str(e).splitlines()[0]})"
        ) from e


# The files of a hub model that training reads (no other weights formats).
MODEL_FILES = ["*.json", "*.safetensors", "*.model", "*.txt", "*.py", "*.jinja", "*.tiktoken"]


def config_dtype(config: Any) -> torch.dtype | None:
    """The dtype a checkpoint was saved in (config.json), if it says."""
    value = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(value, str):
        value = getattr(torch, value, None)
    return value if isinstance(value, torch.dtype) else None


def load_dtype(cfg: TrainConfig, config: Any | None) -> torch.dtype:
    """The dtype weights are loaded (and trained) in: ``torch_dtype``, or
    for ``auto`` the checkpoint's own on a GPU with bf16 (bf16 for an fp16
    checkpoint: fp16 weights would train without loss scaling), else
    float32 (CPU, fp16-only GPUs: Trainer's fp16 needs fp32 weights; presets)."""
    if cfg.torch_dtype != "auto":
        return getattr(torch, cfg.torch_dtype)
    if config is None or not (torch.cuda.is_available() and torch.cuda.is_bf16_supported()):
        return torch.float32
    own = config_dtype(config)
    return torch.bfloat16 if own == torch.float16 else own or torch.float32


def build_model(
    cfg: TrainConfig,
    manifest: dict[str, Any],
    config: Any = None,
    quantization: Any = None,
    device_map: Any = None,
) -> Any:
    """A preset LLaMA sized to the shards' vocabulary, or the checkpoint
    ``cfg.model`` whose ``config`` is given (the caller has checked its
    tokenizer against the shards), loaded quantised when ``quantization``
    (a ``BitsAndBytesConfig``) is given. Call it after Trainer's arguments
    exist: under DeepSpeed ZeRO-3 transformers then partitions the weights
    while loading them."""
    import transformers

    kwargs: dict[str, Any] = {}
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
        elif device_map is not None:
            kwargs["device_map"] = device_map
        model = transformers.AutoModelForCausalLM.from_pretrained(
            resolve_model(cfg.model),
            config=config,
            dtype="auto" if quantization is not None else load_dtype(cfg, config),
            trust_remote_code=cfg.trust_remote_code,
            **kwargs,
        )
        vocab = model.get_input_embeddings().weight.shape[0]
        if 0 < vocab < manifest["tokenizer"]["vocab_size"]:  # 0: partitioned by ZeRO-3
            raise ValueError(
                f"{cfg.model} has {vocab} embeddings, the shards' tokenizer "
                f"{manifest['tokenizer']['vocab_size']} tokens"
            )
        return _name_tied_weights(model)
    torch.manual_seed(cfg.seed)
    model = transformers.LlamaForCausalLM._from_config(
        preset_config(cfg, manifest), dtype=load_dtype(cfg, None), **kwargs
    )
    return _name_tied_weights(model)


def preset_config(cfg: TrainConfig, manifest: dict[str, Any]) -> Any:
    """The ``LlamaConfig`` of ``cfg.preset`` sized to the shards' tokenizer."""
    import transformers

    tok = manifest["tokenizer"]
    return transformers.LlamaConfig(
        vocab_size=tok["vocab_size"],
        bos_token_id=tok["bos_id"],
        eos_token_id=tok["eos_id"],
        pad_token_id=tok.get("pad_id"),
        tie_word_embeddings=True,
        rms_norm_eps=1e-5,
        **PRESETS[cfg.preset],
    )


def model_config(cfg: TrainConfig, manifest: dict[str, Any]) -> Any:
    """The model's config without its weights: the checkpoint's or the preset's."""
    if not cfg.model:
        return preset_config(cfg, manifest)
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(
        resolve_model(cfg.model), trust_remote_code=cfg.trust_remote_code
    )


def parameter_counts(model: Any) -> tuple[int, int]:
    """``(all, trainable)`` parameters; under DeepSpeed ZeRO-3 the whole
    model's (``ds_numel``), not this rank's partition."""
    total = trainable = 0
    for p in model.parameters():
        n = getattr(p, "ds_numel", p.numel())
        total += n
        trainable += n if p.requires_grad else 0
    return total, trainable


def uses_experts(config: Any) -> bool:
    """Whether the model routes tokens to experts (some may get none in a step)."""
    return any(getattr(config, k, None) for k in ("num_experts", "num_local_experts"))


def context_length(config: Any) -> int | None:
    """Positions the model was built for (None: no fixed limit)."""
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


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
