"""tokenmill: raw text to deduplicated, tokenized, memory-mapped token shards.

The heavy lifting happens in the Rust data core (``tokenmill._core``); this
package is its public face.
"""

from tokenmill._core import (
    BadLineError,
    CorruptDatasetError,
    Encoder,
    TokenizerError,
    TokenmillError,
    __version__,
)
from tokenmill.shards import (
    PrepareStats,
    ShardSet,
    SplitStats,
    VerifyReport,
    inspect,
    open_shards,
    prepare,
    read_manifest,
    verify,
)
from tokenmill.tokenizer import tokenizer_info, train_tokenizer

__all__ = [
    "BadLineError",
    "CorruptDatasetError",
    "Encoder",
    "PrepareStats",
    "ShardSet",
    "SplitStats",
    "TokenizerError",
    "TokenmillError",
    "VerifyReport",
    "__version__",
    "inspect",
    "open_shards",
    "prepare",
    "read_manifest",
    "tokenizer_info",
    "train_tokenizer",
    "verify",
]
