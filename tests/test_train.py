"""Training on shards, CPU only: loss falls, exact resume, gradient
accumulation, tokenizer refusal, CLI flow, generation, 2-process DDP."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner

import tokenmill
from numerics import assert_close_scaled
from tokenmill.cli import main
from tokenmill.config import load_config
from tokenmill.generate import generate
from tokenmill.models import check_tokenizer
from tokenmill.train import train


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory, bpe_tok: Path, texts: list[str]) -> Path:
    from corpus import write_jsonl

    corpus = write_jsonl(tmp_path_factory.mktemp("c") / "c.jsonl", texts)
    out = tmp_path_factory.mktemp("shards")
    tokenmill.prepare(corpus, bpe_tok, out, overwrite=True, progress=False, val_fraction=0.05)
    return out


def run(shards: Path, out: Path, **overrides: Any) -> dict[str, Any]:
    options: dict[str, Any] = dict(
        data=str(shards),
        output_dir=str(out),
        preset="llama-micro",
        block_size=64,
        per_device_train_batch_size=4,
        logging_steps=1,
        eval_steps=1000,
        max_eval_samples=16,
        learning_rate=3e-3,
        warmup_ratio=0.0,
    )
    options.update(overrides)
    return train(load_config(None, options))


def logged_losses(out: Path, ckpt: str) -> dict[int, float]:
    state = json.loads((out / ckpt / "trainer_state.json").read_text())
    return {h["step"]: h["loss"] for h in state["log_history"] if "loss" in h}


def test_tiny_llama_learns_and_writes_the_run_layout(shards: Path, tmp_path: Path) -> None:
    import transformers

    out = tmp_path / "run"
    metrics = run(shards, out, max_steps=150, save_steps=75, eval_steps=75)
    losses = logged_losses(out, "checkpoint-150")
    first, last = losses[1], sum(losses[k] for k in range(141, 151)) / 10
    assert first > 7.0 and last < first - 1.5, (first, last)
    assert metrics["eval_loss"] < first - 1.0
    assert metrics["perplexity"] == pytest.approx(2.718281828 ** metrics["eval_loss"], rel=1e-6)
    for name in ("config.resolved.yaml", "metrics.json", "loss.png", "manifest.json"):
        assert (out / name).is_file(), name
    assert list((out / "logs").glob("events.out.tfevents.*"))
    assert json.loads((out / "metrics.json").read_text())["global_step"] == 150
    for model_dir in ("final_model", "best_model"):
        model = transformers.AutoModelForCausalLM.from_pretrained(out / model_dir)
        tok = transformers.AutoTokenizer.from_pretrained(out / model_dir)
        assert model.config.eos_token_id == tok.eos_token_id
        assert not (out / model_dir / "optimizer.pt").exists()
    check_tokenizer(out / "final_model", tokenmill.read_manifest(shards), str(shards))


def test_resume_continues_exactly(shards: Path, tmp_path: Path) -> None:
    """Run 8 steps saving at 4; a run resumed from checkpoint-4 logs the same
    losses for steps 5-8 (same data, optimizer, scheduler and RNG state)."""
    full = tmp_path / "full"
    run(shards, full, max_steps=8, save_steps=4, packing="doc")
    expected = logged_losses(full, "checkpoint-8")
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(full / "checkpoint-4", resumed / "checkpoint-4")
    run(shards, resumed, max_steps=8, save_steps=4, packing="doc")
    got = logged_losses(resumed, "checkpoint-8")
    for step in range(5, 9):
        assert got[step] == pytest.approx(expected[step], rel=1e-6, abs=1e-7), step
    # A changed process count or batch geometry is refused, not silently resumed.
    state_file = resumed / "checkpoint-8" / "tokenmill_data.json"
    state = json.loads(state_file.read_text())
    state_file.write_text(json.dumps(state | {"world_size": 2}))
    with pytest.raises(ValueError, match="2 process"):
        run(shards, resumed, max_steps=12, save_steps=4, packing="doc")


@pytest.fixture(scope="module")
def one_doc_block_shards(
    tmp_path_factory: pytest.TempPathFactory, bpe_tok: Path, texts: list[str]
) -> Path:
    """Shards of documents of 34 to 63 tokens (EOS included): no two fit one
    64-token block, so in doc packing each block is one document and padding,
    and blocks predict anywhere from 33 to 62 tokens. (Most documents of the
    `shards` corpus are longer than a block: cut into block-sized pieces,
    every block predicts 63.)"""
    from corpus import reference, write_jsonl

    tok = reference(bpe_tok)
    docs = []
    for i, t in enumerate(texts[-300:]):
        ids = tok.encode(t, add_special_tokens=False).ids
        if len(ids) >= 62:
            docs.append(tok.decode(ids[: 33 + (i * 7) % 30]))
    corpus = write_jsonl(tmp_path_factory.mktemp("docs") / "c.jsonl", docs)
    out = tmp_path_factory.mktemp("one_doc_block_shards")
    tokenmill.prepare(corpus, bpe_tok, out, overwrite=True, progress=False, val_fraction=0.0)
    return out


def test_gradient_accumulation_gives_the_big_batch_update(
    one_doc_block_shards: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """4 blocks in one micro-batch or 2 x 2 accumulated: the same SGD update.
    The two micro-batches of a step predict different numbers of tokens, so a
    loss normalised per micro-batch (instead of by Trainer's
    ``num_items_in_batch``, the tokens of the whole step) weights their tokens
    unequally and lands on other weights."""
    from safetensors.torch import load_file

    from tokenmill.data import IGNORE_INDEX, PackedDataset

    weights, blocks = [], []
    for b, ga in ((4, 1), (2, 2)):
        out = tmp_path / f"b{b}"
        monkeypatch.setenv("TOKENMILL_TRACE_DATA", str(tmp_path / f"trace{b}"))
        run(
            one_doc_block_shards,
            out,
            max_steps=2,
            per_device_train_batch_size=b,
            gradient_accumulation_steps=ga,
            packing="doc",
            optim="sgd",
            learning_rate=0.5,
            max_grad_norm=0.0,
            eval_strategy="no",
            save_strategy="no",
        )
        weights.append(load_file(out / "final_model" / "model.safetensors"))
        trace = (tmp_path / f"trace{b}" / "rank0-worker0.txt").read_text().split("\n")
        blocks.append([int(line.split()[1]) for line in trace[:8]])
    # The premise: both runs train on the same 8 blocks, and the two
    # micro-batches of each accumulated step predict different token counts.
    assert blocks[0] == blocks[1]
    dataset = PackedDataset(one_doc_block_shards, "train", 64, "doc")
    predicted = [int((dataset[i]["labels"][1:] != IGNORE_INDEX).sum()) for i in blocks[1]]
    micro = [predicted[k] + predicted[k + 1] for k in range(0, 8, 2)]
    assert micro[0] != micro[1] and micro[2] != micro[3], micro
    # Tolerance 1e-5 of each weight's largest entry: the fp32 gradients, summed
    # in another order, leave the weights ~1e-7 of it apart; per-micro-batch
    # normalisation moves the embeddings 2.5e-2 of it (both measured).
    for name, a in weights[0].items():
        assert_close_scaled(weights[1][name], a, rel=1e-5, what=name)


def test_tokenizer_mismatch_is_refused(
    shards: Path, tmp_path: Path, bpe_tok: Path, qwen_tok: Path, texts: list[str]
) -> None:
    import transformers

    manifest = tokenmill.read_manifest(shards)
    resaved = tmp_path / "resaved"
    transformers.AutoTokenizer.from_pretrained(bpe_tok).save_pretrained(resaved)
    check_tokenizer(resaved, manifest, str(shards))  # same tokenizer, re-saved: accepted
    with pytest.raises(ValueError, match="tokenizer mismatch") as e:
        check_tokenizer(qwen_tok, manifest, str(shards))
    assert str(qwen_tok) in str(e.value) and str(bpe_tok) in str(e.value)
    # cpt of a model trained with another tokenizer stops before training.
    model_dir = tmp_path / "qwen_model"
    transformers.LlamaForCausalLM(
        transformers.LlamaConfig(
            vocab_size=4000, hidden_size=32, num_hidden_layers=1, num_attention_heads=2
        )
    ).save_pretrained(model_dir)
    for f in qwen_tok.iterdir():
        shutil.copy(f, model_dir / f.name)
    with pytest.raises(ValueError, match="tokenizer mismatch"):
        run(shards, tmp_path / "cpt", model=str(model_dir), max_steps=1)
    assert not (tmp_path / "cpt" / "final_model").exists()


@pytest.fixture(scope="module")
def qwen2_dir(tmp_path_factory: pytest.TempPathFactory, bpe_tok: Path) -> Path:
    """A local Qwen2 directory: random init, the shards' tokenizer saved
    beside it, embeddings padded past the vocabulary as Qwen's are."""
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(bpe_tok)
    model_dir = tmp_path_factory.mktemp("qwen2")
    config = transformers.Qwen2Config(
        vocab_size=len(tok) + 64,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    transformers.Qwen2ForCausalLM(config).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    return model_dir


def test_cpt_of_a_qwen2_checkpoint(shards: Path, tmp_path: Path, qwen2_dir: Path) -> None:
    """A Qwen2 checkpoint trains, with the chunked loss, and its eval loss goes down."""
    import transformers

    metrics = run(
        shards, tmp_path / "cpt", model=str(qwen2_dir), max_steps=40, eval_steps=40,
        learning_rate=3e-3, packing="doc",
    )  # fmt: skip
    manifest = json.loads((tmp_path / "cpt" / "manifest.json").read_text())
    assert manifest["model"]["architecture"] == "Qwen2ForCausalLM"
    assert manifest["loss"] == "chunked"
    losses = logged_losses(tmp_path / "cpt", "checkpoint-40")
    assert metrics["eval_loss"] < losses[1] - 0.5
    loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "cpt" / "final_model")
    assert type(loaded).__name__ == "Qwen2ForCausalLM"


def test_seed_001s_config_file_drives_cpt(shards: Path, tmp_path: Path, qwen2_dir: Path) -> None:
    """Seed 001's cpt_config.json as it is (bf16 weights, device_map auto,
    flash attention asked for, data-preparation keys), with the model, data
    and a CPU-sized run given as flags."""
    from test_run_config import SEED_001

    config = tmp_path / "cpt_config.json"
    config.write_text(json.dumps(SEED_001, indent=2))
    r = CliRunner().invoke(
        main,
        ["cpt", "--config", str(config), "--model", str(qwen2_dir), "--data", str(shards),
         "--out", str(tmp_path / "cpt"), "--max-steps", "2", "--block-size", "64",
         "--max-eval-samples", "8", "--dataloader-num-workers", "0"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "warning: " in r.output and "--min-chars" in r.output
    resolved = (tmp_path / "cpt" / "config.resolved.yaml").read_text()
    assert "torch_dtype: bfloat16" in resolved and "learning_rate: 5.0e-05" in resolved
    assert "gradient_accumulation_steps: 8" in resolved and "ddp_timeout: 7200" in resolved
    saved = json.loads((tmp_path / "cpt" / "final_model" / "config.json").read_text())
    assert saved.get("dtype", saved.get("torch_dtype")) == "bfloat16"


def test_a_finished_run_trains_nothing_when_run_again(
    shards: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    first = run(shards, out, max_steps=3, eval_steps=3)
    assert first["global_step"] == 3
    capsys.readouterr()
    again = run(shards, out, max_steps=3, eval_steps=3)
    assert again["already_finished"] and again["steps_this_run"] == 0
    assert again["global_step"] == 3 and again["eval_loss"] == first["eval_loss"]
    assert "reached step 3 of 3" in capsys.readouterr().out
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-3"]
    # Stopped after its last checkpoint but before final_model/: the rerun makes it.
    shutil.rmtree(out / "final_model")
    run(shards, out, max_steps=3, eval_steps=3)
    assert (out / "final_model" / "model.safetensors").is_file()
    assert not (out / "final_model" / "optimizer.pt").exists()


def test_best_model_holds_the_lowest_eval_loss_on_seed_002s_schedule(
    shards: Path, tmp_path: Path
) -> None:
    """Seed 002: evaluate and save every epoch, keep one checkpoint, no
    load_best_model_at_end. best_model/ is the lowest-eval_loss weights
    anyway, even when a later epoch is worse."""
    from tokenmill.evaluate import evaluate

    out = tmp_path / "run"
    metrics = run(
        shards, out, max_train_samples=24, num_train_epochs=5, eval_strategy="epoch",
        save_strategy="epoch", save_total_limit=1, learning_rate=2e-2,
    )  # fmt: skip
    assert metrics["global_step"] == 30
    assert [p.name for p in out.glob("checkpoint-*")] == ["checkpoint-30"]
    history = json.loads((out / "checkpoint-30" / "trainer_state.json").read_text())
    evals = {h["step"]: h["eval_loss"] for h in history["log_history"] if "eval_loss" in h}
    assert sorted(evals) == [6, 12, 18, 24, 30]
    best_step = min(evals, key=evals.__getitem__)
    assert metrics["best_model_step"] == best_step
    assert metrics["best_eval_loss"] == evals[best_step]
    again = evaluate(out / "best_model", shards, block_size=64, max_eval_samples=16)
    assert again["loss"] == pytest.approx(evals[best_step], rel=1e-5)


def test_bf16_weights_train_and_are_saved_in_bf16(shards: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    out = tmp_path / "run"
    metrics = run(shards, out, max_steps=4, eval_steps=4, torch_dtype="bfloat16")
    assert 0 < metrics["eval_loss"] < 20
    saved = load_file(str(out / "final_model" / "model.safetensors"))
    assert {t.dtype for t in saved.values()} == {torch.bfloat16}
    config = json.loads((out / "final_model" / "config.json").read_text())
    assert config.get("dtype", config.get("torch_dtype")) == "bfloat16"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["precision"] == {"weights": "bfloat16", "autocast": None}


def test_shards_without_a_val_split_hold_out_the_end_of_train(
    tmp_path: Path, bpe_tok: Path, texts: list[str]
) -> None:
    from corpus import write_jsonl

    data = tmp_path / "shards"
    tokenmill.prepare(write_jsonl(tmp_path / "c.jsonl", texts[:300]), bpe_tok, data,
                      val_fraction=0.0, progress=False)  # fmt: skip
    metrics = run(data, tmp_path / "run", max_steps=2, eval_steps=2, eval_holdout=8)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["eval_held_out_of_train"] == 8 and manifest["eval"]["first_block"] > 0
    assert metrics["best_model_step"] == 2 and (tmp_path / "run" / "best_model").is_dir()
    off = run(data, tmp_path / "off", max_steps=2, eval_holdout=0)
    assert "eval_loss" not in off and not (tmp_path / "off" / "best_model").exists()


def test_block_size_past_the_models_positions_is_refused(
    shards: Path, tmp_path: Path, qwen2_dir: Path
) -> None:
    with pytest.raises(ValueError, match="block_size=512 is longer than the 256 positions"):
        run(shards, tmp_path / "run", model=str(qwen2_dir), block_size=512, max_steps=1)


def test_a_model_is_found_by_hub_id_in_the_cache(
    shards: Path, tmp_path: Path, qwen2_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--model org/name`` reads the user's Hugging Face cache (offline here)."""
    import huggingface_hub.constants

    from tokenmill.models import resolve_model

    cache = tmp_path / "hub"
    repo = cache / "models--local--tiny-qwen2"
    shutil.copytree(qwen2_dir, repo / "snapshots" / "0123abcd")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    assert resolve_model("local/tiny-qwen2") == repo / "snapshots" / "0123abcd"
    metrics = run(shards, tmp_path / "run", model="local/tiny-qwen2", max_steps=1,
                  eval_strategy="no")  # fmt: skip
    assert metrics["global_step"] == 1
    with pytest.raises(FileNotFoundError, match="neither a local directory nor a hub model"):
        resolve_model("local/absent")


def test_cli_pretrain_cpt_eval_generate(shards: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        "block_size: 64\nper_device_train_batch_size: 4\nmax_steps: 50\nlogging_steps: 5\n"
        "eval_steps: 3\nlearning_rate: 0.003\nmax_eval_samples: 8\nwarmup_ratio: 0\n"
    )
    runner = CliRunner()
    base = ["--data", str(shards), "--config", str(cfg)]
    r = runner.invoke(
        main,
        ["pretrain", "--preset", "llama-micro", "--out", str(tmp_path / "pre"), *base,
         "--max-steps", "6"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    resolved = (tmp_path / "pre" / "config.resolved.yaml").read_text()
    assert "max_steps: 6" in resolved and "eval_steps: 3" in resolved  # flag beats file
    r = runner.invoke(
        main,
        ["cpt", "--model", str(tmp_path / "pre" / "final_model"), "--out", str(tmp_path / "cpt"),
         *base, "--max-steps", "4", "--mix", f"{shards}:0.25", "--packing", "doc"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    manifest = json.loads((tmp_path / "cpt" / "manifest.json").read_text())
    assert [d["weight"] for d in manifest["data"]] == pytest.approx([0.75, 0.25])
    r = runner.invoke(
        main,
        ["eval", "--model", str(tmp_path / "cpt" / "final_model"), "--data", str(shards),
         "--block-size", "64", "--max-eval-samples", "8", "--json"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    result = json.loads(r.output[r.output.index("{") :])
    assert result["tokens"] == 8 * 63 and result["perplexity"] > 1
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("def main(", encoding="utf-8")
    r = runner.invoke(
        main,
        ["generate", "--model", str(tmp_path / "cpt" / "final_model"),
         "--prompt", f"FILE:{prompt}", "--max-new-tokens", "8", "--num-samples", "2"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert r.output.count("--- sample") == 2 and "def main(" in r.output
    r = runner.invoke(main, ["cpt", "--data", str(shards), "--out", str(tmp_path / "x")])
    assert r.exit_code != 0 and "--model" in r.output


def test_generate_is_reproducible_for_a_seed(shards: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    run(shards, out, max_steps=3, eval_strategy="no", save_strategy="no")
    model = out / "final_model"
    a = generate(model, "import ", num_samples=2, max_new_tokens=12, seed=7)
    b = generate(model, "import ", num_samples=2, max_new_tokens=12, seed=7)
    c = generate(model, "import ", num_samples=2, max_new_tokens=12, seed=8)
    assert a == b and a != c
    g1 = generate(model, "中文", max_new_tokens=6, temperature=0)
    g2 = generate(model, "中文", max_new_tokens=6, temperature=0, seed=1)
    assert g1 == g2
    chat = generate(model, "你好", max_new_tokens=4, temperature=0, chat=True)
    assert len(chat) == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_torchrun_two_processes_read_disjoint_data(shards: Path, tmp_path: Path) -> None:
    """DDP on CPU (gloo): both ranks train, each on its own batches; only
    rank 0 writes the run files."""
    trace = tmp_path / "trace"
    out = tmp_path / "ddp"
    cli = Path(sys.executable).parent / "tokenmill"
    cmd = [
        str(Path(sys.executable).parent / "torchrun"),
        "--nproc_per_node",
        "2",
        "--master_port",
        str(_free_port()),
        str(cli),
        "pretrain",
        "--preset",
        "llama-micro",
        "--data",
        str(shards),
        "--out",
        str(out),
        "--block-size",
        "64",
        "--per-device-train-batch-size",
        "4",
        "--max-steps",
        "4",
        "--save-steps",
        "2",
        "--eval-steps",
        "2",
        "--max-eval-samples",
        "8",
    ]
    env = os.environ | {"TOKENMILL_TRACE_DATA": str(trace), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    errors = [x for x in done.stderr.splitlines() if "error:" in x]
    assert done.returncode == 0, "\n".join(errors) or done.stderr[-3000:]
    served = {
        r: [
            tuple(map(int, x.split()))
            for x in (trace / f"rank{r}-worker0.txt").read_text().split("\n")
            if x
        ]
        for r in (0, 1)
    }
    assert len(served[0]) >= 16 and len(served[1]) >= 16
    assert not set(served[0][:16]) & set(served[1][:16])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["global_step"] == 4
    # One run of 2 processes (not two runs of one; train() checks that
    # Trainer's world matches the launch).
    assert json.loads((out / "manifest.json").read_text())["world_size"] == 2
    state = json.loads((out / "checkpoint-4" / "tokenmill_data.json").read_text())
    assert state["world_size"] == 2 and state["position"] == 16


def _torchrun(nproc: int, *args: str, env: dict[str, str] | None = None) -> None:
    cmd = [
        str(Path(sys.executable).parent / "torchrun"),
        "--nproc_per_node",
        str(nproc),
        "--master_port",
        str(_free_port()),
        str(Path(sys.executable).parent / "tokenmill"),
        *args,
    ]
    env = os.environ | {"OMP_NUM_THREADS": "1"} | (env or {})
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]


def test_deepspeed_zero3_shards_the_parameters_and_trains_like_one_process(
    shards: Path, tmp_path: Path, qwen2_dir: Path
) -> None:
    """Continued pretraining of a checkpoint by two CPU processes under
    ZeRO-3: each holds half the weights (the model is loaded partitioned),
    and with the chunked loss they log the losses of one process training
    on the same global batches, within float noise."""
    pytest.importorskip("deepspeed")  # in the dev extra on Linux
    # DeepSpeed's CPU accelerator compiles its communication op with g++ and
    # ninja (the dev extra installs ninja beside this Python) at first use.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    if shutil.which("ninja", path=path) is None or shutil.which("g++", path=path) is None:
        pytest.skip("DeepSpeed's CPU accelerator needs ninja and g++ on PATH")
    common = [
        "cpt", "--model", str(qwen2_dir), "--data", str(shards), "--block-size", "64",
        "--max-steps", "6", "--logging-steps", "1", "--eval-steps", "6",
        "--max-eval-samples", "8", "--learning-rate", "3e-3", "--warmup-ratio", "0",
    ]  # fmt: skip
    one, two = tmp_path / "one", tmp_path / "two"
    _torchrun(1, *common, "--out", str(one), "--per-device-train-batch-size", "8")
    extensions = {"TORCH_EXTENSIONS_DIR": str(tmp_path / "ext"), "PATH": path}
    _torchrun(2, *common, "--out", str(two), "--per-device-train-batch-size", "4",
              "--deepspeed", "zero3", env=extensions)  # fmt: skip
    held = [
        json.loads((run / "manifest.json").read_text())["model"]["parameter_bytes_on_rank_0"]
        for run in (one, two)
    ]
    assert 0.45 < held[1] / held[0] < 0.55, held
    # The chunked loss reads the LM head inside the model's forward, where
    # ZeRO-3 gathers it.
    assert json.loads((two / "manifest.json").read_text())["loss"] == "chunked"
    a, b = logged_losses(one, "checkpoint-6"), logged_losses(two, "checkpoint-6")
    assert sorted(a) == sorted(b) == list(range(1, 7))
    assert_close_scaled(
        torch.tensor([b[k] for k in sorted(b)]), torch.tensor([a[k] for k in sorted(a)]),
        rel=1e-5, what="ZeRO-3 losses vs one process",
    )  # fmt: skip
    # final_model/ holds the consolidated weights, loadable as a plain model.
    import transformers

    loaded = transformers.AutoModelForCausalLM.from_pretrained(two / "final_model")
    assert sum(p.numel() for p in loaded.parameters()) * 4 == held[0]


def test_demo_runs_the_whole_flow(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tokenmill.demo import PROMPTS, run_demo

    run_demo(tmp_path, vocab_size=600, corpus_mb=0.5, progress=False, train_steps=30)
    printed = capsys.readouterr().out.splitlines()
    steps = [line.split()[:2] for line in printed if line.startswith("[")]
    assert steps == [[f"[{i}/6]", name] for i, name in enumerate(
        ["corpus", "tokenizer", "shards", "verify", "pretrain", "samples"], 1)]  # fmt: skip
    assert len(printed) <= 30  # one screen
    gain = re.search(r"eval perplexity ([\d,.]+) -> ([\d,.]+)", "\n".join(printed))
    assert gain, printed
    before, after = (float(x.replace(",", "")) for x in gain.groups())
    assert before > 300 and after < before / 2  # from about the vocabulary size
    for prompt in PROMPTS:
        assert any(line.startswith(f"  > {prompt}") for line in printed), prompt
    assert (tmp_path / "run" / "final_model" / "config.json").is_file()

    # A rerun into the same directory replaces what the first one wrote.
    run_demo(tmp_path, vocab_size=600, corpus_mb=0.5, progress=False, train_steps=0)
    assert "[4/4] verify" in capsys.readouterr().out
