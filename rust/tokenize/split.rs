//! The split regexes of byte-level tokenizers (GPT-2, LLaMA-3, Qwen2) as
//! hand-written scanners over character classes read out of the reference
//! engine's own regex library (Oniguruma), so a class never disagrees with it.

use tokenizers::utils::SysRegex;

use crate::chars::CharTable;

/// The LLaMA-3 (tiktoken cl100k) split regex.
pub const LLAMA3_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// The Qwen2 split regex (LLaMA-3's with single digits).
pub const QWEN2_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// The GPT-2 regex the byte-level pre-tokenizer uses with `use_regex`.
pub const GPT2_PATTERN: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

pub(super) const LETTER: u8 = 1;
pub(super) const NUMBER: u8 = 2;
pub(super) const SPACE: u8 = 4;

/// `\p{L}`, `\p{N}` and `\s` of every code point, as Oniguruma (the regex
/// library of the reference) decides them.
pub(super) static CLASSES: CharTable = CharTable::new(|range| {
    let start = range.start;
    let mut table = vec![0u8; range.len()];
    let chars: String = range.filter_map(char::from_u32).collect();
    for (bit, pattern) in [(LETTER, r"\p{L}+"), (NUMBER, r"\p{N}+"), (SPACE, r"\s+")] {
        let re = SysRegex::new(pattern).expect("a fixed, valid pattern");
        for (from, to) in re.find_iter(&chars) {
            for c in chars[from..to].chars() {
                table[(c as u32 - start) as usize] |= bit;
            }
        }
    }
    table
});

/// The split regexes with a hand-written scanner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SplitPattern {
    Gpt2,
    Llama3,
    Qwen2,
}

impl SplitPattern {
    pub(super) fn from_regex(pattern: &str) -> Option<SplitPattern> {
        match pattern {
            GPT2_PATTERN => Some(SplitPattern::Gpt2),
            LLAMA3_PATTERN => Some(SplitPattern::Llama3),
            QWEN2_PATTERN => Some(SplitPattern::Qwen2),
            _ => None,
        }
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
    /// The character at byte `i` (none at the end).
    #[inline]
    fn at(&self, i: usize) -> Option<char> {
        let b = *self.text.as_bytes().get(i)?;
        if b.is_ascii() {
            return Some(char::from(b));
        }
        self.text.get(i..).and_then(|s| s.chars().next())
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

    /// Neither whitespace, letter nor number: `[^\s\p{L}\p{N}]`.
    #[inline]
    fn is_other(&self, i: usize) -> bool {
        self.at(i)
            .is_some_and(|c| self.class(c) & (LETTER | NUMBER | SPACE) == 0)
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

    fn run_of(&self, mut i: usize, bits: u8) -> usize {
        // ASCII bytes straight from the table, other characters decoded.
        let bytes = self.text.as_bytes();
        while let Some(&b) = bytes.get(i) {
            if b.is_ascii() {
                if self.low[usize::from(b)] & bits == 0 {
                    break;
                }
                i += 1;
            } else {
                match self.at(i) {
                    Some(c) if self.class(c) & bits != 0 => i += c.len_utf8(),
                    _ => break,
                }
            }
        }
        i
    }

    fn run_of_other(&self, i: usize) -> usize {
        self.run(i, usize::MAX, |c| {
            self.class(c) & (LETTER | NUMBER | SPACE) == 0
        })
    }

    /// `'s|'t|'re|'ve|'m|'ll|'d` after the apostrophe at `i`, optionally
    /// case-insensitive as Oniguruma folds (`ſ` matches `s`).
    fn contraction(&self, i: usize, fold: bool) -> Option<usize> {
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

    /// The whitespace alternatives shared by the patterns, at whitespace `i`:
    /// `\s+(?!\S)|\s+` (and first `\s*[\r\n]+` when `newlines`).
    fn whitespace(&self, i: usize, newlines: bool) -> usize {
        let end = self.run_of(i, SPACE);
        if newlines {
            let run = &self.text[i..end];
            if let Some(p) = run.rfind(['\r', '\n']) {
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
        if c == '\'' {
            if let Some(end) = self.contraction(i, false) {
                return end;
            }
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
        if self.is_other(j) {
            return self.run_of_other(j);
        }
        self.whitespace(i, false)
    }

    /// End of the pre-token that starts at byte `i` under the LLaMA-3
    /// (`digits` = 3) or Qwen2 (`digits` = 1) regex.
    fn llama3(&self, i: usize, digits: usize) -> usize {
        let c = self.at(i).expect("called inside the text");
        let class = self.class(c);
        if c == '\'' {
            if let Some(end) = self.contraction(i, true) {
                return end;
            }
        }
        // [^\r\n\p{L}\p{N}]?\p{L}+
        if class & LETTER != 0 {
            return self.run_of(i, LETTER);
        }
        let next = i + c.len_utf8();
        if class & NUMBER == 0 && c != '\r' && c != '\n' && self.is(next, LETTER) {
            return self.run_of(next, LETTER);
        }
        // \p{N}{1,digits}
        if class & NUMBER != 0 {
            return self.run(i, digits, |c| self.class(c) & NUMBER != 0);
        }
        // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
        let j = if c == ' ' && self.is_other(next) {
            next
        } else {
            i
        };
        if self.is_other(j) {
            let end = self.run_of_other(j);
            return self.run(end, usize::MAX, |c| c == '\r' || c == '\n');
        }
        self.whitespace(i, true)
    }

    /// Pre-tokens of the text as byte ranges, in order, covering all of it.
    pub(super) fn split(&self, pattern: SplitPattern, mut f: impl FnMut(usize, usize)) {
        let mut i = 0;
        while i < self.text.len() {
            let end = match pattern {
                SplitPattern::Gpt2 => self.gpt2(i),
                SplitPattern::Llama3 => self.llama3(i, 3),
                SplitPattern::Qwen2 => self.llama3(i, 1),
            };
            f(i, end);
            i = end;
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
    use super::*;

    /// The pre-tokens Oniguruma finds for `pattern` (with `Isolated` gaps).
    fn onig_split<'a>(pattern: &str, text: &'a str) -> Vec<&'a str> {
        let re = SysRegex::new(pattern).unwrap();
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

    const PATTERNS: [(SplitPattern, &str); 3] = [
        (SplitPattern::Gpt2, GPT2_PATTERN),
        (SplitPattern::Llama3, LLAMA3_PATTERN),
        (SplitPattern::Qwen2, QWEN2_PATTERN),
    ];

    #[test]
    fn scanners_match_oniguruma_on_random_text() {
        let alphabet: Vec<char> = "aZ é中文1２٣ \t\n\r\u{a0}\u{3000}\u{2028}'sStTrRevVmMlLdDſ.,!?-_\"(){}\u{301}\u{200d}😀\u{85}\u{b}\u{c}"
            .chars()
            .collect();
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let len = (next() % 24) as usize;
            let text: String = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            for (p, re) in PATTERNS {
                assert_eq!(
                    pre_tokens(p, &text),
                    onig_split(re, &text),
                    "{p:?} on {text:?}"
                );
            }
        }
    }

    #[test]
    fn scanners_match_oniguruma_on_every_code_point() {
        // Each code point in contexts that exercise every alternative,
        // concatenated into texts of a few thousand code points.
        let regexes: Vec<(SplitPattern, SysRegex)> = PATTERNS
            .iter()
            .map(|&(p, re)| (p, SysRegex::new(re).unwrap()))
            .collect();
        let all: Vec<char> = (0..=0x10FFFFu32).filter_map(char::from_u32).collect();
        for chunk in all.chunks(2048) {
            let mut text = String::new();
            for &c in chunk {
                for template in ["'#", " #", "#a", "a#1", "#\n", " #  ", "'#e", "'l#", "x#"] {
                    text.push_str(&template.replace('#', c.encode_utf8(&mut [0; 4])));
                }
            }
            for (p, re) in &regexes {
                let mut expected = Vec::new();
                let mut prev = 0;
                for (s, e) in re.find_iter(&text) {
                    if s > prev {
                        expected.push(&text[prev..s]);
                    }
                    expected.push(&text[s..e]);
                    prev = e;
                }
                assert_eq!(prev, text.len());
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
