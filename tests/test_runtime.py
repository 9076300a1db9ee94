"""Runtime behaviour at the Python boundary: the GIL is released during heavy
work, Ctrl-C stops a run without leaving a dataset, progress is shown."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import tokenmill
from corpus import write_jsonl


def test_gil_released_while_encoding(bpe_tok: Path, texts: list[str]) -> None:
    enc = tokenmill.Encoder(str(bpe_tok))
    batch = texts * 3
    worker = threading.Thread(target=enc.encode_batch, args=(batch,), kwargs={"threads": 1})
    ticks = 0
    worker.start()
    while worker.is_alive():
        ticks += 1  # only runs if the worker does not hold the GIL
        time.sleep(0.001)
    worker.join()
    assert ticks > 20


def test_ctrl_c_stops_without_manifest(tmp_path: Path, bpe_tok: Path, texts: list[str]) -> None:
    big = write_jsonl(tmp_path / "big.jsonl", [f"{i} {t}" for i in range(6) for t in texts])
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "tokenmill.cli", "prepare", str(big), "-t", str(bpe_tok), "-o",
           str(out), "--shard-size", "64KiB", "--threads", "1"]  # fmt: skip
    # Default SIGINT handling in the child even when the tests themselves were
    # started in the background (`cmd &`), which makes a shell ignore SIGINT
    # in everything it starts: the child would then never see the Ctrl-C.
    proc = subprocess.Popen(
        cmd,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 60
    while not list(out.glob("train/00001.bin")) and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert not (out / "manifest.json").exists()
    # No shard of the aborted run is left, finished (00000.bin) or cut short
    # (the open shard is committed only when every stage succeeded).
    assert not [p for p in out.rglob("*") if p.is_file()]


def test_progress_line_on_stderr(tmp_path: Path, bpe_tok: Path) -> None:
    corpus = write_jsonl(tmp_path / "in.jsonl", ["some text"] * 3 + ["other"])
    cmd = [sys.executable, "-m", "tokenmill.cli", "prepare", str(corpus), "-t", str(bpe_tok), "-o",
           str(tmp_path / "o")]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert "prepare 100%|####################|" in done.stderr
    assert "tok/s" in done.stderr
    # A job shorter than the redraw period shows its final line once.
    assert done.stderr.count("prepare ") == 1, done.stderr
    assert "filtered     duplicate=2" in done.stdout
