//! The split of the tiktoken family's regexes (cl100k as LLaMA-3 and tiktoken
//! write it, Qwen2, Qwen3.5, o200k, Tekken) over ASCII text, up to 64 bytes
//! at a time and without a branch per pre-token: each byte's class becomes one
//! bit of a mask, the starts of the pre-tokens come from shifts and ands of
//! those masks, and the pre-tokens from the bits of the starts. The scanner
//! in split.rs decides the same pre-tokens one at a time, with a branch on
//! each one's kind.
//!
//! Where a pre-token starts, for ASCII text without apostrophes (the
//! scanner takes apostrophes, which start contractions, and every byte that
//! is not ASCII), under the regex's alternatives
//! `[^\r\n\p{L}\p{N}]?\p{L}+ | \p{N}{1,n} | ' '?[^\s\p{L}\p{N}]+[\r\n]* |
//! \s*[\r\n]+ | \s+(?!\S) | \s+`, with `blank` for whitespace other than a
//! line break and "punctuation" for a byte of no class:
//! - at a letter after no letter, unless one character before it joins the
//!   word: a blank (always the last of its run, which starts a pre-token),
//!   or punctuation alone, not after a space (a space before punctuation
//!   takes it, and a longer run is a pre-token of its own);
//! - at punctuation after neither punctuation nor a space;
//! - at a blank before a letter, digit or punctuation (the last blank of a
//!   run: `\s+(?!\S)` leaves it);
//! - at the first byte of a whitespace run, unless it is a line break right
//!   after punctuation (`[\r\n]*` takes such line breaks, and the first
//!   blank after them starts a pre-token);
//! - at a blank after a line break, when no line break follows in the run
//!   (`\s*[\r\n]+` ends at the run's last line break);
//! - at digits after no digit, and every `n` digits from there;
//! - o200k and Tekken (words `HEAD*TAIL+|HEAD+TAIL*` after the optional
//!   character): also at a capital after a lower-case letter; and their
//!   punctuation takes slashes as well as line breaks after it
//!   (`[\r\n/]*`), so that what follows such a slash starts afresh.
//!
//! A start depends on the bytes before it and one after it, except for a
//! blank after a line break, which looks to the end of its run. A block
//! uses the starts that its ASCII bytes decide, and the scanner goes on
//! from the last of them.

use crate::chars::first_non_ascii;

/// The parameters of a regex this splitter takes (see [`super::split`]).
#[derive(Clone, Copy, Debug)]
pub(super) struct AsciiSplit {
    /// `\p{N}{1,n}`, or any run of digits.
    pub(super) digits: Option<usize>,
    /// Whitespace that ends the text is one pre-token (tiktoken's `\s++$`).
    pub(super) trailing_whole: bool,
    /// Words split before a capital after a lower-case letter (o200k).
    pub(super) cased: bool,
    /// Punctuation takes slashes after its line breaks (`[\r\n/]*`).
    pub(super) slash: bool,
}

/// Bytes of a block: one bit each, bit `k` for the byte `k` places after
/// the block's start.
const BLOCK: usize = 64;

/// The classes of a block's bytes.
struct Classes {
    letter: u64,
    /// Capitals, `A` to `Z`.
    upper: u64,
    digit: u64,
    /// Whitespace other than a line break: tab, vertical tab, form feed,
    /// space.
    blank: u64,
    /// The space character (which alone takes punctuation after it).
    space: u64,
    /// `\r` and `\n`.
    newline: u64,
    slash: u64,
    /// Not ASCII, or an apostrophe: left to the scanner.
    undecided: u64,
}

impl Classes {
    /// The classes of `bytes`, sixteen at a time (SSE2, which every x86-64
    /// processor has).
    #[cfg(target_arch = "x86_64")]
    #[inline]
    fn of(bytes: &[u8; BLOCK]) -> Classes {
        use std::arch::x86_64::{
            __m128i, _mm_add_epi8, _mm_cmpeq_epi8, _mm_cmplt_epi8, _mm_loadu_si128,
            _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
        };
        // SAFETY: SSE2 is part of the x86-64 baseline, and each load reads
        // the 16 bytes of a 16-byte chunk (at any alignment).
        unsafe {
            let splat = |b: u8| _mm_set1_epi8(b as i8);
            // Bytes in `lo..lo + n`: shifted so that the range starts at -128,
            // then one signed compare.
            let within = |v: __m128i, lo: u8, n: u8| {
                _mm_cmplt_epi8(
                    _mm_add_epi8(v, splat(0x80u8.wrapping_sub(lo))),
                    splat(0x80 + n),
                )
            };
            let is = |v: __m128i, b: u8| _mm_cmpeq_epi8(v, splat(b));
            let mut c = Classes {
                letter: 0,
                upper: 0,
                digit: 0,
                blank: 0,
                space: 0,
                newline: 0,
                slash: 0,
                undecided: 0,
            };
            for (i, chunk) in bytes.chunks_exact(16).enumerate() {
                let v = _mm_loadu_si128(chunk.as_ptr().cast());
                let bits = |m: __m128i| u64::from(_mm_movemask_epi8(m) as u16) << (16 * i);
                let space = is(v, b' ');
                let newline = _mm_or_si128(is(v, b'\n'), is(v, b'\r'));
                // Tab to carriage return, line breaks included, and the space.
                let whitespace = _mm_or_si128(within(v, 0x09, 5), space);
                c.letter |= bits(within(_mm_or_si128(v, splat(0x20)), b'a', 26));
                c.upper |= bits(within(v, b'A', 26));
                c.digit |= bits(within(v, b'0', 10));
                c.space |= bits(space);
                c.newline |= bits(newline);
                c.slash |= bits(is(v, b'/'));
                c.blank |= bits(whitespace) & !bits(newline);
                // The high bit is set in bytes that are not ASCII.
                c.undecided |= bits(v) | bits(is(v, b'\''));
            }
            c
        }
    }

    /// The classes of `bytes`, a byte at a time.
    #[cfg(not(target_arch = "x86_64"))]
    #[inline]
    fn of(bytes: &[u8; BLOCK]) -> Classes {
        let mask = |f: &dyn Fn(u8) -> bool| {
            bytes
                .iter()
                .enumerate()
                .fold(0, |m, (k, &b)| m | (u64::from(f(b)) << k))
        };
        Classes {
            letter: mask(&|b| (b | 0x20).wrapping_sub(b'a') < 26),
            upper: mask(&|b| b.is_ascii_uppercase()),
            digit: mask(&|b| b.wrapping_sub(b'0') < 10),
            blank: mask(&|b| matches!(b, b' ' | b'\t' | 0x0B | 0x0C)),
            space: mask(&|b| b == b' '),
            newline: mask(&|b| b == b'\n' || b == b'\r'),
            slash: mask(&|b| b == b'/'),
            undecided: mask(&|b| b >= 0x80 || b == b'\''),
        }
    }
}

impl AsciiSplit {
    /// Calls `f(start, end)` for each pre-token from `start` (where one
    /// starts) that the next [`BLOCK`] bytes decide, and returns where the
    /// last one ends: `start` when they decide none (the text there is not
    /// ASCII, say).
    #[inline]
    pub(super) fn split(
        &self,
        text: &[u8],
        start: usize,
        f: &mut impl FnMut(usize, usize),
    ) -> usize {
        let rest = &text[start..];
        // Text that is not ASCII right away goes to the scanner at once.
        let head = rest.get(..8).unwrap_or(rest);
        if first_non_ascii(head).is_some() || rest.first() == Some(&b'\'') {
            return start;
        }
        let mut bytes = [0u8; BLOCK];
        let n = rest.len().min(BLOCK);
        bytes[..n].copy_from_slice(&rest[..n]);
        let c = Classes::of(&bytes);
        // Bytes inside the text; when the text ends in the block, the bit
        // past its last byte stands for the end.
        let ends_here = rest.len() < BLOCK;
        let inside = if ends_here { (1u64 << n) - 1 } else { !0 };
        let undecided = c.undecided | !inside;
        let decided_to = undecided.trailing_zeros() as usize;
        // A start that an undecided byte (or one past the block) would
        // decide is left unset: no other start lies between it and that
        // byte, so the pre-token before it stays open, for the scanner.
        let closed = ends_here && decided_to == n;
        let mut starts = self.starts(&c, inside);
        // A blank after a line break starts a pre-token if no line break
        // follows in its run.
        let mut seeds = c.blank & (c.newline << 1) & !starts;
        while seeds != 0 {
            let k = seeds.trailing_zeros() as usize;
            let end = k + (!(c.blank >> k)).trailing_zeros() as usize;
            if (end < decided_to || closed) && c.newline >> end & 1 == 0 {
                starts |= 1 << k;
            }
            seeds &= seeds - 1;
        }
        // Pre-tokens end at starts below `limit`, and at the text's end
        // when the block holds it.
        let mut limit = if closed { n + 1 } else { decided_to };
        if closed && self.trailing_whole {
            // `\s++$` takes whitespace that ends the text whole: the
            // scanner takes it.
            let whitespace = c.blank | c.newline;
            let run = BLOCK - (!whitespace & inside).leading_zeros() as usize;
            if run < n {
                limit = run;
            }
        }
        let mut ends = starts & !1;
        if limit > n {
            ends |= 1 << n;
        }
        if limit < BLOCK {
            ends &= (1u64 << limit) - 1;
        }
        let mut from = start;
        while ends != 0 {
            let to = start + ends.trailing_zeros() as usize;
            f(from, to);
            from = to;
            ends &= ends - 1;
        }
        from
    }

    /// The starts of pre-tokens among the block's bytes by the rules above
    /// (but the one on blanks after line breaks), given that one starts
    /// at its first byte.
    #[inline]
    fn starts(&self, c: &Classes, inside: u64) -> u64 {
        let prev = |x: u64| x << 1;
        let next = |x: u64| x >> 1;
        let whitespace = c.blank | c.newline;
        let punct = inside & !(c.letter | c.digit | whitespace | c.undecided);
        // Line breaks right after punctuation (and slashes after those, with
        // `slash`) end its pre-token; the blank after them starts the next.
        let takes = if self.slash {
            c.newline | c.slash
        } else {
            c.newline
        };
        let taken_from = c.newline & prev(punct);
        let taken = (takes.wrapping_add(taken_from) & !takes).wrapping_sub(taken_from) & takes;
        let free = punct & !taken;
        // A letter run with one character before it that joins the word.
        let joined = prev(c.blank) | (prev(free) & !prev(prev(free | c.space)));
        let mut starts = 1 | (c.letter & !prev(c.letter) & !joined);
        if self.cased {
            starts |= c.upper & prev(c.letter & !c.upper);
        }
        starts |= free & !prev(free) & !prev(c.space);
        starts |= c.blank & next(c.letter | c.digit | punct);
        starts |= whitespace & !prev(whitespace) & !taken_from;
        starts |= c.blank & prev(taken);
        let digit_runs = c.digit & !prev(c.digit);
        starts |= match self.digits {
            Some(1) => c.digit,
            Some(n) if c.digit & next(c.digit) & (c.digit >> n) != 0 => {
                // A run longer than n: a start every n digits.
                let mut starts = digit_runs;
                let mut runs = digit_runs;
                while runs != 0 {
                    let k = runs.trailing_zeros() as usize;
                    let len = (!(c.digit >> k)).trailing_zeros() as usize;
                    for at in (k + n..k + len).step_by(n) {
                        starts |= 1 << at;
                    }
                    runs &= runs - 1;
                }
                starts
            }
            _ => digit_runs,
        };
        starts
    }
}

#[cfg(test)]
mod tests {
    use super::super::split::{CLASSES, HEAD, LETTER, NUMBER, SPACE, TAIL};
    use super::*;

    /// Each ASCII byte's masks agree with Oniguruma's classes, wherever it
    /// sits in a block.
    #[test]
    fn classes_are_onigurumas() {
        for b in 0..=255u8 {
            let class = if b.is_ascii() {
                CLASSES.low()[usize::from(b)]
            } else {
                0
            };
            for at in [0, 13, 63] {
                let mut bytes = [b'a'; BLOCK];
                bytes[at] = b;
                let c = Classes::of(&bytes);
                let bit = |m: u64| m >> at & 1 == 1;
                let what = format!("{b:#x} at {at}");
                assert_eq!(bit(c.letter), class & LETTER != 0, "{what}");
                assert_eq!(bit(c.upper), class & HEAD != 0, "{what}");
                assert_eq!(bit(c.letter & !c.upper), class & TAIL != 0, "{what}");
                assert_eq!(bit(c.slash), b == b'/', "{what}");
                assert_eq!(bit(c.digit), class & NUMBER != 0, "{what}");
                let newline = b == b'\r' || b == b'\n';
                assert_eq!(bit(c.blank | c.newline), class & SPACE != 0, "{what}");
                assert_eq!(bit(c.newline), newline, "{what}");
                assert_eq!(bit(c.space), b == b' ', "{what}");
                assert_eq!(bit(c.undecided), !b.is_ascii() || b == b'\'', "{what}");
                // The block's other bytes stay letters.
                assert_eq!(c.letter | 1 << at, !0, "{what}");
            }
        }
    }
}
