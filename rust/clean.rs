//! Clean stage: length filters, exact duplicate removal and the train/val
//! choice, all keyed on one content hash per document.
//!
//! The hash is xxh3-128 over the text with leading/trailing whitespace
//! removed and every internal whitespace run folded to one space, so
//! documents that differ only in spacing or line endings count as duplicates
//! (the seed's `filter_duplicates`) and always land in the same split.
//! 128 bits make a false duplicate practically impossible (birthday bound
//! ~2^64 documents); the set costs 16 bytes of RAM per kept document.

use std::collections::HashSet;

use xxhash_rust::xxh3::Xxh3;

/// Why a well-formed document was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FilterReason {
    TooShort,
    TooLong,
    Duplicate,
}

impl FilterReason {
    /// All reasons, in report order.
    pub const ALL: [FilterReason; 3] = [
        FilterReason::TooShort,
        FilterReason::TooLong,
        FilterReason::Duplicate,
    ];

    /// Stable name for manifests and reports.
    pub fn name(self) -> &'static str {
        match self {
            FilterReason::TooShort => "too_short",
            FilterReason::TooLong => "too_long",
            FilterReason::Duplicate => "duplicate",
        }
    }
}

/// Options of the clean stage.
#[derive(Clone, Debug)]
pub struct CleanOptions {
    /// Documents with fewer characters (Unicode scalar values) are dropped.
    pub min_chars: usize,
    /// Documents with more characters are dropped.
    pub max_chars: Option<usize>,
    /// Drop exact duplicates of the normalised text, keeping the first.
    pub dedup: bool,
    /// Whether the caller needs the content hash (for the val split) even
    /// without dedup; when neither needs it, the pass over the text is skipped.
    pub need_hash: bool,
}

/// xxh3-128 of the whitespace-normalised text (see module docs).
pub fn content_hash(text: &str) -> u128 {
    let mut h = Xxh3::new();
    let mut first = true;
    for word in text.split_whitespace() {
        if !first {
            h.update(b" ");
        }
        h.update(word.as_bytes());
        first = false;
    }
    h.digest128()
}

/// Whether a document goes to the validation split: a pure function of its
/// content hash and the seed, so the split is stable across runs, thread
/// counts and input order.
pub fn is_val(hash: u128, fraction: f64, seed: u64) -> bool {
    if fraction <= 0.0 {
        return false;
    }
    let mixed = xxhash_rust::xxh3::xxh3_64_with_seed(&hash.to_le_bytes(), seed);
    // Top 53 bits as a uniform float in [0, 1).
    ((mixed >> 11) as f64) / ((1u64 << 53) as f64) < fraction
}

/// Stateful filter applied in input order (first occurrence wins).
pub struct Cleaner {
    opts: CleanOptions,
    seen: HashSet<u128>,
}

impl Cleaner {
    /// A cleaner with an empty duplicate set.
    pub fn new(opts: CleanOptions) -> Self {
        Cleaner {
            opts,
            seen: HashSet::new(),
        }
    }

    /// Checks one document; on success returns its content hash (0 when
    /// neither dedup nor the caller needs it).
    pub fn check(&mut self, text: &str) -> Result<u128, FilterReason> {
        let need_count = self.opts.min_chars > 0 || self.opts.max_chars.is_some();
        if need_count {
            let chars = text.chars().count();
            if chars < self.opts.min_chars {
                return Err(FilterReason::TooShort);
            }
            if self.opts.max_chars.is_some_and(|m| chars > m) {
                return Err(FilterReason::TooLong);
            }
        }
        if !self.opts.dedup && !self.opts.need_hash {
            return Ok(0);
        }
        let hash = content_hash(text);
        if self.opts.dedup && !self.seen.insert(hash) {
            return Err(FilterReason::Duplicate);
        }
        Ok(hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whitespace_insensitive_dedup() {
        let mut c = Cleaner::new(CleanOptions {
            min_chars: 2,
            max_chars: Some(20),
            dedup: true,
            need_hash: false,
        });
        assert!(c.check("hello  world\r\n").is_ok());
        assert_eq!(c.check(" hello world"), Err(FilterReason::Duplicate));
        assert!(c.check("hello worlds").is_ok());
        assert_eq!(c.check("中"), Err(FilterReason::TooShort));
        assert!(c.check("中文").is_ok());
        assert_eq!(c.check(&"x".repeat(21)), Err(FilterReason::TooLong));
    }

    #[test]
    fn val_fraction_is_close() {
        let n = 100_000u32;
        let val = (0..n)
            .filter(|i| is_val(content_hash(&i.to_string()), 0.1, 7))
            .count();
        assert!((9_000..11_000).contains(&val), "{val}");
        assert!(!(0..1000).any(|i| is_val(content_hash(&i.to_string()), 0.0, 7)));
    }
}
