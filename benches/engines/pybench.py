"""Python-side measurement of the PyPI packages fastokens and gigatoken
against Python `tokenizers` (see docs/tokenizer-engines.md).

  python pybench.py bench ENGINE TOKENIZER_JSON FILE...   -> MB/s (threads from the
      environment: run 1-thread under `taskset -c 0`, RAYON_NUM_THREADS / FASTOKENS_BPE_THREADS)
  python pybench.py check ENGINE TOKENIZER_JSON FILE...   -> docs differing + adversarial strings

ENGINE: hf | fastokens | fastokens-list | gigatoken-files | gigatoken-batch
Every engine adds no special tokens and encodes special-token strings in the
text as ordinary text where it has a switch for that.
"""

import json
import resource
import sys
import time

import numpy as np


def read_texts(files):
    out = []
    for f in files:
        with open(f, encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    out.append(json.loads(line)["text"])
    return out


def hf_tok(path):
    from tokenizers import Tokenizer

    t = Tokenizer.from_file(path)
    t.encode_special_tokens = True
    return t


def make(engine, path):
    """Returns encode(texts, files) -> list of per-doc id arrays."""
    if engine == "hf":
        t = hf_tok(path)
        return lambda texts, files: [
            e.ids for e in t.encode_batch_fast(texts, add_special_tokens=False)
        ]
    if engine == "fastokens":
        from fastokens._native import Tokenizer

        t = Tokenizer.from_file(path)

        def enc(texts, files):
            ids, offs = t.encode_batch_flat(
                texts, add_special_tokens=False, split_special_tokens=True
            )
            ids = np.frombuffer(ids, np.uint32)
            offs = np.frombuffer(offs, np.uint64)
            return [ids[offs[i] : offs[i + 1]] for i in range(len(offs) - 1)]

        return enc
    if engine == "fastokens-list":
        from fastokens._native import Tokenizer

        t = Tokenizer.from_file(path)
        return lambda texts, files: [
            e.ids
            for e in t.encode_batch(texts, add_special_tokens=False, split_special_tokens=True)
        ]
    if engine.startswith("gigatoken"):
        import gigatoken as gt

        t = gt.Tokenizer(path)
        if engine == "gigatoken-files":
            return lambda texts, files: list(
                t.encode_files(gt.JsonlFileSource(files, field="text"))
            )
        return lambda texts, files: list(t.encode_batch(texts))
    raise SystemExit(f"unknown engine {engine}")


def main():
    cmd, engine, path, *files = sys.argv[1:]
    texts = read_texts(files)
    nbytes = sum(len(t.encode()) for t in texts)
    try:
        t0 = time.perf_counter()
        enc = make(engine, path)
        load_s = time.perf_counter() - t0
    except Exception as e:
        print(f"PY{cmd.upper()} engine={engine} error={type(e).__name__}: {str(e)[:300]!r}")
        return
    if cmd == "bench":
        t0 = time.perf_counter()
        out = enc(texts, files)
        s = time.perf_counter() - t0
        ntok = sum(len(x) for x in out)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            f"PYRESULT engine={engine} docs={len(out)} text_mb={nbytes / 1e6:.2f} tokens={ntok}"
            f" load_s={load_s:.2f} mbps={nbytes / 1e6 / s:.2f} peak_rss_mib={rss:.0f}"
        )
        return
    # check
    hf = hf_tok(path)
    want = [e.ids for e in hf.encode_batch_fast(texts, add_special_tokens=False)]
    try:
        got = enc(texts, files)
    except Exception as e:
        print(f"PYCHECK engine={engine} encode error={type(e).__name__}: {str(e)[:300]!r}")
        return
    if len(got) != len(want):
        print(f"PYCHECK engine={engine} doc count differs: {len(got)} vs {len(want)}")
    bad = [i for i in range(min(len(got), len(want))) if list(map(int, got[i])) != want[i]]
    print(f"PYCHECK engine={engine} docs={len(want)} differing={len(bad)}")
    if bad:
        i = bad[0]
        g = list(map(int, got[i]))
        k = next(
            (j for j, (a, b) in enumerate(zip(want[i], g, strict=False)) if a != b),
            min(len(g), len(want[i])),
        )
        enc_hf = hf.encode(texts[i], add_special_tokens=False)
        off = enc_hf.offsets[k][0] if k < len(enc_hf.offsets) else len(texts[i])

        def show(ids):
            return " ".join(f"{x}:{hf.id_to_token(x)!r}" for x in ids)

        print(
            f"  example doc #{i}: first diff at token {k} (char {off}); "
            f"text {texts[i][max(0, off - 30) : off + 30]!r}"
        )
        print(f"      tokenizers: {show(want[i][max(0, k - 2) : k + 4])}")
        print(f"      engine:     {show(g[max(0, k - 2) : k + 4])}")
    if engine in ("hf", "gigatoken-files"):
        return
    mb = 1 << 20
    cases = {
        "1MB 'a' run": "a" * mb,
        "1MB '中' run": "中" * (mb // 3),
        "1MB spaces": " " * mb,
        "whitespace mix": " \t\n\r\u00a0\u3000  x  \n\n\t y \u2028z   " * 2000,
        "combining marks": "e\u0301a\u0308\u0323o\u0302\u0303 \ufb01 \uff21\u2460 Å Å ﬀ ㎏ " * 2000,
        "emoji + ZWJ": "👩‍👩‍👧‍👦 🏳️‍🌈 😀😀😀 👍🏽 " * 2000,
        "specials in text": "hi <|im_start|>user\nyo<|im_end|> </s><s><unk> <|endoftext|>" * 200,
        "lone <|im_start|>": "<|im_start|>",
    }
    for label, text in cases.items():
        w = hf.encode(text, add_special_tokens=False).ids
        t0 = time.perf_counter()
        try:
            g = list(map(int, enc([text], None)[0]))
        except Exception as e:
            print(
                f"PYADV engine={engine} case={label!r} error={type(e).__name__}: {str(e)[:200]!r}"
            )
            continue
        print(
            f"PYADV engine={engine} case={label!r} equal={g == w}"
            f" time_s={time.perf_counter() - t0:.3f}"
            + ("" if g == w else f" hf={w[:6]} got={g[:6]}")
        )


main()
