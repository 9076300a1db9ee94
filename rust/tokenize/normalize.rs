//! Normalisers done here (Unicode forms, `Prepend`, string `Replace`),
//! skipping text a normal form provably leaves alone; any other normaliser
//! runs as the `tokenizers` crate's own object.

use std::borrow::Cow;

use serde_json::Value;
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::{NormalizedString, Normalizer};
use unicode_normalization_alignments::UnicodeNormalization;

use crate::chars::{first_non_ascii, CharTable};

/// A Unicode normal form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Form {
    Nfc,
    Nfkc,
    Nfd,
    Nfkd,
}

/// A normalisation step done here.
#[derive(Debug)]
pub(super) enum NormStep {
    Unicode(Form),
    Prepend(String),
    Replace(String, String),
}

/// How segments are normalised.
pub(super) enum Norm {
    Steps(Vec<NormStep>),
    /// The crate's own normaliser (exact for any normaliser, slower).
    Crate(NormalizerWrapper),
}

pub(super) fn norm_steps(v: &Value, out: &mut Vec<NormStep>) -> bool {
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
pub(super) static INERT: CharTable = CharTable::new(|range| {
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
pub(super) fn stable_under(form: Form, text: &str) -> bool {
    let bit = match form {
        Form::Nfc => 1,
        Form::Nfkc => 2,
        Form::Nfd | Form::Nfkd => return text.is_ascii(),
    };
    // ASCII is inert: skip it, look the other characters up.
    let mut rest = text;
    while let Some(k) = first_non_ascii(rest.as_bytes()) {
        let mut chars = rest[k..].chars();
        if chars.next().is_some_and(|c| INERT.get(c) & bit == 0) {
            return false;
        }
        rest = chars.as_str();
    }
    true
}

impl Norm {
    pub(super) fn apply<'a>(&self, text: &'a str) -> std::result::Result<Cow<'a, str>, String> {
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
                            if let Some(replaced) = replace_all(&text, from, to) {
                                text = Cow::Owned(replaced);
                            }
                        }
                    }
                }
                Ok(text)
            }
        }
    }
}

/// `text` with every occurrence of `from` (left to right, not overlapping)
/// replaced by `to`, as `str::replace`; none when `from` does not occur.
/// memchr's search, not str's two-way one: several times faster on
/// one-byte patterns such as the space of LLaMA-2's normaliser.
fn replace_all(text: &str, from: &str, to: &str) -> Option<String> {
    let mut found = memchr::memmem::find_iter(text.as_bytes(), from.as_bytes()).peekable();
    found.peek()?;
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    let mut last = 0;
    for at in found {
        // A match of UTF-8 in UTF-8 starts and ends at character boundaries.
        out.push_str(&text[last..at]);
        out.push_str(to);
        last = at + from.len();
    }
    out.push_str(&text[last..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_all_is_str_replace() {
        for (text, from) in [
            ("a b  c ", " "),
            ("aaaa", "aa"),
            ("中文 中文", "文"),
            ("▁x▁", "▁"),
            ("none", "z"),
            ("", " "),
        ] {
            let want = text.contains(from).then(|| text.replace(from, "<>"));
            assert_eq!(replace_all(text, from, "<>"), want, "{text:?}");
        }
    }

    #[test]
    fn stable_under_finds_a_changing_character_anywhere() {
        // Characters that NFC or NFKC change (a combining mark, the Angstrom
        // sign, a half-width katakana, a ligature) and some they keep, after
        // ASCII of every length around the eight-byte skip.
        let changed = [
            ("\u{301}", true, true),
            ("\u{212B}", true, true),
            ("ｶ", false, true),
            ("ﬁ", false, true),
        ];
        let kept = ["é", "中", "😀", "a"];
        for n in 0..20 {
            let ascii = "x".repeat(n);
            for (c, by_nfc, by_nfkc) in changed {
                let text = format!("{ascii}{c}yz");
                assert_eq!(stable_under(Form::Nfc, &text), !by_nfc, "{text:?}");
                assert_eq!(stable_under(Form::Nfkc, &text), !by_nfkc, "{text:?}");
            }
            for c in kept {
                let text = format!("{ascii}{c}yz");
                assert!(stable_under(Form::Nfc, &text) && stable_under(Form::Nfkc, &text));
                assert_eq!(text.nfc().map(|(c, _)| c).collect::<String>(), text);
            }
        }
    }
}
