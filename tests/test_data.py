"""PackedDataset, TrainStream and the chunked loss: the data side of training."""

from __future__ import annotations

from itertools import chain
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import tokenmill
from numerics import assert_close_scaled
from tokenmill import _core
from tokenmill.data import IGNORE_INDEX, PackedDataset, Source, TrainStream, collate
from tokenmill.loss import chunked_cross_entropy, enable_chunked_loss


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory, bpe_tok: Path, texts: list[str]) -> Path:
    """Real text in several small shards (so blocks cross shard borders)."""
    from corpus import write_jsonl

    corpus = write_jsonl(tmp_path_factory.mktemp("c") / "c.jsonl", texts[:1500])
    out = tmp_path_factory.mktemp("shards")
    tokenmill.prepare(
        corpus, bpe_tok, out, overwrite=True, progress=False, shard_bytes=64 << 10, val_fraction=0.1
    )
    return out


def tiny_llama(vocab: int, attn: str = "sdpa", seed: int = 0) -> torch.nn.Module:
    import transformers

    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        vocab_size=vocab,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=128,
        max_position_embeddings=512,
        initializer_range=0.3,  # large weights: outputs depend strongly on context
    )
    model = transformers.LlamaForCausalLM._from_config(config, attn_implementation=attn)
    return model.eval()


def group_texts(examples: dict[str, list[list[int]]], block_size: int) -> dict[str, list]:
    """The seed recipe's group_texts (HF run_clm), verbatim in behaviour."""
    concatenated = {k: list(chain(*examples[k])) for k in examples}
    total_length = len(concatenated[next(iter(examples))])
    total_length = (total_length // block_size) * block_size
    result = {
        k: [t[i : i + block_size] for i in range(0, total_length, block_size)]
        for k, t in concatenated.items()
    }
    result["labels"] = result["input_ids"].copy()
    return result


def test_concat_reproduces_group_texts(shards: Path) -> None:
    import datasets

    docs = [d.tolist() for d in tokenmill.open_shards(shards, "train")]
    assert len(tokenmill.read_manifest(shards)["splits"]["train"]["shards"]) > 1
    ds = datasets.Dataset.from_dict({"input_ids": docs})
    grouped = ds.map(
        lambda e: group_texts(e, 128), batched=True, batch_size=len(docs), remove_columns=[]
    )
    packed = PackedDataset(shards, "train", 128, "concat")
    assert len(packed) == len(grouped) > 10
    for i in range(len(packed)):
        item = packed[i]
        assert item["input_ids"].tolist() == grouped[i]["input_ids"]
        assert item["labels"].tolist() == grouped[i]["labels"]
    with pytest.raises(IndexError):
        packed[len(packed)]


def test_doc_blocks_hold_whole_documents(shards: Path) -> None:
    block = 256
    docs = tokenmill.open_shards(shards, "train")
    packed = PackedDataset(shards, "train", block, "doc")
    seen: dict[int, list[tuple[int, int]]] = {}
    used = 0
    for b in range(len(packed)):
        item = packed[b]
        ids, labels, pos = item["input_ids"], item["labels"], item["position_ids"]
        at = 0
        for doc, start, n in packed.documents_of(b):
            expect = docs[doc][start : start + n]
            assert ids[at : at + n].tolist() == expect.tolist()
            assert pos[at : at + n].tolist() == list(range(n))
            assert labels[at] == IGNORE_INDEX  # never predicted from another document
            assert labels[at + 1 : at + n].tolist() == expect[1:].tolist()
            seen.setdefault(doc, []).append((start, n))
            at += n
        used += at
        assert (labels[at:] == IGNORE_INDEX).all() and (ids[at:] == packed.pad_id).all()
        assert pos[at:].tolist() == list(range(block - at))
    lengths = docs.doc_lengths()
    assert sorted(seen) == [d for d in range(len(docs)) if lengths[d] > 0]
    for doc, runs in seen.items():
        if lengths[doc] <= block:
            assert runs == [(0, int(lengths[doc]))]  # never split
        assert sum(n for _, n in runs) == lengths[doc]
    assert used == packed.num_tokens == lengths.sum()
    assert used / (len(packed) * block) > 0.97  # best-fit decreasing wastes little


@pytest.mark.parametrize("attn", ["sdpa", "eager", "varlen"])
def test_packed_loss_equals_per_document_loss(shards: Path, attn: str) -> None:
    """Doc mode: the token-weighted loss of packed blocks equals the loss of
    the same documents run one by one. Tolerance: 1e-5 relative (fp32)."""
    if attn == "varlen":
        from tokenmill import attention

        attn = attention.register()
    packed = PackedDataset(shards, "train", 256, "doc")
    model = tiny_llama(packed.shards.vocab_size, attn)
    head = model.get_output_embeddings()
    chosen = [b for b in range(len(packed)) if len(packed.documents_of(b)) >= 3][:6]
    assert len(chosen) == 6
    batch = collate([packed[i] for i in chosen])
    with torch.no_grad():
        # use_cache=False as in training: with a KV cache transformers does not
        # derive the document mask from position_ids.
        hidden = model.model(
            input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False
        ).last_hidden_state
        packed_sum, packed_n = chunked_cross_entropy(hidden, head, batch["labels"], 100)
        # Negative control: the same blocks with plain causal attention over
        # the whole block give a different loss, so the equality is not vacuous.
        leaky = model.model(input_ids=batch["input_ids"]).last_hidden_state
        leaky_sum, _ = chunked_cross_entropy(leaky, head, batch["labels"], 100)
        doc_sum, doc_n = 0.0, 0
        for b in chosen:
            for doc, start, n in packed.documents_of(b):
                ids = torch.from_numpy(
                    packed.shards[doc][start : start + n].astype(np.int64)
                ).unsqueeze(0)
                h = model.model(input_ids=ids).last_hidden_state
                s, k = chunked_cross_entropy(h, head, ids, 4096)
                doc_sum += float(s)
                doc_n += k
    assert packed_n == doc_n
    packed_loss, doc_loss = float(packed_sum) / packed_n, doc_sum / doc_n
    assert packed_loss == pytest.approx(doc_loss, rel=1e-5)  # measured ~1e-7
    # Leaking attention moves it by ~4e-3: far outside 10x the tolerance.
    assert float(leaky_sum) / packed_n != pytest.approx(doc_loss, rel=1e-4)


def test_chunked_loss_and_gradients_equal_the_models_own(shards: Path) -> None:
    packed = PackedDataset(shards, "train", 64, "concat")
    batch = collate([packed[i] for i in range(4)])
    batch["labels"][0, 10:20] = IGNORE_INDEX
    ref = tiny_llama(packed.shards.vocab_size).train()
    mine = tiny_llama(packed.shards.vocab_size).train()
    assert enable_chunked_loss(mine, 37)
    ref_loss = ref(**batch).loss
    my_loss = mine(**batch).loss
    # Tolerance 1e-5 of the scale (fp32, the chunks sum in another order than
    # the model's one matmul): measured ~2e-7 on the loss and up to ~1e-6 of
    # the largest gradient. Counting the 10 masked labels moves the loss by
    # ~4e-4 and the gradients by ~0.3 of their scale; a count off by one moves
    # the loss by ~4e-3.
    assert my_loss.item() == pytest.approx(ref_loss.item(), rel=1e-5)
    ref_loss.backward()
    my_loss.backward()
    for (name, a), (_, b) in zip(ref.named_parameters(), mine.named_parameters(), strict=True):
        assert_close_scaled(b.grad, a.grad, rel=1e-5, what=name)
    # num_items_in_batch (Trainer, gradient accumulation) replaces the count.
    n = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
    half = mine(**batch, num_items_in_batch=2 * n).loss
    assert half.item() == pytest.approx(ref_loss.item() / 2, rel=1e-5)
    # A step with no trained token (SFT conversations cut before any reply):
    # loss 0 and zero gradients, not 0/0 = NaN in every weight.
    mine.zero_grad()
    batch["labels"][:] = IGNORE_INDEX
    for items in (torch.tensor(0), 0, None):
        empty = mine(**batch, num_items_in_batch=items).loss
        assert empty.item() == 0.0
    empty.backward()
    assert all(torch.equal(p.grad, torch.zeros_like(p)) for p in mine.parameters())


@pytest.mark.parametrize("mode", ["concat", "doc"])
def test_pickles_without_the_mapped_data(shards: Path, mode: str) -> None:
    """spawn/forkserver DataLoader workers get paths and the plan, not the corpus."""
    import pickle

    ds = PackedDataset(shards, "train", 64, mode)  # type: ignore[arg-type]
    blob = pickle.dumps(ds)
    plan = 0 if mode == "concat" else 24 * len(ds._pieces) + 8 * (len(ds) + len(ds.shards) + 1)
    assert len(blob) < 2048 + plan  # no token data
    copy = pickle.loads(blob)
    for i in (0, len(ds) // 2, len(ds) - 1):
        for key, value in ds[i].items():
            assert torch.equal(copy[i][key], value)


def test_chunked_cross_entropy_with_bias_matches_torch() -> None:
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 50, bias=True)
    hidden = torch.randn(3, 9, 16, requires_grad=True)
    labels = torch.randint(0, 50, (3, 9))
    labels[1, 4] = IGNORE_INDEX
    total, n = chunked_cross_entropy(hidden, head, labels, 5)
    (total / n).backward()
    mine = [hidden.grad.clone(), head.weight.grad.clone(), head.bias.grad.clone()]
    hidden.grad = head.weight.grad = head.bias.grad = None
    logits = head(hidden)[:, :-1].reshape(-1, 50)
    ref = torch.nn.functional.cross_entropy(logits, labels[:, 1:].reshape(-1))
    ref.backward()
    # fp32 sums in another order (chunks of 5 rows): measured ~1e-7 of the
    # loss and <=6e-7 of each gradient's largest entry.
    assert total.item() / n == pytest.approx(ref.item(), rel=1e-5)
    grads = {"hidden": hidden.grad, "weight": head.weight.grad, "bias": head.bias.grad}
    for a, (name, b) in zip(mine, grads.items(), strict=True):
        assert_close_scaled(a, b, rel=1e-5, what=name)


def _order(stream: TrainStream, n: int, workers: int = 0) -> list[int]:
    loader = DataLoader(
        stream, batch_size=stream.batch_size, num_workers=workers, collate_fn=collate
    )
    out: list[int] = []
    for batch in loader:
        out += [int(x) for x in batch["input_ids"][:, 0]]  # block identity by first token
        if len(out) >= n:
            return out[:n]
    return out


def test_stream_is_deterministic_worker_independent_and_rank_disjoint(shards: Path) -> None:
    ds = PackedDataset(shards, "train", 64, "concat")
    one = TrainStream([Source(ds, 1.0)], batch_size=4, seed=3)
    order = [one.locate(g)[1] for g in range(3 * len(ds))]
    # Each epoch is a permutation of all blocks, a different one each epoch.
    epochs = [order[k * len(ds) : (k + 1) * len(ds)] for k in range(3)]
    assert all(sorted(e) == list(range(len(ds))) for e in epochs)
    assert epochs[0] != epochs[1]
    firsts = [int(ds[b]["input_ids"][0]) for b in order[:40]]
    assert _order(one, 40) == firsts
    assert _order(TrainStream([Source(ds, 1.0)], 4, seed=3), 40, workers=2) == firsts
    # Two ranks take alternate global batches: disjoint, together the global order.
    ranks = [TrainStream([Source(ds, 1.0)], 4, seed=3, rank=r, world_size=2) for r in (0, 1)]
    got = [[r.locate(r.global_index(j))[1] for j in range(20)] for r in ranks]
    assert not set(got[0]) & set(got[1])
    merged = [got[q % 2][(q // 2) * 4 + i] for q in range(10) for i in range(4)]
    assert merged == order[:40]


def test_stream_resumes_in_place_and_refuses_a_changed_world(shards: Path) -> None:
    ds = PackedDataset(shards, "train", 64, "concat")
    full = TrainStream([Source(ds, 1.0)], 4, seed=1)
    ref = _order(full, 48)
    resumed = TrainStream([Source(ds, 1.0)], 4, seed=1)
    state = full.state_dict() | {"position": 24}
    resumed.load_state_dict(state)
    assert _order(resumed, 24) == ref[24:48]
    other = TrainStream([Source(ds, 1.0)], 4, seed=1, rank=0, world_size=2)
    with pytest.raises(ValueError, match="1 process"):
        other.load_state_dict(state)
    with pytest.raises(ValueError, match="seed changed"):
        TrainStream([Source(ds, 1.0)], 4, seed=2).load_state_dict(state)
    with pytest.raises(ValueError, match="version"):
        resumed.load_state_dict(state | {"version": 99})


def test_mix_follows_weights(shards: Path) -> None:
    a = PackedDataset(shards, "train", 64, "concat")
    b = PackedDataset(shards, "val", 32, "concat")
    stream = TrainStream([Source(a, 0.8), Source(b, 0.2)], 8, seed=0)
    picks = np.array([stream.locate(g)[0] for g in range(20_000)])
    assert (picks == 1).sum() == 4000  # exact per 10k-sample period
    # Evenly spread: every window of 50 samples holds 10 from the 20% source.
    assert set(np.convolve(picks == 1, np.ones(50), "valid")[::50]) == {10.0}
    # Each source still walks its own epochs as permutations.
    from_b = [stream.locate(g)[1] for g in range(20_000) if picks[g] == 1][: len(b)]
    assert sorted(from_b) == list(range(len(b)))


def test_pack_documents_binding_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        _core.pack_documents(b"123", 8)
    with pytest.raises(ValueError):
        _core.pack_documents(np.array([3], "<u8").tobytes(), 0)
