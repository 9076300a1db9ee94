//! `verify`: re-checks a finished dataset against its manifest: checksums,
//! sizes, `.idx` offsets (start at 0, non-decreasing, end at the token count)
//! and every id below the vocabulary size. Shards are checked in parallel.

use std::fs::File;
use std::path::Path;

use memmap2::Mmap;
use rayon::prelude::*;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{Result, TokenmillError};
use crate::manifest::Manifest;
use crate::shard::{Dtype, ShardInfo};
use crate::threads::{build_pool, resolve_threads};

/// Outcome of [`verify`]; `ok` is true when `errors` is empty.
#[derive(Debug, Serialize)]
pub struct VerifyReport {
    pub ok: bool,
    pub errors: Vec<String>,
    pub shards: u64,
    pub docs: u64,
    pub tokens: u64,
}

fn map(path: &Path) -> std::result::Result<Option<Mmap>, String> {
    let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let len = file
        .metadata()
        .map_err(|e| format!("{}: {e}", path.display()))?
        .len();
    if len == 0 {
        return Ok(None);
    }
    // SAFETY: read-only map of a file tokenmill does not modify while verifying.
    unsafe { Mmap::map(&file) }
        .map(Some)
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

fn check_shard(root: &Path, s: &ShardInfo, dtype: Dtype, vocab: u64) -> Vec<String> {
    let mut errors = Vec::new();
    let (bin_path, idx_path) = (root.join(&s.bin), root.join(&s.idx));
    let (bin, idx) = match (map(&bin_path), map(&idx_path)) {
        (Ok(b), Ok(i)) => (b, i),
        (b, i) => {
            errors.extend(b.err());
            errors.extend(i.err());
            return errors;
        }
    };
    let bin: &[u8] = bin.as_deref().unwrap_or(&[]);
    let idx: &[u8] = idx.as_deref().unwrap_or(&[]);
    if sha256_hex(bin) != s.bin_sha256 {
        errors.push(format!("{}: sha256 does not match the manifest", s.bin));
    }
    if sha256_hex(idx) != s.idx_sha256 {
        errors.push(format!("{}: sha256 does not match the manifest", s.idx));
    }
    if let (Some(mask), Some(sha)) = (&s.mask, &s.mask_sha256) {
        match map(&root.join(mask)) {
            Err(e) => errors.push(e),
            Ok(m) => {
                let m: &[u8] = m.as_deref().unwrap_or(&[]);
                if sha256_hex(m) != *sha {
                    errors.push(format!("{mask}: sha256 does not match the manifest"));
                }
                if m.len() as u64 != s.tokens {
                    errors.push(format!(
                        "{mask}: {} bytes, expected one per token ({})",
                        m.len(),
                        s.tokens
                    ));
                }
                if m.iter().any(|&b| b > 1) {
                    errors.push(format!("{mask}: holds values other than 0 and 1"));
                }
            }
        }
    }
    let itemsize = dtype.itemsize() as usize;
    // Counts come from the manifest, a file: checked, never wrapped.
    if s.tokens.checked_mul(itemsize as u64) != Some(bin.len() as u64) {
        errors.push(format!(
            "{}: {} bytes, expected {} tokens x {itemsize}",
            s.bin,
            bin.len(),
            s.tokens
        ));
    }
    if let Err(e) = crate::shard::check_offsets(idx, s.docs, s.tokens) {
        errors.push(format!("{}: {e}", s.idx));
    }
    let max_id = match dtype {
        Dtype::U16 => bin
            .chunks_exact(2)
            .map(|c| u64::from(u16::from_le_bytes([c[0], c[1]])))
            .max(),
        Dtype::U32 => bin
            .chunks_exact(4)
            .map(|c| u64::from(u32::from_le_bytes(c.try_into().expect("4 bytes"))))
            .max(),
    };
    if let Some(m) = max_id.filter(|&m| m >= vocab) {
        errors.push(format!("{}: token id {m} >= vocab size {vocab}", s.bin));
    }
    errors
}

/// Verifies the dataset at `root` using `threads` workers (0 = default).
pub fn verify(root: &Path, threads: usize) -> Result<VerifyReport> {
    verify_manifest(root, &Manifest::read(root)?, threads)
}

/// Verifies the shards `m` lists, under `root`, against it.
pub fn verify_manifest(root: &Path, m: &Manifest, threads: usize) -> Result<VerifyReport> {
    let dtype = Dtype::from_name(&m.dtype).ok_or_else(|| TokenmillError::Corrupt {
        path: root.join("manifest.json"),
        message: format!("unknown dtype {:?}", m.dtype),
    })?;
    let pool = build_pool(resolve_threads(threads), "verify")?;
    let shards: Vec<&ShardInfo> = m.splits.values().flat_map(|s| &s.shards).collect();
    let mut errors: Vec<String> = pool.install(|| {
        shards
            .par_iter()
            .flat_map_iter(|s| check_shard(root, s, dtype, m.tokenizer.vocab_size))
            .collect()
    });
    for (name, split) in &m.splits {
        let tokens: u64 = split.shards.iter().map(|s| s.tokens).sum();
        let docs: u64 = split.shards.iter().map(|s| s.docs).sum();
        if tokens != split.tokens || docs != split.docs {
            errors.push(format!(
                "split {name}: manifest totals ({} tokens, {} docs) differ from its shards ({tokens}, {docs})",
                split.tokens, split.docs
            ));
        }
    }
    Ok(VerifyReport {
        ok: errors.is_empty(),
        errors,
        shards: shards.len() as u64,
        docs: m.splits.values().map(|s| s.docs).sum(),
        tokens: m.splits.values().map(|s| s.tokens).sum(),
    })
}
