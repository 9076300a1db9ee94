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

/// What to change when most documents were dropped for `reason` (a
/// [`FilterReason`] name, else a reader skip reason).
pub fn filter_hint(reason: &str) -> &'static str {
    match reason {
        "too_short" => "lower min_chars",
        "too_long" => "raise max_chars",
        other => crate::input::skip_hint(other),
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

/// xxh3-128 of the whitespace-normalised text (see module docs): the words
/// of `text.split_whitespace()` joined by single spaces, hashed in one call.
pub fn content_hash(text: &str) -> u128 {
    thread_local! {
        static FOLDED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    FOLDED.with_borrow_mut(|folded| {
        folded.clear();
        let bytes = text.as_bytes();
        // Whitespace seen since the last byte copied: one space goes out
        // before the next word, if one came before.
        let mut gap = false;
        let copy = |folded: &mut Vec<u8>, gap: &mut bool, word: &[u8]| {
            if std::mem::take(gap) && !folded.is_empty() {
                folded.push(b' ');
            }
            folded.extend_from_slice(word);
        };
        let mut i = 0;
        while i < bytes.len() {
            // Eight bytes at once where folding leaves them as they are.
            if let Some(block) = bytes.get(i..i + 8) {
                if unchanged_by_folding(u64::from_le_bytes(block.try_into().expect("8 bytes"))) {
                    copy(folded, &mut gap, block);
                    i += 8;
                    continue;
                }
            }
            let n = match WHITESPACE_START[usize::from(bytes[i])] {
                0 => 1,
                1 => {
                    gap = true;
                    i += 1;
                    continue;
                }
                _ => {
                    let c = text[i..]
                        .chars()
                        .next()
                        .expect("a lead byte starts a character");
                    if c.is_whitespace() {
                        gap = true;
                        i += c.len_utf8();
                        continue;
                    }
                    c.len_utf8()
                }
            };
            copy(folded, &mut gap, &bytes[i..i + n]);
            i += n;
        }
        xxhash_rust::xxh3::xxh3_128(folded)
    })
}

/// Whether the eight bytes of `x` (little-endian) fold to themselves: no
/// byte starts a whitespace character (see [`WHITESPACE_START`]; other
/// control characters count as if they did) other than single spaces
/// inside the block (bytes 1 to 6, not next to each other).
#[inline]
fn unchanged_by_folding(x: u64) -> bool {
    const LOW: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = LOW << 7;
    const LOW7: u64 = LOW * 0x7F;
    // The high bit of each byte that is zero; exact per byte (no carries).
    let zero = |y: u64| !(((y & LOW7) + LOW7) | y) & HIGH;
    let below_0x21 = !(((x & LOW7) + LOW * (0x80 - 0x21)) | x) & HIGH;
    let space = zero(x ^ (LOW * 0x20));
    let lead = SPACE_LEADS
        .iter()
        .fold(0, |m, &b| m | zero(x ^ (LOW * u64::from(b))));
    let ends = 0x80 | (0x80 << 56);
    lead == 0 && below_0x21 == space && space & (space << 8) == 0 && space & ends == 0
}

/// The lead bytes of the non-ASCII whitespace characters (U+0085, U+00A0,
/// U+1680, U+2000..U+205F, U+3000).
const SPACE_LEADS: [u8; 4] = [0xC2, 0xE1, 0xE2, 0xE3];

/// Per byte: 1 for an ASCII whitespace character (`char::is_whitespace`:
/// space, \t, \n, \x0B, \x0C, \r), 2 for [`SPACE_LEADS`], else 0.
const WHITESPACE_START: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        if matches!(b as u8, b' ' | b'\t'..=b'\r') {
            t[b] = 1;
        }
        b += 1;
    }
    let mut k = 0;
    while k < SPACE_LEADS.len() {
        t[SPACE_LEADS[k] as usize] = 2;
        k += 1;
    }
    t
};

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
    use xxhash_rust::xxh3::Xxh3;

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
    fn content_hash_is_of_the_folded_words() {
        let reference = |t: &str| {
            let words: Vec<&str> = t.split_whitespace().collect();
            let mut h = Xxh3::new();
            h.update(words.join(" ").as_bytes());
            h.digest128()
        };
        for t in [
            "",
            "  ",
            "a",
            " a  b\t\nc ",
            "\u{3000}中文\u{a0}x\u{85}y\u{b}z\u{1680}",
            "é\u{2028}\r\n",
            "\u{2014}\u{3001}\u{3000}\u{a9}\u{1681}",
        ] {
            assert_eq!(content_hash(t), reference(t), "{t:?}");
        }
        // Every character, between words and at both ends; those that may
        // start a space also after words of each length up to 8 bytes.
        for c in (0..=0x10FFFF).filter_map(char::from_u32) {
            for t in [format!("a{c}b"), format!("{c}x{c}{c}")] {
                assert_eq!(content_hash(&t), reference(&t), "{c:?}");
            }
            if c.is_whitespace() || WHITESPACE_START[usize::from(c.to_string().as_bytes()[0])] != 0
            {
                for k in 0..9 {
                    let t = format!("{}{c}中文 text{c}{c}ab", "x".repeat(k));
                    assert_eq!(content_hash(&t), reference(&t), "{c:?} at {k}");
                }
            }
        }
    }

    /// Random mixes of words and whitespace (single and repeated spaces,
    /// line breaks, non-ASCII spaces, control characters), so that every
    /// position of the 8-byte blocks sees each kind.
    #[test]
    fn content_hash_of_random_spacing() {
        let parts = [
            " ", "  ", "\n", "\r\n", "\t", "\u{3000}", "\u{a0}", "\u{2028}", "\u{1}", "a", "ab",
            "word", "中文", "。", "é", "\u{2014}", "x y", "😀",
        ];
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            state
        };
        for _ in 0..20_000 {
            let t: String = (0..next() >> 59)
                .map(|_| parts[(next() >> 33) as usize % parts.len()])
                .collect();
            let words: Vec<&str> = t.split_whitespace().collect();
            let want = xxhash_rust::xxh3::xxh3_128(words.join(" ").as_bytes());
            assert_eq!(content_hash(&t), want, "{t:?}");
        }
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
