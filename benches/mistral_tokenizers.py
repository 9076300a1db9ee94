"""Write Mistral's own tokenizers, as the PyPI package mistral-common ships
them, as tokenizer directories the way Hugging Face converts them:

* ``mistral7b``: Mistral-7B v0.1's SentencePiece BPE (``tokenizer.model.v1``,
  32k), the legacy layout (Prepend/Replace normaliser, no pre-tokenizer, byte
  fallback), BOS ``<s>``;
* ``tekken``: Tekken (``tekken_240911.json``, 131k, tiktoken-style split
  regex, byte-level, 1,000 special tokens).

The benchmark's real vocabularies (docs/benchmarks.md) come from here. The
conversion needs ``transformers<5`` (5.x's converter fails on the first),
``sentencepiece``, ``protobuf`` and a mistral-common old enough for that
transformers, none of which the project pins, so run it from a throwaway
environment::

    python3 -m venv /tmp/mt
    /tmp/mt/bin/pip install "transformers<5" sentencepiece protobuf mistral-common==1.5.4
    /tmp/mt/bin/python benches/mistral_tokenizers.py bench_out/tokenizers
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="folder to write mistral7b/ and tekken/ into")
    args = ap.parse_args()
    import mistral_common
    from transformers import LlamaTokenizer
    from transformers.convert_slow_tokenizer import LlamaConverter
    from transformers.integrations.mistral import convert_tekken_tokenizer

    data = Path(mistral_common.__file__).parent / "data"
    out = args.out / "mistral7b"
    out.mkdir(parents=True, exist_ok=True)
    slow = LlamaTokenizer(vocab_file=str(data / "tokenizer.model.v1"), legacy=True)
    LlamaConverter(slow).converted().save(str(out / "tokenizer.json"))
    config = {
        "tokenizer_class": "LlamaTokenizerFast",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "add_bos_token": True,
        "add_eos_token": False,
        "legacy": True,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    convert_tekken_tokenizer(str(data / "tekken_240911.json")).save_pretrained(
        str(args.out / "tekken")
    )
    print(f"wrote {out} and {args.out / 'tekken'}")


if __name__ == "__main__":
    main()
