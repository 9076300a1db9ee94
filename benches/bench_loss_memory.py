"""Peak memory of one training step's loss for a Qwen-sized vocabulary (151,936):
tokenmill's chunked cross-entropy vs the model's own loss (full fp32 logits).

Each variant runs in a fresh child process on CPU: a 2-layer LLaMA with the
given vocabulary, one forward + backward on a (batch x block) batch; the
figure is the child's peak RSS minus its RSS just before the step, i.e. what
the step itself needed on top of the model and its gradients' buffers.

    python benches/bench_loss_memory.py --batch 4 --block 1024
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def child(mode: str, vocab: int, batch: int, block: int, hidden: int) -> None:
    import torch
    import transformers

    from tokenmill.loss import enable_chunked_loss

    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        intermediate_size=4 * hidden,
        max_position_embeddings=block,
        tie_word_embeddings=True,
    )
    model = transformers.LlamaForCausalLM(config).train()
    if mode == "chunked":
        assert enable_chunked_loss(model)
    ids = torch.randint(0, vocab, (batch, block))
    # Warm the allocator and the gradient buffers with a tiny batch first.
    model(input_ids=ids[:1, :8], labels=ids[:1, :8]).loss.backward()
    before = rss_mib()
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"mode": mode, "step_mib": peak - before, "loss": float(loss)}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--vocab", type=int, default=151_936)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--block", type=int, default=1024)
    p.add_argument("--hidden", type=int, default=256)
    a = p.parse_args()
    full_logits = a.batch * a.block * a.vocab * 4 / 2**20
    print(
        f"vocab {a.vocab:,}, batch {a.batch} x {a.block}, hidden {a.hidden}: "
        f"one fp32 copy of the full logits = {full_logits:,.0f} MiB"
    )
    results = {}
    for mode in ("model", "chunked"):
        out = subprocess.run(
            [sys.executable, __file__, "_child", mode, str(a.vocab), str(a.batch), str(a.block),
             str(a.hidden)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        results[mode] = json.loads(out.stdout.strip().splitlines()[-1])
        r = results[mode]
        print(f"{mode:<8} step peak +{r['step_mib']:,.0f} MiB (loss {r['loss']:.4f})")
    ratio = results["model"]["step_mib"] / results["chunked"]["step_mib"]
    print(f"model's own loss / chunked: {ratio:.1f}x the memory")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        child(sys.argv[2], *map(int, sys.argv[3:7]))
    else:
        main()
