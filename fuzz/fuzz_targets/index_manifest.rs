//! The checks a dataset passes before anything in it is trusted: the
//! manifest parser (`Manifest::parse`) and the `.idx` offsets check
//! (`shard::check_offsets`), over arbitrary bytes.
//!
//! Input: the manifest text, a 0xFF byte, then the `.idx` bytes (the first
//! shard's counts give `docs` and `tokens`; without a manifest, 16 bytes of
//! the input do). Properties: neither panics; a manifest that parses has a
//! known dtype, shard paths that stay inside the dataset and split totals
//! equal to their shards' sums; offsets that pass start at 0, never
//! decrease, end at `tokens` and number `docs + 1`: each checked here
//! independently of the code under test.

#![no_main]

use std::path::{Component, Path};

use libfuzzer_sys::fuzz_target;
use tokenmill::manifest::Manifest;
use tokenmill::shard::{check_offsets, Dtype};

fn inside_dataset(rel: &str) -> bool {
    !rel.is_empty()
        && Path::new(rel)
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

fn check_manifest(m: &Manifest) -> Option<(u64, u64)> {
    assert!(Dtype::from_name(&m.dtype).is_some(), "dtype {}", m.dtype);
    let mut first = None;
    for split in m.splits.values() {
        let (mut tokens, mut docs) = (0u128, 0u128);
        for s in &split.shards {
            for p in [Some(&s.bin), Some(&s.idx), s.mask.as_ref()]
                .into_iter()
                .flatten()
            {
                assert!(inside_dataset(p), "path {p:?} accepted");
            }
            tokens += u128::from(s.tokens);
            docs += u128::from(s.docs);
            first.get_or_insert((s.docs, s.tokens));
        }
        assert_eq!(
            (tokens, docs),
            (u128::from(split.tokens), u128::from(split.docs))
        );
    }
    first
}

fuzz_target!(|data: &[u8]| {
    let cut = data.iter().position(|&b| b == 0xFF).unwrap_or(data.len());
    let (text, idx) = (&data[..cut], data.get(cut + 1..).unwrap_or(&[]));
    let mut counts = None;
    if let Ok(text) = std::str::from_utf8(text) {
        if let Ok(m) = Manifest::parse(text, Path::new("manifest.json")) {
            counts = check_manifest(&m);
        }
    }
    let (docs, tokens) = counts.unwrap_or_else(|| {
        let word = |i: usize| {
            let mut b = [0u8; 8];
            for (k, v) in b.iter_mut().enumerate() {
                *v = text.get(i + k).copied().unwrap_or(0);
            }
            u64::from_le_bytes(b)
        };
        // Small counts most of the time, so that passing offsets are found.
        (word(0) % 64, word(8) % 4096)
    });
    if check_offsets(idx, docs, tokens).is_ok() {
        assert_eq!(idx.len() as u128, (u128::from(docs) + 1) * 8);
        let offsets: Vec<u64> = idx
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(offsets[0], 0);
        assert!(offsets.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(*offsets.last().unwrap(), tokens);
    }
});
