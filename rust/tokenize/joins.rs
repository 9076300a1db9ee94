//! Byte-level BPE: where a word can be cut into parts that merge apart,
//! because no vocabulary token spans the cut.
//!
//! Every symbol BPE builds is a vocabulary token. If no token can cover the
//! bytes on both sides of a point in a word, no merge ever joins across it,
//! and the merges on either side run as they would on that side alone
//! (lowest rank, leftmost first, among pairs that never meet). The word's
//! ids are then its parts' ids, one after the other. A CJK run of 20
//! characters, unique in a corpus, becomes parts of one to three
//! characters that recur and are cached.
//!
//! Only points between two multi-byte characters are tried: there the
//! tokens that may span are few (tokens across spaces and ASCII letters are
//! many). A token spans the point between characters `a` and `b` of a text
//! exactly when, cut into pieces before each byte that starts a character,
//! it has two neighbouring pieces `x`, `y` with `x` a suffix of `a`'s bytes
//! (all of them, or the continuation bytes the token starts with) and `y` a
//! prefix of `b`'s (all, or the bytes the token ends with). [`Joins`] keeps
//! every such pair of a vocabulary and asks for each cut point all of them
//! that could apply.

use std::ops::Range;

use rustc_hash::FxHashSet;

use crate::chars::char_at;

/// Flags of a character: its bytes are the left piece `x` of some pair
/// (`LEFT_WHOLE`), or a proper suffix of them is (`LEFT_PART`); its bytes
/// are the right piece `y` of some pair, or a proper prefix of them is.
const LEFT_WHOLE: u8 = 1;
const LEFT_PART: u8 = 2;
const RIGHT_WHOLE: u8 = 4;
const RIGHT_PART: u8 = 8;
const LEFT: u8 = LEFT_WHOLE | LEFT_PART;
const RIGHT: u8 = RIGHT_WHOLE | RIGHT_PART;

/// [`Joins::flags`] covers the characters below this; others are taken to
/// have every flag, so each of their cut points is asked in full.
const FLAGS_END: usize = 0x10000;

/// The pairs of neighbouring pieces, both multi-byte, of a byte-level
/// vocabulary's tokens (see the module doc).
pub(super) struct Joins {
    /// [`pair_key`]s of the pairs.
    pairs: FxHashSet<u64>,
    /// Flags by code point, so that most cut points ask nothing of `pairs`.
    flags: Box<[u8]>,
}

/// A pair of pieces of up to four bytes each as one number: `x`'s bytes in
/// the low half, `y`'s in the high half, zero-padded (a multi-byte
/// character's bytes are never zero, so no two pairs share a key).
fn pair_key(x: &[u8], y: &[u8]) -> u64 {
    let mut key = [0; 8];
    key[..x.len()].copy_from_slice(x);
    key[4..4 + y.len()].copy_from_slice(y);
    u64::from_le_bytes(key)
}

/// A part of a character of one or two bytes as a number below 2^16 (a
/// second byte is never zero, a first byte of two is at least 0x80).
fn short_key(part: &[u8]) -> usize {
    part.iter().fold(0, |k, &b| k << 8 | usize::from(b))
}

impl Joins {
    /// The pairs of `tokens` (byte strings; only those with a byte outside
    /// ASCII can hold one).
    pub(super) fn new<'t>(tokens: impl IntoIterator<Item = &'t [u8]>) -> Joins {
        let mut pairs = FxHashSet::default();
        let mut flags = vec![0u8; FLAGS_END].into_boxed_slice();
        // Parts of a character in pairs, as left and as right pieces, a bit
        // per `short_key`. Only parts of one or two bytes are kept: longer
        // ones are parts of characters beyond `flags`.
        let mut parts = [vec![0u64; 1 << 10], vec![0u64; 1 << 10]];
        let mut starts = Vec::new();
        for t in tokens {
            // Where the pieces start: at 0 and before each byte that is not
            // a continuation byte.
            starts.clear();
            starts.extend((0..t.len()).filter(|&i| i == 0 || t[i] & 0xC0 != 0x80));
            starts.push(t.len());
            for w in starts.windows(3) {
                let (x, y) = (&t[w[0]..w[1]], &t[w[1]..w[2]]);
                // A piece of five bytes or more is in no valid text.
                if x[0] < 0x80 || y[0] < 0x80 || x.len() > 4 || y.len() > 4 {
                    continue;
                }
                pairs.insert(pair_key(x, y));
                for (piece, whole, side) in [(x, LEFT_WHOLE, 0), (y, RIGHT_WHOLE, 1)] {
                    match char_at(piece, 0).filter(|c| c.len_utf8() == piece.len()) {
                        Some(c) => {
                            if let Some(f) = flags.get_mut(c as usize) {
                                *f |= whole;
                            }
                        }
                        None if piece.len() <= 2 => {
                            let k = short_key(piece);
                            parts[side][k / 64] |= 1 << (k % 64);
                        }
                        None => {}
                    }
                }
            }
        }
        let has = |side: usize, part: &[u8]| {
            let k = short_key(part);
            parts[side][k / 64] >> (k % 64) & 1 == 1
        };
        if parts.iter().flatten().any(|&bits| bits != 0) {
            let mut utf8 = [0; 4];
            for c in (0x80..FLAGS_END as u32).filter_map(char::from_u32) {
                let bytes = c.encode_utf8(&mut utf8).as_bytes();
                for k in 1..bytes.len() {
                    if has(0, &bytes[k..]) {
                        flags[c as usize] |= LEFT_PART;
                    }
                    if has(1, &bytes[..k]) {
                        flags[c as usize] |= RIGHT_PART;
                    }
                }
            }
        }
        pairs.shrink_to_fit();
        Joins { pairs, flags }
    }

    /// The flags of `c`.
    #[inline]
    fn flags(&self, c: char) -> u8 {
        self.flags.get(c as usize).copied().unwrap_or(LEFT | RIGHT)
    }

    /// Whether some token can span the point between the multi-byte
    /// characters `a` and `b`.
    fn joined(&self, a: char, b: char) -> bool {
        let (fa, fb) = (self.flags(a), self.flags(b));
        if fa & LEFT == 0 || fb & RIGHT == 0 {
            return false;
        }
        let (mut ua, mut ub) = ([0; 4], [0; 4]);
        let (a, b) = (
            a.encode_utf8(&mut ua).as_bytes(),
            b.encode_utf8(&mut ub).as_bytes(),
        );
        for i in 0..a.len() {
            if fa & if i == 0 { LEFT_WHOLE } else { LEFT_PART } == 0 {
                continue;
            }
            for k in (1..=b.len()).rev() {
                if fb
                    & if k == b.len() {
                        RIGHT_WHOLE
                    } else {
                        RIGHT_PART
                    }
                    == 0
                {
                    continue;
                }
                if self.pairs.contains(&pair_key(&a[i..], &b[..k])) {
                    return true;
                }
            }
        }
        false
    }

    /// Cuts the word `text[r]` (valid UTF-8) at each point between two
    /// multi-byte characters that no token spans, handing `f` the parts in
    /// order (the word itself where there is no such point).
    pub(super) fn cut(&self, text: &[u8], r: Range<usize>, mut f: impl FnMut(Range<usize>)) {
        let (mut start, mut i) = (r.start, r.start);
        // The character before `i`, when it is multi-byte.
        let mut before = None;
        while i < r.end {
            match char_at(text, i).filter(|c| !c.is_ascii()) {
                Some(c) => {
                    if before.is_some_and(|a| !self.joined(a, c)) {
                        f(start..i);
                        start = i;
                    }
                    before = Some(c);
                    i += c.len_utf8();
                }
                None => {
                    before = None;
                    i += 1;
                }
            }
        }
        f(start..r.end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The points between two multi-byte characters of `text` where `cut`
    /// cuts, and those where a token of `tokens` occurs across.
    fn cut_and_spanned(joins: &Joins, tokens: &[&[u8]], text: &str) -> (Vec<usize>, Vec<usize>) {
        let mut cuts = Vec::new();
        joins.cut(text.as_bytes(), 0..text.len(), |r| cuts.push(r.start));
        cuts.remove(0);
        let bytes = text.as_bytes();
        let spanned = (1..bytes.len())
            .filter(|&p| text.is_char_boundary(p) && bytes[p - 1] >= 0x80 && bytes[p] >= 0x80)
            .filter(|&p| {
                tokens.iter().any(|t| {
                    (p.saturating_sub(t.len() - 1)..p).any(|q| bytes.get(q..q + t.len()) == Some(t))
                })
            })
            .collect();
        (cuts, spanned)
    }

    /// Words made of characters that share bytes (中 e4b8ad, 国 e5 9b bd,
    /// 好 e5a5bd, 人 e4baba, 文 e69687, 字 e5ad97), a two-byte, a four-byte
    /// and an ASCII character.
    fn words() -> impl Iterator<Item = String> {
        let alphabet: Vec<char> = "中国好人文字é😀a".chars().collect();
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        (0..3000).map(move |_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let n = 2 + (seed % 7) as usize;
            (0..n)
                .map(|k| alphabet[(seed >> (8 + 4 * k)) as usize % alphabet.len()])
                .collect()
        })
    }

    #[test]
    fn words_are_cut_exactly_where_no_token_of_two_pieces_spans() {
        let tokens: &[&[u8]] = &[
            "中国".as_bytes(),
            // 文, then the first byte of 字 (or of 国, 好).
            b"\xe6\x96\x87\xe5",
            // The last byte of 好 (or of 国), then 人.
            b"\xbd\xe4\xba\xba",
            // The last two bytes of 字, then the first two of 中.
            b"\xad\x97\xe4\xb8",
            // An ASCII side, and one character's bytes: no pair.
            " 的".as_bytes(),
            b"\xe7\x9a",
        ];
        let joins = Joins::new(tokens.iter().copied());
        for word in words() {
            let (cuts, spanned) = cut_and_spanned(&joins, tokens, &word);
            let bytes = word.as_bytes();
            let points = (1..bytes.len())
                .filter(|&p| word.is_char_boundary(p) && bytes[p - 1] >= 0x80 && bytes[p] >= 0x80);
            let uncut: Vec<usize> = points.filter(|p| !cuts.contains(p)).collect();
            assert_eq!(uncut, spanned, "{word}");
        }
        let parts = |word: &str| {
            let mut out = Vec::new();
            joins.cut(word.as_bytes(), 0..word.len(), |r| {
                out.push(word[r].to_string())
            });
            out
        };
        assert_eq!(parts("我中国人们"), ["我", "中国人", "们"]);
        assert_eq!(parts("文字中文章"), ["文字中", "文", "章"]);
        assert_eq!(parts("a中b国😀é"), ["a中b国", "😀", "é"]);
    }

    #[test]
    fn tokens_of_more_pieces_never_let_a_cut_through_them() {
        let tokens: &[&[u8]] = &[
            "中国人".as_bytes(),
            b"\xbd\xe5\xa5\xbd\xe4",
            "é😀a".as_bytes(),
        ];
        let joins = Joins::new(tokens.iter().copied());
        for word in words() {
            let (cuts, spanned) = cut_and_spanned(&joins, tokens, &word);
            assert!(
                spanned.iter().all(|p| !cuts.contains(p)),
                "{word}: {cuts:?} {spanned:?}"
            );
        }
    }
}
