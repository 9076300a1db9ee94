"""Type stubs for the compiled data core (checked against the module by mypy.stubtest)."""

from collections.abc import Iterator
from typing import Any, final

__all__ = [
    "DEFAULT_MAX_LINE_BYTES",
    "BadLineError",
    "CorruptDatasetError",
    "Encoder",
    "InternalError",
    "InvalidOptionError",
    "NoDocumentsError",
    "OutputExistsError",
    "TextBatches",
    "TokenizerError",
    "TokenmillError",
    "TokenmillFileNotFoundError",
    "TokenmillOSError",
    "TokenmillPermissionError",
    "__version__",
    "_panic_for_tests",
    "check_index",
    "chunk_files",
    "chunk_spans",
    "dedup_buckets",
    "dedup_clusters",
    "dedup_files",
    "dedup_signatures",
    "dedup_texts",
    "merge",
    "minhash",
    "pack_documents",
    "prepare",
    "prepare_sft",
    "read_manifest",
    "shingles",
    "tokenizer_info",
    "verify",
]

__version__: str
# The longest line (record, row, whole-file document) read by default: 64 MiB.
DEFAULT_MAX_LINE_BYTES: int

class TokenmillError(Exception): ...
class BadLineError(TokenmillError): ...
class TokenizerError(TokenmillError): ...
class CorruptDatasetError(TokenmillError): ...

class InternalError(TokenmillError):
    """A bug in tokenmill (a Rust panic, caught at the boundary); the message says where."""

class TokenmillOSError(TokenmillError, OSError):
    """An I/O failure; errno, strerror and filename are set as on OSError."""

class TokenmillFileNotFoundError(TokenmillOSError, FileNotFoundError):
    """A file or directory to read does not exist."""

class TokenmillPermissionError(TokenmillOSError, PermissionError):
    """A file or directory could not be read or written for lack of permission."""

class OutputExistsError(TokenmillError, FileExistsError):
    """The output already holds a dataset, or files tokenmill did not write."""

class InvalidOptionError(TokenmillError, ValueError):
    """An invalid option or an inconsistent request."""

class NoDocumentsError(TokenmillError):
    """A run kept no document, so nothing was finished (``allow_empty=True`` accepts that)."""

def _panic_for_tests(message: str, in_worker: bool = False) -> None: ...

# `tables`: (name, table) pairs that a configuration's inputs name as
# {"table": i}; each table exports `__arrow_c_stream__` (a pyarrow Table)
# and is read in place, without a copy.
_Tables = list[tuple[str, Any]]

def prepare(config_json: str, tables: _Tables = ...) -> str: ...
def prepare_sft(config_json: str, tables: _Tables = ...) -> str: ...
def merge(config_json: str) -> str: ...
def verify(path: str, threads: int = 0) -> str: ...
def read_manifest(root: str) -> str: ...
def check_index(path: str, docs: int, tokens: int) -> None: ...
def tokenizer_info(path: str) -> str: ...
def pack_documents(lengths: bytes, block_size: int) -> tuple[bytes, bytes]: ...
def minhash(
    texts: list[str],
    num_perm: int = 128,
    shingle: str = "auto",
    ngram: int = 5,
    seed: int = 1,
    threads: int = 0,
) -> bytes: ...
def shingles(text: str, shingle: str = "auto", ngram: int = 5) -> tuple[str, list[str]]: ...
def dedup_texts(texts: list[str], options_json: str, threads: int = 0) -> tuple[bytes, str]: ...
def dedup_files(config_json: str, tables: _Tables = ...) -> tuple[bytes, str]: ...
def dedup_signatures(config_json: str, tables: _Tables = ...) -> str: ...
def dedup_buckets(work: str, bucket: int) -> str: ...
def dedup_clusters(work: str) -> str: ...
def chunk_spans(
    texts: list[str],
    max_chars: int | None = None,
    max_tokens: int | None = None,
    tokenizer: str | None = None,
    overlap: int = 0,
    threads: int = 0,
) -> list[list[tuple[int, int]]]: ...
def chunk_files(config_json: str, tables: _Tables = ...) -> str: ...

@final
class Encoder:
    def __new__(
        cls,
        tokenizer: str,
        parse_special: bool = False,
        add_bos: bool = False,
        add_eos: bool = False,
        backend: str = "auto",
        verify_fraction: float = 0.0,
    ) -> Encoder: ...
    @property
    def backend(self) -> str: ...
    def encode_batch(self, texts: list[str], threads: int = 0) -> list[list[int]]: ...
    def encode_flat(self, texts: list[str], threads: int = 0) -> tuple[bytes, bytes]: ...
    def pieces(self, text: str) -> list[tuple[int, int]]: ...

@final
class TextBatches:
    # Defaults: max_line_bytes=DEFAULT_MAX_LINE_BYTES, batch_docs=1024.
    def __new__(
        cls,
        inputs: list[str | dict[str, int]],
        tables: _Tables = ...,
        text_field: str = "text",
        txt_mode: str = "line",
        max_line_bytes: int = ...,
        batch_docs: int = ...,
    ) -> TextBatches: ...
    def __iter__(self) -> Iterator[list[str]]: ...
    def __next__(self) -> list[str]: ...
    @property
    def skipped(self) -> dict[str, int]: ...
