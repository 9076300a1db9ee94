//! The fast tokenization backend: BPE for the common LLM tokenizer families,
//! with ids identical to the `tokenizers` crate for the same tokenizer.json.
//!
//! Supported (anything else makes [`FastBpe::new`] say why, and the caller
//! uses the `tokenizers` crate instead):
//! * model: BPE without dropout, subword prefix or word suffix (unk,
//!   `fuse_unk`, `byte_fallback`, `ignore_merges` as the crate does them);
//! * pre-tokenizer: byte-level with the GPT-2 regex; or isolating Splits on
//!   the regexes of [`super::split`] and `Digits`, then byte-level (GPT-2,
//!   cl100k as LLaMA-3 and tiktoken write it, o200k, Qwen2/2.5/3/3.5, Tekken,
//!   DeepSeek-V3, SmolLM); none or `Metaspace` (SentencePiece BPE: LLaMA-2,
//!   Mistral), or a Split on " " that finds no space (Gemma). Byte-level vocabularies may lack byte tokens (StarCoder):
//!   such a byte is dropped, or becomes unk or byte fallback, as in the crate;
//! * any normaliser: NFC/NFKC/NFD/NFKD, `Prepend` and string `Replace` are done
//!   here, others by the crate's own normaliser object.
//!
//! Where the speed comes from: the split regexes are hand-written scanners
//! over character-class tables generated from the reference engine's own
//! regex library (Oniguruma) and checked against it by a test, so a class
//! cannot disagree with it; BPE merges the lowest-rank pair, leftmost first,
//! exactly as the crate does (a vectorised scan for words of up to 256
//! symbols, the crate's own heap procedure beyond), on ids, without offsets
//! or strings, starting byte-level words from whole-character tokens where
//! that provably changes nothing ([`Bpe::whole_chars`]); pre-token -> ids go
//! through a per-thread hot cache and a capped cache shared by the threads.
//! A byte-level word found in neither is cut into parts where no vocabulary
//! token spans the cut (see `joins`), and the parts, which recur where the
//! word does not, go through the caches in its place. SentencePiece text
//! without a pre-tokenizer is cut before each `▁` run when no vocabulary
//! token holds `▁` after another character (then no merge can cross the
//! cut), which makes its words cacheable and its cost linear; and around
//! each character no merge joins to a neighbour (LLaMA-2's and Mistral's
//! newline, digits and most CJK characters, see [`Bpe::isolated_chars`]).
//! Their `Prepend`/`Replace` normaliser is not run on texts without added
//! tokens ([`FastBpe::encode_spaced`]).
//!
//! Added tokens: a document in which no added token's text occurs (checked
//! with one Aho-Corasick scan, before and after normalisation) takes the
//! fast path whole; any other document is split into added tokens and
//! normalised segments by the crate's own `AddedVocabulary`, and only the
//! segments are encoded here.

use std::borrow::Cow;
use std::cell::RefCell;
use std::ops::Range;

use aho_corasick::AhoCorasick;
use serde::Deserialize;
use serde_json::Value;
use thread_local::ThreadLocal;
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{
    AddedToken, NormalizedString, Normalizer, OffsetReferential, OffsetType, Tokenizer,
};

use super::bpe::{Bpe, Worker};
use super::cache::WordCache;
use super::json::TokenizerFile;
use super::normalize::{norm_steps, Form, Norm, NormStep, INERT};
use super::split::{Scanner, SplitPattern, CLASSES};
use super::words::{words_of, Prepend, Words};

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
    /// Finds any added token's text; `added_plain` that of any added token
    /// that is not special. The crate splits out only those when special
    /// tokens are encoded as text (the default): it skips each match of a
    /// special token, so a text holding no plain token's string, before or
    /// after normalisation, is encoded whole.
    added: Option<AhoCorasick>,
    added_plain: Option<AhoCorasick>,
    /// LLaMA-2's and Mistral's normaliser (`Prepend` "▁", then `Replace`
    /// " " by "▁") before SentencePiece words, and no added token holds a
    /// space or "▁": texts without added tokens are encoded from their own
    /// bytes ([`FastBpe::encode_spaced`]).
    spaced: bool,
    workers: ThreadLocal<RefCell<Worker>>,
}

/// The replacement character of SentencePiece and of its normalisers.
const METASPACE: char = '\u{2581}';

impl FastBpe {
    /// The encoder with `cache` as its word cache (see [`WordCache::allocated`]).
    pub(super) fn with_cache(self, cache: WordCache) -> FastBpe {
        FastBpe {
            bpe: self.bpe.with_cache(cache),
            ..self
        }
    }

    /// Builds the fast encoder from a parsed tokenizer.json, or says why it
    /// cannot. It needs no `tokenizers` object (a load on the fast path builds
    /// none): the normaliser, pre-tokenizer and added tokens go through the
    /// crate's own serde types, read as the crate reads them.
    pub fn new(file: &TokenizerFile) -> std::result::Result<FastBpe, String> {
        let (raw, model) = (&file.raw, file.model());
        // Files without a model "type" are told apart by their fields, as the
        // crate does: of its models only BPE has merges.
        let bpe = model["type"]
            .as_str()
            .map_or(file.merges.is_some(), |t| t == "BPE");
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
        // Normalised text holds no space when the last step replaces them
        // all (Gemma), so a Split on " " cuts nothing there.
        let no_spaces = matches!(&norm, Norm::Steps(steps)
            if matches!(steps.last(), Some(NormStep::Replace(from, to)) if from == " " && !to.contains(' ')));
        let words = words_of(&pre, file.vocab.as_deref(), no_spaces)?;
        // The character tables this tokenizer needs (the NFC table takes
        // tens of milliseconds, once per process) are built while the model
        // loads; the thread is joined here, so none is left running (a fork
        // stays safe).
        let classes = matches!(&words, Words::ByteLevel { splits, .. } if !splits.is_empty());
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
            Bpe::from_model(file, matches!(words, Words::ByteLevel { .. }))
        })?;
        // Every added token's text, and for `normalized` ones also their
        // normalised text, which is what the crate matches in normalised
        // text; the same for the tokens that are not special.
        let (mut contents, mut plain): (Vec<String>, Vec<String>) = (Vec::new(), Vec::new());
        for t in added_tokens(raw)? {
            let mut texts = vec![t.content.clone()];
            if let (true, Some(n)) = (t.normalized, &normalizer) {
                let mut s = NormalizedString::from(t.content.as_str());
                n.normalize(&mut s).map_err(|e| e.to_string())?;
                texts.push(s.get().to_owned());
            }
            texts.retain(|c| !c.is_empty());
            if !t.special {
                plain.extend(texts.iter().cloned());
            }
            contents.extend(texts);
        }
        let rep = METASPACE.to_string();
        let spaced = matches!(&norm, Norm::Steps(steps) if matches!(&steps[..],
            [NormStep::Prepend(p), NormStep::Replace(from, to)] if *p == rep && from == " " && *to == rep))
            && matches!(
                words,
                Words::SentencePiece {
                    metaspace: None,
                    ..
                }
            )
            && !contents.iter().any(|c| c.contains([' ', METASPACE]));
        let finder = |texts: &[String]| match texts {
            [] => Ok(None),
            _ => AhoCorasick::new(texts).map(Some).map_err(|e| e.to_string()),
        };
        Ok(FastBpe {
            norm,
            words,
            bpe,
            added: finder(&contents)?,
            added_plain: finder(&plain)?,
            spaced,
            workers: ThreadLocal::new(),
        })
    }

    /// Whether `text` may hold the string of an added token that the crate
    /// splits out: any one's when `parse_special`, else a plain one's.
    fn may_hold_added(&self, text: &str, parse_special: bool) -> bool {
        let finder = if parse_special {
            &self.added
        } else {
            &self.added_plain
        };
        finder.as_ref().is_some_and(|ac| ac.is_match(text))
    }

    /// Ids of `text` without BOS/EOS: equal to the crate's
    /// `encode_fast(text, false)` on the same tokenizer, with special tokens
    /// encoded as text unless `parse_special`. `tokenizer` gives that
    /// tokenizer (set up alike); it is called only for a text that may hold
    /// the string of an added token it splits out.
    pub fn encode<'t>(
        &self,
        tokenizer: impl FnOnce() -> std::result::Result<&'t Tokenizer, String>,
        text: &str,
        parse_special: bool,
    ) -> std::result::Result<Vec<u32>, String> {
        let mut out = Vec::with_capacity(text.len() / 3 + 1);
        let worker = self.workers.get_or_default();
        let w = &mut *worker.borrow_mut();
        if !self.may_hold_added(text, parse_special) {
            if self.spaced {
                self.encode_spaced(text, w, &mut out);
                return Ok(out);
            }
            let normalized = self.norm.apply(text)?;
            let changed = matches!(normalized, Cow::Owned(_));
            if !changed || !self.may_hold_added(&normalized, parse_special) {
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
        let mut words = std::mem::take(&mut w.words);
        words.clear();
        let text = self.words_of_segment(text, first, &mut words);
        self.bpe.encode_words(text.as_bytes(), &words, None, w, out);
        w.words = words;
    }

    /// Encodes a text without added tokens as [`FastBpe::encode_segment`]
    /// encodes it normalised, where the normaliser only prepends "▁" and
    /// turns spaces into "▁" (`spaced`), without writing the normalised
    /// text: the words are cut in the text itself, each space standing for
    /// the "▁" it becomes, and only the first word, which takes the
    /// prepended "▁", is written out. (Were "▁" cut around, the normalised
    /// text would start with it as a word of its own; joining it to the
    /// first word changes no ids.) Two words with the same bytes have the
    /// same normalised form, which is what the caches need.
    fn encode_spaced(&self, text: &str, w: &mut Worker, out: &mut Vec<u32>) {
        let mut words = std::mem::take(&mut w.words);
        words.clear();
        let chars = text
            .char_indices()
            .map(|(i, c)| (i, if c == ' ' { METASPACE } else { c }, c.len_utf8()));
        let cut_runs = matches!(self.words, Words::SentencePiece { cut_runs: true, .. });
        self.cut_words(chars, METASPACE, false, cut_runs, |word| words.push(word));
        let mut buf = [0; 4];
        let rep = &*METASPACE.encode_utf8(&mut buf);
        if let Some((first, rest)) = words.split_first() {
            let head = format!("{rep}{}", text[first.clone()].replace(' ', rep));
            let whole = 0..head.len();
            let bpe = &self.bpe;
            bpe.encode_words(head.as_bytes(), std::slice::from_ref(&whole), None, w, out);
            bpe.encode_words(text.as_bytes(), rest, Some(rep), w, out);
        }
        w.words = words;
    }

    /// Cuts a normalised segment into the words BPE merges within, as byte
    /// ranges of the returned text (the segment, or what the pre-tokenizer
    /// made of it).
    fn words_of_segment<'s>(
        &self,
        text: &'s str,
        first: bool,
        words: &mut Vec<Range<usize>>,
    ) -> Cow<'s, str> {
        match &self.words {
            Words::ByteLevel {
                prefix_space,
                splits,
            } => {
                let text: Cow<str> = if *prefix_space && !text.starts_with(' ') {
                    Cow::Owned(format!(" {text}"))
                } else {
                    Cow::Borrowed(text)
                };
                split_all(&text, 0, splits, &mut |word| words.push(word));
                text
            }
            &Words::SentencePiece {
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
                let rep = metaspace.map_or(METASPACE, |m| m.0);
                let chars = text.char_indices().map(|(i, c)| (i, c, c.len_utf8()));
                self.cut_words(chars, rep, split, cut_runs, |word| words.push(word));
                text
            }
        }
    }

    /// Cuts SentencePiece text into words: before each replacement
    /// character `rep` (`split`), or before each run of them (`cut_runs`:
    /// words are `rep*` and then other characters), and around each
    /// isolated character. `chars` gives each character's byte offset, the
    /// character the model sees there (a space is "▁" to it when the
    /// normaliser has not run) and its length in the text; `f` gets the
    /// words as byte ranges.
    fn cut_words(
        &self,
        chars: impl Iterator<Item = (usize, char, usize)>,
        rep: char,
        split: bool,
        cut_runs: bool,
        mut f: impl FnMut(Range<usize>),
    ) {
        let (mut word, mut in_run): (Option<Range<usize>>, bool) = (None, false);
        for (i, c, len) in chars {
            let space = c == rep;
            let alone = self.bpe.isolated(c);
            if alone || space && (split || cut_runs && !in_run) {
                if let Some(word) = word.take() {
                    f(word);
                }
            }
            if alone {
                f(i..i + len);
            } else {
                word = Some(word.map_or(i, |w| w.start)..i + len);
            }
            in_run = space;
        }
        if let Some(word) = word {
            f(word);
        }
    }
}

/// Cuts `text` by each of `splits` in turn (each cutting the pieces of the
/// one before) and hands over the final pieces as byte ranges, in order,
/// offset by `base`.
fn split_all(text: &str, base: usize, splits: &[SplitPattern], f: &mut dyn FnMut(Range<usize>)) {
    let Some((&first, rest)) = splits.split_first() else {
        f(base..base + text.len());
        return;
    };
    let scanner = Scanner::new(text);
    if rest.is_empty() {
        scanner.split(first, |s, e| f(base + s..base + e));
    } else {
        scanner.split(first, |s, e| split_all(&text[s..e], base + s, rest, f));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    /// A LLaMA-2-style SentencePiece tokenizer.json (the legacy
    /// Prepend/Replace normaliser, no pre-tokenizer): `<unk>`, the
    /// byte-fallback tokens of `bytes`, "▁", "a", "b", "中" and the given
    /// merges.
    fn sentencepiece(bytes: impl Iterator<Item = u8>, merges: &[(&str, &str)]) -> String {
        let mut vocab = serde_json::Map::new();
        let tokens = ["<unk>".to_string()]
            .into_iter()
            .chain(bytes.map(|b| format!("<0x{b:02X}>")))
            .chain(["\u{2581}", "a", "b", "中"].map(String::from))
            .chain(merges.iter().map(|(a, b)| format!("{a}{b}")));
        for t in tokens {
            let id = vocab.len();
            vocab.entry(t).or_insert(Value::from(id));
        }
        serde_json::json!({
            "version": "1.0",
            "added_tokens": [],
            "normalizer": {"type": "Sequence", "normalizers": [
                {"type": "Prepend", "prepend": "\u{2581}"},
                {"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"}]},
            "pre_tokenizer": null,
            "post_processor": null,
            "decoder": null,
            "model": {"type": "BPE", "dropout": null, "unk_token": "<unk>",
                      "continuing_subword_prefix": null, "end_of_word_suffix": null,
                      "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
                      "vocab": vocab, "merges": merges},
        })
        .to_string()
    }

    /// The fast engine for `json`, after checking its ids against the
    /// crate's on each of `texts`.
    fn checked(json: &str, texts: &[&str]) -> FastBpe {
        let fast = FastBpe::new(&TokenizerFile::parse(json).unwrap()).unwrap();
        let reference = Tokenizer::from_str(json).unwrap();
        for text in texts {
            let want = reference
                .encode_fast(*text, false)
                .unwrap()
                .get_ids()
                .to_vec();
            assert_eq!(
                fast.encode(|| Ok(&reference), text, true).unwrap(),
                want,
                "{text:?}"
            );
        }
        fast
    }

    /// The characters of `chars` the engine cuts around, after checking its
    /// ids against the crate's on each of `texts`.
    fn isolated_checked(json: &str, texts: &[&str], chars: &str) -> String {
        let fast = checked(json, texts);
        chars.chars().filter(|&c| fast.bpe.isolated(c)).collect()
    }

    #[test]
    fn sentencepiece_words_are_cut_only_around_characters_no_merge_joins() {
        let texts = [
            "ab\nab a\n\nb",
            "\na\n",
            "b\n\u{1}\na",
            "\u{1}\nb\u{1}",
            "ca\tb  a\u{1}b",
            "中b文b中a\n文 文\u{1}中",
        ];
        let chars = "\n\t\u{1}abc中文";
        // Every byte falls back: characters outside the merges are isolated,
        // whether a token ("中") or byte-fallback tokens ("\n", "文").
        let merges = [("\u{2581}", "a"), ("a", "b")];
        let all = sentencepiece(0..=255, &merges);
        assert_eq!(isolated_checked(&all, &texts, chars), "\n\t\u{1}c中文");
        // Merges that take the newline's fallback token, 文's last one or
        // the token 中 keep them joined.
        let merges = [
            ("\u{2581}", "a"),
            ("a", "b"),
            ("<0x0A>", "a"),
            ("<0x87>", "b"),
            ("中", "b"),
        ];
        let joined = sentencepiece(0..=255, &merges);
        assert_eq!(isolated_checked(&joined, &texts, chars), "\t\u{1}c");
        // With a byte's fallback token missing, a character can become
        // unknown, and the crate puts a pending unknown token after later
        // fallback tokens: only characters that are tokens stay isolated.
        let merges = [("\u{2581}", "a")];
        let some = sentencepiece((0..=255).filter(|&b| b != 1), &merges);
        assert_eq!(isolated_checked(&some, &texts, chars), "b中");
    }

    /// With LLaMA-2's normaliser, texts are encoded from their own bytes
    /// (`spaced`) with the crate's ids: spaces at either end and in runs,
    /// "▁" in the text, "▁" cut around (no merge takes it) or not, and
    /// isolated characters first. An added token that is normalised (its
    /// normalised text starts with "▁") turns that off.
    #[test]
    fn sentencepiece_texts_encoded_before_normalising_keep_their_ids() {
        let texts = [
            "",
            " ",
            "a",
            " a",
            "  ab ",
            "\u{2581}a b\u{2581}\u{2581}",
            "\u{2581} \u{2581}b",
            "\nab",
            "中 b\n a",
            "ab  \u{1}",
        ];
        let merge_sets: [&[(&str, &str)]; 3] = [
            &[("\u{2581}", "a"), ("a", "b")],
            &[("a", "b")],
            &[
                ("\u{2581}", "\u{2581}"),
                ("\u{2581}\u{2581}", "a"),
                ("a", "b"),
            ],
        ];
        for merges in merge_sets {
            let json = sentencepiece(0..=255, merges);
            assert!(checked(&json, &texts).spaced, "{merges:?}");
            let mut added: Value = serde_json::from_str(&json).unwrap();
            added["added_tokens"] = serde_json::json!([{"id": 1000, "content": "ab",
                "single_word": false, "lstrip": false, "rstrip": false,
                "normalized": true, "special": false}]);
            assert!(!checked(&added.to_string(), &texts).spaced, "{merges:?}");
        }
    }

    /// A byte-level tokenizer.json (no regex) with the merges of byte strings
    /// `merges`, written in byte characters.
    fn byte_level(merges: &[(&[u8], &[u8])]) -> Value {
        let chars = super::super::byte_chars();
        let text = |b: &[u8]| b.iter().map(|&x| chars[usize::from(x)]).collect::<String>();
        let merges: Vec<String> = merges
            .iter()
            .map(|(a, b)| format!("{} {}", text(a), text(b)))
            .collect();
        super::super::test_byte_level(&merges, false)
    }

    #[test]
    fn special_token_strings_as_text_need_no_crate_object() {
        let mut raw = byte_level(&[(b"<", b"s"), (b"<s", b">"), (b"s", b">")]);
        let added = |id: usize, content: &str, special: bool| {
            serde_json::json!({"id": id, "content": content, "single_word": false,
                               "lstrip": false, "rstrip": false, "normalized": false,
                               "special": special})
        };
        let n = raw["model"]["vocab"].as_object().unwrap().len();
        raw["added_tokens"] = serde_json::json!([
            added(n, "<s>", true),
            added(n + 1, "[SUFFIX]", true),
            added(n + 2, "s>x", false),
        ]);
        let json = raw.to_string();
        let fast = FastBpe::new(&TokenizerFile::parse(&json).unwrap()).unwrap();
        let mut as_text = Tokenizer::from_str(&json).unwrap();
        as_text.set_encode_special_tokens(true);
        let parsed = Tokenizer::from_str(&json).unwrap();
        let want =
            |t: &Tokenizer, text: &str| t.encode_fast(text, false).unwrap().get_ids().to_vec();
        let unused = || -> std::result::Result<&Tokenizer, String> { Err("asked for".into()) };
        // Only special tokens' strings: encoded whole, without the crate.
        for text in ["a <s> b", "<s>[SUFFIX]<s", "x[SUFFIX]"] {
            assert_eq!(
                fast.encode(unused, text, false).unwrap(),
                want(&as_text, text),
                "{text}"
            );
            // Parsed as special tokens, they need the crate's split.
            assert!(fast.encode(unused, text, true).is_err(), "{text}");
            assert_eq!(
                fast.encode(|| Ok(&parsed), text, true).unwrap(),
                want(&parsed, text)
            );
        }
        // A plain added token's string goes through the crate either way;
        // in "<s>x" its match is hidden by the skipped "<s>" before it.
        for text in ["a s>x b", "<s>x", "[SUFFIX]s>x"] {
            assert!(fast.encode(unused, text, false).is_err(), "{text}");
            assert_eq!(
                fast.encode(|| Ok(&as_text), text, false).unwrap(),
                want(&as_text, text)
            );
            assert_eq!(
                fast.encode(|| Ok(&parsed), text, true).unwrap(),
                want(&parsed, text)
            );
        }
    }

    #[test]
    fn byte_level_characters_start_whole_only_where_no_merge_reaches_into_them() {
        // Merges in no order among themselves, as converted from tiktoken
        // ranks: 中 = e4 b8 ad, 文 = e6 96 87, 字 = e5 ad 97, 用 = e7 94 a8,
        // 大 = e5 a4 a7, 上 = e4 b8 8a.
        let merges: [(&[u8], &[u8]); 21] = [
            // Never across a character boundary: a token ending in a lead
            // byte on the left, one starting with a continuation byte on the
            // right.
            (b"\xe4", b"\xe4"),
            (b"\xad", b"\x80"),
            (b"\xe4", b"\xb8"),
            (b"\xe4\xb8", b"\xad"),
            (b"\xe6", b"\x96"),
            // After "a", 文's first byte joins "a" only below its first merge
            // (harmless), but its first two join "a" below its last.
            (b"a", b"\xe6"),
            (b"a", b"\xe6\x96"),
            // 中 joins "a" only above the merges making it.
            (b"a", "中".as_bytes()),
            (b"\xe6\x96", b"\x87"),
            (b"\xe5", b"\xad"),
            // 字 joins "b" below its last merge: "字bc" gives 字 + bc.
            ("字".as_bytes(), b"b"),
            // 用's last merge ranks below its first; 用 joins "b" between
            // them, below "bc": "用bc" gives 用 + bc.
            (b"\xe7\x94", b"\xa8"),
            ("用".as_bytes(), b"b"),
            (b"b", b"c"),
            (b"\xe5\xad", b"\x97"),
            (b"\xe7", b"\x94"),
            // 大's first byte joins "a" only after its first merge.
            (b"\xe5", b"\xa4"),
            (b"a", b"\xe5"),
            (b"\xe5\xa4", b"\xa7"),
            // 上 = e4 b8 8a: its last byte joins "b" below its last merge.
            (b"\x8a", b"b"),
            (b"\xe4\xb8", b"\x8a"),
        ];
        let json = byte_level(&merges).to_string();
        let texts = [
            "a中",
            "a文",
            "字bc",
            "用bc",
            "a大",
            "中文字用大",
            "a中文bc字用bc大a",
            "用用bcc",
            "b中c",
            "上b",
        ];
        let fast = checked(&json, &texts);
        let whole: String = "中文字用大上"
            .chars()
            .filter(|&c| fast.bpe.starts_whole(c))
            .collect();
        assert_eq!(whole, "中大");
    }

    /// Byte-level words that miss the caches are cut into parts where no
    /// token spans, with the crate's ids, with and without `ignore_merges`. 国人 is a token BPE does not reach (its bytes merge
    /// to B, D, ba, ba): as a word under `ignore_merges` it is one token,
    /// as a part it is merged, and neither may be taken for the other from
    /// a cache.
    #[test]
    fn byte_level_words_cut_into_parts_keep_their_ids() {
        // 中 = e4 b8 ad, 国 = e5 9b bd, 人 = e4 ba ba; 文 = e6 96 87 has no
        // merges.
        let merges: [(&[u8], &[u8]); 9] = [
            (b"\xe5", b"\x9b"),
            // Across 国|人 and 国|中: a token of one byte of each side.
            (b"\xbd", b"\xe4"),
            (b"\xe4", b"\xb8"),
            (b"\xe4\xb8", b"\xad"),
            (b"\xe5\x9b", b"\xbd"),
            (b"\xe4", b"\xba"),
            (b"\xe4\xba", b"\xba"),
            ("中".as_bytes(), "国".as_bytes()),
            ("国".as_bytes(), "人".as_bytes()),
        ];
        let texts = [
            "国人",
            "国中",
            "中国",
            "文文文文文国人",
            "文文文文文国中文",
            "文文文文中国人文",
            "人人人人人人",
            "国人国人国人国人",
            "a文文文文文文b国人",
            "文😀文é文文文文国人",
            "国人",
        ];
        for ignore_merges in [false, true] {
            let mut json = byte_level(&merges);
            json["model"]["ignore_merges"] = Value::from(ignore_merges);
            let fast = checked(&json.to_string(), &texts);
            assert_eq!(
                fast.bpe.parts("文文文文文国人"),
                ["文", "文", "文", "文", "文", "国人"]
            );
            assert_eq!(
                fast.bpe.parts("文文文文文国中文"),
                ["文", "文", "文", "文", "文", "国中", "文"]
            );
            assert_eq!(fast.bpe.parts("文😀文é文文文文国人").len(), 9);
        }
    }
}
