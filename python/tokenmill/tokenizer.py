"""Training and describing tokenizers.

`train_tokenizer` trains a byte-level BPE with the Python ``tokenizers``
trainer on texts streamed by the Rust reader (same inputs, same bad-line
handling as ``prepare``), following the happy-llm tiny-LLaMA chapter: NFKC
normalisation, special tokens ``<unk> <s> </s> <|im_start|> <|im_end|>`` at
ids 0-4, and a ChatML chat template. The output directory loads with
``transformers.AutoTokenizer.from_pretrained``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tokenmill import _core
from tokenmill.inputs import Inputs, PathLike, resolved_inputs

if TYPE_CHECKING:
    from tokenizers import Tokenizer

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]

# ChatML, with the default system prompt the happy-llm chapter uses.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def train_tokenizer(
    inputs: Inputs,
    output: PathLike,
    *,
    vocab_size: int = 6144,
    min_frequency: int = 2,
    text_field: str = "text",
    txt_mode: str = "line",
    max_docs: int | None = None,
    model_max_length: int = 2048,
    overwrite: bool = False,
    progress: bool = True,
    input_split: str | None = None,
) -> Path:
    """Trains a byte-level BPE tokenizer and writes a transformers-loadable
    directory (tokenizer.json, tokenizer_config.json, special_tokens_map.json) plus
    tokenmill.json, a record of the training arguments and input counts.

    ``<|im_start|>`` is BOS and ``<|im_end|>`` is EOS and PAD, as in the
    happy-llm chapter, so a model pretrained on these shards stops at the end
    of a ChatML turn without retraining its embeddings.

    An ``output`` that already holds a tokenizer.json is refused unless
    ``overwrite``; then only the files written here are replaced.
    """
    out = Path(output)
    if (out / "tokenizer.json").exists() and not overwrite:
        raise _core.OutputExistsError(
            f"{out} already holds a tokenizer (tokenizer.json); pass overwrite=True to replace it"
        )
    if vocab_size < 256 + len(SPECIAL_TOKENS):
        raise _core.InvalidOptionError(
            f"vocab_size must be at least {256 + len(SPECIAL_TOKENS)} for byte-level BPE"
        )
    with resolved_inputs(inputs, text_field, input_split) as r:
        batches = _core.TextBatches(r.specs, r.tables, text_field=text_field, txt_mode=txt_mode)
        tok, seen = _train(batches, vocab_size, min_frequency, max_docs, progress)
    skipped = ", ".join(f"{k}={v}" for k, v in batches.skipped.items())
    if seen == 0:
        raise _core.NoDocumentsError(
            f"no documents to train on in {inputs} (skipped lines: {skipped or 'none'})"
        )
    for i, t in enumerate(SPECIAL_TOKENS):
        if tok.token_to_id(t) != i:
            raise RuntimeError(f"special token {t} did not get id {i}")

    out.mkdir(parents=True, exist_ok=True)
    tok.save(os.fspath(out / "tokenizer.json"))
    special = {
        "bos_token": "<|im_start|>",
        "eos_token": "<|im_end|>",
        "unk_token": "<unk>",
        "pad_token": "<|im_end|>",
    }
    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **special,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": model_max_length,
        "chat_template": CHATML_TEMPLATE,
        "added_tokens_decoder": {
            str(i): {
                "content": t,
                "lstrip": False,
                "normalized": False,
                "rstrip": False,
                "single_word": False,
                "special": True,
            }
            for i, t in enumerate(SPECIAL_TOKENS)
        },
    }
    (out / "tokenizer_config.json").write_text(
        json.dumps(config, ensure_ascii=False, indent=2) + "\n"
    )
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
    # What was trained on and how, for a person reading the directory later.
    record = {
        "tool": "tokenmill train-tokenizer",
        "tokenmill_version": _core.__version__,
        "args": {
            "inputs": r.names(),
            "vocab_size": vocab_size,
            "min_frequency": min_frequency,
            "text_field": text_field,
            "txt_mode": txt_mode,
            "max_docs": max_docs,
            "model_max_length": model_max_length,
        },
        "documents": seen,
        "skipped_lines": batches.skipped,
        "fingerprint": tokenizer_info(out)["fingerprint"],
    }
    (out / "tokenmill.json").write_text(json.dumps(record, ensure_ascii=False, indent=2) + "\n")
    if skipped:
        print(f"train-tokenizer: skipped lines: {skipped}")
    return out


def tokenizer_info(path: PathLike) -> dict[str, Any]:
    """Fingerprint, vocabulary size and special tokens of a tokenizer.json or
    tokenizer directory, as the data core sees them."""
    info: dict[str, Any] = json.loads(_core.tokenizer_info(os.fspath(path)))
    return info


def _train(
    batches: Iterable[list[str]],
    vocab_size: int,
    min_frequency: int,
    max_docs: int | None,
    progress: bool,
) -> tuple[Tokenizer, int]:
    """A byte-level BPE trained on ``batches`` (at most ``max_docs``
    documents) and the number of documents it saw."""
    seen = 0

    def texts() -> Iterator[list[str]]:
        nonlocal seen
        for batch in batches:
            if max_docs is not None and seen + len(batch) > max_docs:
                batch = batch[: max_docs - seen]
            seen += len(batch)
            if batch:
                yield batch
            if max_docs is not None and seen >= max_docs:
                return

    # Imported here: only training needs the `tokenizers` package, whose
    # import was a tenth of every `tokenmill` command's start-up.
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=progress,
    )
    tok.train_from_iterator(texts(), trainer=trainer)
    return tok, seen
