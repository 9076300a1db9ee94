//! The fast tokenization backend: BPE for the common LLM tokenizer families,
//! with ids identical to the `tokenizers` crate for the same tokenizer.json.
//!
//! Supported (anything else makes [`FastBpe::new`] say why, and the caller
//! uses the `tokenizers` crate instead):
//! * model: BPE without dropout, subword prefix or word suffix (unk,
//!   `fuse_unk`, `byte_fallback`, `ignore_merges` as the crate does them);
//! * pre-tokenizer: byte-level with the GPT-2 regex, or a Split on the
//!   LLaMA-3 / Qwen2 regex followed by byte-level (GPT-2, LLaMA-3,
//!   Qwen2/2.5/3); none or `Metaspace` (SentencePiece BPE: LLaMA-2, Mistral);
//! * any normaliser: NFC/NFKC/NFD/NFKD, `Prepend` and string `Replace` are done
//!   here, others by the crate's own normaliser object.
//!
//! Where the speed comes from: the split regexes are hand-written scanners
//! over character-class tables that are read out of the reference engine's
//! own regex library (Oniguruma) at first use, so a class can never disagree
//! with it; BPE merges the lowest-rank pair, leftmost first, exactly as the
//! crate does (a vectorised scan for words of up to 256 symbols, the crate's
//! own heap procedure beyond), on ids, without offsets or strings, starting
//! byte-level words from whole-character tokens where that provably changes
//! nothing ([`Bpe::whole_chars`]); pre-token -> ids go through a per-thread
//! hot cache and a capped cache shared by the threads. SentencePiece
//! text without a pre-tokenizer is cut before each `▁` run when no
//! vocabulary token holds `▁` after another character (then no merge can
//! cross the cut), which makes its words cacheable and its cost linear.
//!
//! Added tokens: a document in which no added token's text occurs (checked
//! with one Aho-Corasick scan, before and after normalisation) takes the
//! fast path whole; any other document is split into added tokens and
//! normalised segments by the crate's own `AddedVocabulary`, and only the
//! segments are encoded here.

use std::borrow::Cow;
use std::cell::RefCell;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};

use aho_corasick::AhoCorasick;
use rustc_hash::FxHashMap;
use serde::Deserialize;
use serde_json::Value;
use thread_local::ThreadLocal;
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::utils::SysRegex;
use tokenizers::{
    AddedToken, NormalizedString, Normalizer, OffsetReferential, OffsetType, Tokenizer,
};
use unicode_normalization_alignments::UnicodeNormalization;

/// The LLaMA-3 (tiktoken cl100k) split regex.
pub const LLAMA3_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// The Qwen2 split regex (LLaMA-3's with single digits).
pub const QWEN2_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// The GPT-2 regex the byte-level pre-tokenizer uses with `use_regex`.
pub const GPT2_PATTERN: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

/// Words of at most this many initial symbols are merged by a linear scan
/// instead of a heap.
const SHORT_WORD_SYMBOLS: usize = 256;
/// Words of at most this many bytes are cached.
const CACHE_WORD_BYTES: usize = 128;
// A cached word's length, and its ids (at most one per byte), fit 8 bits.
const _: () = assert!(CACHE_WORD_BYTES < 256);
/// The word cache is shared by the worker threads of one encoder, in this
/// many shards (chosen by the word's hash); see [`WordCache`].
const CACHE_SHARDS: usize = 16;
/// Slots of one shard (a power of two); a shard holds at most half as many
/// words and is emptied when that many are in it.
const SHARD_SLOTS: usize = (1 << 20) / CACHE_SHARDS;
/// A shard is also emptied when its words' bytes or ids reach these sizes.
const SHARD_KEY_BYTES: usize = (16 << 20) / CACHE_SHARDS;
const SHARD_IDS: usize = (4 << 20) / CACHE_SHARDS;
/// The most bytes the word cache of one encoder holds (16 per slot plus the
/// two arenas, over all shards); each worker thread adds a hot cache of
/// [`HOT_ENTRIES`] x 40 bytes.
pub const CACHE_MAX_BYTES: usize =
    CACHE_SHARDS * (SHARD_SLOTS * 16 + SHARD_KEY_BYTES + SHARD_IDS * 4);

const LETTER: u8 = 1;
const NUMBER: u8 = 2;
const SPACE: u8 = 4;

/// Code points below this (planes 0 to 3: every script in use) have their
/// tables built up front; the rest (unassigned planes, tags, private use)
/// only when such a character first turns up.
const LOW_PLANES: u32 = 0x40000;

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
    fn low(&self) -> &[u8] {
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
    fn warm(&self) {
        self.get('a');
    }
}

/// `\p{L}`, `\p{N}` and `\s` of every code point, as Oniguruma (the regex
/// library of the reference) decides them.
static CLASSES: CharTable = CharTable::new(|range| {
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
    fn from_regex(pattern: &str) -> Option<SplitPattern> {
        match pattern {
            GPT2_PATTERN => Some(SplitPattern::Gpt2),
            LLAMA3_PATTERN => Some(SplitPattern::Llama3),
            QWEN2_PATTERN => Some(SplitPattern::Qwen2),
            _ => None,
        }
    }
}

/// Characters of a text with their classes.
struct Scanner<'a> {
    text: &'a str,
    /// [`CLASSES`] below [`LOW_PLANES`], looked up once per text.
    low: &'static [u8],
}

impl<'a> Scanner<'a> {
    fn new(text: &'a str) -> Scanner<'a> {
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
    fn split(&self, pattern: SplitPattern, mut f: impl FnMut(usize, usize)) {
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

/// GPT-2's byte-to-character table of byte-level BPE.
pub fn byte_chars() -> [char; 256] {
    let mut out = ['\0'; 256];
    let mut n = 0;
    for b in 0..256u32 {
        let printable =
            (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
        out[b as usize] = if printable {
            char::from_u32(b).expect("a Latin-1 code point")
        } else {
            n += 1;
            char::from_u32(255 + n).expect("a code point below 512")
        };
    }
    out
}

/// A Unicode normal form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Form {
    Nfc,
    Nfkc,
    Nfd,
    Nfkd,
}

/// A normalisation step done here.
#[derive(Debug)]
enum NormStep {
    Unicode(Form),
    Prepend(String),
    Replace(String, String),
}

/// How segments are normalised.
enum Norm {
    Steps(Vec<NormStep>),
    /// The crate's own normaliser (exact for any normaliser, slower).
    Crate(NormalizerWrapper),
}

fn norm_steps(v: &Value, out: &mut Vec<NormStep>) -> bool {
    match v["type"].as_str() {
        None => v.is_null(),
        Some(name @ ("NFC" | "NFKC" | "NFD" | "NFKD")) => {
            out.push(NormStep::Unicode(match name {
                "NFC" => Form::Nfc,
                "NFKC" => Form::Nfkc,
                "NFD" => Form::Nfd,
                _ => Form::Nfkd,
            }));
            true
        }
        Some("Prepend") => v["prepend"]
            .as_str()
            .map(|p| out.push(NormStep::Prepend(p.into())))
            .is_some(),
        Some("Replace") => match (v["pattern"]["String"].as_str(), v["content"].as_str()) {
            (Some(from), Some(to)) if !from.is_empty() => {
                out.push(NormStep::Replace(from.into(), to.into()));
                true
            }
            _ => false,
        },
        Some("Sequence") => v["normalizers"]
            .as_array()
            .is_some_and(|ns| ns.iter().all(|n| norm_steps(n, out))),
        Some(_) => false,
    }
}

/// Per code point: bit 0 when NFC, bit 1 when NFKC provably leaves it alone
/// in any context (combining class 0 and quick-check "Yes" in the tables of
/// the normalisation crate `tokenizers` itself uses).
static INERT: CharTable = CharTable::new(|range| {
    use unicode_normalization_alignments::char::canonical_combining_class;
    use unicode_normalization_alignments::{is_nfc_quick, is_nfkc_quick, IsNormalized};
    range
        .map(|c| match char::from_u32(c) {
            Some(c) if canonical_combining_class(c) == 0 => {
                let one = std::iter::once(c);
                u8::from(is_nfc_quick(one.clone()) == IsNormalized::Yes)
                    | (u8::from(is_nfkc_quick(one) == IsNormalized::Yes) << 1)
            }
            _ => 0,
        })
        .collect()
});

/// Whether a Unicode normal form leaves `text` unchanged: every character
/// has combining class 0 and is quick-check "Yes" (UAX #15), so the normal
/// form cannot reorder, decompose or compose anything.
fn stable_under(form: Form, text: &str) -> bool {
    if text.is_ascii() {
        return true;
    }
    let bit = match form {
        Form::Nfc => 1,
        Form::Nfkc => 2,
        Form::Nfd | Form::Nfkd => return false,
    };
    text.chars().all(|c| INERT.get(c) & bit != 0)
}

impl Norm {
    fn apply<'a>(&self, text: &'a str) -> std::result::Result<Cow<'a, str>, String> {
        match self {
            Norm::Crate(n) => {
                let mut s = NormalizedString::from(text);
                n.normalize(&mut s).map_err(|e| e.to_string())?;
                Ok(Cow::Owned(s.get().to_owned()))
            }
            Norm::Steps(steps) => {
                let mut text = Cow::Borrowed(text);
                for step in steps {
                    match step {
                        NormStep::Unicode(form) => {
                            if !stable_under(*form, &text) {
                                let s: &str = &text;
                                let out: String = match form {
                                    Form::Nfc => s.nfc().map(|(c, _)| c).collect(),
                                    Form::Nfkc => s.nfkc().map(|(c, _)| c).collect(),
                                    Form::Nfd => s.nfd().map(|(c, _)| c).collect(),
                                    Form::Nfkd => s.nfkd().map(|(c, _)| c).collect(),
                                };
                                text = Cow::Owned(out);
                            }
                        }
                        NormStep::Prepend(p) => {
                            if !text.is_empty() {
                                text = Cow::Owned(format!("{p}{text}"));
                            }
                        }
                        NormStep::Replace(from, to) => {
                            if text.contains(from.as_str()) {
                                text = Cow::Owned(text.replace(from.as_str(), to));
                            }
                        }
                    }
                }
                Ok(text)
            }
        }
    }
}

/// How a normalised segment becomes words for the BPE model.
#[derive(Clone, Copy, Debug)]
enum Words {
    /// Byte-level BPE: `prefix_space` as ByteLevel's `add_prefix_space`,
    /// then the split regex (or the whole segment).
    ByteLevel {
        prefix_space: bool,
        split: Option<SplitPattern>,
    },
    /// SentencePiece BPE. `metaspace`: spaces become `replacement`, which is
    /// prepended per `prepend` (`always`, `first`, `never`), and `split` cuts
    /// before each one. Otherwise (no pre-tokenizer) the segment is one
    /// word, cut before each `▁` run when `cut_runs` says that is exact.
    SentencePiece {
        metaspace: Option<(char, Prepend, bool)>,
        cut_runs: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Prepend {
    Always,
    First,
    Never,
}

fn words_of(pre: &Value, model: &Value) -> std::result::Result<Words, String> {
    let byte_level = |p: &Value| p["type"] == "ByteLevel";
    if pre.is_null() {
        return Ok(Words::SentencePiece {
            metaspace: None,
            cut_runs: vocab_allows_cuts(model),
        });
    }
    if byte_level(pre) {
        return Ok(Words::ByteLevel {
            prefix_space: pre["add_prefix_space"] == true,
            split: (pre["use_regex"] != false).then_some(SplitPattern::Gpt2),
        });
    }
    if pre["type"] == "Metaspace" {
        let replacement = pre["replacement"]
            .as_str()
            .and_then(|s| {
                let mut cs = s.chars();
                cs.next().filter(|_| cs.next().is_none())
            })
            .ok_or("Metaspace replacement is not one character")?;
        let prepend = match pre["prepend_scheme"].as_str() {
            Some("always") => Prepend::Always,
            Some("first") => Prepend::First,
            Some("never") => Prepend::Never,
            _ => return Err("unknown Metaspace prepend_scheme".into()),
        };
        let split = pre["split"] != false;
        return Ok(Words::SentencePiece {
            metaspace: Some((replacement, prepend, split)),
            cut_runs: !split && replacement == '\u{2581}' && vocab_allows_cuts(model),
        });
    }
    if pre["type"] == "Sequence" {
        if let Some([split, bl]) = pre["pretokenizers"].as_array().map(Vec::as_slice) {
            let pattern = split["pattern"]["Regex"]
                .as_str()
                .and_then(SplitPattern::from_regex);
            if split["type"] == "Split"
                && split["behavior"] == "Isolated"
                && split["invert"] == false
                && byte_level(bl)
                && bl["use_regex"] == false
                && bl["add_prefix_space"] != true
            {
                if let Some(p) = pattern {
                    return Ok(Words::ByteLevel {
                        prefix_space: false,
                        split: Some(p),
                    });
                }
                return Err("split regex without a fast scanner".into());
            }
        }
    }
    Err(format!("pre-tokenizer {} is not supported", pre["type"]))
}

/// The BPE model, on byte strings: for byte-level models a vocabulary token
/// is keyed by the bytes its characters stand for.
struct Bpe {
    vocab: FxHashMap<Box<[u8]>, u32>,
    merges: MergeTable,
    byte_level: bool,
    /// Byte-level: the id of each byte's character. SentencePiece: the id of
    /// each `<0xXX>` byte-fallback token (`u32::MAX` when absent).
    byte_ids: [u32; 256],
    /// Byte-level: the merge of each pair of bytes, (u32::MAX, 0) for none.
    byte_pairs: Vec<(u32, u32)>,
    unk: Option<u32>,
    fuse_unk: bool,
    byte_fallback: bool,
    ignore_merges: bool,
    /// No two vocabulary strings share an id (see [`Bpe::merge_short`]).
    unique_ids: bool,
    /// Pre-token -> ids, shared by the worker threads.
    cache: Vec<WordCache>,
    /// Byte-level: characters that start as one symbol, code point -> id.
    chars: FxHashMap<u32, u32>,
}

/// Bytes of the UTF-8 character that starts with `lead` (1 for other bytes).
fn utf8_len(lead: u8) -> usize {
    match lead {
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF7 => 4,
        _ => 1,
    }
}

/// In `Worker::bytes`, a symbol that is a whole character.
const NOT_A_BYTE: u16 = u16::MAX;

/// Whether every token made by a merge is made by exactly one, and every
/// merge comes after the merges that make its two parts (as BPE training
/// writes them). BPE then runs merges in rising rank.
/// Returns the rank that makes each merged token, when that is the case.
fn well_ordered(merges: &[(u32, u32, u32)]) -> Option<FxHashMap<u32, usize>> {
    let mut made_at: FxHashMap<u32, usize> = FxHashMap::default();
    let mut pairs = rustc_hash::FxHashSet::default();
    for (rank, &(a, b, new)) in merges.iter().enumerate() {
        if made_at.insert(new, rank).is_some() || !pairs.insert((a, b)) {
            return None;
        }
    }
    let ordered = merges.iter().enumerate().all(|(rank, (a, b, _))| {
        made_at.get(a).is_none_or(|&r| r < rank) && made_at.get(b).is_none_or(|&r| r < rank)
    });
    ordered.then_some(made_at)
}

const NONE: u32 = u32::MAX;

#[derive(Clone, Copy)]
struct Symbol {
    id: u32,
    prev: i32,
    next: i32,
    /// 0 once merged into its left neighbour.
    len: u32,
}

/// Pair -> (rank, new id): open addressing at most half full over 8-byte
/// slots (both ids and the rank packed into one word), so that the table
/// is half the size of a plain map and a lookup touches one cache line;
/// the new id comes from a table by rank.
struct MergeTable {
    slots: Vec<u64>,
    new_ids: Vec<u32>,
}

/// Bits of each id and of the rank in a slot.
const ID_BITS: u32 = 21;
const RANK_BITS: u32 = 64 - 2 * ID_BITS;
/// Ids below this fit a slot (the all-ones key marks an empty slot).
pub const MAX_FAST_IDS: u32 = (1 << ID_BITS) - 1;
const EMPTY_SLOT: u64 = u64::MAX;

impl MergeTable {
    fn with_capacity(n: usize) -> MergeTable {
        MergeTable {
            slots: vec![EMPTY_SLOT; (2 * n).next_power_of_two().max(16)],
            new_ids: Vec::with_capacity(n),
        }
    }

    #[inline]
    fn key(a: u32, b: u32) -> u64 {
        (u64::from(a) << ID_BITS) | u64::from(b)
    }

    #[inline]
    fn slot(&self, key: u64) -> usize {
        let mask = self.slots.len() - 1;
        let mut i = (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 20) as usize & mask;
        while self.slots[i] != EMPTY_SLOT && self.slots[i] >> RANK_BITS != key {
            i = (i + 1) & mask;
        }
        i
    }

    /// Adds the merge of the next rank. Later merges of the same pair
    /// replace earlier ones, as in the crate. Ids and ranks must fit.
    fn push(&mut self, a: u32, b: u32, new_id: u32) -> std::result::Result<(), String> {
        let rank = self.new_ids.len() as u64;
        if a >= MAX_FAST_IDS || b >= MAX_FAST_IDS || rank >= 1 << RANK_BITS {
            return Err(format!(
                "more than {MAX_FAST_IDS} ids or {} merges",
                1u64 << RANK_BITS
            ));
        }
        let key = Self::key(a, b);
        let i = self.slot(key);
        self.slots[i] = (key << RANK_BITS) | rank;
        self.new_ids.push(new_id);
        Ok(())
    }

    #[inline]
    fn get(&self, a: u32, b: u32) -> Option<(u32, u32)> {
        let slot = self.slots[self.slot(Self::key(a, b))];
        (slot != EMPTY_SLOT).then(|| {
            let rank = (slot & ((1 << RANK_BITS) - 1)) as u32;
            (rank, self.new_ids[rank as usize])
        })
    }
}

/// A queued merge: `rank` then `pos`, smallest first (as the crate's heap).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Merge {
    rank: u32,
    pos: u32,
    new_id: u32,
}

/// `a == b` for slices of equal length, without a call to `memcmp` for the
/// short words that make up most of a cache.
#[inline]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() > 16 {
        return a == b;
    }
    a.iter().zip(b).all(|(x, y)| x == y)
}

/// One shard of the pre-token -> ids cache shared by an encoder's threads,
/// with a hard cap: open addressing over slots that point into two arenas,
/// emptied when half the slots are used.
///
/// Readers take no lock and write nothing, so a lookup does not pull a
/// cache line over from the other core as taking a lock does (with a lock
/// per shard, two threads used up to a sixth more CPU than two processes
/// doing the same work). Writers take `fill`.
/// A slot is published by storing its hash last (release); until the shard
/// is emptied, a published slot and what it points to never change. A
/// reader that raced with an emptying sees `generation` changed (it is odd
/// while one runs) and treats its lookup as a miss. Everything shared is an
/// atomic, so a racing read is never undefined behaviour, only discarded.
#[derive(Default)]
struct WordCache {
    generation: AtomicU64,
    /// Allocated on the first insert.
    arenas: OnceLock<Arenas>,
    fill: Mutex<Fill>,
}

/// A shard's memory. Words are stored in 8-byte little-endian chunks,
/// zero-padded, each starting a chunk.
struct Arenas {
    /// Per slot: the word's hash (0 = empty), then where it lives ([`meta`]).
    slots: Box<[[AtomicU64; 2]]>,
    keys: Box<[AtomicU64]>,
    ids: Box<[AtomicU32]>,
}

/// What a shard's writers have used of it.
#[derive(Default)]
struct Fill {
    words: usize,
    key_chunks: usize,
    ids: usize,
}

/// Where a cached word lives: key chunk offset, ids offset, byte length and
/// ids length, packed (24 + 24 + 8 + 8 bits).
fn meta(key_at: usize, ids_at: usize, len: usize, n: usize) -> u64 {
    ((key_at as u64) << 40) | ((ids_at as u64) << 16) | ((len as u64) << 8) | n as u64
}

fn unmeta(m: u64) -> (usize, usize, usize, usize) {
    let f = |shift: u32, bits: u32| ((m >> shift) & ((1 << bits) - 1)) as usize;
    (f(40, 24), f(16, 24), f(8, 8), f(0, 8))
}

/// The 8-byte chunks a word is stored in.
fn chunks(word: &[u8]) -> impl Iterator<Item = u64> + '_ {
    word.chunks(8).map(|c| {
        let mut b = [0u8; 8];
        b[..c.len()].copy_from_slice(c);
        u64::from_le_bytes(b)
    })
}

/// Types whose all-zero bytes are a valid value.
trait ZeroIsValid {}
impl ZeroIsValid for AtomicU32 {}
impl ZeroIsValid for AtomicU64 {}
impl ZeroIsValid for [AtomicU64; 2] {}

/// `n` zeros from zeroed memory, which the allocator maps page by page as
/// it is first written.
fn zeroed<T: ZeroIsValid>(n: usize) -> Box<[T]> {
    // SAFETY: atomic integers have the bit validity of their integer type,
    // so all-zero memory holds zeros.
    unsafe { Box::new_zeroed_slice(n).assume_init() }
}

impl Arenas {
    fn new() -> Arenas {
        let arenas = Arenas {
            slots: zeroed(SHARD_SLOTS),
            keys: zeroed(SHARD_KEY_BYTES / 8),
            ids: zeroed(SHARD_IDS),
        };
        // Lookups read slots that no insert has written yet. A page read
        // before it is written maps the kernel's shared zero page, and the
        // later write then costs a copy and a TLB flush on every core (35 ms
        // more for a first encode of 300 documents). Writing the slots first
        // avoids that; keys and ids are read only where an insert wrote.
        arenas.empty();
        arenas
    }

    /// Marks every slot empty.
    fn empty(&self) {
        for slot in self.slots.iter() {
            slot[0].store(0, Ordering::Relaxed);
        }
    }

    /// The slot holding `word`, or the empty slot where it would go, with
    /// that slot's meta. Reads only; `None` where a racing write left
    /// something out of range.
    fn find(&self, word: &[u8], hash: u64) -> Option<(usize, u64)> {
        let mask = self.slots.len() - 1;
        let mut i = hash as usize & mask;
        for _ in 0..self.slots.len() {
            let h = self.slots[i][0].load(Ordering::Acquire);
            if h == 0 {
                return Some((i, 0));
            }
            if h == hash {
                let m = self.slots[i][1].load(Ordering::Relaxed);
                let (key_at, _, len, _) = unmeta(m);
                if len == word.len() {
                    let stored = self.keys.get(key_at..key_at + len.div_ceil(8))?;
                    if stored
                        .iter()
                        .zip(chunks(word))
                        .all(|(s, c)| s.load(Ordering::Relaxed) == c)
                    {
                        return Some((i, m));
                    }
                }
            }
            i = (i + 1) & mask;
        }
        None
    }
}

impl WordCache {
    #[inline]
    fn hash(word: &[u8]) -> u64 {
        xxhash_rust::xxh3::xxh3_64(word) | 1
    }

    /// Appends the cached ids of `word` to `out`; false on a miss.
    fn get(&self, word: &[u8], hash: u64, out: &mut Vec<u32>) -> bool {
        let Some(arenas) = self.arenas.get() else {
            return false;
        };
        let generation = self.generation.load(Ordering::Acquire);
        if generation % 2 == 1 {
            return false;
        }
        let start = out.len();
        let found = arenas
            .find(word, hash)
            .filter(|&(_, m)| m != 0)
            .and_then(|(_, m)| {
                let (_, ids_at, _, n) = unmeta(m);
                arenas.ids.get(ids_at..ids_at + n)
            })
            .map(|ids| out.extend(ids.iter().map(|id| id.load(Ordering::Relaxed))))
            .is_some();
        fence(Ordering::Acquire);
        if self.generation.load(Ordering::Relaxed) != generation {
            out.truncate(start);
            return false;
        }
        found
    }

    fn insert(&self, word: &[u8], hash: u64, ids: &[u32]) {
        let arenas = self.arenas.get_or_init(Arenas::new);
        let mut fill = self.fill.lock().unwrap_or_else(PoisonError::into_inner);
        let key_chunks = word.len().div_ceil(8);
        if fill.words >= SHARD_SLOTS / 2
            || fill.key_chunks + key_chunks > arenas.keys.len()
            || fill.ids + ids.len() > arenas.ids.len()
        {
            // Readers that overlap this see the generation change.
            let g = self.generation.load(Ordering::Relaxed);
            self.generation.store(g + 1, Ordering::Relaxed);
            fence(Ordering::Release);
            arenas.empty();
            self.generation.store(g + 2, Ordering::Release);
            *fill = Fill::default();
        }
        let Some((i, 0)) = arenas.find(word, hash) else {
            return; // already cached
        };
        // A reader that sees any of the stores below then also sees the
        // generation of the last emptying (this thread may not have done it).
        fence(Ordering::Release);
        let (key_at, ids_at) = (fill.key_chunks, fill.ids);
        for (slot, c) in arenas.keys[key_at..key_at + key_chunks]
            .iter()
            .zip(chunks(word))
        {
            slot.store(c, Ordering::Relaxed);
        }
        for (slot, &id) in arenas.ids[ids_at..ids_at + ids.len()].iter().zip(ids) {
            slot.store(id, Ordering::Relaxed);
        }
        let slot = &arenas.slots[i];
        slot[1].store(
            meta(key_at, ids_at, word.len(), ids.len()),
            Ordering::Relaxed,
        );
        slot[0].store(hash, Ordering::Release);
        fill.words += 1;
        fill.key_chunks += key_chunks;
        fill.ids += ids.len();
    }
}

/// Words and ids short enough for the hot cache.
const HOT_WORD_BYTES: usize = 13;
const HOT_IDS: usize = 4;
/// Entries of a worker's hot cache (a power of two; 40 bytes each).
pub const HOT_ENTRIES: usize = 16384;

/// A small per-thread direct-mapped cache of short, frequent words in front
/// of the shared [`WordCache`], with keys and ids inline so that a hit takes
/// no lock and touches one entry that usually sits in the CPU's own cache.
#[derive(Clone, Copy, Default)]
struct HotEntry {
    hash: u64,
    len: u8,
    n: u8,
    /// Hits minus attempts to replace it, saturating: frequent words stay.
    score: u8,
    key: [u8; HOT_WORD_BYTES],
    ids: [u32; HOT_IDS],
}

/// Per-thread state: the word caches and reusable buffers.
#[derive(Default)]
struct Worker {
    hot: Vec<HotEntry>,
    symbols: Vec<Symbol>,
    /// Byte-level: each initial symbol's byte, or NOT_A_BYTE.
    bytes: Vec<u16>,
    ids: Vec<u32>,
    ranks: Vec<u32>,
    new_ids: Vec<u32>,
    next: Vec<u32>,
    prev: Vec<u32>,
    heap: std::collections::BinaryHeap<std::cmp::Reverse<Merge>>,
}

impl Bpe {
    fn from_model(model: &Value, byte_level: bool) -> std::result::Result<Bpe, String> {
        if model["type"] != "BPE" {
            return Err(format!("model {} is not BPE", model["type"]));
        }
        if model["dropout"].as_f64().is_some_and(|d| d > 0.0) {
            return Err("BPE dropout".into());
        }
        for key in ["continuing_subword_prefix", "end_of_word_suffix"] {
            if model[key].as_str().is_some_and(|s| !s.is_empty()) {
                return Err(format!("BPE {key}"));
            }
        }
        let byte_of: FxHashMap<char, u8> = byte_chars()
            .iter()
            .enumerate()
            .map(|(b, &c)| (c, b as u8))
            .collect();
        let key = |token: &str| -> Option<Box<[u8]>> {
            if byte_level {
                token.chars().map(|c| byte_of.get(&c).copied()).collect()
            } else {
                Some(token.as_bytes().into())
            }
        };
        let vocab_json = model["vocab"].as_object().ok_or("BPE without vocab")?;
        // Byte-level words are looked up whole only with ignore_merges;
        // SentencePiece words start from their characters' ids.
        let need_vocab = !byte_level || model["ignore_merges"] == true;
        let mut by_token: FxHashMap<&str, u32> = FxHashMap::default();
        by_token.reserve(vocab_json.len());
        let mut seen = vec![false; vocab_json.len()];
        let mut unique_ids = true;
        let mut vocab = FxHashMap::default();
        for (token, id) in vocab_json {
            let id = id
                .as_u64()
                .filter(|&id| id < u64::from(MAX_FAST_IDS))
                .ok_or_else(|| format!("vocab id {id} is not a number below {MAX_FAST_IDS}"))?
                as u32;
            by_token.insert(token, id);
            let i = id as usize;
            if i >= seen.len() {
                seen.resize(i + 1, false);
            }
            unique_ids &= !std::mem::replace(&mut seen[i], true);
            if let Some(k) = key(token).filter(|_| need_vocab) {
                vocab.insert(k, id);
            }
        }
        let mut merges = MergeTable::with_capacity(model["merges"].as_array().map_or(0, Vec::len));
        let raw_merges = model["merges"].as_array().ok_or("BPE without merges")?;
        // Legacy merges are "a b" strings (a merges.txt `#version` line is skipped).
        let pairs = raw_merges
            .iter()
            .filter(|m| !m.as_str().is_some_and(|s| s.starts_with("#version")));
        let mut concat = String::new();
        let mut merge_list = Vec::new();
        for m in pairs {
            let (a, b) = match (m, m.as_array().map(Vec::as_slice)) {
                (_, Some([a, b])) => (a.as_str(), b.as_str()),
                (Value::String(s), _) => match s.split(' ').collect::<Vec<_>>()[..] {
                    [a, b] => (Some(a), Some(b)),
                    _ => (None, None),
                },
                _ => (None, None),
            };
            let (a, b) = a.zip(b).ok_or("merge is not a pair of strings")?;
            let id = |t: &str| {
                by_token
                    .get(t)
                    .copied()
                    .ok_or_else(|| format!("merge token {t:?} not in vocab"))
            };
            concat.clear();
            concat.push_str(a);
            concat.push_str(b);
            let new_id = id(&concat)?;
            let (a, b) = (id(a)?, id(b)?);
            merges.push(a, b, new_id)?;
            merge_list.push((a, b, new_id));
        }
        let mut byte_ids = [NONE; 256];
        let chars = byte_chars();
        for b in 0..256 {
            let token = if byte_level {
                chars[b].to_string()
            } else {
                format!("<0x{b:02X}>")
            };
            byte_ids[b] = by_token.get(token.as_str()).copied().unwrap_or(NONE);
        }
        if byte_level && byte_ids.contains(&NONE) {
            return Err("byte-level vocabulary lacks some of the 256 byte tokens".into());
        }
        let mut byte_pairs = Vec::new();
        if byte_level {
            byte_pairs = vec![(u32::MAX, 0); 1 << 16];
            for (i, pair) in byte_pairs.iter_mut().enumerate() {
                if let Some(m) = merges.get(byte_ids[i >> 8], byte_ids[i & 0xFF]) {
                    *pair = m;
                }
            }
        }
        let unk = match model["unk_token"].as_str() {
            Some(t) => Some(by_token.get(t).copied().ok_or("unk_token not in vocab")?),
            None => None,
        };
        let mut bpe = Bpe {
            vocab,
            merges,
            byte_level,
            byte_ids,
            byte_pairs,
            unk,
            fuse_unk: model["fuse_unk"] == true,
            byte_fallback: model["byte_fallback"] == true,
            ignore_merges: model["ignore_merges"] == true,
            unique_ids,
            cache: (0..CACHE_SHARDS).map(|_| WordCache::default()).collect(),
            chars: FxHashMap::default(),
        };
        if let Some(made_at) = well_ordered(&merge_list).filter(|_| byte_level && bpe.unique_ids) {
            let tokens = by_token
                .iter()
                .filter_map(|(t, &id)| key(t).map(|k| (k, id)));
            bpe.chars = bpe.whole_chars(tokens.collect(), &made_at);
        }
        Ok(bpe)
    }

    /// Byte-level: the multi-byte characters that can start as one symbol
    /// (their own token) instead of their bytes, without changing any ids.
    ///
    /// Given merges in which every token is made by one merge that comes
    /// after the merges making its parts ([`well_ordered`]), every merge
    /// makes pairs of higher rank only, so BPE runs merges in rising rank.
    /// Take a character whose bytes merge, alone, into one token T, made at
    /// rank r. In any text, its bytes can only join bytes outside it in a
    /// merge whose token holds part of the character next to other bytes
    /// (a token that starts or ends inside a character). If every such
    /// token is made at a rank above r, the character has become T before
    /// any of them could apply, and nothing else touched its bytes, so
    /// starting from T gives the same ids.
    fn whole_chars(
        &self,
        tokens: Vec<(Box<[u8]>, u32)>,
        made_at: &FxHashMap<u32, usize>,
    ) -> FxHashMap<u32, u32> {
        let is_cont = |b: u8| (0x80..0xC0).contains(&b);
        // Partial characters that some token holds next to other bytes,
        // with the lowest rank at which such a token is made.
        let mut suffixes: FxHashMap<Vec<u8>, usize> = FxHashMap::default();
        let mut prefixes: FxHashMap<Vec<u8>, usize> = FxHashMap::default();
        let note = |map: &mut FxHashMap<Vec<u8>, usize>, part: &[u8], id: u32| {
            let rank = made_at.get(&id).copied().unwrap_or(0);
            let at = map.entry(part.to_vec()).or_insert(rank);
            *at = (*at).min(rank);
        };
        for (t, id) in &tokens {
            let lead_cont = t.iter().take_while(|&&b| is_cont(b)).count();
            if lead_cont > 0 && lead_cont < t.len() {
                note(&mut suffixes, &t[..lead_cont], *id);
            }
            if let Some(p) = t.iter().rposition(|&b| b >= 0xC0) {
                if p > 0 && p + utf8_len(t[p]) > t.len() {
                    note(&mut prefixes, &t[p..], *id);
                }
            }
        }
        let mut worker = Worker::default();
        let mut out = Vec::new();
        let mut chars = FxHashMap::default();
        for (t, want) in &tokens {
            let Some(c) = std::str::from_utf8(t).ok().filter(|s| s.len() > 1) else {
                continue;
            };
            let mut cs = c.chars();
            let (Some(ch), None) = (cs.next(), cs.next()) else {
                continue;
            };
            let Some(&made) = made_at.get(want) else {
                continue;
            };
            let later = |map: &FxHashMap<Vec<u8>, usize>, part: &[u8]| {
                map.get(part).is_none_or(|&rank| rank > made)
            };
            if !(1..t.len()).all(|k| later(&prefixes, &t[..k]) && later(&suffixes, &t[k..])) {
                continue;
            }
            self.init_symbols(t, &mut worker);
            out.clear();
            self.merge_short(&mut worker, &mut out);
            if out == [*want] {
                chars.insert(ch as u32, *want);
            }
        }
        chars
    }

    /// Initial symbols of a word, as the crate's `merge_word` builds them.
    fn init_symbols(&self, word: &[u8], w: &mut Worker) {
        let (symbols, bytes) = (&mut w.symbols, &mut w.bytes);
        symbols.clear();
        bytes.clear();
        let push = |symbols: &mut Vec<Symbol>, id: u32, len: usize| {
            let n = symbols.len() as i32;
            symbols.push(Symbol {
                id,
                prev: n - 1,
                next: n + 1,
                len: len as u32,
            });
        };
        if self.byte_level {
            // One symbol per byte, or per character where [`Bpe::whole_chars`]
            // allows; `bytes` keeps each symbol's byte (NOT_A_BYTE for a
            // character) for the dense first lookups.
            let mut i = 0;
            while i < word.len() {
                let b = word[i];
                if b >= 0xC0 && !self.chars.is_empty() {
                    let len = utf8_len(b);
                    let id = word
                        .get(i..i + len)
                        .and_then(|c| std::str::from_utf8(c).ok())
                        .and_then(|c| c.chars().next())
                        .and_then(|c| self.chars.get(&(c as u32)));
                    if let Some(&id) = id {
                        push(symbols, id, len);
                        bytes.push(NOT_A_BYTE);
                        i += len;
                        continue;
                    }
                }
                push(symbols, self.byte_ids[b as usize], 1);
                bytes.push(u16::from(b));
                i += 1;
            }
        } else {
            let text = std::str::from_utf8(word).expect("words are cut at character boundaries");
            let mut unk: Option<(u32, usize)> = None;
            for (i, c) in text.char_indices() {
                let bytes = &word[i..i + c.len_utf8()];
                if let Some(&id) = self.vocab.get(bytes) {
                    if let Some((unk_id, unk_len)) = unk.take() {
                        push(symbols, unk_id, unk_len);
                    }
                    push(symbols, id, bytes.len());
                    continue;
                }
                if self.byte_fallback && bytes.iter().all(|&b| self.byte_ids[b as usize] != NONE) {
                    for &b in bytes {
                        push(symbols, self.byte_ids[b as usize], 1);
                    }
                    continue;
                }
                if let Some(unk_id) = self.unk {
                    unk = match unk {
                        Some((id, len)) if self.fuse_unk => Some((id, len + bytes.len())),
                        Some((id, len)) => {
                            push(symbols, id, len);
                            Some((unk_id, bytes.len()))
                        }
                        None => Some((unk_id, bytes.len())),
                    };
                }
            }
            if let Some((id, len)) = unk {
                push(symbols, id, len);
            }
        }
        if let Some(last) = symbols.last_mut() {
            last.next = -1;
        }
    }

    #[inline]
    fn merge_of(&self, a: u32, b: u32) -> Option<(u32, u32)> {
        self.merges.get(a, b)
    }

    /// Merges a short word (in `w.symbols`) into `out`: repeatedly the
    /// lowest-rank pair, leftmost first. This is what the crate's heap
    /// procedure ([`Bpe::merge_all`]) computes when no two vocabulary
    /// strings share an id: a queued merge then never applies to a pair it
    /// was not made for, because symbols only grow and the merged string
    /// starting at a position would be longer.
    fn merge_short(&self, w: &mut Worker, out: &mut Vec<u32>) {
        let n = w.symbols.len();
        let (ids, ranks, new_ids) = (&mut w.ids, &mut w.ranks, &mut w.new_ids);
        let (next, prev) = (&mut w.next, &mut w.prev);
        ids.clear();
        ids.extend(w.symbols.iter().map(|s| s.id));
        // ranks[i] / new_ids[i]: the merge of the pair starting at live
        // symbol i; next[i] / prev[i]: the live symbols around i (n /
        // u32::MAX at the ends). Dead symbols keep rank u32::MAX.
        ranks.clear();
        new_ids.clear();
        for (i, p) in ids.windows(2).enumerate() {
            // Pairs of bytes (most first pairs): one dense-table read each.
            let (rank, id) = match (w.bytes.get(i), w.bytes.get(i + 1)) {
                (Some(&a), Some(&b)) if a != NOT_A_BYTE && b != NOT_A_BYTE => {
                    self.byte_pairs[(usize::from(a) << 8) | usize::from(b)]
                }
                _ => self.merge_or_none(p[0], p[1]),
            };
            ranks.push(rank);
            new_ids.push(id);
        }
        ranks.push(u32::MAX);
        new_ids.push(0);
        next.clear();
        next.extend(1..=n as u32);
        prev.clear();
        prev.push(u32::MAX);
        prev.extend(0..n.saturating_sub(1) as u32);
        loop {
            // A plain min and a search for it: both vectorise.
            let best = ranks.iter().copied().min().unwrap_or(u32::MAX);
            if best == u32::MAX {
                break;
            }
            let at = ranks.iter().position(|&r| r == best).unwrap_or(0);
            // Merge `at` with the live symbol after it, then re-rank the
            // pairs that changed: (prev, at) and (at, next).
            let right = next[at] as usize;
            ids[at] = new_ids[at];
            ranks[right] = u32::MAX;
            next[at] = next[right];
            let after = next[at] as usize;
            (ranks[at], new_ids[at]) = if after < n {
                prev[after] = at as u32;
                self.merge_or_none(ids[at], ids[after])
            } else {
                (u32::MAX, 0)
            };
            if let Some(&before) = prev.get(at).filter(|&&p| p != u32::MAX) {
                let before = before as usize;
                (ranks[before], new_ids[before]) = self.merge_or_none(ids[before], ids[at]);
            }
        }
        let mut i = 0;
        while i < n {
            out.push(ids[i]);
            i = next[i] as usize;
        }
    }

    #[inline]
    fn merge_or_none(&self, a: u32, b: u32) -> (u32, u32) {
        self.merge_of(a, b).unwrap_or((u32::MAX, 0))
    }

    /// The crate's `Word::merge_all` without dropout.
    fn merge_all(&self, w: &mut Worker) {
        let (symbols, heap) = (&mut w.symbols, &mut w.heap);
        heap.clear();
        for (i, pair) in symbols.windows(2).enumerate() {
            if let Some((rank, new_id)) = self.merge_of(pair[0].id, pair[1].id) {
                heap.push(std::cmp::Reverse(Merge {
                    rank,
                    pos: i as u32,
                    new_id,
                }));
            }
        }
        while let Some(std::cmp::Reverse(top)) = heap.pop() {
            let pos = top.pos as usize;
            if symbols[pos].len == 0 || symbols[pos].next == -1 {
                continue;
            }
            let next_pos = symbols[pos].next as usize;
            let right = symbols[next_pos];
            if self
                .merge_of(symbols[pos].id, right.id)
                .is_none_or(|(_, id)| id != top.new_id)
            {
                continue;
            }
            symbols[pos].id = top.new_id;
            symbols[pos].len += right.len;
            symbols[pos].next = right.next;
            symbols[next_pos].len = 0;
            if right.next > -1 && (right.next as usize) < symbols.len() {
                symbols[right.next as usize].prev = pos as i32;
            }
            let current = symbols[pos];
            if current.prev >= 0 {
                let prev = current.prev as usize;
                if let Some((rank, new_id)) = self.merge_of(symbols[prev].id, current.id) {
                    heap.push(std::cmp::Reverse(Merge {
                        rank,
                        pos: prev as u32,
                        new_id,
                    }));
                }
            }
            if current.next > -1 && (current.next as usize) < symbols.len() {
                let next = current.next as usize;
                if let Some((rank, new_id)) = self.merge_of(current.id, symbols[next].id) {
                    heap.push(std::cmp::Reverse(Merge {
                        rank,
                        pos: pos as u32,
                        new_id,
                    }));
                }
            }
        }
    }

    fn make_hot(hot: &mut [HotEntry], word: &[u8], hash: u64, ids: &[u32]) {
        let e = &mut hot[hash as usize & (HOT_ENTRIES - 1)];
        if e.score > 0 {
            e.score -= 1;
            return;
        }
        e.hash = hash;
        e.score = 1;
        e.len = word.len() as u8;
        e.n = ids.len() as u8;
        e.key[..word.len()].copy_from_slice(word);
        e.ids[..ids.len()].copy_from_slice(ids);
    }

    /// Appends the ids of one word (a pre-token) to `out`.
    fn encode_word(&self, word: &[u8], w: &mut Worker, out: &mut Vec<u32>) {
        if word.is_empty() {
            return;
        }
        if self.byte_level && word.len() == 1 {
            out.push(self.byte_ids[word[0] as usize]);
            return;
        }
        if self.ignore_merges {
            if let Some(&id) = self.vocab.get(word) {
                out.push(id);
                return;
            }
        }
        let cacheable = word.len() <= CACHE_WORD_BYTES;
        let hash = if cacheable { WordCache::hash(word) } else { 0 };
        let hot = word.len() <= HOT_WORD_BYTES;
        if hot {
            if w.hot.is_empty() {
                w.hot = vec![HotEntry::default(); HOT_ENTRIES];
            }
            let e = &mut w.hot[hash as usize & (HOT_ENTRIES - 1)];
            if e.hash == hash
                && usize::from(e.len) == word.len()
                && same_bytes(&e.key[..word.len()], word)
            {
                e.score = e.score.saturating_add(1);
                out.extend_from_slice(&e.ids[..usize::from(e.n)]);
                return;
            }
        }
        let shard = &self.cache[(hash >> 60) as usize % CACHE_SHARDS];
        let start = out.len();
        if cacheable && shard.get(word, hash, out) {
            if hot && out.len() - start <= HOT_IDS {
                Self::make_hot(&mut w.hot, word, hash, &out[start..]);
            }
            return;
        }
        self.init_symbols(word, w);
        if self.unique_ids && w.symbols.len() <= SHORT_WORD_SYMBOLS {
            self.merge_short(w, out);
        } else {
            self.merge_all(w);
            out.extend(w.symbols.iter().filter(|s| s.len > 0).map(|s| s.id));
        }
        if hot && out.len() - start <= HOT_IDS {
            Self::make_hot(&mut w.hot, word, hash, &out[start..]);
        }
        if cacheable {
            shard.insert(word, hash, &out[start..]);
        }
    }
}

/// Whether no vocabulary token holds `▁` right after another character, so
/// no merge can join text across the start of a `▁` run.
fn vocab_allows_cuts(model: &Value) -> bool {
    model["vocab"]
        .as_object()
        .is_some_and(|v| v.contains_key("\u{2581}") && no_space_after_char(v.keys()))
}

/// Whether no token holds `▁` right after a character other than `▁`.
pub fn no_space_after_char<'a>(tokens: impl IntoIterator<Item = &'a String>) -> bool {
    tokens.into_iter().all(|t| {
        let mut prev = None;
        t.chars().all(|c| {
            let ok = c != '\u{2581}' || prev.is_none_or(|p| p == '\u{2581}');
            prev = Some(c);
            ok
        })
    })
}

/// The `added_tokens` of a tokenizer.json, read as the `tokenizers` crate reads them.
pub fn added_tokens(raw: &Value) -> std::result::Result<Vec<AddedToken>, String> {
    match raw.get("added_tokens") {
        Some(tokens) if !tokens.is_null() => {
            Vec::<AddedToken>::deserialize(tokens).map_err(|e| format!("added_tokens: {e}"))
        }
        _ => Ok(Vec::new()),
    }
}

/// The fast encoder of one tokenizer (see the module docs). [`FastBpe::encode`]
/// asks for the `tokenizers` object of the same file only for the
/// added-token split.
pub struct FastBpe {
    norm: Norm,
    words: Words,
    bpe: Bpe,
    /// Finds any added token's text.
    added: Option<AhoCorasick>,
    workers: ThreadLocal<RefCell<Worker>>,
}

impl FastBpe {
    /// Builds the fast encoder from a parsed tokenizer.json, or says why it
    /// cannot. It needs no `tokenizers` object (a load on the fast path builds
    /// none): the normaliser, pre-tokenizer and added tokens go through the
    /// crate's own serde types, read as the crate reads them.
    pub fn new(raw: &Value) -> std::result::Result<FastBpe, String> {
        let model = &raw["model"];
        // Files without a model "type" are told apart by their fields, as the
        // crate does: of its models only BPE has merges.
        let bpe = model["type"]
            .as_str()
            .map_or(model.get("merges").is_some(), |t| t == "BPE");
        if !bpe {
            return Err("model is not BPE".into());
        }
        let normalizer = Option::<NormalizerWrapper>::deserialize(&raw["normalizer"])
            .map_err(|e| format!("normalizer: {e}"))?;
        let norm_json = serde_json::to_value(&normalizer).map_err(|e| e.to_string())?;
        let mut steps = Vec::new();
        let norm = if norm_steps(&norm_json, &mut steps) {
            Norm::Steps(steps)
        } else {
            Norm::Crate(normalizer.clone().expect("a non-null normaliser"))
        };
        let pre = Option::<PreTokenizerWrapper>::deserialize(&raw["pre_tokenizer"])
            .map_err(|e| format!("pre_tokenizer: {e}"))?;
        let pre = serde_json::to_value(&pre).map_err(|e| e.to_string())?;
        let words = words_of(&pre, model)?;
        // The character tables this tokenizer needs (tens of milliseconds,
        // once per process) are built while the model loads; the thread is
        // joined here, so none is left running (a fork stays safe).
        let classes = matches!(words, Words::ByteLevel { split: Some(_), .. });
        let inert = matches!(&norm, Norm::Steps(steps)
            if steps.iter().any(|s| matches!(s, NormStep::Unicode(Form::Nfc | Form::Nfkc))));
        let bpe = std::thread::scope(|s| {
            s.spawn(|| {
                if classes {
                    CLASSES.warm();
                }
                if inert {
                    INERT.warm();
                }
            });
            Bpe::from_model(model, matches!(words, Words::ByteLevel { .. }))
        })?;
        // Every added token's text, and for `normalized` ones also their
        // normalised text, which is what the crate matches in normalised text.
        let mut contents: Vec<String> = Vec::new();
        for t in added_tokens(raw)? {
            contents.push(t.content.clone());
            if let (true, Some(n)) = (t.normalized, &normalizer) {
                let mut s = NormalizedString::from(t.content.as_str());
                n.normalize(&mut s).map_err(|e| e.to_string())?;
                contents.push(s.get().to_owned());
            }
        }
        contents.retain(|c| !c.is_empty());
        let added = if contents.is_empty() {
            None
        } else {
            Some(AhoCorasick::new(&contents).map_err(|e| e.to_string())?)
        };
        Ok(FastBpe {
            norm,
            words,
            bpe,
            added,
            workers: ThreadLocal::new(),
        })
    }

    fn may_hold_added(&self, text: &str) -> bool {
        self.added.as_ref().is_some_and(|ac| ac.is_match(text))
    }

    /// Ids of `text` without BOS/EOS: equal to the crate's
    /// `encode_fast(text, false)` on the same tokenizer. `tokenizer` gives
    /// that tokenizer (set up for how special tokens are treated); it is
    /// called only for a text that may hold an added token's string.
    pub fn encode<'t>(
        &self,
        tokenizer: impl FnOnce() -> std::result::Result<&'t Tokenizer, String>,
        text: &str,
    ) -> std::result::Result<Vec<u32>, String> {
        let mut out = Vec::with_capacity(text.len() / 3 + 1);
        let worker = self.workers.get_or_default();
        let w = &mut *worker.borrow_mut();
        if !self.may_hold_added(text) {
            let normalized = self.norm.apply(text)?;
            let changed = matches!(normalized, Cow::Owned(_));
            if !changed || !self.may_hold_added(&normalized) {
                self.encode_segment(&normalized, true, w, &mut out);
                return Ok(out);
            }
        }
        let tokenizer = tokenizer()?;
        let pre = tokenizer
            .get_added_vocabulary()
            .extract_and_normalize(tokenizer.get_normalizer(), text);
        for (segment, (start, _), tokens) in
            pre.get_splits(OffsetReferential::Original, OffsetType::Byte)
        {
            match tokens {
                Some(tokens) => out.extend(tokens.iter().map(|t| t.id)),
                None => self.encode_segment(segment, start == 0, w, &mut out),
            }
        }
        Ok(out)
    }

    /// Encodes one normalised segment; `first` says it starts the text.
    fn encode_segment(&self, text: &str, first: bool, w: &mut Worker, out: &mut Vec<u32>) {
        if text.is_empty() {
            return;
        }
        match self.words {
            Words::ByteLevel {
                prefix_space,
                split,
            } => {
                let text: Cow<str> = if prefix_space && !text.starts_with(' ') {
                    Cow::Owned(format!(" {text}"))
                } else {
                    Cow::Borrowed(text)
                };
                match split {
                    Some(pattern) => {
                        let scanner = Scanner::new(&text);
                        let bytes = text.as_bytes();
                        scanner.split(pattern, |s, e| self.bpe.encode_word(&bytes[s..e], w, out));
                    }
                    None => self.bpe.encode_word(text.as_bytes(), w, out),
                }
            }
            Words::SentencePiece {
                metaspace,
                cut_runs,
            } => {
                let mut text = Cow::Borrowed(text);
                let mut split = false;
                if let Some((rep, prepend, s)) = metaspace {
                    split = s;
                    if text.contains(' ') {
                        text = Cow::Owned(text.replace(' ', rep.encode_utf8(&mut [0; 4])));
                    }
                    let add = match prepend {
                        Prepend::Always => true,
                        Prepend::First => first,
                        Prepend::Never => false,
                    };
                    if add && !text.starts_with(rep) {
                        text = Cow::Owned(format!("{rep}{text}"));
                    }
                }
                let bytes = text.as_bytes();
                if split {
                    let rep = metaspace.map(|m| m.0).expect("split only with Metaspace");
                    let mut start = 0;
                    for (i, _) in text.match_indices(rep) {
                        if i > start {
                            self.bpe.encode_word(&bytes[start..i], w, out);
                        }
                        start = i;
                    }
                    self.bpe.encode_word(&bytes[start..], w, out);
                } else if cut_runs {
                    // Words are `▁*` followed by non-`▁` characters.
                    const RUN: &str = "\u{2581}";
                    let mut start = 0;
                    let mut in_run = text.starts_with(RUN);
                    for (i, c) in text.char_indices() {
                        let space = c == '\u{2581}';
                        if space && !in_run && i > start {
                            self.bpe.encode_word(&bytes[start..i], w, out);
                            start = i;
                        }
                        in_run = space;
                    }
                    self.bpe.encode_word(&bytes[start..], w, out);
                } else {
                    self.bpe.encode_word(bytes, w, out);
                }
            }
        }
    }
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

    /// Threads that look words up while others insert them, through many
    /// emptyings of the shard: a hit always gives that word's own ids.
    #[test]
    fn word_cache_hits_give_the_words_own_ids_under_concurrent_inserts() {
        let cache = WordCache::default();
        // Lengths 2..=129 bytes (129 is past CACHE_WORD_BYTES but the shard
        // itself takes any word that fits); ids 1..=9 per word.
        let word = |i: u32| format!("{i:x}:{}", "a".repeat((i % 120) as usize)).into_bytes();
        let ids = |i: u32| (0..i % 9 + 1).map(|k| i * 16 + k).collect::<Vec<u32>>();
        let words = 4 * SHARD_SLOTS as u32; // eight times what a shard holds
        let (hits, inserts) = std::thread::scope(|s| {
            let workers: Vec<_> = (0..3u32)
                .map(|t| {
                    let (cache, word, ids) = (&cache, &word, &ids);
                    s.spawn(move || {
                        let (mut hits, mut inserts, mut out) = (0, 0, Vec::new());
                        for n in 0..words {
                            // Each thread walks the words in its own order,
                            // going back over recent ones so that some hit.
                            let i = (n.wrapping_mul(2 * t + 1) / 2) % words;
                            let w = word(i);
                            let h = WordCache::hash(&w);
                            out.clear();
                            if cache.get(&w, h, &mut out) {
                                assert_eq!(out, ids(i), "word {i}");
                                hits += 1;
                            } else {
                                assert!(out.is_empty());
                                cache.insert(&w, h, &ids(i));
                                inserts += 1;
                            }
                        }
                        (hits, inserts)
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|h| h.join().unwrap())
                .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
        });
        assert!(hits > words as usize / 4, "{hits} hits");
        assert!(
            cache.generation.load(Ordering::Relaxed) >= 2 * 8,
            "shard never emptied"
        );
        assert!(inserts > 0);
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
