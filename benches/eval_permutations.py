"""Compares MinHash permutation families on the same shingle hashes.

tokenmill's shingles (``tokenmill._core.shingles``) are hashed as tokenmill
hashes them (xxh3-64 seeded by the seed, low 32 bits); then, for each seed,
signatures of 128 permutations are computed in numpy with

- ``multiply-add-shift``: ``(a * x + b) mod 2^64 >> 32`` (tokenmill up to
  commit b1677bd, Dietzfelbinger's scheme), and
- ``xor-multiply``: ``(x ^ s) * a mod 2^32`` (tokenmill now),

both with parameters drawn from splitmix64(seed) as tokenmill draws them, so
the first reproduces tokenmill's old signatures and the second its current
ones. LSH with 9 bands x 13 rows (tokenmill's choice at 0.8) then gives
clusters, scored against every pair whose exact Jaccard is at least 0.8:
recall and precision over the pairs inside clusters, and, on the planted
corpus, the mean absolute error of the Jaccard estimate over pairs >= 0.3.

    python benches/eval_permutations.py planted 10      # tests/corpus.py, seed 0
    python benches/eval_permutations.py bench 10        # bench_out/corpus/40M
    python benches/eval_permutations.py bench 20 11     # seeds 11 to 30
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import xxhash

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import tokenmill  # noqa: E402
from corpus import (  # noqa: E402
    cluster_pairs,
    clusters_from_candidates,
    exact_pairs,
    planted_corpus,
)

MASK = (1 << 64) - 1
K, BANDS, ROWS, THRESHOLD = 128, 9, 13, 0.8


def draws(seed: int, k: int) -> tuple[list[int], list[int]]:
    """Two splitmix64 draws per permutation, as `MinHasher::new` makes them."""
    state, a, b = seed, [], []
    for _ in range(2 * k):
        state = (state + 0x9E3779B97F4A7C15) & MASK
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        (a if len(a) == len(b) else b).append(z ^ (z >> 31))
    return a, b


def multiply_add_shift(xs: np.ndarray, a: list[int], b: list[int]) -> np.ndarray:
    av = np.array([v | 1 for v in a], dtype=np.uint64)
    bv = np.array(b, dtype=np.uint64)
    h = (xs[:, None].astype(np.uint64) * av + bv) >> np.uint64(32)
    return h.min(0).astype(np.uint32)


def xor_multiply(xs: np.ndarray, a: list[int], b: list[int]) -> np.ndarray:
    av = np.array([(v >> 32) | 1 for v in a], dtype=np.uint32)
    sv = np.array([v >> 32 for v in b], dtype=np.uint32)
    return ((xs[:, None] ^ sv) * av).min(0)


def lsh_clusters(sigs: np.ndarray) -> list[list[int]]:
    # Each document joins the first document of each of its band buckets.
    firsts: list[list[int]] = []
    for j in range(BANDS):
        first: dict[bytes, int] = {}
        keys = [sigs[i, j * ROWS : (j + 1) * ROWS].tobytes() for i in range(len(sigs))]
        firsts.append([first.setdefault(k, i) for i, k in enumerate(keys)])
    return clusters_from_candidates(len(sigs), lambda i: [f[i] for f in firsts])


def main() -> None:
    which, seeds = sys.argv[1], int(sys.argv[2])
    first = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    if which == "planted":
        docs = planted_corpus(seed=0)
    else:
        files = sorted((ROOT / "bench_out" / "corpus" / "40M").glob("part-*.jsonl"))
        docs = [json.loads(line)["text"] for f in files for line in f.open(encoding="utf-8")]
    shingles = [tokenmill._core.shingles(d, "auto", 5)[1] for d in docs]
    sets = [set(s) for s in shingles]
    truth = set(exact_pairs(sets, THRESHOLD))
    near = exact_pairs(sets, 0.3) if which == "planted" else {}
    print(f"{which}: {len(docs):,} docs, {len(truth)} pairs >= {THRESHOLD}", flush=True)
    families: dict[str, Callable[..., np.ndarray]] = {
        "multiply-add-shift": multiply_add_shift,
        "xor-multiply": xor_multiply,
    }
    scores: dict[str, list[tuple[float, float, float]]] = {name: [] for name in families}
    for seed in range(first, first + seeds):
        hashes = [
            np.array(
                [xxhash.xxh3_64_intdigest(s.encode(), seed=seed) & 0xFFFFFFFF for s in sh] or [0],
                dtype=np.uint32,
            )
            for sh in shingles
        ]
        a, b = draws(seed, K)
        for name, family in families.items():
            sigs = np.stack([family(x, a, b) for x in hashes])
            predicted = cluster_pairs(lsh_clusters(sigs))
            hits = len(predicted & truth)
            errors = [abs(float((sigs[i] == sigs[j]).mean()) - v) for (i, j), v in near.items()]
            row = (hits / len(truth), hits / max(len(predicted), 1), float(np.mean(errors or [0])))
            scores[name].append(row)
            print(f"seed {seed} {name}: recall {row[0]:.3f} precision {row[1]:.3f}", flush=True)
    for name, rows in scores.items():
        r = np.array(rows)
        mae = f", estimate MAE {r[:, 2].mean():.4f}" if near else ""
        print(
            f"{name:20} recall {r[:, 0].mean():.3f} (sd {r[:, 0].std():.3f}), "
            f"precision {r[:, 1].mean():.3f} (sd {r[:, 1].std():.3f}){mae}, {len(r)} seeds"
        )


if __name__ == "__main__":
    main()
