//! tokenmill's data core: raw text in, memory-mapped token shards out.
//!
//! Stages are plain Rust with no Python types: `input` (the one reader of
//! every stage: inputs, lines, JSON, Parquet and Arrow rows, batches,
//! bad-record accounting), `clean` (length filters, exact dedup, split
//! choice), `minhash` and `dedup` (near-duplicate removal; `dedup_stages`
//! across machines), `chunk`
//! (boundary-aware splitting), `output` (compressed line files written
//! atomically), `tokenize` (loading, fingerprints, the fast BPE engine and
//! the `tokenizers` crate, bounded pieces for long documents), `chars`
//! (per-code-point tables), `shard` (format v1 writer), `pack` (doc-mode
//! packing plans), `prepare` (the pipeline over them), `chat` and `sft`
//! (chat templates, loss masks and the `prepare-sft` pipeline), `merge` (one
//! dataset over several), `verify` (integrity checks), `threads` (thread counts and pools) and `progress`.
//! The PyO3 bindings live in `py` behind the `python` feature, so `cargo
//! test` builds and tests the stages alone.
//!
//! Rejected alternatives: a Python-side pipeline over the `tokenizers` wheel
//! (pays the GIL and list conversions per document), and pickled/Arrow
//! intermediate datasets (the seed recipe's `save_to_disk` copies the corpus
//! several times). Shards are flat little-endian arrays so numpy can memmap them.

pub mod chars;
pub mod chat;
pub mod chunk;
pub mod clean;
pub mod dedup;
pub mod dedup_stages;
pub mod error;
pub mod input;
pub mod manifest;
pub mod merge;
pub mod minhash;
pub mod output;
pub mod pack;
pub mod prepare;
pub mod progress;
pub mod sft;
pub mod shard;
pub mod threads;
pub mod tokenize;
pub mod verify;

#[cfg(feature = "python")]
mod py;

pub use error::{Result, TokenmillError};

/// Version written into every manifest.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
