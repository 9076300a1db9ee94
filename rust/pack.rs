//! Packing plan for `doc` mode: whole documents placed into fixed-size blocks
//! so that no block holds part of a document that continues elsewhere.
//!
//! A document longer than a block is first cut into block-sized pieces (each
//! fills a block alone); what is left of it, and every shorter document, is
//! one piece placed by best-fit decreasing: pieces by length, longest first,
//! each into the open block with the least room that still holds it. That
//! wastes under 1% of a block on typical length mixes, where placing pieces
//! in input order (next-fit) wastes about half an average document per block.
//!
//! The plan depends only on the lengths and the block size, so it is the same
//! for every rank, worker and run. Rejected: shuffling before packing (the
//! sampler shuffles blocks already) and first-fit (same cost, more waste).

use std::collections::BTreeSet;

use crate::{Result, TokenmillError};

/// One run of a document's tokens inside a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    /// Document index within the split.
    pub doc: u64,
    /// First token of the piece, counted from the document's start.
    pub start: u64,
    /// Tokens in the piece (1..=block_size).
    pub len: u64,
}

/// Blocks as a flat list of pieces: block `b` is
/// `pieces[block_starts[b]..block_starts[b + 1]]`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PackPlan {
    pub pieces: Vec<Piece>,
    pub block_starts: Vec<u64>,
}

impl PackPlan {
    pub fn blocks(&self) -> usize {
        self.block_starts.len().saturating_sub(1)
    }
}

/// Packs documents of the given token lengths into blocks of `block_size`.
/// Empty documents are left out.
pub fn pack_documents(lengths: &[u64], block_size: u64) -> Result<PackPlan> {
    if block_size == 0 {
        return Err(TokenmillError::Invalid(
            "block_size must be at least 1".into(),
        ));
    }
    // Lengths may come from a damaged file or a caller: the plan's size is
    // counted checked and reserved up front, so an absurd request is an
    // error here, never an abort on a failed allocation later.
    let too_big = || {
        TokenmillError::Invalid(format!(
            "{} documents of these lengths make a packing plan too big for memory",
            lengths.len()
        ))
    };
    let full_blocks = lengths
        .iter()
        .try_fold(0usize, |n, &len| {
            n.checked_add(usize::try_from(len / block_size).ok()?)
        })
        .ok_or_else(too_big)?;
    let mut blocks: Vec<Vec<Piece>> = Vec::new();
    let mut rest: Vec<Piece> = Vec::new();
    blocks
        .try_reserve(full_blocks.saturating_add(lengths.len()))
        .map_err(|_| too_big())?;
    rest.try_reserve(lengths.len()).map_err(|_| too_big())?;
    for (doc, &len) in lengths.iter().enumerate() {
        let doc = doc as u64;
        let full = len / block_size;
        for k in 0..full {
            let start = k * block_size;
            blocks.push(vec![Piece {
                doc,
                start,
                len: block_size,
            }]);
        }
        if len % block_size > 0 {
            rest.push(Piece {
                doc,
                start: full * block_size,
                len: len % block_size,
            });
        }
    }
    // Longest first; equal lengths keep input order, so the plan is a pure
    // function of the lengths.
    rest.sort_by(|a, b| b.len.cmp(&a.len).then(a.doc.cmp(&b.doc)));
    // Open blocks by (room left, block index): the first entry with room >= len
    // is the best fit, ties going to the oldest block.
    let mut open: BTreeSet<(u64, usize)> = BTreeSet::new();
    for piece in rest {
        let fit = open.range((piece.len, 0)..).next().copied();
        match fit {
            Some((room, b)) => {
                open.remove(&(room, b));
                blocks[b].push(piece);
                if room > piece.len {
                    open.insert((room - piece.len, b));
                }
            }
            None => {
                blocks.push(vec![piece]);
                if block_size > piece.len {
                    open.insert((block_size - piece.len, blocks.len() - 1));
                }
            }
        }
    }
    let mut plan = PackPlan {
        pieces: Vec::with_capacity(lengths.len()),
        block_starts: Vec::with_capacity(blocks.len() + 1),
    };
    plan.block_starts.push(0);
    for block in blocks {
        plan.pieces.extend(block);
        plan.block_starts.push(plan.pieces.len() as u64);
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(lengths: &[u64], bs: u64) -> PackPlan {
        let plan = pack_documents(lengths, bs).unwrap();
        // Every token of every document appears exactly once, in one block.
        let mut covered: Vec<Vec<(u64, u64)>> = vec![Vec::new(); lengths.len()];
        for b in 0..plan.blocks() {
            let s = plan.block_starts[b] as usize;
            let e = plan.block_starts[b + 1] as usize;
            let used: u64 = plan.pieces[s..e].iter().map(|p| p.len).sum();
            assert!(used <= bs && used > 0, "block {b} holds {used} tokens");
            for p in &plan.pieces[s..e] {
                covered[p.doc as usize].push((p.start, p.len));
            }
        }
        for (d, mut runs) in covered.into_iter().enumerate() {
            runs.sort();
            let mut at = 0;
            for (start, len) in runs {
                assert_eq!(start, at, "doc {d}");
                at += len;
            }
            assert_eq!(at, lengths[d], "doc {d}");
        }
        plan
    }

    #[test]
    fn whole_documents_and_split_long_ones() {
        let plan = check(&[3, 5, 2, 9, 0, 4, 1], 4);
        // Full blocks: 5 -> 1, 9 -> 2, 4 -> 1; the rest (3, 2, 1, 1, 1) fills two.
        assert_eq!(plan.blocks(), 6);
        // Documents of at most a block are never cut.
        for p in &plan.pieces {
            if [0u64, 2, 5, 6].contains(&p.doc) {
                assert_eq!(p.start, 0);
            }
        }
    }

    #[test]
    fn best_fit_wastes_little_and_is_deterministic() {
        let mut x = 12345u64;
        let lengths: Vec<u64> = (0..20_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                1 + (x % 1500)
            })
            .collect();
        let plan = check(&lengths, 2048);
        let total: u64 = lengths.iter().sum();
        let waste = plan.blocks() as f64 * 2048.0 / total as f64 - 1.0;
        assert!(waste < 0.01, "waste {waste}");
        assert_eq!(plan, pack_documents(&lengths, 2048).unwrap());
    }

    #[test]
    fn zero_block_size_is_an_error() {
        assert!(pack_documents(&[1], 0).is_err());
    }

    #[test]
    fn absurd_lengths_are_an_error_not_an_abort() {
        // A damaged .idx read as lengths: 2^63 tokens in one document, or
        // more blocks than usize counts, are refused before any allocation.
        for lengths in [vec![1u64 << 63], vec![u64::MAX, u64::MAX]] {
            let err = pack_documents(&lengths, 1).unwrap_err();
            assert!(err.to_string().contains("too big for memory"), "{err}");
        }
    }
}
