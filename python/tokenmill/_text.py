"""Wording shared by summaries and messages."""

from __future__ import annotations


def counted(n: int, noun: str) -> str:
    """``n`` (with thousands separators) and ``noun``, plural unless ``n`` is 1:
    ``counted(1, "line")`` is ``"1 line"``, ``counted(1200, "line")`` ``"1,200 lines"``."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"
