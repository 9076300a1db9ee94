//! Per-code-point tables built on first use, shared by the tokenizer's split
//! scanners and normalisers ([`crate::tokenize`]) and MinHash's text
//! normalisation ([`crate::minhash`]).
//! Also the eight-bytes-at-a-time ASCII tests both use, a UTF-8 decoder, and
//! the UTF-8 check of input text.

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

// Eight bytes at a time in one u64 (SWAR: plain arithmetic, no platform code).

pub(crate) const ONES: u64 = 0x0101_0101_0101_0101;
pub(crate) const HIGH: u64 = 0x8080_8080_8080_8080;

/// The high bit of every byte of `x` (all ASCII) that is at least `lo`
/// (`lo` >= 1): adding 0x80 - lo carries into the high bit exactly then,
/// and never out of the byte.
#[inline(always)]
pub(crate) fn at_least(x: u64, lo: u8) -> u64 {
    x.wrapping_add(ONES * u64::from(0x80 - lo)) & HIGH
}

/// The position of the first non-ASCII byte, eight bytes at a time.
#[inline]
pub(crate) fn first_non_ascii(bytes: &[u8]) -> Option<usize> {
    let mut words = bytes.chunks_exact(8);
    let mut at = 0;
    for w in &mut words {
        let high = u64::from_le_bytes(w.try_into().expect("8 bytes")) & HIGH;
        if high != 0 {
            return Some(at + high.trailing_zeros() as usize / 8);
        }
        at += 8;
    }
    words
        .remainder()
        .iter()
        .position(|b| !b.is_ascii())
        .map(|k| at + k)
}

/// `bytes` as text, or the offset of the first byte that is not UTF-8.
/// Checked with SIMD: std's check goes a byte at a time outside ASCII, and
/// took about 3% of a one-core `prepare` of Chinese and English text.
#[inline]
pub(crate) fn utf8(bytes: &[u8]) -> Result<&str, usize> {
    simdutf8::compat::from_utf8(bytes).map_err(|e| e.valid_up_to())
}

/// The character whose UTF-8 encoding starts at byte `i` of `bytes`; none
/// at the end, inside a character or where the bytes are not UTF-8.
/// Decoded by hand: the scanners call this once per character.
#[inline]
pub(crate) fn char_at(bytes: &[u8], i: usize) -> Option<char> {
    let b = *bytes.get(i)?;
    if b.is_ascii() {
        return Some(char::from(b));
    }
    let cont = |k: usize| {
        bytes
            .get(i + k)
            .filter(|&&c| c & 0xC0 == 0x80)
            .map(|&c| u32::from(c & 0x3F))
    };
    let b = u32::from(b);
    let (c, min) = match b {
        0xC2..=0xDF => (((b & 0x1F) << 6) | cont(1)?, 0x80),
        0xE0..=0xEF => (((b & 0x0F) << 12) | (cont(1)? << 6) | cont(2)?, 0x800),
        0xF0..=0xF4 => (
            ((b & 0x07) << 18) | (cont(1)? << 12) | (cont(2)? << 6) | cont(3)?,
            0x10000,
        ),
        _ => return None,
    };
    // Overlong forms and surrogates are not UTF-8.
    (c >= min).then(|| char::from_u32(c)).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_ascii_search() {
        for len in 0..40 {
            let mut v = vec![b'a'; len];
            assert_eq!(first_non_ascii(&v), None);
            for k in 0..len {
                v[k] = 0xC3;
                assert_eq!(first_non_ascii(&v), Some(k));
                v[k] = b'a';
            }
        }
    }

    #[test]
    fn char_at_decodes_as_std() {
        let text = "a\u{7f}\u{80}é\u{7ff}\u{800}中\u{ffff}\u{10000}😀\u{10ffff}";
        let bytes = text.as_bytes();
        for i in 0..bytes.len() {
            let want = text.get(i..).and_then(|s| s.chars().next());
            assert_eq!(char_at(bytes, i), want, "at {i}");
        }
        for bad in [
            &b"\xC0\x80"[..],
            b"\xE0\x80\x80",
            b"\xED\xA0\x80",
            b"\xF4\x90\x80\x80",
            b"\xE4\xB8",
            b"\xFF",
        ] {
            assert_eq!(char_at(bad, 0), None, "{bad:?}");
        }
    }

    #[test]
    fn utf8_check_agrees_with_std() {
        // Long enough for the SIMD blocks (64 bytes), with every kind of
        // break at every offset: bad lead and continuation bytes, overlong
        // forms, surrogates, code points past U+10FFFF, a cut character.
        let text = "ascii 中文字符 é😀\u{10ffff}".repeat(6);
        let good = text.as_bytes();
        assert_eq!(utf8(good), Ok(text.as_str()));
        for bad in [
            &b"\x80"[..],
            b"\xFF",
            b"\xC0\x80",
            b"\xE0\x80\x80",
            b"\xED\xA0\x80",
            b"\xF4\x90\x80\x80",
            b"\xE4\xB8",
        ] {
            for at in 0..=good.len() {
                let mut v = good[..at].to_vec();
                v.extend_from_slice(bad);
                v.extend_from_slice(&good[at..]);
                let want = std::str::from_utf8(&v).map_err(|e| e.valid_up_to());
                assert!(want.is_err());
                assert_eq!(utf8(&v), want, "{bad:?} at {at}");
            }
        }
    }
}
