"""What the Python API accepts as inputs, turned into the files the Rust
reader reads: paths as they are, a `datasets.Dataset` as the Arrow files
behind it (no copy) or, when it has none that match it, one Arrow file
written from its rows, and an iterator of texts or records as one JSON
Lines file. Files written here live in a temporary directory for the
length of the call."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tokenmill import _core

PathLike = str | os.PathLike[str]
#: Paths, a `datasets.Dataset`, or an iterator of texts (``str``) or records
#: (``dict``); a list of strings is a list of paths (``iter(texts)`` passes texts).
Inputs = PathLike | Sequence[Any] | Iterable[Any]


@contextmanager
def input_paths(inputs: Inputs, text_field: str = "text") -> Iterator[list[str]]:
    """The files that hold ``inputs``, valid inside the ``with`` block."""
    with tempfile.TemporaryDirectory(prefix="tokenmill-inputs-") as tmp:
        yield _paths(inputs, text_field, Path(tmp))


def _paths(inputs: Any, text_field: str, tmp: Path) -> list[str]:
    if isinstance(inputs, (str, os.PathLike)):
        return [os.fspath(inputs)]
    if _is_dataset(inputs) or _is_dataset_dict(inputs):
        return _dataset_files(inputs, tmp)
    if isinstance(inputs, Sequence) and all(
        isinstance(x, (str, os.PathLike)) or _is_dataset(x) or _is_dataset_dict(x) for x in inputs
    ):
        return [p for x in inputs for p in _paths(x, text_field, tmp)]
    if isinstance(inputs, Iterable):
        return [_write_records(inputs, text_field, tmp / f"records-{len(list(tmp.iterdir()))}")]
    raise _core.InvalidOptionError(
        f"inputs: expected paths, a datasets.Dataset or an iterator of texts, got {type(inputs)}"
    )


def _is_dataset(x: object) -> bool:
    datasets = sys.modules.get("datasets")
    return datasets is not None and isinstance(x, datasets.Dataset)


def _is_dataset_dict(x: object) -> bool:
    datasets = sys.modules.get("datasets")
    return datasets is not None and isinstance(x, datasets.DatasetDict)


def _dataset_files(ds: Any, tmp: Path) -> list[str]:
    """The Arrow files of ``ds`` when they hold exactly its rows and columns
    (a dataset loaded or saved to disk and not since reordered, selected
    or changed), else one stream file written from its rows."""
    import pyarrow as pa  # type: ignore[import-untyped]

    if _is_dataset_dict(ds):
        first = next(iter(ds), "train")
        raise _core.InvalidOptionError(
            f"inputs: a DatasetDict with splits {list(ds)}; pass one split, e.g. dataset[{first!r}]"
        )
    files = [f["filename"] for f in ds.cache_files]
    if files and ds._indices is None:
        tables = [_read_ipc(f) for f in files]
        if all(t is not None and t.schema == ds.data.schema for t in tables) and sum(
            t.num_rows for t in tables if t is not None
        ) == len(ds):
            return files
    path = tmp / f"dataset-{len(list(tmp.iterdir()))}.arrow"
    writer = None
    for table in ds.with_format("arrow").iter(batch_size=4096):
        if writer is None:
            writer = pa.ipc.new_stream(path, table.schema)
        writer.write_table(table)
    if writer is None:
        writer = pa.ipc.new_stream(path, ds.data.schema)
    writer.close()
    return [str(path)]


def _read_ipc(path: str) -> Any:
    """The table in an Arrow IPC file (memory-mapped, not copied), or None."""
    import pyarrow as pa  # type: ignore[import-untyped]

    try:
        return pa.ipc.open_stream(pa.memory_map(path)).read_all()
    except (pa.ArrowInvalid, OSError):
        try:
            return pa.ipc.open_file(pa.memory_map(path)).read_all()
        except (pa.ArrowInvalid, OSError):
            return None


def _write_records(items: Iterable[Any], text_field: str, stem: Path) -> str:
    """Texts (each becomes a record with ``text_field``, dotted paths
    nesting) and records (dicts, as they are) as one JSON Lines file."""
    path = stem.with_suffix(".jsonl")
    keys = text_field.split(".")
    with path.open("w", encoding="utf-8") as f:
        for i, item in enumerate(items):
            if isinstance(item, str):
                record: Any = item
                for key in reversed(keys):
                    record = {key: record}
            elif isinstance(item, dict):
                record = item
            else:
                raise _core.InvalidOptionError(
                    f"inputs: item {i} is {type(item).__name__}; an iterator must yield str or dict"
                )
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return str(path)
