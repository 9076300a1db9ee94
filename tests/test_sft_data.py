"""prepare-sft: chat rendering equal to transformers, loss masks on assistant
turns, record formats, bad-record accounting, truncation, determinism, and
PackedDataset's -100 labels where the mask is 0."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from tokenizers import Tokenizer

import tokenmill
from corpus import chinese_texts, qwen25_tokenizer_config
from tokenmill.cli import main
from tokenmill.data import IGNORE_INDEX, PackedDataset

Messages = list[dict[str, str]]


@pytest.fixture(scope="module")
def qwen25_tok(qwen_tok: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The qwen_tok fixture with Qwen2.5-Instruct's tokenizer_config: its chat
    template, eos <|im_end|>, pad <|endoftext|>."""
    out = tmp_path_factory.mktemp("qwen25_tok")
    shutil.copy(qwen_tok / "tokenizer.json", out / "tokenizer.json")
    tok = json.loads((out / "tokenizer.json").read_text(encoding="utf-8"))
    have = {t["content"] for t in tok["added_tokens"]}
    assert {"<|im_start|>", "<|im_end|>"} <= have
    config = qwen25_tokenizer_config("<|im_end|>")
    (out / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return out


def conversations() -> list[Messages]:
    """Multi-turn English and Chinese conversations, some with a system turn."""
    zh = [t.strip() for t in chinese_texts() if t.strip()][:12]
    en = [
        "How do I reverse a list in Python?",
        "Use `xs[::-1]` for a copy, or `xs.reverse()` to reverse in place.",
        "And a string?",
        "Strings are immutable, so `s[::-1]` gives a reversed copy.",
        "Thanks! Any caveats with Unicode?",
        "Combining characters may end up on the wrong base letter; "
        "reverse grapheme clusters if that matters.",
    ]
    out: list[Messages] = []
    out.append(
        [
            {"role": "user", "content": en[0]},
            {"role": "assistant", "content": en[1]},
            {"role": "user", "content": en[2]},
            {"role": "assistant", "content": en[3]},
            {"role": "user", "content": en[4]},
            {"role": "assistant", "content": en[5]},
        ]
    )
    out.append(
        [
            {"role": "system", "content": "你是一个乐于助人的助手。"},
            {"role": "user", "content": "请用一句话介绍长城。"},
            {"role": "assistant", "content": zh[0][:200]},
            {"role": "user", "content": "再多说一点。"},
            {"role": "assistant", "content": zh[1][:300]},
        ]
    )
    for i in range(2, 10, 2):
        out.append(
            [
                {"role": "user", "content": zh[i][:120] + "\n这段话讲了什么?"},
                {"role": "assistant", "content": zh[i + 1][:250]},
                {"role": "user", "content": en[i % 6]},
                {"role": "assistant", "content": en[(i + 1) % 6] + " 另外," + zh[i][:40]},
            ]
        )
    return out


def hf_ids(tok_dir: Path, messages: Messages) -> list[int]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    ids: Any = tok.apply_chat_template(messages, tokenize=True)
    if not isinstance(ids, list):  # BatchEncoding in newer transformers
        ids = ids["input_ids"]
    return [int(i) for i in ids]


def write_records(path: Path, records: list[Any]) -> Path:
    with path.open("w", encoding="utf-8") as f:
        for r in records:
            f.write((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n")
    return path


def run(inputs: Path, tok: Path, out: Path, **kw: Any) -> tokenmill.PrepareStats:
    kw.setdefault("val_fraction", 0.0)
    kw.setdefault("threads", 2)
    kw.setdefault("progress", False)
    return tokenmill.prepare_sft(inputs, tok, out, overwrite=True, **kw)


def docs_and_masks(out: Path, split: str = "train") -> list[tuple[list[int], list[int]]]:
    s = tokenmill.open_shards(out, split)
    assert s.has_mask
    return [(s[i].tolist(), s.mask(i).tolist()) for i in range(len(s))]


def normalized(tok: Tokenizer, text: str) -> str:
    """``text`` as the tokenizer's normaliser leaves it (bpe_tok applies NFKC)."""
    return tok.normalizer.normalize_str(text) if tok.normalizer else text


def runs(mask: list[int]) -> list[tuple[int, int]]:
    """[start, end) of each run of 1s."""
    spans, start = [], None
    for i, m in enumerate([*mask, 0]):
        if m and start is None:
            start = i
        elif not m and start is not None:
            spans.append((start, i))
            start = None
    return spans


@pytest.mark.parametrize("which", ["bpe", "qwen25"])
def test_ids_equal_transformers_and_mask_covers_assistant(
    which: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    tok_dir: Path = request.getfixturevalue(f"{which}_tok")
    convs = conversations()
    src = write_records(tmp_path / "chat.jsonl", [{"messages": c} for c in convs])
    stats = run(src, tok_dir, tmp_path / "out")
    assert stats.docs == len(convs) and stats.skipped == {}
    assert stats.manifest["kind"] == "sft"
    assert stats.manifest["sft"]["chat_template"] == "tokenizer"
    assert stats.manifest["sft"]["inexact_turns"] == 0
    got = docs_and_masks(tmp_path / "out")
    ref = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
    for conv, (ids, mask) in zip(convs, got, strict=True):
        assert ids == hf_ids(tok_dir, conv)
        spans = runs(mask)
        assistant = [
            normalized(ref, m["content"]) + "<|im_end|>" for m in conv if m["role"] == "assistant"
        ]
        decoded = [ref.decode(ids[a:b], skip_special_tokens=False) for a, b in spans]
        assert decoded == assistant
    # Mask 0 on everything else: the masked total is exactly those spans.
    assert stats.manifest["sft"]["masked_tokens"] == sum(sum(m) for _, m in got)
    info = tokenmill.inspect(tmp_path / "out")
    assert info["kind"] == "sft"
    assert info["splits"]["train"]["trained_tokens"] == stats.manifest["sft"]["masked_tokens"]
    r = CliRunner().invoke(main, ["inspect", str(tmp_path / "out")])
    assert r.exit_code == 0 and "trained on (mask 1)" in r.output


def test_train_on_last(bpe_tok: Path, tmp_path: Path) -> None:
    conv = conversations()[0]
    src = write_records(tmp_path / "c.jsonl", [{"messages": conv}])
    run(src, bpe_tok, tmp_path / "out", train_on="last")
    [(ids, mask)] = docs_and_masks(tmp_path / "out")
    ref = Tokenizer.from_file(str(bpe_tok / "tokenizer.json"))
    [(a, b)] = runs(mask)
    last = normalized(ref, conv[-1]["content"])
    assert ref.decode(ids[a:b], skip_special_tokens=False) == last + "<|im_end|>"


def test_sharegpt_alpaca_and_system(qwen25_tok: Path, tmp_path: Path) -> None:
    records: list[Any] = [
        {
            "conversations": [
                {"from": "human", "value": "你好"},
                {"from": "gpt", "value": "你好!有什么可以帮你?"},
                {"from": "human", "value": "讲个笑话"},
                {"from": "gpt", "value": "程序员分不清万圣节和圣诞节:Oct 31 == Dec 25。"},
            ]
        },
        {
            "id": "belle-1",
            "conversations": [
                {"from": "system", "value": "Be brief."},
                {"from": "human", "value": "Capital of France?"},
                {"from": "assistant", "value": "Paris."},
            ],
        },
        {"instruction": "Translate to English", "input": "早上好", "output": "Good morning"},
        {
            "instruction": "And this?",
            "input": "",
            "output": "Good night",
            "history": [["Translate 晚安", "Good night"]],
            "system": "You translate.",
        },
    ]
    expected: list[Messages] = [
        [
            {"role": "system", "content": "SYS"},
            {"role": "user", "content": "你好"},
            {"role": "assistant", "content": "你好!有什么可以帮你?"},
            {"role": "user", "content": "讲个笑话"},
            {"role": "assistant", "content": records[0]["conversations"][3]["value"]},
        ],
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Capital of France?"},
            {"role": "assistant", "content": "Paris."},
        ],
        [
            {"role": "system", "content": "SYS"},
            {"role": "user", "content": "Translate to English\n早上好"},
            {"role": "assistant", "content": "Good morning"},
        ],
        [
            {"role": "system", "content": "You translate."},
            {"role": "user", "content": "Translate 晚安"},
            {"role": "assistant", "content": "Good night"},
            {"role": "user", "content": "And this?"},
            {"role": "assistant", "content": "Good night"},
        ],
    ]
    src = write_records(tmp_path / "mixed.jsonl", records)
    stats = run(src, qwen25_tok, tmp_path / "out", system="SYS")
    assert stats.docs == 4
    got = docs_and_masks(tmp_path / "out")
    for conv, (ids, _) in zip(expected, got, strict=True):
        assert ids == hf_ids(qwen25_tok, conv)
    # Without --system, Qwen2.5's template adds its own default system prompt.
    run(src, qwen25_tok, tmp_path / "out2")
    ids0, _ = docs_and_masks(tmp_path / "out2")[0]
    assert ids0 == hf_ids(qwen25_tok, expected[0][1:])
    # An explicit format refuses records of another layout.
    stats = run(src, qwen25_tok, tmp_path / "out3", format="alpaca")
    assert stats.docs == 2 and stats.skipped == {"unknown_format": 2}


BAD = [
    {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
    {"messages": [{"role": "robot", "content": "q"}, {"role": "assistant", "content": "a"}]},
    {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "  "}]},
    {"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": "a"}]},
    {"messages": [{"role": "user", "content": "q"}]},
    '{"messages": [',
    "",
    {"conversations": [{"from": "alien", "value": "x"}, {"from": "gpt", "value": "y"}]},
    {"text": "plain pretraining text"},
    {"instruction": "i", "output": "o"},
]


def test_bad_records_counted_and_strict(bpe_tok: Path, tmp_path: Path) -> None:
    src = write_records(tmp_path / "bad.jsonl", BAD)
    stats = run(src, bpe_tok, tmp_path / "out")
    assert stats.docs == 2
    assert stats.lines == len(BAD)
    assert stats.skipped == {
        "unknown_role": 2,
        "empty_assistant": 1,
        "wrong_type": 1,
        "no_final_assistant": 1,
        "malformed_json": 1,
        "empty": 1,
        "unknown_format": 1,
    }
    assert any("bad.jsonl:2: unknown_role" in e for e in stats.skipped_examples)
    with pytest.raises(tokenmill.BadLineError, match=r"bad\.jsonl:2: unknown_role"):
        run(src, bpe_tok, tmp_path / "strict", strict=True)
    assert not (tmp_path / "strict" / "manifest.json").exists()
    # The CLI names file and line too.
    r = CliRunner().invoke(
        main,
        ["prepare-sft", str(src), "-t", str(bpe_tok), "-o", str(tmp_path / "cli"), "--strict"],
    )
    assert r.exit_code != 0 and "bad.jsonl:2" in r.output


def test_truncation_and_drop(bpe_tok: Path, tmp_path: Path) -> None:
    convs = conversations()
    src = write_records(tmp_path / "c.jsonl", [{"messages": c} for c in convs])
    full = [hf_ids(bpe_tok, c) for c in convs]
    first_turn = hf_ids(bpe_tok, convs[0][:2])
    limit = len(first_turn) + 1
    stats = run(src, bpe_tok, tmp_path / "out", max_length=limit)
    got = docs_and_masks(tmp_path / "out")
    fitting = sum(len(f) <= limit for f in full)
    # Conversation 0 keeps its first exchange; the others have none short enough.
    assert got[0][0] == first_turn
    assert all(len(ids) <= limit for ids, _ in got)
    assert stats.manifest["sft"]["truncated"] == len(got) - fitting
    assert stats.filtered.get("too_long", 0) == len(convs) - len(got)
    # No whole conversation may fit: an empty result is what is checked.
    stats = run(src, bpe_tok, tmp_path / "drop", max_length=limit, overflow="drop",
                allow_empty=True)  # fmt: skip
    assert stats.docs == fitting
    assert stats.filtered.get("too_long", 0) == len(convs) - fitting


def test_deterministic_across_threads(bpe_tok: Path, tmp_path: Path) -> None:
    convs = [
        [{**m, "content": f"{m['content']} #{i}"} for m in c]
        for i, c in enumerate(conversations() * 40)
    ]
    src = write_records(tmp_path / "c.jsonl", [{"messages": c} for c in convs])
    shas = []
    for threads in (1, 2):
        out = tmp_path / f"t{threads}"
        stats = run(src, bpe_tok, out, threads=threads, val_fraction=0.2, shard_bytes=4096)
        assert len(stats.manifest["splits"]["train"]["shards"]) > 1
        shas.append(
            [
                (s["bin_sha256"], s["idx_sha256"], s["mask_sha256"])
                for split in ("train", "val")
                for s in stats.manifest["splits"][split]["shards"]
            ]
        )
        for split in ("train", "val"):
            for s in stats.manifest["splits"][split]["shards"]:
                assert (out / s["mask"]).stat().st_size == s["tokens"]
    assert shas[0] == shas[1]


def test_packed_dataset_masks_labels(bpe_tok: Path, tmp_path: Path) -> None:
    convs = conversations() * 3
    src = write_records(tmp_path / "c.jsonl", [{"messages": c} for c in convs])
    run(src, bpe_tok, tmp_path / "out")
    shards = tokenmill.open_shards(tmp_path / "out")
    all_mask = np.concatenate([shards.mask(i) for i in range(len(shards))])
    all_ids = np.concatenate([shards[i] for i in range(len(shards))])
    ds = PackedDataset(tmp_path / "out", block_size=64, mode="concat")
    assert len(ds) > 3
    for b in range(len(ds)):
        item = ds[b]
        m = all_mask[b * 64 : (b + 1) * 64]
        labels = item["labels"].numpy()
        assert (item["input_ids"].numpy() == all_ids[b * 64 : (b + 1) * 64]).all()
        assert ((labels == IGNORE_INDEX) == (m == 0)).all()
    ds = PackedDataset(tmp_path / "out", block_size=256, mode="doc")
    trained = 0
    for b in range(len(ds)):
        labels = ds[b]["labels"].numpy()
        at = 0
        for doc, start, length in ds.documents_of(b):
            m = shards.mask(doc)[start : start + length]
            lab = labels[at : at + length]
            assert (lab[m == 0] == IGNORE_INDEX).all()
            assert (lab[1:][m[1:] == 1] != IGNORE_INDEX).all()
            trained += int((lab != IGNORE_INDEX).sum())
            at += length
        assert (labels[at:] == IGNORE_INDEX).all()
    assert 0 < trained <= int(all_mask.sum())


def test_builtin_chatml_without_template(bpe_tok: Path, tmp_path: Path) -> None:
    tok = tmp_path / "tok"
    tok.mkdir()
    shutil.copy(bpe_tok / "tokenizer.json", tok / "tokenizer.json")
    config = json.loads((bpe_tok / "tokenizer_config.json").read_text(encoding="utf-8"))
    del config["chat_template"]
    (tok / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    conv = conversations()[1]
    src = write_records(tmp_path / "c.jsonl", [{"messages": conv}])
    stats = run(src, tok, tmp_path / "out")
    assert stats.manifest["sft"]["chat_template"] == "chatml (built in)"
    [(ids, _)] = docs_and_masks(tmp_path / "out")
    text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in conv)
    ref = Tokenizer.from_file(str(tok / "tokenizer.json"))
    assert ids == ref.encode(text, add_special_tokens=False).ids


def test_verify_checks_masks(bpe_tok: Path, tmp_path: Path) -> None:
    src = write_records(tmp_path / "c.jsonl", [{"messages": c} for c in conversations()])
    stats = run(src, bpe_tok, tmp_path / "out")
    assert tokenmill.verify(tmp_path / "out").ok
    mask = tmp_path / "out" / stats.manifest["splits"]["train"]["shards"][0]["mask"]
    data = bytearray(mask.read_bytes())
    data[0] = 2
    mask.write_bytes(bytes(data))
    report = tokenmill.verify(tmp_path / "out")
    assert not report.ok
    assert any(".mask: sha256" in e for e in report.errors)
    assert any("other than 0 and 1" in e for e in report.errors)


MISTRAL_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] | trim + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'].strip() + eos_token }}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}"
    "{% endif %}{% endfor %}"
)


def test_sentencepiece_template_with_bos_and_raise(
    llama_tok: Path, tmp_path: Path, texts: list[str]
) -> None:
    """A Mistral/LLaMA-2 style template on a SentencePiece tokenizer:
    ``bos_token``/``eos_token`` globals, ``raise_exception``, python string
    methods; a conversation the template refuses counts as template_error."""
    tok = tmp_path / "tok"
    tok.mkdir()
    shutil.copy(llama_tok / "tokenizer.json", tok / "tokenizer.json")
    config = json.loads((llama_tok / "tokenizer_config.json").read_text(encoding="utf-8"))
    config["chat_template"] = MISTRAL_TEMPLATE
    (tok / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    convs = [[m for m in c if m["role"] != "system"] for c in conversations()]
    bad = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    bad.append({"role": "assistant", "content": "c"})
    src = write_records(tmp_path / "c.jsonl", [{"messages": c} for c in [*convs, bad]])
    stats = run(src, tok, tmp_path / "out")
    assert stats.skipped == {"template_error": 1}
    assert stats.manifest["sft"]["inexact_turns"] == 0
    assert any("roles must alternate" in e for e in stats.skipped_examples)
    ref = Tokenizer.from_file(str(tok / "tokenizer.json"))
    for conv, (ids, mask) in zip(convs, docs_and_masks(tmp_path / "out"), strict=True):
        assert ids == hf_ids(tok, conv)
        assert ids[0] == ref.token_to_id("<s>") and mask[0] == 0
        spans = runs(mask)
        replies = [m["content"].strip() for m in conv if m["role"] == "assistant"]
        assert len(spans) == len(replies)
        for (a, b), reply in zip(spans, replies, strict=True):
            assert ids[b - 1] == ref.token_to_id("</s>")
            assert ref.decode(ids[a : b - 1], skip_special_tokens=False).strip() == reply


# The date logic of LLaMA 3.1+ chat templates, over ChatML turns.
DATED_TEMPLATE = (
    "{%- if not date_string is defined %}\n"
    "    {%- if strftime_now is defined %}\n"
    '        {%- set date_string = strftime_now("%d %b %Y") %}\n'
    "    {%- else %}\n"
    '        {%- set date_string = "26 Jul 2024" %}\n'
    "    {%- endif %}\n"
    "{%- endif %}\n"
    "{{- '<|im_start|>system\\nToday Date: ' + date_string + '<|im_end|>\\n' }}\n"
    "{%- for message in messages %}\n"
    "    {{- '<|im_start|>' + message['role'] + '\\n' + message['content'] | trim"
    " + '<|im_end|>\\n' }}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}\n"
)


def test_strftime_now_renders_todays_date_as_transformers(qwen25_tok: Path, tmp_path: Path) -> None:
    import datetime

    tok = tmp_path / "tok"
    shutil.copytree(qwen25_tok, tok)
    config = json.loads((tok / "tokenizer_config.json").read_text())
    config["chat_template"] = DATED_TEMPLATE
    (tok / "tokenizer_config.json").write_text(json.dumps(config))
    convs = conversations()[:3]
    src = write_records(tmp_path / "chat.jsonl", [{"messages": c} for c in convs])
    stats = run(src, tok, tmp_path / "out")
    assert stats.docs == 3
    ref = Tokenizer.from_file(str(tok / "tokenizer.json"))
    for conv, (ids, _) in zip(convs, docs_and_masks(tmp_path / "out"), strict=True):
        assert ids == hf_ids(tok, conv)
        today = datetime.datetime.now().strftime("%d %b %Y")
        assert f"Today Date: {today}" in ref.decode(ids, skip_special_tokens=False)


# Templates a downloaded tokenizer_config.json could hold: one that never
# finishes (10^10 iterations), one whose output grows without end and one
# whose data does.
ENDLESS_TEMPLATE = (
    "{% for i in range(100000) %}{% for j in range(100000) %}.{% endfor %}{% endfor %}"
)
FLOODING_TEMPLATE = (
    "{% for m in messages %}{% for i in range(100000) %}"
    "{{ m.content * 100000 }}{% endfor %}{% endfor %}"
)


DOUBLING_TEMPLATE = (
    "{% set ns = namespace(s='x') %}{% for i in range(64) %}"
    "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}"
)


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        (
            ENDLESS_TEMPLATE,
            "ran out of fuel (10000000 per render: one per instruction and per 64 bytes created)",
        ),
        (FLOODING_TEMPLATE, "chat template output exceeds 256 MiB"),
        # A string doubled in a loop: one instruction per doubling, so only
        # fuel that pays for data stops it (minijinja >= 3); it exhausted
        # memory before. Found by the chat_render fuzz target.
        (DOUBLING_TEMPLATE, "ran out of fuel"),
    ],
)
def test_a_hostile_chat_template_is_stopped_and_counted(
    bpe_tok: Path, tmp_path: Path, template: str, reason: str
) -> None:
    import time

    tok = tmp_path / "tok"
    tok.mkdir()
    shutil.copy(bpe_tok / "tokenizer.json", tok / "tokenizer.json")
    config = qwen25_tokenizer_config("<|im_end|>")
    config["chat_template"] = template
    (tok / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    good = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
    src = write_records(tmp_path / "c.jsonl", [good, good])
    started = time.perf_counter()
    with pytest.raises(tokenmill.NoDocumentsError, match=re.escape(reason)):
        run(src, tok, tmp_path / "out", threads=1)
    assert time.perf_counter() - started < 30


def test_a_record_with_thousands_of_turns_is_skipped_at_once(bpe_tok: Path, tmp_path: Path) -> None:
    """Masks need a render of the prefix before and through each assistant turn
    (work ~ turns x length): a 10^4-turn record took minutes before the budget;
    now it is counted as too_many_turns at once, and a long real one passes."""
    import time

    def chat(turns: int, words: int) -> dict[str, Any]:
        messages = []
        for i in range(turns):
            messages.append({"role": "user", "content": f"question {i} " + "word " * words})
            messages.append({"role": "assistant", "content": f"answer {i} " + "text " * words})
        return {"messages": messages}

    src = write_records(tmp_path / "c.jsonl", [chat(10_000, 5), chat(60, 40)])
    started = time.perf_counter()
    stats = run(src, bpe_tok, tmp_path / "out", threads=1)
    assert time.perf_counter() - started < 30
    assert stats.skipped == {"too_many_turns": 1}
    assert stats.manifest["totals"]["docs"] == 1
    assert "10000 assistant turns" in " ".join(stats.manifest["skipped_examples"])
