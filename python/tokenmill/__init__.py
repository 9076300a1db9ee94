"""tokenmill: raw text to deduplicated, tokenized, memory-mapped token shards.

The heavy lifting happens in the Rust data core (``tokenmill._core``); this
package is its public face.
"""

from tokenmill._core import (
    BadLineError,
    CorruptDatasetError,
    Encoder,
    InternalError,
    InvalidOptionError,
    NoDocumentsError,
    OutputExistsError,
    TokenizerError,
    TokenmillError,
    TokenmillFileNotFoundError,
    TokenmillOSError,
    TokenmillPermissionError,
    __version__,
)
from tokenmill.chunk import ChunkStats, chunk, chunk_files, chunk_spans
from tokenmill.dedup import (
    DedupResult,
    dedup,
    dedup_buckets,
    dedup_clusters,
    dedup_signatures,
    minhash,
)
from tokenmill.shards import (
    MergeStats,
    PrepareStats,
    ShardSet,
    SplitStats,
    VerifyReport,
    inspect,
    merge,
    open_shards,
    prepare,
    prepare_sft,
    read_manifest,
    verify,
)
from tokenmill.tokenizer import tokenizer_info, train_tokenizer

__all__ = [
    "BadLineError",
    "ChunkStats",
    "CorruptDatasetError",
    "DedupResult",
    "Encoder",
    "InternalError",
    "InvalidOptionError",
    "MergeStats",
    "NoDocumentsError",
    "OutputExistsError",
    "PrepareStats",
    "ShardSet",
    "SplitStats",
    "TokenizerError",
    "TokenmillError",
    "TokenmillFileNotFoundError",
    "TokenmillOSError",
    "TokenmillPermissionError",
    "VerifyReport",
    "__version__",
    "chunk",
    "chunk_files",
    "chunk_spans",
    "dedup",
    "dedup_buckets",
    "dedup_clusters",
    "dedup_signatures",
    "inspect",
    "merge",
    "minhash",
    "open_shards",
    "prepare",
    "prepare_sft",
    "read_manifest",
    "tokenizer_info",
    "train_tokenizer",
    "verify",
]
