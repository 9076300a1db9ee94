"""What the Python API accepts as inputs, turned into what the Rust reader
reads: paths as they are (the split's directory of a `DatasetDict`
directory); a `datasets.Dataset` as the Arrow files behind it, or as its
Arrow table in memory (handed over through the Arrow C stream interface),
in both cases without a copy, and as one Arrow file written from its rows
only when it was reordered or selected (then its rows are not stored in its
order anywhere); a dataset name through ``datasets.load_dataset`` (the
user's cache first); an iterator of texts or records as one JSON Lines file.
Files written here live in a temporary directory for the length of the
call."""

from __future__ import annotations

import errno
import json
import os
import re
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tokenmill import _core

PathLike = str | os.PathLike[str]
#: Paths, dataset names, a `datasets.Dataset`, or an iterator of texts
#: (``str``) or records (``dict``); a list of strings is a list of paths
#: (``iter(texts)`` passes texts).
Inputs = PathLike | Sequence[Any] | Iterable[Any]

# `owner/name` or `name` as the hub spells dataset names.
_DATASET_NAME = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")
_FILE_SUFFIXES = (
    ".jsonl",
    ".json",
    ".ndjson",
    ".txt",
    ".gz",
    ".zst",
    ".zstd",
    ".parquet",
    ".arrow",
)


@dataclass
class ResolvedInputs:
    """What the data core reads: ``specs`` as a configuration's ``inputs``
    (paths, and ``{"table": i}`` for the i-th of ``tables``) and ``tables``,
    the ``(name, pyarrow table)`` pairs handed to the data core beside it."""

    specs: list[str | dict[str, int]] = field(default_factory=list)
    tables: list[tuple[str, Any]] = field(default_factory=list)

    def names(self) -> list[str]:
        """The inputs as a person reads them: paths, and tables by name."""
        return [s if isinstance(s, str) else self.tables[s["table"]][0] for s in self.specs]


@contextmanager
def resolved_inputs(
    inputs: Inputs, text_field: str = "text", split: str | None = None
) -> Iterator[ResolvedInputs]:
    """What holds ``inputs``, valid inside the ``with`` block. ``split``
    picks the split of a `DatasetDict` (object or directory) and of a
    dataset name; it is an error when no input has splits."""
    with tempfile.TemporaryDirectory(prefix="tokenmill-inputs-") as tmp:
        resolver = _Resolver(text_field, split, Path(tmp))
        resolver.add(inputs)
        if split is not None and not resolver.used_split:
            raise _core.InvalidOptionError(
                f"input_split={split!r}: no input is a DatasetDict or a dataset name"
            )
        yield resolver.out


class _Resolver:
    def __init__(self, text_field: str, split: str | None, tmp: Path) -> None:
        self.text_field, self.split, self.tmp = text_field, split, tmp
        self.used_split = False
        self.out = ResolvedInputs()

    def add(self, inputs: Any) -> None:
        if isinstance(inputs, (str, os.PathLike)):
            self._spec(os.fspath(inputs))
        elif _is_dataset(inputs) or _is_dataset_dict(inputs):
            self._dataset(self._pick(inputs))
        elif isinstance(inputs, Sequence) and all(
            isinstance(x, (str, os.PathLike)) or _is_dataset(x) or _is_dataset_dict(x)
            for x in inputs
        ):
            for x in inputs:
                self.add(x)
        elif isinstance(inputs, Iterable):
            stem = self.tmp / f"records-{len(list(self.tmp.iterdir()))}"
            self.out.specs.append(_write_records(inputs, self.text_field, stem))
        else:
            raise _core.InvalidOptionError(
                "inputs: expected paths, a datasets.Dataset or an iterator of texts, "
                f"got {type(inputs)}"
            )

    def _dataset(self, ds: Any) -> None:
        """The Arrow files of ``ds`` when they hold exactly its rows and
        columns (a dataset loaded or saved to disk and not since reordered,
        selected or changed); else its table in memory when its rows are
        that table's; else one stream file written from its rows."""
        files = _dataset_files(ds)
        if files:
            self.out.specs.extend(files)
        elif ds._indices is None:
            index = len(self.out.tables)
            name = f"<datasets.Dataset {index} in memory, {len(ds)} rows>"
            self.out.specs.append({"table": index})
            self.out.tables.append((name, ds.data.table))
        else:
            self.out.specs.append(_write_dataset(ds, self.tmp))

    def _pick(self, ds: Any) -> Any:
        """The split of a DatasetDict; without one, an error naming its splits."""
        if not _is_dataset_dict(ds):
            return ds
        if self.split is None:
            first = next(iter(ds), "train")
            raise _core.InvalidOptionError(
                f"inputs: a DatasetDict with splits {list(ds)}; pass one split, "
                f"e.g. dataset[{first!r}], or input_split"
            )
        if self.split not in ds:
            raise _core.InvalidOptionError(
                f"input_split={self.split!r}: the DatasetDict has splits {list(ds)}"
            )
        self.used_split = True
        return ds[self.split]

    def _spec(self, spec: str) -> None:
        """A path as it is (a DatasetDict directory: its split's directory),
        or the dataset a name loads."""
        path = Path(spec)
        if path.exists():
            if self.split is not None and (path / "dataset_dict.json").is_file():
                splits = json.loads((path / "dataset_dict.json").read_text())["splits"]
                if self.split not in splits:
                    raise _core.InvalidOptionError(
                        f"input_split={self.split!r}: {spec} has splits {splits}"
                    )
                self.used_split = True
                spec = str(path / self.split)
            self.out.specs.append(spec)
            return
        if not _DATASET_NAME.fullmatch(spec) or spec.lower().endswith(_FILE_SUFFIXES):
            self.out.specs.append(spec)  # the data core names what is missing
            return
        import datasets

        try:
            loaded = datasets.load_dataset(spec, split=self.split)
        except Exception as e:  # datasets raises many types for "cannot load"
            raise _core.TokenmillFileNotFoundError(
                errno.ENOENT,
                f"no such file or directory, and datasets cannot load it as a dataset ({e})",
                spec,
            ) from e
        if self.split is not None:
            self.used_split = True
        self._dataset(self._pick(loaded))


def _is_dataset(x: object) -> bool:
    datasets = sys.modules.get("datasets")
    return datasets is not None and isinstance(x, datasets.Dataset)


def _is_dataset_dict(x: object) -> bool:
    datasets = sys.modules.get("datasets")
    return datasets is not None and isinstance(x, datasets.DatasetDict)


def _dataset_files(ds: Any) -> list[str]:
    """The Arrow files of ``ds`` when they hold exactly its rows and columns
    (a dataset loaded or saved to disk and not since reordered, selected
    or changed), else none."""
    files = [f["filename"] for f in ds.cache_files]
    if files and ds._indices is None:
        tables = [_read_ipc(f) for f in files]
        if all(t is not None and t.schema == ds.data.schema for t in tables) and sum(
            t.num_rows for t in tables if t is not None
        ) == len(ds):
            return files
    return []


def _write_dataset(ds: Any, tmp: Path) -> str:
    """The rows of ``ds``, in its order, as one Arrow stream file."""
    import pyarrow as pa  # type: ignore[import-untyped]

    path = tmp / f"dataset-{len(list(tmp.iterdir()))}.arrow"
    writer = None
    for table in ds.with_format("arrow").iter(batch_size=4096):
        if writer is None:
            writer = pa.ipc.new_stream(path, table.schema)
        writer.write_table(table)
    if writer is None:
        writer = pa.ipc.new_stream(path, ds.data.schema)
    writer.close()
    return str(path)


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
