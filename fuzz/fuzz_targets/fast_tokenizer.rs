//! The fast tokenization engine against the `tokenizers` crate, its oracle:
//! for any UTF-8 text the fast engine's ids equal
//! `Tokenizer::encode(text, false)` exactly, and the hand-written scanners
//! cut text exactly where the split regexes (run by Oniguruma) cut it.
//!
//! Input: one byte choosing the tokenizer and whether special-token strings
//! are parsed, then the text (invalid UTF-8 is replaced, not discarded, so
//! mutations keep their value). The tokenizers are the fixtures in
//! fuzz/tokenizers/ (make_tokenizers.py): byte-level BPE with the Qwen2
//! regex, and SentencePiece BPE with byte fallback in its legacy and
//! Metaspace layouts.

#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern as Regex};
use tokenizers::{
    OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer, SplitDelimiterBehavior,
    Tokenizer,
};
use tokenmill::tokenize::split::{self, SplitPattern};
use tokenmill::tokenize::{self, Backend, Encoder};

const FIXTURES: [&str; 3] = ["byte_level", "sentencepiece", "metaspace"];

/// One fixture, with and without special-token parsing.
struct Engines {
    /// Indexed by `parse_special`.
    fast: [Encoder; 2],
    oracle: [Tokenizer; 2],
}

fn engines() -> &'static [Engines] {
    static ENGINES: OnceLock<Vec<Engines>> = OnceLock::new();
    ENGINES.get_or_init(|| FIXTURES.iter().map(|name| load(name)).collect())
}

fn load(name: &str) -> Engines {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tokenizers")
        .join(format!("{name}.json"));
    let loaded = tokenize::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let encoder = |parse_special: bool| {
        // `Backend::Fast` refuses a tokenizer the fast engine does not take:
        // the target would compare the reference with itself.
        let e = Encoder::new(&loaded, None, None, parse_special, Backend::Fast, 0.0)
            .unwrap_or_else(|e| panic!("{name}: the fast engine refuses the fixture: {e}"));
        assert_eq!(e.backend_name(), "fast", "{name}");
        e
    };
    let oracle = |parse_special: bool| {
        let mut t = Tokenizer::from_file(&path).expect("the fixture loads");
        // As tokenmill treats special-token strings in document text.
        t.set_encode_special_tokens(!parse_special);
        t
    };
    Engines {
        fast: [encoder(false), encoder(true)],
        oracle: [oracle(false), oracle(true)],
    }
}

/// The split regexes the fast engine scans by hand, with their sources.
fn splits() -> &'static [(SplitPattern, Split)] {
    static SPLITS: OnceLock<Vec<(SplitPattern, Split)>> = OnceLock::new();
    SPLITS.get_or_init(|| {
        SplitPattern::KNOWN
            .into_iter()
            .map(|(regex, p)| {
                let split = Split::new(
                    Regex::Regex(regex.into()),
                    SplitDelimiterBehavior::Isolated,
                    false,
                )
                .expect("the regex compiles");
                (p, split)
            })
            .collect()
    })
}

/// The pieces Oniguruma cuts `text` into.
fn regex_pieces<'t>(split: &Split, text: &'t str) -> Vec<&'t str> {
    let mut pre = PreTokenizedString::from(text);
    split.pre_tokenize(&mut pre).expect("splitting cannot fail");
    pre.get_splits(OffsetReferential::Original, OffsetType::Byte)
        .into_iter()
        .map(|(_, (s, e), _)| &text[s..e])
        .collect()
}

fuzz_target!(|input: &[u8]| {
    let Some((&first, data)) = input.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(data);
    let first = usize::from(first);
    let engines = &engines()[first % FIXTURES.len()];
    let parse_special = first / FIXTURES.len() % 2;
    let ids = engines.fast[parse_special]
        .encode_piece(&text, true)
        .expect("the fast engine encodes any text");
    let want = engines.oracle[parse_special]
        .encode(text.as_ref(), false)
        .expect("the oracle encodes any text");
    assert_eq!(ids, want.get_ids(), "ids of {text:?}");

    let splits = splits();
    let (pattern, split) = &splits[first / (2 * FIXTURES.len()) % splits.len()];
    let got = split::pre_tokens(*pattern, &text);
    assert_eq!(
        got,
        regex_pieces(split, &text),
        "{pattern:?} pieces of {text:?}"
    );
});
