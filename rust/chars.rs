//! Per-code-point tables built on first use, shared by the tokenizer's split
//! scanners and normalisers ([`crate::tokenize`]) and MinHash's text
//! normalisation ([`crate::minhash`]).

use std::sync::OnceLock;

/// Code points below this (planes 0 to 3: every script in use) have their
/// tables built up front; the rest (unassigned planes, tags, private use)
/// only when such a character first turns up.
pub(crate) const LOW_PLANES: u32 = 0x40000;

/// A per-code-point table in two parts, each built on first use by `build`
/// over its range of code points.
pub(crate) struct CharTable {
    low: OnceLock<Vec<u8>>,
    high: OnceLock<Vec<u8>>,
    build: fn(std::ops::Range<u32>) -> Vec<u8>,
}

impl CharTable {
    pub(crate) const fn new(build: fn(std::ops::Range<u32>) -> Vec<u8>) -> CharTable {
        CharTable {
            low: OnceLock::new(),
            high: OnceLock::new(),
            build,
        }
    }

    /// The table below [`LOW_PLANES`].
    #[inline]
    pub(crate) fn low(&self) -> &[u8] {
        self.low.get_or_init(|| (self.build)(0..LOW_PLANES))
    }

    #[inline]
    pub(crate) fn get(&self, c: char) -> u8 {
        let c = c as u32;
        if c < LOW_PLANES {
            self.low()[c as usize]
        } else {
            self.high.get_or_init(|| (self.build)(LOW_PLANES..0x110000))[(c - LOW_PLANES) as usize]
        }
    }

    /// Builds the common part now (from a background thread while a tokenizer loads).
    pub(crate) fn warm(&self) {
        self.get('a');
    }
}
