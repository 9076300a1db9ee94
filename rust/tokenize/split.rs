//! The split regexes of byte-level tokenizers as hand-written scanners over
//! character classes read out of the reference engine's own regex library
//! (Oniguruma), so a class never disagrees with it: GPT-2's, the tiktoken
//! family (cl100k as LLaMA-3 and tiktoken write it, o200k, Qwen2, Qwen3.5,
//! Mistral's Tekken), DeepSeek-V3's three; and the `Digits` pre-tokenizer.

use super::split_ascii::AsciiSplit;
use super::split_classes::RUNS;
use crate::chars::{at_least, CharTable, HIGH, ONES};

/// The GPT-2 regex the byte-level pre-tokenizer uses with `use_regex`.
pub const GPT2_PATTERN: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
/// cl100k as LLaMA-3 (and the GPT-4 tokenizer.json files) write it.
pub const LLAMA3_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// cl100k as tiktoken writes it, with possessive quantifiers. Oniguruma
/// reads `\p{N}{1,3}+` as `(\p{N}{1,3})+`, so digit runs are not capped.
pub const CL100K_PATTERN: &str = r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s";
/// Qwen2, 2.5 and 3 (LLaMA-3's with single digits).
pub const QWEN2_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen3.5 (Qwen2's with combining marks inside words).
pub const QWEN35_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// o200k (GPT-4o, gpt-oss, LLaMA-4, Phi-4-mini, MiniMax): words split at
/// case changes, contractions attached.
pub const O200K_PATTERN: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// DeepSeek-V3's (and R1's) first split: digits in threes.
pub const DIGITS3_PATTERN: &str = r"\p{N}{1,3}";
/// DeepSeek-V3's second split: runs of CJK ideographs and kana.
pub const CJK_RUNS_PATTERN: &str = "[\u{4E00}-\u{9FA5}\u{3040}-\u{309F}\u{30A0}-\u{30FF}]+";
/// DeepSeek-V3's third split, words; its tokenizer.json holds real CR and
/// LF characters in it, not escapes.
pub const DEEPSEEK_PATTERN: &str = "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+";
/// Mistral's Tekken (Mistral-Nemo and its descendants): o200k's without
/// contractions, with single digits.
pub const TEKKEN_PATTERN: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

pub(super) const LETTER: u8 = 1;
pub(super) const NUMBER: u8 = 2;
pub(super) const SPACE: u8 = 4;
const MARK: u8 = 8;
/// o200k's word head `[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]`.
pub(super) const HEAD: u8 = 16;
/// o200k's word tail `[\p{Ll}\p{Lm}\p{Lo}\p{M}]`.
pub(super) const TAIL: u8 = 32;
/// `[\p{P}\p{S}]`.
const PUNCT: u8 = 64;

/// The classes above of every code point, as Oniguruma decides them: read
/// out of the runs of split_classes.rs, which the test
/// `class_runs_are_onigurumas` generates from Oniguruma and checks (building
/// them from Oniguruma at each load took tens of milliseconds).
pub(super) static CLASSES: CharTable = CharTable::new(|range| {
    let mut table = vec![0u8; range.len()];
    let ends = RUNS.iter().skip(1).map(|r| r.0).chain([0x11_0000]);
    for (&(from, bits), to) in RUNS.iter().zip(ends) {
        let (from, to) = (from.max(range.start), to.min(range.end));
        if from < to {
            table[(from - range.start) as usize..(to - range.start) as usize].fill(bits);
        }
    }
    table
});

/// The splits with a hand-written scanner: regexes (whose matches and the
/// text between them become pieces, as `Isolated` cuts) and the `Digits`
/// pre-tokenizer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SplitPattern {
    Gpt2,
    Tiktoken(Tiktoken),
    /// [`DIGITS3_PATTERN`].
    Digits3,
    /// [`CJK_RUNS_PATTERN`].
    CjkRuns,
    /// [`DEEPSEEK_PATTERN`].
    DeepSeek,
    /// The `Digits` pre-tokenizer: each numeric character (Rust's
    /// `char::is_numeric`, as the crate) alone, or each run of them.
    Digits {
        individual: bool,
    },
}

/// One regex of the tiktoken family: its alternatives in this order, each
/// in one of the shapes below.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tiktoken {
    /// `(?i:'s|'t|'re|'ve|'m|'ll|'d)` as the first alternative (cl100k), as
    /// an optional suffix of each word (o200k), or not at all.
    contractions: Contractions,
    /// Words of letters.
    words: WordShape,
    /// `\p{N}{1,n}`, or any run of digits.
    digits: Option<usize>,
    /// `/` may follow punctuation with the line breaks (`[\r\n/]*`).
    slash: bool,
    /// tiktoken's possessive whitespace `\s++$|\s*[\r\n]|\s+(?!\S)|\s`,
    /// whose first alternative takes trailing whitespace whole, rather than
    /// `\s*[\r\n]+|\s+(?!\S)|\s+`.
    trailing_whole: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Contractions {
    First,
    Suffix,
    None,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WordShape {
    /// `[^\r\n\p{L}\p{N}]?\p{L}+`, and with `marks` `[\p{L}\p{M}]+` (then
    /// punctuation is `[^\s\p{L}\p{M}\p{N}]`).
    Letters { marks: bool },
    /// o200k's `[^\r\n\p{L}\p{N}]?HEAD*TAIL+|[^\r\n\p{L}\p{N}]?HEAD+TAIL*`.
    Cased,
}

impl Tiktoken {
    /// The block splitter for ASCII text (marks are never ASCII, and it
    /// leaves apostrophes, where contractions are, to the scanner).
    fn ascii_split(&self) -> AsciiSplit {
        AsciiSplit {
            digits: self.digits,
            trailing_whole: self.trailing_whole,
            cased: self.words == WordShape::Cased,
            slash: self.slash,
        }
    }
}

impl SplitPattern {
    /// Every regex with a scanner, as tokenizer.json files spell it.
    pub const KNOWN: [(&'static str, SplitPattern); 10] = {
        const fn tiktoken(
            contractions: Contractions,
            words: WordShape,
            digits: Option<usize>,
            slash: bool,
            trailing_whole: bool,
        ) -> SplitPattern {
            SplitPattern::Tiktoken(Tiktoken {
                contractions,
                words,
                digits,
                slash,
                trailing_whole,
            })
        }
        use Contractions::{First, Suffix};
        const LETTERS: WordShape = WordShape::Letters { marks: false };
        [
            (GPT2_PATTERN, SplitPattern::Gpt2),
            (
                LLAMA3_PATTERN,
                tiktoken(First, LETTERS, Some(3), false, false),
            ),
            (CL100K_PATTERN, tiktoken(First, LETTERS, None, false, true)),
            (
                QWEN2_PATTERN,
                tiktoken(First, LETTERS, Some(1), false, false),
            ),
            (
                QWEN35_PATTERN,
                tiktoken(
                    First,
                    WordShape::Letters { marks: true },
                    Some(1),
                    false,
                    false,
                ),
            ),
            (
                O200K_PATTERN,
                tiktoken(Suffix, WordShape::Cased, Some(3), true, false),
            ),
            (
                TEKKEN_PATTERN,
                tiktoken(Contractions::None, WordShape::Cased, Some(1), true, false),
            ),
            (DIGITS3_PATTERN, SplitPattern::Digits3),
            (CJK_RUNS_PATTERN, SplitPattern::CjkRuns),
            (DEEPSEEK_PATTERN, SplitPattern::DeepSeek),
        ]
    };

    pub(crate) fn from_regex(pattern: &str) -> Option<SplitPattern> {
        Self::KNOWN
            .iter()
            .find(|(known, _)| *known == pattern)
            .map(|&(_, p)| p)
    }
}

/// ASCII letters in eight bytes at a time: the classes' ASCII members that
/// a run of them is usually made of, as the bytes `b` with `b | fold` in
/// `lo..=hi`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct AsciiRange {
    fold: u8,
    lo: u8,
    hi: u8,
}

impl AsciiRange {
    /// The ASCII members of o200k's word head (`of(HEAD)`).
    const CAPITALS: AsciiRange = AsciiRange {
        fold: 0,
        lo: b'A',
        hi: b'Z',
    };

    /// The letters of the classes `bits`, if they take all of some case.
    fn of(bits: u8) -> Option<AsciiRange> {
        let (fold, lo, hi) = if bits & LETTER != 0 || bits & (HEAD | TAIL) == HEAD | TAIL {
            (0x20, b'a', b'z')
        } else if bits & TAIL != 0 {
            (0, b'a', b'z')
        } else if bits & HEAD != 0 {
            (0, b'A', b'Z')
        } else {
            return None;
        };
        Some(AsciiRange { fold, lo, hi })
    }

    #[inline]
    fn contains(self, b: u8) -> bool {
        b.is_ascii() && (self.lo..=self.hi).contains(&(b | self.fold))
    }

    /// The bytes of `x` in the range, as their high bits: all eight
    /// compared at once. Non-ASCII bytes are never in it.
    #[inline]
    fn find(self, x: u64) -> u64 {
        // High bit cleared, as `at_least` needs; `!x` drops those bytes.
        let y = (x | (u64::from(self.fold) * ONES)) & (0x7F * ONES);
        at_least(y, self.lo) & !at_least(y, self.hi + 1) & !x
    }
}

/// Characters of a text with their classes.
pub(super) struct Scanner<'a> {
    text: &'a str,
    /// [`CLASSES`] below [`LOW_PLANES`], looked up once per text.
    low: &'static [u8],
}

impl<'a> Scanner<'a> {
    pub(super) fn new(text: &'a str) -> Scanner<'a> {
        Scanner {
            text,
            low: CLASSES.low(),
        }
    }
}

impl Scanner<'_> {
    /// The character at byte `i` (none at the end or inside a character).
    /// The text is a `str`, so std decodes it without checking it again.
    #[inline]
    fn at(&self, i: usize) -> Option<char> {
        self.text.get(i..)?.chars().next()
    }

    #[inline]
    fn class(&self, c: char) -> u8 {
        match self.low.get(c as usize) {
            Some(&class) => class,
            None => CLASSES.get(c),
        }
    }

    #[inline]
    fn is(&self, i: usize, bits: u8) -> bool {
        self.at(i).is_some_and(|c| self.class(c) & bits != 0)
    }

    /// In none of the classes `bits`: `[^\s\p{L}\p{N}]` for
    /// `LETTER | NUMBER | SPACE`.
    #[inline]
    fn is_none_of(&self, i: usize, bits: u8) -> bool {
        self.at(i).is_some_and(|c| self.class(c) & bits == 0)
    }

    /// End of the run of characters from `i` that satisfy `f`, at most `max` of them.
    #[inline]
    fn run(&self, mut i: usize, max: usize, f: impl Fn(char) -> bool) -> usize {
        let mut n = 0;
        while n < max {
            match self.at(i) {
                Some(c) if f(c) => {
                    i += c.len_utf8();
                    n += 1;
                }
                _ => break,
            }
        }
        i
    }

    /// End of the run of characters from `i` in any of the classes `bits`.
    fn run_of(&self, mut i: usize, bits: u8) -> usize {
        if let Some(range) = AsciiRange::of(bits) {
            i = self.ascii_run(i, range);
        }
        self.run_where(i, |class| class & bits != 0)
    }

    /// End of the run of bytes from `i` in `range`, eight at a time while
    /// the text has eight more.
    #[inline]
    fn ascii_run(&self, mut i: usize, range: AsciiRange) -> usize {
        let bytes = self.text.as_bytes();
        while let Some(chunk) = bytes.get(i..i + 8) {
            let found = range.find(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
            let n = (!found & HIGH).trailing_zeros() as usize / 8;
            i += n;
            if n < 8 {
                return i;
            }
        }
        while bytes.get(i).is_some_and(|&b| range.contains(b)) {
            i += 1;
        }
        i
    }

    /// End of the run of characters from `i` in none of the classes `bits`.
    fn run_of_none(&self, i: usize, bits: u8) -> usize {
        self.run_where(i, |class| class & bits == 0)
    }

    /// End of the run of characters from `i` whose classes satisfy `f`:
    /// ASCII bytes straight from the table, other characters decoded.
    #[inline]
    fn run_where(&self, mut i: usize, f: impl Fn(u8) -> bool) -> usize {
        let bytes = self.text.as_bytes();
        while let Some(&b) = bytes.get(i) {
            if b.is_ascii() {
                if !f(self.low[usize::from(b)]) {
                    break;
                }
                i += 1;
            } else {
                match self.at(i) {
                    Some(c) if f(self.class(c)) => i += c.len_utf8(),
                    _ => break,
                }
            }
        }
        i
    }

    /// `'s|'t|'re|'ve|'m|'ll|'d` after the apostrophe at `i`, optionally
    /// case-insensitive as Oniguruma folds (`ſ` matches `s`).
    fn contraction(&self, i: usize, fold: bool) -> Option<usize> {
        if self.at(i) != Some('\'') {
            return None;
        }
        let lower = |c: char| -> char {
            if !fold {
                c
            } else if c == '\u{17F}' {
                's'
            } else {
                c.to_ascii_lowercase()
            }
        };
        let first = lower(self.at(i + 1)?);
        let after = i + 1 + self.at(i + 1)?.len_utf8();
        match first {
            's' | 't' | 'm' | 'd' => return Some(after),
            'r' | 'v' | 'l' => {}
            _ => return None,
        }
        let second = lower(self.at(after)?);
        let ok = matches!((first, second), ('r', 'e') | ('v', 'e') | ('l', 'l'));
        ok.then(|| after + self.at(after).map_or(0, char::len_utf8))
    }

    /// The whitespace alternatives at whitespace `i`: `\s+(?!\S)|\s+`, first
    /// `\s*[\r\n]+` when `newlines`, and before that `\s++$` (the run whole
    /// when it ends the text) when `trailing_whole`.
    fn whitespace(&self, i: usize, newlines: bool, trailing_whole: bool) -> usize {
        let end = self.run_of(i, SPACE);
        if trailing_whole && end == self.text.len() {
            return end;
        }
        if newlines {
            // Bytes: a line break is never part of another character.
            let run = &self.text.as_bytes()[i..end];
            if let Some(p) = run.iter().rposition(|&b| b == b'\r' || b == b'\n') {
                return i + p + 1;
            }
        }
        if end == self.text.len() {
            return end;
        }
        let last = self.text[..end]
            .char_indices()
            .next_back()
            .map_or(end, |(p, _)| p);
        if last > i {
            last
        } else {
            end
        }
    }

    /// End of the pre-token that starts at byte `i` under GPT-2's regex.
    fn gpt2(&self, i: usize) -> usize {
        let c = self.at(i).expect("called inside the text");
        if let Some(end) = self.contraction(i, false) {
            return end;
        }
        let j = if c == ' ' && !self.is(i + 1, SPACE) && self.at(i + 1).is_some() {
            i + 1
        } else {
            i
        };
        if self.is(j, LETTER) {
            return self.run_of(j, LETTER);
        }
        if self.is(j, NUMBER) {
            return self.run_of(j, NUMBER);
        }
        if self.is_none_of(j, LETTER | NUMBER | SPACE) {
            return self.run_of_none(j, LETTER | NUMBER | SPACE);
        }
        self.whitespace(i, false, false)
    }

    /// End of the pre-token that starts at byte `i` under a regex of the
    /// tiktoken family.
    fn tiktoken(&self, i: usize, p: &Tiktoken) -> usize {
        if let Some(end) = self.tiktoken_ascii(i, p) {
            return end;
        }
        let c = self.at(i).expect("called inside the text");
        if p.contractions == Contractions::First {
            if let Some(end) = self.contraction(i, true) {
                return end;
            }
        }
        if let Some(end) = self.word(i, c, p.words) {
            if p.contractions == Contractions::Suffix {
                return self.contraction(end, true).unwrap_or(end);
            }
            return end;
        }
        if self.class(c) & NUMBER != 0 {
            return self.digits(i, p);
        }
        // ` ?[^\s\p{L}\p{N}]+[\r\n]*` (marks left out with them in words,
        // `/` after the punctuation with `slash`).
        let other = match p.words {
            WordShape::Letters { marks: true } => LETTER | MARK | NUMBER | SPACE,
            _ => LETTER | NUMBER | SPACE,
        };
        let next = i + c.len_utf8();
        let j = if c == ' ' && self.is_none_of(next, other) {
            next
        } else {
            i
        };
        if self.is_none_of(j, other) {
            let end = self.run_of_none(j, other);
            return self.run(end, usize::MAX, |c| {
                c == '\r' || c == '\n' || (p.slash && c == '/')
            });
        }
        self.whitespace(i, true, p.trailing_whole)
    }

    /// The digits alternative of [`Scanner::tiktoken`] at `i`.
    fn digits(&self, i: usize, p: &Tiktoken) -> usize {
        match p.digits {
            Some(n) => self.run(i, n, |c| self.class(c) & NUMBER != 0),
            None => self.run_of(i, NUMBER),
        }
    }

    /// [`Scanner::tiktoken`] where the byte at `i` and the one after it are
    /// ASCII and decide the alternative, as the general path would, from
    /// the bytes' classes: a word, a word after one other character, a
    /// number, or punctuation (then the general runs). None where the
    /// general path is needed: an apostrophe, a line break, whitespace not
    /// before punctuation, a character that is not ASCII.
    #[inline]
    fn tiktoken_ascii(&self, i: usize, p: &Tiktoken) -> Option<usize> {
        let bytes = self.text.as_bytes();
        let class = |b: u8| self.low[usize::from(b)];
        let b = *bytes.get(i).filter(|b| b.is_ascii() && **b != b'\'')?;
        let (letters, other) = match p.words {
            WordShape::Letters { marks: true } => (LETTER | MARK, LETTER | MARK | NUMBER | SPACE),
            _ => (LETTER, LETTER | NUMBER | SPACE),
        };
        // The word alternatives at the ASCII letter `s`.
        let word = |s: usize| match p.words {
            WordShape::Letters { .. } => Some(self.run_of(s, letters)),
            WordShape::Cased => {
                let end = self.cased_ascii(s)?;
                Some(match p.contractions {
                    Contractions::Suffix => self.contraction(end, true).unwrap_or(end),
                    _ => end,
                })
            }
        };
        if class(b) & LETTER != 0 {
            return word(i);
        }
        if class(b) & NUMBER != 0 {
            return Some(self.digits(i, p));
        }
        if b == b'\r' || b == b'\n' {
            return None;
        }
        let next = *bytes.get(i + 1).filter(|b| b.is_ascii())?;
        if class(next) & LETTER != 0 {
            return word(i + 1);
        }
        // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
        let j = if b == b' ' && class(next) & other == 0 {
            i + 1
        } else if class(b) & other == 0 {
            i
        } else {
            return None;
        };
        let end = self.run_of_none(j, other);
        Some(self.run(end, usize::MAX, |c| {
            c == '\r' || c == '\n' || (p.slash && c == '/')
        }))
    }

    /// o200k's words `HEAD*TAIL+|HEAD+TAIL*` at the ASCII letter `s`, where
    /// ASCII decides them: a run of capitals, then lower case letters or
    /// not. None where a character that is not ASCII follows the capitals.
    #[inline]
    fn cased_ascii(&self, s: usize) -> Option<usize> {
        let bytes = self.text.as_bytes();
        let head = self.ascii_run(s, AsciiRange::CAPITALS);
        match bytes.get(head) {
            Some(b) if b.is_ascii_lowercase() => Some(self.run_of(head, TAIL)),
            Some(b) if !b.is_ascii() => None,
            // Capitals (at least the one at `s`) and no tail.
            _ => Some(head),
        }
    }

    /// End of the word alternatives at `i` (holding `c`), none if they fail:
    /// each is an optional `[^\r\n\p{L}\p{N}]` then letters, and the regex
    /// tries the letters after that character first, then from `i`.
    fn word(&self, i: usize, c: char, shape: WordShape) -> Option<usize> {
        let class = self.class(c);
        if let WordShape::Letters { marks: false } = shape {
            if class & LETTER != 0 {
                return Some(self.run_of(i, LETTER)); // the common case, first
            }
        }
        let prefix =
            (class & (LETTER | NUMBER) == 0 && c != '\r' && c != '\n').then(|| i + c.len_utf8());
        let starts = || prefix.into_iter().chain([i]);
        match shape {
            WordShape::Letters { marks } => {
                let letters = if marks { LETTER | MARK } else { LETTER };
                starts()
                    .find(|&s| self.is(s, letters))
                    .map(|s| self.run_of(s, letters))
            }
            // `HEAD*TAIL+`: the head run gives back characters until a tail
            // character follows, which starts the greedy tail run; else
            // `HEAD+TAIL*`.
            WordShape::Cased => starts()
                .find_map(|s| {
                    let head = self.run_of(s, HEAD);
                    if self.is(head, TAIL) {
                        return Some(self.run_of(head, TAIL));
                    }
                    let last_tail = self.text[s..head]
                        .char_indices()
                        .rev()
                        .find(|&(_, c)| self.class(c) & TAIL != 0);
                    last_tail.map(|(k, c)| s + k + c.len_utf8())
                })
                .or_else(|| {
                    starts()
                        .find(|&s| self.is(s, HEAD))
                        .map(|s| self.run_of(self.run_of(s, HEAD), TAIL))
                }),
        }
    }

    /// End of DeepSeek-V3's word regex at `i`, none where it does not match.
    fn deepseek(&self, i: usize) -> Option<usize> {
        let c = self.at(i).expect("called inside the text");
        let next = i + c.len_utf8();
        // `[!"#...~][A-Za-z]+`
        if c.is_ascii_punctuation() && self.at(next).is_some_and(|c| c.is_ascii_alphabetic()) {
            return Some(self.run(next, usize::MAX, |c| c.is_ascii_alphabetic()));
        }
        // `[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+`
        let class = self.class(c);
        let prefix = class & (LETTER | PUNCT) == 0 && c != '\r' && c != '\n';
        if let Some(s) = [next, i]
            .into_iter()
            .filter(|&s| s == i || prefix)
            .find(|&s| self.is(s, LETTER | MARK))
        {
            return Some(self.run_of(s, LETTER | MARK));
        }
        // ` ?[\p{P}\p{S}]+[\r\n]*`
        let j = if c == ' ' && self.is(next, PUNCT) {
            next
        } else {
            i
        };
        if self.is(j, PUNCT) {
            let end = self.run_of(j, PUNCT);
            return Some(self.run(end, usize::MAX, |c| c == '\r' || c == '\n'));
        }
        (class & SPACE != 0).then(|| self.whitespace(i, true, false))
    }

    /// End of the match of `pattern` that starts at byte `i`, none if none does.
    fn match_at(&self, i: usize, pattern: &SplitPattern) -> Option<usize> {
        let is_cjk = |c: char| matches!(c, '\u{4E00}'..='\u{9FA5}' | '\u{3040}'..='\u{30FF}');
        match pattern {
            SplitPattern::Gpt2 => Some(self.gpt2(i)),
            SplitPattern::Tiktoken(p) => Some(self.tiktoken(i, p)),
            SplitPattern::DeepSeek => self.deepseek(i),
            SplitPattern::Digits3 => {
                let end = self.run(i, 3, |c| self.class(c) & NUMBER != 0);
                (end > i).then_some(end)
            }
            SplitPattern::CjkRuns => {
                let end = self.run(i, usize::MAX, is_cjk);
                (end > i).then_some(end)
            }
            SplitPattern::Digits { individual } => {
                let max = if *individual { 1 } else { usize::MAX };
                let end = self.run(i, max, char::is_numeric);
                (end > i).then_some(end)
            }
        }
    }

    /// Pieces of the text as byte ranges, in order, covering all of it: each
    /// match of `pattern` and each stretch of text between matches.
    pub(super) fn split(&self, pattern: SplitPattern, mut f: impl FnMut(usize, usize)) {
        let ascii = match pattern {
            SplitPattern::Tiktoken(p) => Some(p.ascii_split()),
            _ => None,
        };
        let (mut i, mut gap) = (0, 0);
        while i < self.text.len() {
            // Every byte of the text is in a match of a tiktoken regex, so
            // a pre-token starts at `i`, where the block splitter starts.
            if let Some(ascii) = &ascii {
                let end = ascii.split(self.text.as_bytes(), i, &mut f);
                if end > i {
                    (i, gap) = (end, end);
                    continue;
                }
            }
            match self.match_at(i, &pattern) {
                Some(end) => {
                    if gap < i {
                        f(gap, i);
                    }
                    f(i, end);
                    (i, gap) = (end, end);
                }
                None => i += self.at(i).map_or(1, char::len_utf8),
            }
        }
        if gap < self.text.len() {
            f(gap, self.text.len());
        }
    }
}

/// Splits `text` into pre-tokens exactly as the regex `pattern` would (with
/// `Isolated` behaviour); exposed for tests.
pub fn pre_tokens(pattern: SplitPattern, text: &str) -> Vec<&str> {
    let scanner = Scanner::new(text);
    let mut out = Vec::new();
    scanner.split(pattern, |s, e| out.push(&text[s..e]));
    out
}

#[cfg(test)]
mod tests {
    use tokenizers::utils::SysRegex;

    use super::*;
    use crate::chars::LOW_PLANES;

    /// The pieces Oniguruma cuts `text` into under `re` (with `Isolated` gaps).
    fn onig_pieces<'a>(re: &SysRegex, text: &'a str) -> Vec<&'a str> {
        let mut out = Vec::new();
        let mut prev = 0;
        for (s, e) in re.find_iter(text) {
            if s > prev {
                out.push(&text[prev..s]);
            }
            out.push(&text[s..e]);
            prev = e;
        }
        if prev < text.len() {
            out.push(&text[prev..]);
        }
        out
    }

    /// The classes of every code point as Oniguruma decides them, in runs of
    /// code points of the same classes: (first code point, classes).
    fn onig_class_runs() -> Vec<(u32, u8)> {
        let chars: String = (0..0x11_0000).filter_map(char::from_u32).collect();
        let mut table = vec![0u8; 0x11_0000];
        for (bit, pattern) in [
            (LETTER, r"\p{L}+"),
            (NUMBER, r"\p{N}+"),
            (SPACE, r"\s+"),
            (MARK, r"\p{M}+"),
            (HEAD, r"[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+"),
            (TAIL, r"[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"),
            (PUNCT, r"[\p{P}\p{S}]+"),
        ] {
            let re = SysRegex::new(pattern).unwrap();
            for (from, to) in re.find_iter(&chars) {
                for c in chars[from..to].chars() {
                    table[c as usize] |= bit;
                }
            }
        }
        let mut runs: Vec<(u32, u8)> = Vec::new();
        for (c, &bits) in table.iter().enumerate() {
            if runs.last().is_none_or(|r| r.1 != bits) {
                runs.push((c as u32, bits));
            }
        }
        runs
    }

    /// split_classes.rs holds Oniguruma's classes. After an update of the
    /// `tokenizers` crate brings a newer Oniguruma (and Unicode), run
    /// `UPDATE_CLASS_RUNS=1 cargo test --lib class_runs_are_onigurumas` to
    /// write the file again.
    #[test]
    fn class_runs_are_onigurumas() {
        let runs = onig_class_runs();
        if std::env::var_os("UPDATE_CLASS_RUNS").is_some() {
            let mut text = String::from(
                "//! Generated by `UPDATE_CLASS_RUNS=1 cargo test --lib class_runs_are_onigurumas`\n\
                 //! from Oniguruma; do not edit. The split classes of every code point\n\
                 //! (the bits of split.rs) in runs: (first code point, classes), each up\n\
                 //! to the next run's first code point.\n\n\
                 #[rustfmt::skip]\n",
            );
            text += &format!("pub(super) static RUNS: [(u32, u8); {}] = [\n", runs.len());
            for line in runs.chunks(8) {
                let items: Vec<String> = line
                    .iter()
                    .map(|(c, b)| format!("(0x{c:X}, {b})"))
                    .collect();
                text += &format!("    {},\n", items.join(", "));
            }
            text += "];\n";
            let path = concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/rust/tokenize/split_classes.rs"
            );
            std::fs::write(path, text).unwrap();
        }
        assert_eq!(
            &RUNS[..],
            &runs[..],
            "run with UPDATE_CLASS_RUNS=1 to update"
        );
        // Both halves of the table (built on their own) are those runs.
        let mut table = CLASSES.low().to_vec();
        table.extend(
            (LOW_PLANES..0x11_0000).map(|c| char::from_u32(c).map_or(0, |c| CLASSES.get(c))),
        );
        let want: Vec<u8> = (0..0x11_0000u32)
            .map(|c| runs[runs.partition_point(|r| r.0 <= c) - 1].1)
            .collect();
        assert!(table == want);
    }

    #[test]
    fn scanners_match_oniguruma_on_random_text() {
        // Every class and its edge cases; then mostly ASCII, with the long
        // runs of letters (and capitals) that the ASCII paths take eight
        // bytes at a time.
        let alphabets = [
            ("aZ é中文1２٣ \t\n\r\u{a0}\u{3000}\u{2028}'sStTrRevVmMlLdDſ.,!?-_/\"(){}\u{301}\u{903}\u{200d}😀\u{85}\u{b}\u{c}ǅʰªÉアぁ$+^\u{1}", 24, 20_000),
            ("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ    09'.,/-\n\r\té中ÉǅʰΣ", 48, 10_000),
            // Long ASCII stretches, for the block splitter (split_ascii.rs):
            // every class, runs that cross its 64-byte blocks, and the
            // bytes it leaves to the scanner.
            ("eeeeeeeeeeeeaaaaaaaaTTTTTTZ     \t\t\u{b}\u{c}\n\n\r012345678.,,;(-//'\u{1c}\u{1}é\u{a0}\u{3000}²", 300, 3_000),
        ];
        let regexes: Vec<(SplitPattern, SysRegex)> = SplitPattern::KNOWN
            .iter()
            .map(|&(re, p)| (p, SysRegex::new(re).unwrap()))
            .collect();
        let digits = [true, false].map(|individual| {
            (
                SplitPattern::Digits { individual },
                tokenizers::pre_tokenizers::digits::Digits::new(individual),
            )
        });
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for (alphabet, max_len, texts) in alphabets {
            let alphabet: Vec<char> = alphabet.chars().collect();
            for _ in 0..texts {
                let len = (next() % max_len) as usize;
                let text: String = (0..len)
                    .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                    .collect();
                for (p, re) in &regexes {
                    assert_eq!(
                        pre_tokens(*p, &text),
                        onig_pieces(re, &text),
                        "{p:?} on {text:?}"
                    );
                }
                for (p, crate_digits) in &digits {
                    let mut pre = tokenizers::PreTokenizedString::from(text.as_str());
                    tokenizers::PreTokenizer::pre_tokenize(crate_digits, &mut pre).unwrap();
                    let want: Vec<&str> = pre
                        .get_splits(
                            tokenizers::OffsetReferential::Original,
                            tokenizers::OffsetType::Byte,
                        )
                        .into_iter()
                        .map(|(_, (s, e), _)| &text[s..e])
                        .collect();
                    assert_eq!(pre_tokens(*p, &text), want, "{p:?} on {text:?}");
                }
            }
        }
    }

    #[test]
    fn ascii_ranges_are_the_classes_below_0x80() {
        for bits in [LETTER, LETTER | MARK, HEAD, TAIL, HEAD | TAIL] {
            let range = AsciiRange::of(bits).expect("letters");
            for b in 0..=255u8 {
                let want = b.is_ascii() && CLASSES.low()[usize::from(b)] & bits != 0;
                for at in 0..8 {
                    // `b` among bytes of the range.
                    let x = u64::from_le_bytes([range.lo; 8]) & !(0xFF << (8 * at))
                        | u64::from(b) << (8 * at);
                    let found = range.find(x);
                    assert_eq!(found | 0x80 << (8 * at), HIGH, "{bits} {b:#x} at {at}");
                    assert_eq!(found >> (8 * at) & 0x80 != 0, want, "{bits} {b:#x} at {at}");
                }
                assert_eq!(range.contains(b), want, "{bits} {b:#x}");
            }
        }
        assert!(AsciiRange::of(SPACE | NUMBER).is_none());
        assert_eq!(AsciiRange::of(HEAD), Some(AsciiRange::CAPITALS));
    }

    #[test]
    fn scanners_match_oniguruma_on_every_code_point() {
        // Each code point in contexts that exercise every alternative,
        // concatenated into texts of a few thousand code points.
        let regexes: Vec<(SplitPattern, SysRegex)> = SplitPattern::KNOWN
            .iter()
            .map(|&(re, p)| (p, SysRegex::new(re).unwrap()))
            .collect();
        let all: Vec<char> = (0..=0x10FFFFu32).filter_map(char::from_u32).collect();
        for chunk in all.chunks(2048) {
            let mut text = String::new();
            for &c in chunk {
                for template in [
                    "'#", " #", "#a", "a#1", "#\n", " #  ", "'#e", "'l#", "x#", "A#b", "#/",
                    "1#\u{1}",
                ] {
                    text.push_str(&template.replace('#', c.encode_utf8(&mut [0; 4])));
                }
            }
            for (p, re) in &regexes {
                let expected = onig_pieces(re, &text);
                let got = pre_tokens(*p, &text);
                if got != expected {
                    let i = got
                        .iter()
                        .zip(&expected)
                        .position(|(a, b)| a != b)
                        .unwrap_or(0);
                    panic!(
                        "{p:?}: {:?} vs {:?}",
                        &got[i.saturating_sub(2)..(i + 3).min(got.len())],
                        &expected[i.saturating_sub(2)..(i + 3).min(expected.len())]
                    );
                }
            }
        }
    }
}
