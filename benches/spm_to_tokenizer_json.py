"""Convert a SentencePiece BPE model (a LLaMA-2 or Mistral ``tokenizer.model``)
into a tokenizer directory as Hugging Face converts it: the legacy layout
(Prepend/Replace normaliser, no pre-tokenizer, byte fallback), BOS ``<s>``.

The benchmark's real Mistral-7B vocabulary (docs/benchmarks.md) comes from
here: the PyPI package mistral-common ships Mistral-7B v0.1's
``tokenizer.model.v1``. The conversion needs ``transformers<5`` (5.x's
converter fails on this file), ``sentencepiece`` and ``protobuf``, which the
project does not pin, so run it from a throwaway environment::

    python3 -m venv /tmp/spm
    /tmp/spm/bin/pip install "transformers<5" sentencepiece protobuf
    /tmp/spm/bin/pip download --no-deps -d /tmp/spm mistral-common==1.13.1
    unzip -o -d /tmp/spm /tmp/spm/mistral_common-1.13.1-py3-none-any.whl \\
        mistral_common/data/tokenizer.model.v1
    /tmp/spm/bin/python benches/spm_to_tokenizer_json.py \\
        /tmp/spm/mistral_common/data/tokenizer.model.v1 bench_out/tokenizers/mistral7b
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", type=Path, help="SentencePiece BPE model file")
    ap.add_argument("out", type=Path, help="directory to write tokenizer.json and its config to")
    args = ap.parse_args()
    from transformers import LlamaTokenizer
    from transformers.convert_slow_tokenizer import LlamaConverter

    slow = LlamaTokenizer(vocab_file=str(args.model), legacy=True)
    args.out.mkdir(parents=True, exist_ok=True)
    LlamaConverter(slow).converted().save(str(args.out / "tokenizer.json"))
    config = {
        "tokenizer_class": "LlamaTokenizerFast",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "add_bos_token": True,
        "add_eos_token": False,
        "legacy": True,
    }
    (args.out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    print(f"wrote {args.out / 'tokenizer.json'}")


if __name__ == "__main__":
    main()
