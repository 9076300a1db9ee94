"""SFT training: padded and packed losses equal the per-conversation loss,
`tokenmill sft` end to end with best_model, LoRA merge exactness, GaLore,
QLoRA refusal without CUDA."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import tokenmill
from numerics import assert_close_scaled
from test_data import tiny_llama
from test_sft_data import conversations, write_records
from tokenmill.cli import main
from tokenmill.config import GALORE_TARGETS, load_config
from tokenmill.data import IGNORE_INDEX, PackedDataset, collate
from tokenmill.evaluate import evaluate
from tokenmill.loss import chunked_cross_entropy
from tokenmill.models import load_tokenizer
from tokenmill.train import train


@pytest.fixture(scope="module")
def sft_shards(tmp_path_factory: pytest.TempPathFactory, bpe_tok: Path) -> Path:
    """Chinese and English multi-turn conversations of varied lengths."""
    root = tmp_path_factory.mktemp("sft")
    records = []
    for i, conv in enumerate(conversations() * 12):
        # 1 to all user/assistant exchanges, each record distinct (so the
        # hash split gives a val split).
        ends = [k + 1 for k, m in enumerate(conv) if m["role"] == "assistant"]
        messages = [dict(m) for m in conv[: ends[i % len(ends)]]]
        first_user = next(m for m in messages if m["role"] == "user")
        first_user["content"] += f" #{i}"
        records.append({"messages": messages})
    src = write_records(root / "chat.jsonl", records)
    out = root / "shards"
    tokenmill.prepare_sft(src, bpe_tok, out, val_fraction=0.15, progress=False, overwrite=True)
    return out


@pytest.fixture(scope="module")
def base_model(tmp_path_factory: pytest.TempPathFactory, sft_shards: Path, bpe_tok: Path) -> Path:
    """A random-init tiny LLaMA saved with its tokenizer, as an SFT starting point."""
    out = tmp_path_factory.mktemp("base")
    model = tiny_llama(tokenmill.open_shards(sft_shards).vocab_size)
    tok = load_tokenizer(bpe_tok)
    model.config.eos_token_id = model.config.pad_token_id = tok.eos_token_id
    model.config.bos_token_id = tok.bos_token_id
    model.generation_config.eos_token_id = model.generation_config.pad_token_id = tok.eos_token_id
    model.generation_config.bos_token_id = tok.bos_token_id
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def sft(data: Path, model: Path, out: Path, **overrides: Any) -> dict[str, Any]:
    options: dict[str, Any] = dict(
        data=str(data),
        model=str(model),
        output_dir=str(out),
        packing="pad",
        block_size=512,
        per_device_train_batch_size=4,
        logging_steps=1,
        learning_rate=3e-3,
        warmup_ratio=0.0,
        eval_steps=1000,
    )
    options.update(overrides)
    return train(load_config(None, options))


def test_padded_and_packed_loss_equal_the_per_conversation_loss(sft_shards: Path) -> None:
    """The same trained tokens, three ways: one conversation at a time,
    padded batches (attention_mask), packed blocks (restarting position_ids).
    Token-weighted losses agree to 1e-5 (fp32)."""
    shards = tokenmill.open_shards(sft_shards)
    model = tiny_llama(shards.vocab_size)
    head = model.get_output_embeddings()
    longest = int(shards.doc_lengths().max())
    assert longest <= 512
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(len(shards)):
            ids = torch.from_numpy(shards[i].astype(np.int64)).unsqueeze(0)
            labels = ids.clone()
            labels[0, torch.from_numpy(shards.mask(i) == 0)] = IGNORE_INDEX
            s, n = chunked_cross_entropy(model.model(input_ids=ids).last_hidden_state, head,
                                         labels, 4096)  # fmt: skip
            total += float(s)
            count += n
        reference = total / count
        assert count == int(sum(shards.mask(i)[1:].sum() for i in range(len(shards))))

        def loss(mode: str, batch: int, use_positions: bool = True) -> tuple[float, int]:
            ds = PackedDataset(sft_shards, "train", 512, mode)  # type: ignore[arg-type]
            total, count = 0.0, 0
            for s in range(0, len(ds), batch):
                b = collate([ds[i] for i in range(s, min(s + batch, len(ds)))], ds.pad_id)
                labels = b.pop("labels")
                if not use_positions:
                    b.pop("position_ids")
                hidden = model.model(**b, use_cache=False).last_hidden_state
                s_, n = chunked_cross_entropy(hidden, head, labels, 100)
                total += float(s_)
                count += n
            return total / count, count

        padded, padded_n = loss("pad", 5)
        packed, packed_n = loss("doc", 3)
        leaky, _ = loss("doc", 3, use_positions=False)
    assert padded_n == packed_n == count
    assert padded == pytest.approx(reference, rel=1e-5)  # measured ~2e-8
    assert packed == pytest.approx(reference, rel=1e-5)
    # Attention across conversations changes it (~6e-3): far outside 10x the tolerance.
    assert leaky != pytest.approx(reference, rel=1e-4)


def test_collate_pads_right_with_masked_labels() -> None:
    items = [
        {"input_ids": torch.tensor([5, 6, 7]), "labels": torch.tensor([-100, 6, 7])},
        {"input_ids": torch.tensor([8]), "labels": torch.tensor([-100])},
    ]
    b = collate(items, pad_id=2)
    assert b["input_ids"].tolist() == [[5, 6, 7], [8, 2, 2]]
    assert b["labels"].tolist() == [[-100, 6, 7], [-100, -100, -100]]
    assert b["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


def test_sft_cli_trains_keeps_the_best_model_and_chats(
    sft_shards: Path, base_model: Path, tmp_path: Path, bpe_tok: Path, texts: list[str]
) -> None:
    runner = CliRunner()
    out = tmp_path / "run"
    r = runner.invoke(
        main,
        ["sft", "--model", str(base_model), "--data", str(sft_shards), "--out", str(out),
         "--max-steps", "24", "--eval-strategy", "steps", "--eval-steps", "8",
         "--learning-rate", "3e-3",
         "--per-device-train-batch-size", "4", "--logging-steps", "4", "--block-size", "512"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["trained_tokens_per_second"] > 0
    assert metrics["tokens_per_second"] > metrics["trained_tokens_per_second"]
    resolved = (out / "config.resolved.yaml").read_text()
    assert "packing: pad" in resolved and "learning_rate: 0.003" in resolved
    best = out / "best_model"
    assert (best / "tokenizer.json").is_file() and (best / "model.safetensors").is_file()
    state = out / "checkpoint-24" / "trainer_state.json"
    history = json.loads(state.read_text())
    evals = {h["step"]: h["eval_loss"] for h in history["log_history"] if "eval_loss" in h}
    assert metrics["best_eval_loss"] == pytest.approx(min(evals.values()))
    assert evals[metrics["best_model_step"]] == metrics["best_eval_loss"]
    before = evaluate(base_model, sft_shards, packing="pad", block_size=512)
    after = evaluate(best, sft_shards, packing="pad", block_size=512)
    assert before["tokens"] == after["tokens"] > 0
    assert after["loss"] < before["loss"] - 0.5
    r = runner.invoke(
        main,
        ["generate", "--model", str(best), "--chat", "--prompt", "请用一句话介绍长城。",
         "--max-new-tokens", "6", "--temperature", "0"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "--- sample 1" in r.output
    # Pretraining shards are refused: they have no assistant masks.
    from corpus import write_jsonl

    plain = tmp_path / "plain"
    tokenmill.prepare(write_jsonl(tmp_path / "p.jsonl", texts[:50]), bpe_tok, plain,
                      progress=False)  # fmt: skip
    r = runner.invoke(main, ["sft", "--model", str(base_model), "--data", str(plain),
                             "--out", str(tmp_path / "x")])  # fmt: skip
    assert r.exit_code != 0 and "prepare-sft" in r.output


def _state(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def test_lora_trains_adapters_only_and_merges_exactly(
    sft_shards: Path, base_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = tmp_path / "lora"
    metrics = sft(sft_shards, base_model, out, packing="doc", lora=True, lora_rank=4,
                  max_steps=12, eval_steps=6)  # fmt: skip
    assert "trainable of" in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    trainable = manifest["model"]["trainable_parameters"]
    assert 0 < trainable < manifest["model"]["parameters"] / 4
    assert manifest["adapters"] == "lora"
    assert metrics["best_model_step"] in (6, 12)
    # Adapters on every linear layer but the head: q,k,v,o,gate,up,down x 2 layers.
    adapter_cfg = json.loads((out / "final_adapter" / "adapter_config.json").read_text())
    kinds = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    targets = {t.rsplit(".", 1)[-1] for t in adapter_cfg["target_modules"]}
    assert targets == kinds and len(adapter_cfg["target_modules"]) in (len(kinds), 2 * len(kinds))
    base = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32).eval()
    adapted = PeftModel.from_pretrained(base, out / "final_adapter").eval()
    merged = AutoModelForCausalLM.from_pretrained(out / "final_model", dtype=torch.float32).eval()
    ids = torch.from_numpy(tokenmill.open_shards(sft_shards)[0][:64].astype(np.int64))[None]
    with torch.no_grad():
        a = adapted(input_ids=ids).logits
        m = merged(input_ids=ids).logits
        with adapted.disable_adapter():
            plain = adapted(input_ids=ids).logits
    # Equal up to fp32 rounding, (W + s*BA)x vs Wx + s*B(Ax), grown through two
    # layers of large weights: measured ~4e-6 of the logit scale. The adapters
    # move logits by ~0.3 of it, so a dropped adapter or wrong scale is caught.
    assert_close_scaled(m, a, rel=1e-4, what="merged vs adapted logits")
    # The adapters learned something: 10x beyond the tolerance above.
    assert (a - plain).abs().max() > 1e-3 * a.abs().max()
    # Frozen weights are untouched: merged = base + B @ A * scale on targets only.
    base_state, merged_state = _state(base_model), _state(out / "final_model")
    assert torch.equal(base_state["model.embed_tokens.weight"],
                       merged_state["model.embed_tokens.weight"])  # fmt: skip
    assert not torch.equal(base_state["model.layers.0.self_attn.q_proj.weight"],
                           merged_state["model.layers.0.self_attn.q_proj.weight"])  # fmt: skip
    # merge-lora on the best adapter gives what the run wrote as best_model.
    r = CliRunner().invoke(
        main,
        ["merge-lora", str(out / "best_adapter"), "--out",
         str(tmp_path / "merged"), "--base", str(base_model)],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    best, again = _state(out / "best_model"), _state(tmp_path / "merged")
    assert best.keys() == again.keys()
    assert all(torch.equal(best[k], again[k]) for k in best)
    assert (tmp_path / "merged" / "tokenizer.json").is_file()


def test_galore_optimizer_projects_the_target_layers(
    sft_shards: Path, base_model: Path, tmp_path: Path
) -> None:
    from transformers import TrainerCallback

    seen: dict[str, Any] = {}

    class Spy(TrainerCallback):  # type: ignore[misc]
        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            opt = kw["optimizer"]
            opt = getattr(opt, "optimizer", opt)  # accelerate's wrapper
            seen["type"] = f"{type(opt).__module__}.{type(opt).__name__}"
            seen["groups"] = [
                {k: v for k, v in g.items() if k != "params"} | {"n": len(g["params"])}
                for g in opt.param_groups
            ]

    out = tmp_path / "galore"
    cfg = load_config(None, dict(
        data=str(sft_shards), model=str(base_model), output_dir=str(out), packing="doc",
        block_size=512, per_device_train_batch_size=2, max_steps=3, eval_strategy="no",
        optim="galore_adamw", learning_rate=1e-3, warmup_ratio=0.0,
    ))  # fmt: skip
    assert cfg.optim_args == "rank=64, update_proj_gap=100, scale=0.10"
    assert cfg.optim_target_modules == ",".join(GALORE_TARGETS)
    train(cfg, callbacks=[Spy()])
    assert seen["type"] == "galore_torch.adamw.AdamW"  # imported as GaLoreAdamW
    projected = [g for g in seen["groups"] if "rank" in g]
    assert len(projected) == 1 and projected[0]["rank"] == 64
    assert projected[0]["update_proj_gap"] == 100 and projected[0]["scale"] == pytest.approx(0.1)
    assert projected[0]["n"] == 2 * 7  # attention (4) + MLP (3) weights per layer
    before, after = _state(base_model), _state(out / "final_model")
    assert not torch.equal(before["model.layers.1.mlp.up_proj.weight"],
                           after["model.layers.1.mlp.up_proj.weight"])  # fmt: skip


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a CPU machine")
def test_qlora_without_cuda_is_a_clear_error(
    sft_shards: Path, base_model: Path, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="needs a CUDA GPU"):
        sft(sft_shards, base_model, tmp_path / "q", qlora=True, max_steps=1)
    with pytest.raises(ValueError, match="choose one"):
        load_config(None, dict(qlora=True, load_in_8bit=True))
    assert not (tmp_path / "q" / "manifest.json").exists()
