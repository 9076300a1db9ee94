//! MinHash signatures and LSH band hashes: normalisation, shingles,
//! permutations, and the choice of bands x rows for a threshold.
//!
//! Normalisation (docs/dedup.md): NFKC, then lowercase (per character, the
//! full Unicode mapping), then every character that is not a letter, mark or
//! number (`char::is_alphanumeric` or a combining mark) becomes a separator;
//! separator runs fold to one space and the ends are trimmed. Shingles are
//! word n-grams (words = the space-separated runs) or character n-grams (the
//! kept characters with separators removed); `auto` picks characters when at
//! least 30% of the kept characters are CJK (Han, kana, Hangul), per document.
//! A document with fewer than n units is one shingle; one with none has no
//! signature and is never a near-duplicate.
//!
//! Hashing: each shingle is hashed once with seeded xxh3-64. Permutation i
//! maps the low 32 bits `x` of that hash to `(x ^ s_i) * a_i mod 2^32`, with
//! an odd `a_i` and a key `s_i` drawn from splitmix64(seed). Each is a
//! bijection of the 32-bit values, so on random shingle hashes every
//! permutation's minimum falls on each shingle with the same probability
//! (the estimate is unbiased); the xor keys and multipliers differ per
//! permutation, so the minima are close to independent (the test
//! `permutations_act_independent` checks the spread of the estimate against
//! the binomial one). The kernel is 32-bit lanes (xor, multiply, min), which
//! AVX2 and AVX-512 have, so it vectorises 8 or 16 wide (chosen at run time).
//! Signature values are `u32`.
//!
//! Rejected: `(a_i * x + b_i) mod 2^64 >> 32` (Dietzfelbinger's
//! multiply-add-shift, used up to commit b1677bd): strongly universal, but a
//! 64-bit multiply per lane, which AVX2 lacks and AVX-512 does at half the
//! rate; it made the kernel 3x slower (0.082 s against 0.027 s for 8 M
//! shingles x 128 permutations) for the same recall, precision and estimate
//! error on the test corpus over ten seeds (benches/eval_permutations.py).
//!
//! Rejected: one-permutation hashing with densification (faster, but its
//! bins are not independent permutations and its error is harder to state),
//! and 64-bit signature values (twice the memory for no measurable gain:
//! two different shingle sets share a 32-bit minimum by chance with
//! probability 2^-32 per permutation).

use std::fmt;

use unicode_normalization_alignments::char::is_combining_mark;
use unicode_normalization_alignments::{is_nfkc_quick, IsNormalized, UnicodeNormalization};
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::chars::{at_least, first_non_ascii, CharTable, HIGH, ONES};
use crate::error::{Result, TokenmillError};

/// How documents are cut into shingles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShingleKind {
    /// Characters for CJK documents, words otherwise (decided per document).
    Auto,
    /// Word n-grams.
    Word,
    /// Character n-grams.
    Char,
}

/// A shingle kind and its n.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shingling {
    pub kind: ShingleKind,
    pub n: usize,
}

impl Shingling {
    /// Parses `auto`, `word`, `char`, optionally with `:N` (`word:5`);
    /// without `:N` the n is `default_n`.
    pub fn parse(spec: &str, default_n: usize) -> Result<Shingling> {
        let bad = || {
            TokenmillError::Invalid(format!(
                "shingle={spec:?} must be auto, word or char, optionally with :N (word:5)"
            ))
        };
        let (kind, n) = match spec.split_once(':') {
            Some((k, n)) => (k, n.trim().parse::<usize>().map_err(|_| bad())?),
            None => (spec, default_n),
        };
        let kind = match kind.trim() {
            "auto" => ShingleKind::Auto,
            "word" => ShingleKind::Word,
            "char" => ShingleKind::Char,
            _ => return Err(bad()),
        };
        if n == 0 || n > 64 {
            return Err(TokenmillError::Invalid(format!(
                "shingle={spec:?}: the shingle size must be in 1..=64, not {n}"
            )));
        }
        Ok(Shingling { kind, n })
    }
}

impl ShingleKind {
    /// `auto`, `word` or `char`.
    pub fn name(self) -> &'static str {
        match self {
            ShingleKind::Auto => "auto",
            ShingleKind::Word => "word",
            ShingleKind::Char => "char",
        }
    }
}

impl fmt::Display for Shingling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind.name(), self.n)
    }
}

/// Whether a character is CJK for the `auto` choice: Han ideographs
/// (all blocks and extensions), kana and Hangul.
pub fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30FF | 0x31F0..=0x31FF | 0x3400..=0x4DBF | 0x4E00..=0x9FFF
        | 0xAC00..=0xD7AF | 0x1100..=0x11FF | 0x3130..=0x318F | 0xF900..=0xFAFF
        | 0x20000..=0x3FFFF)
}

/// Letters, marks and numbers are kept; everything else separates words.
fn is_kept(c: char) -> bool {
    c.is_alphanumeric() || is_combining_mark(c)
}

/// Per-character facts for the normaliser (bits below), one table lookup.
static CLASS: CharTable = CharTable::new(|range| {
    use unicode_normalization_alignments::char::canonical_combining_class;
    range
        .map(|u| {
            let Some(c) = char::from_u32(u) else {
                return 0;
            };
            let mut bits = 0;
            if canonical_combining_class(c) == 0
                && is_nfkc_quick(std::iter::once(c)) == IsNormalized::Yes
            {
                bits |= INERT;
            }
            let mut lower = c.to_lowercase();
            if lower.len() == 1 && lower.next() == Some(c) {
                bits |= LOWER_SELF;
            }
            if is_kept(c) {
                bits |= KEPT;
            }
            if is_cjk(c) {
                bits |= CJK;
            }
            bits
        })
        .collect()
});
/// NFKC leaves the character alone in any context (combining class 0,
/// quick check "Yes"): text can be normalised in segments that start at one.
const INERT: u8 = 1;
/// Lowercase maps the character to itself.
const LOWER_SELF: u8 = 2;
const KEPT: u8 = 4;
const CJK: u8 = 8;
/// Kept as it is: inert, its own lowercase, a letter, mark or number.
const SIMPLE: u8 = INERT | LOWER_SELF | KEPT;

/// Normalised text: words joined by single spaces. While it is built, a
/// separator is written at once as one space (never at the start, never
/// twice), and a trailing space is dropped at the end.
#[derive(Default)]
struct Normalized {
    text: String,
    kept: usize,
    cjk: usize,
}

impl Normalized {
    #[inline(always)]
    fn separate(&mut self) {
        if !self.text.is_empty() && !self.text.ends_with(' ') {
            self.text.push(' ');
        }
    }

    #[inline(always)]
    fn push(&mut self, c: char, bits: u8) {
        if bits & KEPT != 0 {
            self.text.push(c);
            self.kept += 1;
            self.cjk += usize::from(bits & CJK != 0);
        } else {
            self.separate();
        }
    }

    /// Lowercases `c` (an inert character with class `bits`) and pushes it.
    #[inline(always)]
    fn push_inert(&mut self, c: char, bits: u8) {
        if bits & LOWER_SELF != 0 {
            self.push(c, bits);
        } else if c.is_ascii() {
            self.push(c.to_ascii_lowercase(), KEPT);
        } else {
            for l in c.to_lowercase() {
                self.push(l, CLASS.get(l));
            }
        }
    }

    /// Pushes ASCII text: letters and digits lowercased, every other byte a
    /// space, and a space after a space dropped. Eight bytes at a time
    /// ([`fold8`]): a word of bytes without two separators in a row (most of
    /// prose) is stored whole; the others go byte by byte.
    fn push_ascii(&mut self, run: &str) {
        // SAFETY: only ASCII bytes are written, so the String stays UTF-8.
        let v = unsafe { self.text.as_mut_vec() };
        let base = v.len();
        let mut prev_space = v.last().is_none_or(|&b| b == b' ');
        v.resize(base + run.len(), 0);
        let out = &mut v[base..];
        let (mut w, mut kept) = (0, 0);
        // Folded bytes one by one; `w` never passes the read position, so
        // the slots written exist.
        let push_bytes = |out: &mut [u8], bytes: &[u8], w: &mut usize, prev_space: &mut bool| {
            for &c in bytes {
                let space = c == b' ';
                if let Some(slot) = out.get_mut(*w) {
                    *slot = c;
                }
                *w += usize::from(!(space && *prev_space));
                *prev_space = space;
            }
        };
        let mut words = run.as_bytes().chunks_exact(8);
        for word in &mut words {
            let (folded, keep) = fold8(u64::from_le_bytes(word.try_into().expect("8 bytes")));
            let space = !keep & HIGH;
            let after_space = (space << 8) | (u64::from(prev_space) << 7);
            kept += keep.count_ones() as usize;
            if space & after_space == 0 {
                if let Some(slots) = out.get_mut(w..w + 8) {
                    slots.copy_from_slice(&folded.to_le_bytes());
                }
                w += 8;
                prev_space = space >> 63 != 0;
            } else {
                push_bytes(out, &folded.to_le_bytes(), &mut w, &mut prev_space);
            }
        }
        let rest = words.remainder();
        let mut tail = [0u8; 8];
        for (t, &b) in tail.iter_mut().zip(rest) {
            *t = ASCII_FOLD[usize::from(b & 0x7F)];
            kept += usize::from(*t != b' ');
        }
        push_bytes(out, &tail[..rest.len()], &mut w, &mut prev_space);
        v.truncate(base + w);
        self.kept += kept;
    }

    /// NFKC of `segment`, lowercased and pushed.
    fn push_nfkc(&mut self, segment: &str) {
        for (n, _) in segment.nfkc() {
            for l in n.to_lowercase() {
                self.push(l, CLASS.get(l));
            }
        }
    }

    /// NFKC, lowercase and separator folding in one pass, one table lookup
    /// per character. NFKC runs only on segments that hold a character it
    /// may change: such a segment starts at the inert character before it
    /// and ends before the next inert one, so the result equals NFKC of the
    /// whole text.
    fn fill(&mut self, text: &str) {
        self.text.clear();
        self.kept = 0;
        self.cjk = 0;
        self.text.reserve(text.len());
        let bytes = text.as_bytes();
        // An inert character not pushed yet: a following non-inert one may
        // have to be normalised together with it.
        let mut held: Option<(usize, char, u8)> = None;
        let mut dirty: Option<usize> = None;
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            // A run of ASCII (less its last byte when a non-ASCII character
            // follows, which may combine with it): nothing to normalise.
            if b.is_ascii() && bytes.get(i + 1).is_none_or(u8::is_ascii) {
                if let Some(start) = dirty.take() {
                    self.push_nfkc(&text[start..i]);
                } else if let Some((_, hc, hb)) = held.take() {
                    self.push_inert(hc, hb);
                }
                let end = match first_non_ascii(&bytes[i..]) {
                    Some(k) => i + k - 1,
                    None => bytes.len(),
                };
                self.push_ascii(&text[i..end]);
                i = end;
                continue;
            }
            let (c, n, bits) = if b.is_ascii() {
                (b as char, 1, ASCII_CLASS[b as usize])
            } else {
                let c = text[i..].chars().next().expect("i is a character boundary");
                if let Some(a) = fullwidth_ascii(c) {
                    // NFKC maps it to an ASCII character, which composes
                    // with nothing before it: it is that character, held
                    // like any inert one (a following combining mark then
                    // normalises from here, the original character included).
                    if let Some(start) = dirty.take() {
                        self.push_nfkc(&text[start..i]);
                    } else if let Some((_, hc, hb)) = held {
                        self.push_inert(hc, hb);
                    }
                    held = Some((i, a, ASCII_CLASS[a as usize]));
                    i += c.len_utf8();
                    continue;
                }
                (c, c.len_utf8(), CLASS.get(c))
            };
            if !b.is_ascii() && bits & SIMPLE == SIMPLE {
                // A run of kept characters that need no change (Han text):
                // copied at once, less its last character when a non-inert
                // one follows.
                if let Some(start) = dirty.take() {
                    self.push_nfkc(&text[start..i]);
                } else if let Some((_, hc, hb)) = held.take() {
                    self.push_inert(hc, hb);
                }
                let (mut j, mut count, mut cjk) = (i + n, 1, usize::from(bits & CJK != 0));
                let mut last = (i, c, bits);
                for (k, d) in text[i + n..].char_indices() {
                    let db = CLASS.get(d);
                    if d.is_ascii() || db & SIMPLE != SIMPLE {
                        break;
                    }
                    last = (i + n + k, d, db);
                    count += 1;
                    cjk += usize::from(db & CJK != 0);
                    j = last.0 + d.len_utf8();
                }
                let hold = text[j..]
                    .chars()
                    .next()
                    .is_some_and(|d| !d.is_ascii() && CLASS.get(d) & INERT == 0);
                if hold {
                    held = Some(last);
                    count -= 1;
                    cjk -= usize::from(last.2 & CJK != 0);
                }
                if count > 0 {
                    self.text.push_str(&text[i..if hold { last.0 } else { j }]);
                    self.kept += count;
                    self.cjk += cjk;
                }
                i = j;
                continue;
            }
            if bits & INERT != 0 {
                if let Some(start) = dirty.take() {
                    self.push_nfkc(&text[start..i]);
                } else if let Some((_, hc, hb)) = held {
                    self.push_inert(hc, hb);
                }
                held = Some((i, c, bits));
            } else if dirty.is_none() {
                dirty = Some(held.take().map_or(i, |h| h.0));
            }
            i += n;
        }
        if let Some(start) = dirty {
            self.push_nfkc(&text[start..]);
        } else if let Some((_, hc, hb)) = held {
            self.push_inert(hc, hb);
        }
        if self.text.ends_with(' ') {
            self.text.pop();
        }
    }
}

/// [`CLASS`] of the ASCII characters, without a lookup.
const ASCII_CLASS: [u8; 128] = {
    let mut t = [0u8; 128];
    let mut i = 0;
    while i < 128 {
        let b = i as u8;
        t[i] = INERT;
        if !b.is_ascii_uppercase() {
            t[i] |= LOWER_SELF;
        }
        if b.is_ascii_alphanumeric() {
            t[i] |= KEPT;
        }
        i += 1;
    }
    t
};

/// The ASCII character that NFKC maps `c` to when `c` is a fullwidth form
/// of one (U+FF01..U+FF5E) or the ideographic space: the punctuation of
/// Chinese text (`，：（）！？`), normalised here without the normaliser.
#[inline]
fn fullwidth_ascii(c: char) -> Option<char> {
    match c {
        '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0),
        '\u{3000}' => Some(' '),
        _ => None,
    }
}

/// Kept ASCII bytes lowercased, every other ASCII byte a space.
const ASCII_FOLD: [u8; 128] = {
    let mut t = [b' '; 128];
    let mut i = 0;
    while i < 128 {
        let b = i as u8;
        if b.is_ascii_alphanumeric() {
            t[i] = b.to_ascii_lowercase();
        }
        i += 1;
    }
    t
};

/// [`ASCII_FOLD`] of eight ASCII bytes at once (SWAR: plain u64 arithmetic,
/// no platform code), and the high bit of each byte that is kept.
#[inline(always)]
fn fold8(x: u64) -> (u64, u64) {
    // Setting bit 5 lowercases letters and leaves digits as they are.
    let lower = x | (ONES * 0x20);
    let letter = at_least(lower, b'a') & !at_least(lower, b'z' + 1);
    let digit = at_least(x, b'0') & !at_least(x, b'9' + 1);
    let keep = letter | digit;
    let mask = (keep >> 7) * 0xFF;
    ((lower & mask) | ((ONES * u64::from(b' ')) & !mask), keep)
}

/// The normalised text of a document, words joined by single spaces (for
/// docs and tests; the hot path reuses a buffer).
pub fn normalize(text: &str) -> String {
    let mut n = Normalized::default();
    n.fill(text);
    n.text
}

/// Removes the spaces of `s` in one pass without a branch per byte.
fn remove_spaces(s: &mut String) {
    // SAFETY: removing ASCII bytes keeps the other characters whole.
    let v = unsafe { s.as_mut_vec() };
    let mut w = 0;
    for k in 0..v.len() {
        let b = v[k];
        v[w] = b;
        w += usize::from(b != b' ');
    }
    v.truncate(w);
}

/// Appends to `starts` the position `k + offset` of every byte `k` for
/// which `is_start` holds, without a branch per byte.
#[inline(always)]
fn push_starts(
    bytes: &[u8],
    starts: &mut Vec<usize>,
    offset: usize,
    is_start: impl Fn(u8) -> bool,
) {
    let base = starts.len();
    starts.resize(base + bytes.len(), 0);
    let out = &mut starts[base..];
    let mut n = 0;
    for (k, &b) in bytes.iter().enumerate() {
        // `n` never passes `k`, so the slot exists.
        if let Some(slot) = out.get_mut(n) {
            *slot = k + offset;
        }
        n += usize::from(is_start(b));
    }
    starts.truncate(base + n);
}

/// Calls `f` with every shingle of `text` under `shingling`; returns the
/// kind used (`Auto` resolved). Buffers are per thread.
pub fn for_each_shingle(text: &str, shingling: Shingling, mut f: impl FnMut(&str)) -> ShingleKind {
    thread_local! {
        static BUF: std::cell::RefCell<(Normalized, Vec<usize>)> = std::cell::RefCell::default();
    }
    BUF.with_borrow_mut(|(norm, bounds)| {
        norm.fill(text);
        let kind = match shingling.kind {
            ShingleKind::Auto if norm.cjk * 10 >= norm.kept * 3 && norm.kept > 0 => {
                ShingleKind::Char
            }
            ShingleKind::Auto => ShingleKind::Word,
            k => k,
        };
        let n = shingling.n;
        bounds.clear();
        let s = &mut norm.text;
        match kind {
            ShingleKind::Char => {
                remove_spaces(s);
                // A character starts at every byte but UTF-8 continuation bytes.
                push_starts(s.as_bytes(), bounds, 0, |b| b & 0xC0 != 0x80);
            }
            _ => {
                // A word starts at 0 and after every space.
                bounds.push(0);
                push_starts(s.as_bytes(), bounds, 1, |b| b == b' ');
            }
        }
        if s.is_empty() {
            return kind;
        }
        let units = bounds.len();
        let sep = usize::from(kind != ShingleKind::Char);
        bounds.push(s.len() + sep);
        if units <= n {
            f(s);
        } else {
            // A shingle runs from the start of its first unit to the start
            // of the unit after its last, less the separating space for words.
            for w in bounds.windows(n + 1) {
                f(&s[w[0]..w[n] - sep]);
            }
        }
        kind
    })
}

/// The shingles of a document as strings (for tests and the Python
/// reference check).
pub fn shingles(text: &str, shingling: Shingling) -> (ShingleKind, Vec<String>) {
    let mut out = Vec::new();
    let kind = for_each_shingle(text, shingling, |s| out.push(s.to_owned()));
    (kind, out)
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Permutations per register block of the kernel.
const BLOCK: usize = 64;

/// Permutation `(x ^ s) * a mod 2^32` of a 32-bit shingle hash `x`.
#[inline(always)]
fn permute(x: u32, a: u32, s: u32) -> u32 {
    (x ^ s).wrapping_mul(a)
}

/// The min over shingles of every permutation. Permutations go in blocks of
/// 64 whose minima stay in registers while every shingle passes, so LLVM
/// vectorises the block (32-bit lanes: xor, multiply, min) and the loop does
/// no memory traffic but `x`.
#[inline(always)]
fn min_kernel(mins: &mut [u32], a: &[u32], s: &[u32], xs: &[u32]) {
    let mut blocks = mins.chunks_exact_mut(BLOCK);
    let (mut ab, mut sb) = (a.chunks_exact(BLOCK), s.chunks_exact(BLOCK));
    for ((m, a), s) in (&mut blocks).zip(&mut ab).zip(&mut sb) {
        let a: [u32; BLOCK] = a.try_into().expect("block");
        let s: [u32; BLOCK] = s.try_into().expect("block");
        let mut acc: [u32; BLOCK] = m.try_into().expect("block");
        for &x in xs {
            for l in 0..BLOCK {
                acc[l] = acc[l].min(permute(x, a[l], s[l]));
            }
        }
        m.copy_from_slice(&acc);
    }
    let rest = blocks.into_remainder();
    for &x in xs {
        for ((m, &a), &s) in rest.iter_mut().zip(ab.remainder()).zip(sb.remainder()) {
            *m = (*m).min(permute(x, a, s));
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn min_kernel_avx512(mins: &mut [u32], a: &[u32], s: &[u32], xs: &[u32]) {
    min_kernel(mins, a, s, xs)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn min_kernel_avx2(mins: &mut [u32], a: &[u32], s: &[u32], xs: &[u32]) {
    min_kernel(mins, a, s, xs)
}

fn run_kernel(mins: &mut [u32], a: &[u32], s: &[u32], xs: &[u32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports the features the function is compiled for.
            return unsafe { min_kernel_avx512(mins, a, s, xs) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: as above.
            return unsafe { min_kernel_avx2(mins, a, s, xs) };
        }
    }
    min_kernel(mins, a, s, xs)
}

/// Computes MinHash signatures with a fixed set of permutations.
#[derive(Clone, Debug)]
pub struct MinHasher {
    pub num_perm: usize,
    pub shingling: Shingling,
    pub seed: u64,
    /// Odd multipliers of the permutations.
    a: Vec<u32>,
    /// Xor keys of the permutations.
    s: Vec<u32>,
}

/// Signature value of a document without shingles (as datasketch's empty MinHash).
pub const EMPTY: u32 = u32::MAX;

impl MinHasher {
    /// `num_perm` permutations drawn from `seed`.
    pub fn new(num_perm: usize, shingling: Shingling, seed: u64) -> Result<MinHasher> {
        if !(1..=4096).contains(&num_perm) {
            return Err(TokenmillError::Invalid(format!(
                "num_perm={num_perm} must be in 1..=4096"
            )));
        }
        let mut state = seed;
        let mut a = Vec::with_capacity(num_perm);
        let mut s = Vec::with_capacity(num_perm);
        for _ in 0..num_perm {
            // The high half of each draw: splitmix64's best-mixed bits.
            a.push((splitmix64(&mut state) >> 32) as u32 | 1);
            s.push((splitmix64(&mut state) >> 32) as u32);
        }
        Ok(MinHasher {
            num_perm,
            shingling,
            seed,
            a,
            s,
        })
    }

    /// Writes the signature of `text` into `out` (`num_perm` values); returns
    /// false (and fills `out` with [`EMPTY`]) when the text has no shingle.
    pub fn signature_into(&self, text: &str, out: &mut [u32]) -> bool {
        thread_local! {
            static XS: std::cell::RefCell<Vec<u32>> = std::cell::RefCell::default();
        }
        XS.with_borrow_mut(|xs| {
            xs.clear();
            for_each_shingle(text, self.shingling, |s| {
                xs.push(xxh3_64_with_seed(s.as_bytes(), self.seed) as u32);
            });
            let out = &mut out[..self.num_perm];
            out.fill(EMPTY);
            run_kernel(out, &self.a, &self.s, xs);
            !xs.is_empty()
        })
    }

    /// The signature of `text` as a new vector.
    pub fn signature(&self, text: &str) -> Vec<u32> {
        let mut out = vec![0; self.num_perm];
        self.signature_into(text, &mut out);
        out
    }

    /// Writes one 64-bit hash per band (`bands` bands of `rows` values) into
    /// `out`; false when the text has no shingle (then `out` is untouched).
    pub fn band_hashes_into(&self, text: &str, bands: usize, rows: usize, out: &mut [u64]) -> bool {
        thread_local! {
            static SIG: std::cell::RefCell<(Vec<u32>, Vec<u8>)> = std::cell::RefCell::default();
        }
        SIG.with_borrow_mut(|(sig, bytes)| {
            sig.resize(self.num_perm, 0);
            if !self.signature_into(text, sig) {
                return false;
            }
            for (j, o) in out.iter_mut().enumerate().take(bands) {
                bytes.clear();
                for v in &sig[j * rows..(j + 1) * rows] {
                    bytes.extend_from_slice(&v.to_le_bytes());
                }
                *o = xxh3_64_with_seed(bytes, j as u64);
            }
            true
        })
    }

    /// The set of 64-bit shingle hashes of `text`, sorted and without
    /// repeats (for the exact Jaccard of `--verify`).
    pub fn shingle_set(&self, text: &str) -> Vec<u64> {
        let mut set = Vec::new();
        for_each_shingle(text, self.shingling, |s| {
            set.push(xxh3_64_with_seed(s.as_bytes(), self.seed));
        });
        set.sort_unstable();
        set.dedup();
        set
    }
}

/// Exact Jaccard similarity of two sorted sets without repeats.
pub fn jaccard(a: &[u64], b: &[u64]) -> f64 {
    if a.is_empty() && b.is_empty() {
        return 1.0;
    }
    let (mut i, mut j, mut both) = (0, 0, 0usize);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                both += 1;
                i += 1;
                j += 1;
            }
        }
    }
    both as f64 / (a.len() + b.len() - both) as f64
}

/// Probability that two documents of Jaccard `s` share at least one band.
pub fn candidate_probability(s: f64, bands: usize, rows: usize) -> f64 {
    1.0 - (1.0 - s.powi(rows as i32)).powi(bands as i32)
}

/// Integral of `f` over [lo, hi] by composite Simpson's rule.
fn integrate(f: impl Fn(f64) -> f64, lo: f64, hi: f64) -> f64 {
    const STEPS: usize = 1000; // even
    let h = (hi - lo) / STEPS as f64;
    let mut sum = f(lo) + f(hi);
    for k in 1..STEPS {
        sum += f(lo + k as f64 * h) * if k % 2 == 1 { 4.0 } else { 2.0 };
    }
    sum * h / 3.0
}

/// The bands x rows (b * r <= num_perm) that minimise
/// `fp_weight * P(false positive) + fn_weight * P(false negative)`, where the
/// probabilities are the areas under the candidate curve below and above
/// the threshold, as datasketch's `_optimal_param` computes them.
pub fn optimal_params(
    threshold: f64,
    num_perm: usize,
    fp_weight: f64,
    fn_weight: f64,
) -> (usize, usize) {
    let mut best = (f64::INFINITY, (1, 1));
    for b in 1..=num_perm {
        for r in 1..=num_perm / b {
            let fp = integrate(|s| candidate_probability(s, b, r), 0.0, threshold);
            let fn_ = integrate(|s| 1.0 - candidate_probability(s, b, r), threshold, 1.0);
            let err = fp * fp_weight + fn_ * fn_weight;
            if err < best.0 {
                best = (err, (b, r));
            }
        }
    }
    best.1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation() {
        assert_eq!(
            normalize("  Hello,   WORLD!! it's\tfine_ok "),
            "hello world it s fine ok"
        );
        assert_eq!(normalize("ＡＢＣ１２３：中文，测试。"), "abc123 中文 测试");
        assert_eq!(normalize("ﬁne Straße café"), "fine straße café");
        assert_eq!(normalize("e\u{301}t\u{e9}"), "été");
        assert_eq!(normalize("!!! ... "), "");
        assert_eq!(normalize("CAFE\u{301} ﬁ\u{301}X ＡＢ"), "café fíx ab");
        assert_eq!(normalize("\u{301}a"), "\u{301}a");
        assert_eq!(
            normalize("中文e\u{301}中Ｘ中文\u{301}。ß"),
            "中文é中x中文\u{301} ß"
        );
        for b in 0..128u8 {
            assert_eq!(ASCII_CLASS[b as usize], CLASS.get(b as char), "{b}");
        }
        // Fullwidth forms take a shortcut; it must equal NFKC in every context.
        for u in (0xFF01..=0xFF5E).chain([0x3000]) {
            let c = char::from_u32(u).unwrap();
            let nfkc: String = std::iter::once(c).nfkc().map(|(c, _)| c).collect();
            assert_eq!(fullwidth_ascii(c).map(String::from), Some(nfkc), "{u:x}");
        }
        for s in [
            "Ａ\u{301}Ｂ",
            "e\u{301}，ｘ\u{308}\u{301}　ＡＢＣ",
            "中，\u{301}文",
            "\u{1100}Ａ\u{1161}",
            "ｅ\u{301}ｅ",
            "Ｘ",
        ] {
            let reference: String = s.nfkc().map(|(c, _)| c).collect();
            assert_eq!(normalize(s), normalize(&reference), "{s:?}");
            assert!(!normalize(s)
                .chars()
                .any(|c| ('\u{FF01}'..='\u{FF5E}').contains(&c)));
        }
    }

    #[test]
    fn ascii_folding_matches_the_byte_rule() {
        // The word-at-a-time path against the plain rule, on every byte
        // value at every position and on runs of separators of every length.
        let reference = |prefix: &str, s: &str| {
            let mut out = String::from(prefix);
            for b in s.bytes() {
                let c = ASCII_FOLD[b as usize] as char;
                if !(c == ' ' && out.chars().last().is_none_or(|l| l == ' ')) {
                    out.push(c);
                }
            }
            out
        };
        let mut cases: Vec<String> = (0..128u8)
            .flat_map(|b| (0..9).map(move |k| format!("{}{}x y,z", "ab".repeat(k), b as char)))
            .collect();
        cases.extend((0..20).map(|k| format!("a{}B..c  D9", " ".repeat(k))));
        cases.extend((0..20).map(|k| format!("{}Hello, World! 123_x", "-".repeat(k))));
        // A separator pair split across two words of eight bytes.
        cases.extend((0..17).map(|k| format!("{}, {}", "x".repeat(k), "y".repeat(20))));
        for prefix in ["", "q", "q "] {
            for s in &cases {
                let mut n = Normalized::default();
                n.text.push_str(prefix);
                n.push_ascii(s);
                assert_eq!(n.text, reference(prefix, s), "{prefix:?} {s:?}");
                let kept = s.bytes().filter(u8::is_ascii_alphanumeric).count();
                assert_eq!(n.kept, kept, "{s:?}");
            }
        }
    }

    #[test]
    fn word_and_char_shingles() {
        let w = Shingling::parse("word:2", 5).unwrap();
        let (kind, s) = shingles("A b, c. D", w);
        assert_eq!(kind, ShingleKind::Word);
        assert_eq!(s, ["a b", "b c", "c d"]);
        let (_, s) = shingles("one", Shingling::parse("word:3", 5).unwrap());
        assert_eq!(s, ["one"]);
        let (kind, s) = shingles("中文，文本 abc", Shingling::parse("auto:3", 5).unwrap());
        assert_eq!(kind, ShingleKind::Char);
        assert_eq!(s, ["中文文", "文文本", "文本a", "本ab", "abc"]);
        let (kind, s) = shingles("mostly english 中", Shingling::parse("auto:2", 5).unwrap());
        assert_eq!(kind, ShingleKind::Word);
        assert_eq!(s, ["mostly english", "english 中"]);
        assert!(shingles("?!", w).1.is_empty());
    }

    #[test]
    fn parse_shingling() {
        assert_eq!(
            Shingling::parse("char", 5).unwrap(),
            Shingling {
                kind: ShingleKind::Char,
                n: 5
            }
        );
        assert_eq!(Shingling::parse("word:3", 5).unwrap().to_string(), "word:3");
        assert!(Shingling::parse("words", 5).is_err());
        assert!(Shingling::parse("word:0", 5).is_err());
    }

    #[test]
    fn signature_estimates_jaccard() {
        let h = MinHasher::new(512, Shingling::parse("word:1", 1).unwrap(), 7).unwrap();
        let a: Vec<String> = (0..400).map(|i| format!("w{i}")).collect();
        let b: Vec<String> = (100..500).map(|i| format!("w{i}")).collect();
        let (sa, sb) = (h.signature(&a.join(" ")), h.signature(&b.join(" ")));
        let est = sa.iter().zip(&sb).filter(|(x, y)| x == y).count() as f64 / 512.0;
        let exact = jaccard(&h.shingle_set(&a.join(" ")), &h.shingle_set(&b.join(" ")));
        assert!((exact - 0.6).abs() < 1e-9);
        assert!((est - exact).abs() < 0.07, "{est} vs {exact}");
        // The vectorised kernel and the plain one agree.
        let xs: Vec<u32> = (0..100u32).map(|i| i.wrapping_mul(2_654_435_761)).collect();
        for k in [512, 37, 5] {
            let (mut m1, mut m2) = (vec![u32::MAX; k], vec![u32::MAX; k]);
            run_kernel(&mut m1, &h.a[..k], &h.s[..k], &xs);
            for (i, m) in m2.iter_mut().enumerate() {
                *m = xs
                    .iter()
                    .map(|&x| (x ^ h.s[i]).wrapping_mul(h.a[i]))
                    .min()
                    .unwrap();
            }
            assert_eq!(m1, m2);
        }
    }

    /// Every permutation alone is unbiased (a bijection of random hashes);
    /// the estimate's spread over many seeds shows they are also close to
    /// independent: correlated permutations (say nearly equal keys) widen it
    /// well beyond the binomial sqrt(J(1-J)/k).
    #[test]
    fn permutations_act_independent() {
        let words: Vec<String> = (0..500).map(|i| format!("w{i}")).collect();
        // 100 shared words of 500: Jaccard 0.2.
        let (a, b) = (words[..300].join(" "), words[200..].join(" "));
        let k = 128;
        let errs: Vec<f64> = (0..400u64)
            .map(|seed| {
                let h = MinHasher::new(k, Shingling::parse("word:1", 1).unwrap(), seed).unwrap();
                let (sa, sb) = (h.signature(&a), h.signature(&b));
                let est = sa.iter().zip(&sb).filter(|(x, y)| x == y).count() as f64 / k as f64;
                est - 0.2
            })
            .collect();
        let mean = errs.iter().sum::<f64>() / errs.len() as f64;
        let sd = (errs.iter().map(|e| (e - mean).powi(2)).sum::<f64>() / errs.len() as f64).sqrt();
        let binomial = (0.2f64 * 0.8 / k as f64).sqrt();
        assert!(mean.abs() < 0.006, "bias {mean}");
        assert!(
            sd > 0.85 * binomial && sd < 1.15 * binomial,
            "sd {sd} vs {binomial}"
        );
    }

    #[test]
    fn empty_document_has_no_signature() {
        let h = MinHasher::new(16, Shingling::parse("auto", 5).unwrap(), 1).unwrap();
        let mut out = vec![0; 16];
        assert!(!h.signature_into("  --  ", &mut out));
        assert!(out.iter().all(|&v| v == EMPTY));
        assert!(h.signature_into("x", &mut out));
    }

    #[test]
    fn optimal_params_match_datasketch() {
        // Values from datasketch 2.0 `_optimal_param(t, 128, w_fp, w_fn)`.
        assert_eq!(optimal_params(0.5, 128, 0.5, 0.5), (25, 5));
        assert_eq!(optimal_params(0.7, 128, 0.5, 0.5), (14, 9));
        assert_eq!(optimal_params(0.8, 128, 0.5, 0.5), (9, 13));
        assert_eq!(optimal_params(0.9, 128, 0.5, 0.5), (5, 25));
        assert_eq!(optimal_params(0.8, 128, 0.1, 0.9), (14, 9));
    }

    #[test]
    fn jaccard_of_sets() {
        assert_eq!(jaccard(&[1, 2, 3], &[2, 3, 4]), 0.5);
        assert_eq!(jaccard(&[], &[1]), 0.0);
    }
}
