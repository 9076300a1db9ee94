"""Training datasets over token shards.

`PackedDataset` turns one split into fixed-size training blocks, read straight
from the shard memmaps (nothing is tokenized or loaded into RAM at start):

- ``concat`` (pretraining/CPT, the seed's ``group_texts``): the split's token
  stream, documents in order (separated by the EOS that ``prepare`` appends),
  cut into ``block_size`` blocks; only the tail shorter than a block is
  dropped. ``group_texts`` run by ``datasets.map`` drops a tail per map batch
  of 1000 documents instead, so it loses more tokens; on one batch holding the
  whole stream both give the same blocks.
- ``doc``: whole documents packed into blocks by the Rust packer (best-fit
  decreasing, `rust/pack.rs`; documents longer than a block are cut into
  block-sized pieces). ``position_ids`` restart at every document, and
  ``labels`` are -100 on the first token of each document and on padding, so
  no token is predicted from, or attends to, another document: the
  transformers masking layer derives the block-diagonal causal mask from the
  restarting ``position_ids`` (flash-attention uses them as varlen boundaries).
  Padding fills the end of a block as one more segment with its own positions.

- ``pad`` (SFT without packing, the seed's padded batches): one document per
  item, cut to ``block_size``; `collate` pads a batch to its longest item
  (pad = the dataset's pad id, EOS by default as the seed does) with
  ``attention_mask`` 0 and ``labels`` -100 on the padding.

SFT datasets (``tokenmill prepare-sft``) carry a ``.mask`` per shard; in every
mode ``labels`` are -100 wherever the mask is 0, so only assistant replies
and their end-of-turn tokens are trained on.

`TrainStream` is the training order: an endless, seeded walk over one or more
datasets (``--mix`` weights), split into per-rank, per-worker batches, whose
position is a single number, so resuming a run is O(1) and exact.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from tokenmill import _core
from tokenmill.shards import PathLike, ShardSet

IGNORE_INDEX = -100
Mode = Literal["concat", "doc", "pad"]
MODES: tuple[str, ...] = get_args(Mode)


class PackedDataset(Dataset[dict[str, torch.Tensor]]):
    """Blocks of ``block_size`` tokens from one split of a shard directory.

    Each item is a dict of int64 tensors ``input_ids`` and ``labels`` (and
    ``position_ids`` in ``doc`` mode), all of length ``block_size`` (in
    ``pad`` mode: the document's length, at most ``block_size``): the format
    transformers' causal LMs take (they shift labels themselves).

    Args:
        path: a directory written by ``tokenmill prepare`` or ``prepare-sft``.
        split: ``train``, ``val`` or any split in the manifest.
        block_size: tokens per block.
        mode: ``concat``, ``doc`` or ``pad`` (see the module docstring).
        pad_id: padding token of ``doc`` and ``pad`` mode (default: the
            manifest's pad, else EOS, else 0); padded positions carry label -100.
    """

    def __init__(
        self,
        path: PathLike,
        split: str = "train",
        block_size: int = 1024,
        mode: Mode = "concat",
        pad_id: int | None = None,
    ) -> None:
        if block_size < 2:
            raise _core.InvalidOptionError("block_size must be at least 2")
        if mode not in MODES:
            raise _core.InvalidOptionError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        self.shards = ShardSet(path, split)
        self._bins = [tokens for tokens, _ in self.shards.shards]
        self._masks = self.shards.masks
        self.block_size = block_size
        self.mode = mode
        tok = self.shards.manifest["tokenizer"]
        candidates = (pad_id, tok.get("pad_id"), tok.get("eos_id"), 0)
        self.pad_id: int = next(c for c in candidates if c is not None)
        self._first = 0  # first block served (a held-out tail starts later)
        sizes = [len(b) for b in self._bins]
        # Global token position of each shard's first token.
        self._shard_starts = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
        if mode == "concat":
            self._blocks = int(self._shard_starts[-1]) // block_size
        elif mode == "doc":
            self._plan_doc_mode()
        else:
            self._doc_starts = self._global_doc_starts()
            self._blocks = len(self._doc_starts)

    def _global_doc_starts(self) -> np.ndarray:
        starts = [
            base + offsets[:-1].astype(np.int64)
            for base, (_, offsets) in zip(self._shard_starts, self.shards.shards, strict=False)
        ]
        return np.concatenate(starts) if starts else np.zeros(0, np.int64)

    def _plan_doc_mode(self) -> None:
        self._doc_starts = self._global_doc_starts()
        lengths = self.shards.doc_lengths().astype("<u8")
        pieces, block_starts = _core.pack_documents(lengths.tobytes(), self.block_size)
        # (doc, start within doc, len) per piece; block b = pieces[bs[b]:bs[b+1]].
        self._pieces = np.frombuffer(pieces, dtype="<u8").reshape(-1, 3).astype(np.int64)
        self._block_starts = np.frombuffer(block_starts, dtype="<u8").astype(np.int64)
        self._blocks = len(self._block_starts) - 1

    def __len__(self) -> int:
        return self._blocks

    # Pickled for DataLoader workers started by spawn/forkserver: the memmaps
    # stay behind (numpy would pickle their whole contents) and each worker
    # maps the files again; the packing plan travels as it is.
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["shards"] = (str(self.shards.path), self.shards.split)
        del state["_bins"]
        del state["_masks"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.shards = ShardSet(*state["shards"])
        self._bins = [tokens for tokens, _ in self.shards.shards]
        self._masks = self.shards.masks

    def limit(self, max_blocks: int) -> None:
        """Keeps only the first ``max_blocks`` blocks (max_train_samples)."""
        self._blocks = min(self._blocks, max_blocks)

    def hold_out(self, count: int) -> PackedDataset:
        """Removes the last ``count`` blocks from this dataset and returns
        them as a dataset of their own (an eval set for shards without a
        val split); the two never share a block."""
        if not 0 < count < self._blocks:
            raise _core.InvalidOptionError(f"cannot hold out {count} of {self._blocks} blocks")
        held = copy.copy(self)
        self._blocks -= count
        held._first = self._first + self._blocks
        held._blocks = count
        return held

    def documents_cut(self) -> tuple[int, int]:
        """``(documents longer than block_size, documents)`` among those this
        dataset serves: ``pad`` truncates them, ``doc`` splits them into
        pieces; ``concat`` cuts the stream anywhere by design (0, 0)."""
        if self.mode == "concat":
            return 0, 0
        lengths = self.shards.doc_lengths()
        if self.mode == "pad":
            lengths = lengths[self._first : self._first + self._blocks]
        return int((lengths > self.block_size).sum()), len(lengths)

    @property
    def num_tokens(self) -> int:
        """Tokens served per pass (padding excluded)."""
        if self.mode == "concat":
            return self._blocks * self.block_size
        if self.mode == "pad":
            lengths = self.shards.doc_lengths()[self._first : self._first + self._blocks]
            return int(np.minimum(lengths, self.block_size).sum())
        rows = self._block_starts[[self._first, self._first + self._blocks]]
        return int(self._pieces[rows[0] : rows[1], 2].sum())

    def _span(self, arrays: list[np.ndarray], start: int, stop: int) -> np.ndarray:
        """Items ``[start, stop)`` of per-shard ``arrays`` as one stream, across
        shard borders."""
        s = int(np.searchsorted(self._shard_starts, start, side="right")) - 1
        parts = []
        while start < stop:
            base = int(self._shard_starts[s])
            end = min(stop, int(self._shard_starts[s + 1]))
            parts.append(arrays[s][start - base : end - base])
            start = end
            s += 1
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def tokens(self, start: int, stop: int) -> np.ndarray:
        """Tokens ``[start, stop)`` of the split's stream."""
        return self._span(self._bins, start, stop)

    def _trained(self, start: int, stop: int) -> np.ndarray | None:
        """The ``.mask`` of tokens ``[start, stop)`` as booleans (None: no mask)."""
        if self._masks is None:
            return None
        return self._span(self._masks, start, stop) != 0

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not 0 <= i < self._blocks:
            raise IndexError(f"block {i} out of range for {self._blocks} blocks")
        i += self._first
        if self.mode == "concat":
            start = i * self.block_size
            ids = self.tokens(start, start + self.block_size).astype(np.int64)
            labels = ids.copy()
            trained = self._trained(start, start + self.block_size)
            if trained is not None:
                labels[~trained] = IGNORE_INDEX
            return {"input_ids": torch.from_numpy(ids), "labels": torch.from_numpy(labels)}
        if self.mode == "pad":
            return self._one_document(i)
        return self._doc_block(i)

    def _one_document(self, i: int) -> dict[str, torch.Tensor]:
        begin = int(self._doc_starts[i])
        end = min(begin + self.block_size, int(self._doc_end(i)))
        ids = self.tokens(begin, end).astype(np.int64)
        labels = ids.copy()
        labels[0] = IGNORE_INDEX  # nothing predicts a document's first token
        trained = self._trained(begin, end)
        if trained is not None:
            labels[~trained] = IGNORE_INDEX
        return {"input_ids": torch.from_numpy(ids), "labels": torch.from_numpy(labels)}

    def _doc_end(self, i: int) -> int:
        if i + 1 < len(self._doc_starts):
            return int(self._doc_starts[i + 1])
        return int(self._shard_starts[-1])

    def _doc_block(self, i: int) -> dict[str, torch.Tensor]:
        n = self.block_size
        input_ids = np.full(n, self.pad_id, dtype=np.int64)
        labels = np.full(n, IGNORE_INDEX, dtype=np.int64)
        position_ids = np.empty(n, dtype=np.int64)
        at = 0
        for doc, start, length in self._pieces[self._block_starts[i] : self._block_starts[i + 1]]:
            begin = int(self._doc_starts[doc] + start)
            input_ids[at : at + length] = self.tokens(begin, begin + int(length))
            labels[at + 1 : at + length] = input_ids[at + 1 : at + length]
            trained = self._trained(begin, begin + int(length))
            if trained is not None:
                labels[at : at + length][~trained] = IGNORE_INDEX
            position_ids[at : at + length] = np.arange(length)
            at += int(length)
        position_ids[at:] = np.arange(n - at)
        return {
            "input_ids": torch.from_numpy(input_ids),
            "labels": torch.from_numpy(labels),
            "position_ids": torch.from_numpy(position_ids),
        }

    def documents_of(self, i: int) -> list[tuple[int, int, int]]:
        """``(doc, start, length)`` of each document piece in block ``i``
        (``doc`` mode only; for tests and inspection)."""
        if self.mode != "doc":
            raise _core.InvalidOptionError("documents_of needs mode='doc'")
        i += self._first
        rows = self._pieces[self._block_starts[i] : self._block_starts[i + 1]]
        return [(int(d), int(s), int(n)) for d, s, n in rows]

    @property
    def fingerprint(self) -> dict[str, Any]:
        """What a resumed run must find unchanged."""
        tok = self.shards.manifest["tokenizer"]
        return {
            "path": str(self.shards.path),
            "split": self.shards.split,
            "mode": self.mode,
            "block_size": self.block_size,
            "blocks": self._blocks,
            "first_block": self._first,
            "tokenizer": tok["fingerprint"],
        }


def collate(items: Sequence[dict[str, torch.Tensor]], pad_id: int = 0) -> dict[str, torch.Tensor]:
    """Stacks blocks into a batch. Items of different lengths (``pad`` mode)
    are right-padded to the longest with ``pad_id``, label -100 and
    ``attention_mask`` 0; equal-length blocks need no mask."""
    lengths = [len(item["input_ids"]) for item in items]
    longest = max(lengths)
    if min(lengths) == longest:
        return {k: torch.stack([item[k] for item in items]) for k in items[0]}
    fill = {"input_ids": pad_id, "labels": IGNORE_INDEX}
    batch = {k: torch.full((len(items), longest), fill[k], dtype=torch.int64) for k in fill}
    batch["attention_mask"] = torch.zeros((len(items), longest), dtype=torch.int64)
    for row, (item, n) in enumerate(zip(items, lengths, strict=True)):
        batch["input_ids"][row, :n] = item["input_ids"]
        batch["labels"][row, :n] = item["labels"]
        batch["attention_mask"][row, :n] = 1
    return batch


@dataclass(frozen=True)
class Source:
    """One dataset of a training mix and its share of the samples."""

    dataset: PackedDataset
    weight: float


# Samples are drawn in periods of this many: within each, every source gets
# its share rounded by largest remainder, interleaved evenly. Any sample's
# source and its position within that source are then O(1) to compute.
MIX_PERIOD = 10_000

STATE_VERSION = 1


class TrainStream(IterableDataset[dict[str, torch.Tensor]]):
    """The endless, deterministic training order over weighted sources.

    Global sample ``g`` comes from the source the mix schedule gives it, at
    that source's next position; each source walks through its blocks in a
    fresh seeded permutation per epoch. Batches of ``batch_size`` consecutive
    global samples go to ranks in turn (global batch ``q`` to rank
    ``q % world_size``), and within a rank to DataLoader workers in turn, the
    order in which the DataLoader collects them; so the sequence a rank sees
    depends on neither the worker count nor the machine.

    The position is the number of samples this rank has consumed;
    `state_dict` / `load_state_dict` save and restore it in O(1).
    """

    def __init__(
        self,
        sources: Sequence[Source],
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
    ) -> None:
        if not sources or any(s.weight <= 0 for s in sources):
            raise _core.InvalidOptionError(
                "a training stream needs at least one source, all weights > 0"
            )
        for s in sources:
            if len(s.dataset) == 0:
                raise _core.InvalidOptionError(
                    f"{s.dataset.shards.path} ({s.dataset.shards.split}) has no block of "
                    f"{s.dataset.block_size} tokens; lower --block-size or add data"
                )
        if not 0 <= rank < world_size:
            raise _core.InvalidOptionError(f"rank {rank} outside world size {world_size}")
        self.sources = list(sources)
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.shuffle = shuffle
        self.position = 0
        total = sum(s.weight for s in self.sources)
        self.weights = [s.weight / total for s in self.sources]
        self._schedule, self._within, self._per_period = _mix_schedule(self.weights)
        self._perm_cache: dict[tuple[int, int], np.ndarray] = {}
        self._trace = os.environ.get("TOKENMILL_TRACE_DATA")

    def samples_per_epoch(self) -> int:
        """Global samples per pass over the first (primary) source."""
        return math.ceil(len(self.sources[0].dataset) / self.weights[0])

    def global_index(self, local: int) -> int:
        """The global sample index of this rank's ``local``-th sample."""
        batch, within = divmod(local, self.batch_size)
        return (batch * self.world_size + self.rank) * self.batch_size + within

    def locate(self, g: int) -> tuple[int, int]:
        """``(source, block)`` of global sample ``g``."""
        period, offset = divmod(g, MIX_PERIOD)
        s = int(self._schedule[offset])
        k = period * int(self._per_period[s]) + int(self._within[offset])
        n = len(self.sources[s].dataset)
        epoch, pos = divmod(k, n)
        if not self.shuffle:
            return s, pos
        key = (s, epoch)
        perm = self._perm_cache.get(key)
        if perm is None:
            if len(self._perm_cache) > 2 * len(self.sources):
                self._perm_cache.clear()
            perm = np.random.default_rng([self.seed, s, epoch]).permutation(n)
            self._perm_cache[key] = perm
        return s, int(perm[pos])

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info else (1, 0)
        trace = None
        if self._trace:
            os.makedirs(self._trace, exist_ok=True)
            name = f"rank{self.rank}-worker{worker}.txt"
            trace = open(os.path.join(self._trace, name), "a", encoding="utf-8")  # noqa: SIM115
        try:
            batch = self.position // self.batch_size + worker
            while True:
                for j in range(self.batch_size):
                    s, block = self.locate(self.global_index(batch * self.batch_size + j))
                    if trace:
                        trace.write(f"{s} {block}\n")
                    yield self.sources[s].dataset[block]
                if trace:
                    trace.flush()
                batch += workers
        finally:
            if trace:
                trace.close()

    def state_dict(self) -> dict[str, Any]:
        """Versioned loader state: position plus what must not change."""
        return {
            "version": STATE_VERSION,
            "position": self.position,
            "batch_size": self.batch_size,
            "world_size": self.world_size,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "weights": self.weights,
            "sources": [s.dataset.fingerprint for s in self.sources],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores the position; refuses a state from a different setup."""
        if state.get("version") != STATE_VERSION:
            raise _core.InvalidOptionError(
                f"data loader state version {state.get('version')} is not {STATE_VERSION}"
            )
        if state["world_size"] != self.world_size:
            raise _core.InvalidOptionError(
                f"the checkpoint was trained on {state['world_size']} process(es), this run has "
                f"{self.world_size}; resume with the same number of processes (the data order "
                "depends on it), or start a new run from the checkpoint's model"
            )
        mine = self.state_dict()
        for key in ("batch_size", "seed", "shuffle", "weights", "sources"):
            if state[key] != mine[key]:
                raise _core.InvalidOptionError(
                    f"cannot resume the data position: {key} changed from {state[key]} "
                    f"to {mine[key]}"
                )
        self.position = int(state["position"])


def _mix_schedule(weights: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source of each offset in a period, each offset's rank among its
    source's offsets, and per-source counts per period."""
    raw = np.asarray(weights) * MIX_PERIOD
    counts = np.floor(raw).astype(np.int64)
    for s in np.argsort(-(raw - counts), kind="stable")[: MIX_PERIOD - int(counts.sum())]:
        counts[s] += 1
    if (counts == 0).any():
        raise _core.InvalidOptionError(
            f"mix weights {list(weights)} give a source under 1/{MIX_PERIOD}"
        )
    # Even interleaving: offset k of source s sits at (k + 0.5) / count_s.
    keys = np.concatenate([(np.arange(c) + 0.5) / c for c in counts])
    owners = np.concatenate([np.full(c, s) for s, c in enumerate(counts)])
    ranks = np.concatenate([np.arange(c) for c in counts])
    order = np.lexsort((owners, keys))
    return owners[order], ranks[order], counts
