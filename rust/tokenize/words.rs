//! How a normalised segment becomes the words BPE merges within: the
//! pre-tokenizers the fast engine supports, read from a tokenizer.json.

use serde_json::Value;

use super::json::Vocabulary;
use super::split::SplitPattern;

/// How a normalised segment becomes words for the BPE model.
#[derive(Clone, Debug)]
pub(super) enum Words {
    /// Byte-level BPE: `prefix_space` as ByteLevel's `add_prefix_space`,
    /// then the splits, each cutting the pieces of the one before (no
    /// splits: the segment is one word).
    ByteLevel {
        prefix_space: bool,
        splits: Vec<SplitPattern>,
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
pub(super) enum Prepend {
    Always,
    First,
    Never,
}

/// The words of a pre-tokenizer; `no_spaces`: normalised text holds no
/// space.
pub(super) fn words_of(
    pre: &Value,
    vocab: Option<&Vocabulary>,
    no_spaces: bool,
) -> std::result::Result<Words, String> {
    let byte_level = |p: &Value| p["type"] == "ByteLevel";
    let splits_nothing = space_split(pre) && no_spaces;
    if pre.is_null() || splits_nothing {
        return Ok(Words::SentencePiece {
            metaspace: None,
            cut_runs: vocab_allows_cuts(vocab),
        });
    }
    if byte_level(pre) {
        return Ok(Words::ByteLevel {
            prefix_space: pre["add_prefix_space"] == true,
            splits: (pre["use_regex"] != false)
                .then_some(SplitPattern::Gpt2)
                .into_iter()
                .collect(),
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
            cut_runs: !split && replacement == '\u{2581}' && vocab_allows_cuts(vocab),
        });
    }
    if pre["type"] == "Sequence" {
        // Isolating splits and `Digits`, then a byte-level step without a
        // prefix space (with one, every piece would get its own).
        if let Some([splits @ .., bl]) = pre["pretokenizers"].as_array().map(Vec::as_slice) {
            if byte_level(bl) && bl["add_prefix_space"] != true {
                let mut patterns = splits.iter().map(split_of).collect::<Result<Vec<_>, _>>()?;
                if bl["use_regex"] != false {
                    patterns.push(SplitPattern::Gpt2);
                }
                return Ok(Words::ByteLevel {
                    prefix_space: false,
                    splits: patterns,
                });
            }
        }
    }
    Err(format!("pre-tokenizer {} is not supported", pre["type"]))
}

/// A Split on the string " " (Gemma's), which cuts nothing in text without
/// spaces, whatever its behaviour.
fn space_split(p: &Value) -> bool {
    p["type"] == "Split" && p["pattern"]["String"] == " " && p["invert"] != true
}

/// One step of a pre-tokenizer sequence before its byte-level step.
fn split_of(p: &Value) -> std::result::Result<SplitPattern, String> {
    if p["type"] == "Digits" {
        return Ok(SplitPattern::Digits {
            individual: p["individual_digits"] == true,
        });
    }
    if p["type"] != "Split" || p["behavior"] != "Isolated" || p["invert"] != false {
        return Err(format!(
            "pre-tokenizer {} ({}) before ByteLevel is not supported",
            p["type"], p["behavior"]
        ));
    }
    p["pattern"]["Regex"]
        .as_str()
        .and_then(SplitPattern::from_regex)
        .ok_or_else(|| "split regex without a fast scanner".into())
}

/// Whether no vocabulary token holds `▁` right after another character, so
/// no merge can join text across the start of a `▁` run.
pub(super) fn vocab_allows_cuts(vocab: Option<&Vocabulary>) -> bool {
    vocab.is_some_and(|v| {
        let tokens = || v.iter().map(|(t, _)| t.as_ref());
        tokens().any(|t| t == "\u{2581}") && no_space_after_char(tokens())
    })
}

/// Whether no token holds `▁` right after a character other than `▁`.
pub fn no_space_after_char<'a>(tokens: impl IntoIterator<Item = &'a str>) -> bool {
    tokens.into_iter().all(|t| {
        let mut prev = None;
        t.chars().all(|c| {
            let ok = c != '\u{2581}' || prev.is_none_or(|p| p == '\u{2581}');
            prev = Some(c);
            ok
        })
    })
}
