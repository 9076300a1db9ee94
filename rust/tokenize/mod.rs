//! Tokenize stage: loads a Hugging Face `tokenizer.json` (plus the
//! `tokenizer_config.json` beside it for BOS/EOS/PAD), fingerprints it and
//! encodes documents with tokenmill's fast engine ([`fast`]) where it
//! supports the tokenizer, else with the `tokenizers` crate; either way ids
//! equal the Python `tokenizers` library's for the same file.
//!
//! Special-token strings inside document text (`</s>`, `<|im_start|>`) are
//! encoded as ordinary text unless `parse_special` is set, so data cannot
//! inject document boundaries or chat roles. Truncation and padding settings
//! stored in tokenizer.json are ignored: a corpus is never truncated.
//!
//! Long documents are encoded in bounded pieces (see [`Encoder::pieces`]).
//! A piece boundary is placed only where the tokenizer's own pre-tokenizer
//! would cut anyway and where normalisation cannot reach across (byte-level
//! BPE), or where no vocabulary token can span (SentencePiece BPE), so the
//! ids are identical to encoding the document whole; this keeps per-call
//! memory bounded, avoids the `tokenizers` crate's superlinear time on one
//! huge SentencePiece "word", and lets one huge document use every thread.
//!
//! The fast engine's parts, one file each: [`fast`] (which tokenizers it
//! takes, and the encode loop over added tokens, normalisation and words),
//! `split` (the split regexes as scanners), `normalize`, `words` (the
//! pre-tokenizers), `bpe` (the model and its merge loop), `joins` (where a
//! byte-level word can be cut into parts that merge apart) and [`cache`]
//! (pre-token -> ids caches, with their concurrency test). Character tables
//! live in [`crate::chars`], shared with MinHash.

mod bpe;
pub mod cache;
pub mod fast;
mod joins;
mod json;
mod normalize;
mod pages;
pub mod split;
mod split_ascii;
mod split_classes;
mod words;

pub use self::bpe::byte_chars;

use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, OnceLock};

use rustc_hash::FxHashMap;
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokenizers::processors::PostProcessorWrapper;
use tokenizers::{AddedToken, Encoding, PostProcessor, Token, Tokenizer};

use self::cache::WordCache;
use self::fast::FastBpe;
use self::json::{MergeEntry, TokenizerFile};
use self::split::SplitPattern;

use crate::chars::utf8;
use crate::error::{Result, TokenmillError};
use crate::threads::map_each;

/// Documents longer than this many bytes are encoded in pieces.
pub const LONG_DOC_BYTES: usize = 256 * 1024;
/// Target size of one piece of a long document.
pub const PIECE_BYTES: usize = 64 * 1024;

/// A special token and its id.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SpecialToken {
    pub token: String,
    pub id: u32,
}

/// A loaded tokenizer with what the manifest needs to know about it.
pub struct LoadedTokenizer {
    /// The tokenizer.json text, for the `tokenizers` object.
    text: Arc<String>,
    /// The `tokenizers` object, when loading needed it (no fast engine).
    parsed: Option<Tokenizer>,
    /// The added tokens by id, as the `tokenizers` crate numbers them.
    pub added: BTreeMap<u32, AddedToken>,
    /// The tokenizer.json actually read.
    pub json_path: PathBuf,
    /// Highest id (vocabulary and added tokens) + 1.
    pub vocab_size: u64,
    pub bos: Option<SpecialToken>,
    pub eos: Option<SpecialToken>,
    pub pad: Option<SpecialToken>,
    /// What the tokenizer's own config says about BOS: `add_bos_token` in
    /// tokenizer_config.json, else whether its post-processor inserts BOS.
    pub adds_bos: bool,
    /// sha256 over the canonical vocab, merges, normaliser, pre-tokenizer and added tokens.
    pub fingerprint: String,
    /// The fast engine for this tokenizer, or why it does not support it.
    fast: std::result::Result<Arc<FastBpe>, String>,
    raw: Value,
}

fn read_json(path: &Path) -> Result<(String, Value)> {
    let text = std::fs::read_to_string(path).map_err(|e| TokenmillError::io(path, e))?;
    let value = serde_json::from_str(&text).map_err(|e| TokenmillError::Tokenizer {
        path: path.to_path_buf(),
        message: format!("not valid JSON: {e}"),
    })?;
    Ok((text, value))
}

/// Resolves `path` (a tokenizer.json or a directory holding one) to the
/// tokenizer.json and, when present, the tokenizer_config.json beside it.
pub fn resolve_paths(path: &Path) -> Result<(PathBuf, Option<PathBuf>)> {
    let json = if path.is_dir() {
        path.join("tokenizer.json")
    } else {
        path.to_path_buf()
    };
    if !json.is_file() {
        let msg = if path.is_dir() {
            "directory has no tokenizer.json (only fast tokenizers are supported)"
        } else {
            "no such tokenizer file"
        };
        return Err(TokenmillError::io(
            &json,
            std::io::Error::new(std::io::ErrorKind::NotFound, msg),
        ));
    }
    let config = json
        .parent()
        .map(|d| d.join("tokenizer_config.json"))
        .filter(|p| p.is_file());
    Ok((json, config))
}

/// Parses a tokenizer.json with its truncation and padding turned off: a
/// corpus is never truncated or padded.
fn parse_tokenizer(json: &str) -> tokenizers::Result<Tokenizer> {
    let mut tokenizer = Tokenizer::from_str(json)?;
    tokenizer.with_truncation(None)?;
    tokenizer.with_padding(None);
    Ok(tokenizer)
}

/// Where [`Vocab`] looks up the ids of texts that are not added tokens.
enum Lookup<'a> {
    /// The model's vocabulary in the JSON (BPE).
    Json(FxHashMap<&'a str, u32>),
    Crate(&'a Tokenizer),
}

/// What loading needs from the vocabulary: the id of a token's text, the
/// added tokens by id and the vocabulary size (highest id + 1), all as the
/// `tokenizers` crate has them.
struct Vocab<'a> {
    lookup: Lookup<'a>,
    /// Added tokens' ids by text ([`Lookup::Json`] only).
    added_ids: HashMap<String, u32>,
    added: BTreeMap<u32, AddedToken>,
    size: u64,
}

impl<'a> Vocab<'a> {
    fn of_crate(tokenizer: &'a Tokenizer) -> Vocab<'a> {
        Vocab {
            lookup: Lookup::Crate(tokenizer),
            added_ids: HashMap::new(),
            added: tokenizer.get_added_tokens_decoder().into_iter().collect(),
            size: max_id_plus_one(tokenizer.get_vocab(true).into_values()),
        }
    }

    /// A BPE tokenizer's vocabulary from its JSON. The crate numbers added
    /// tokens itself when it reads a file (`AddedVocabulary::add_tokens`):
    /// a text already known keeps its id, any other takes the next id from
    /// the model's vocabulary size on; the file's `id` fields are not read.
    fn of_bpe(
        raw: &Value,
        vocab: &'a [(Cow<'a, str>, u32)],
    ) -> std::result::Result<Vocab<'a>, String> {
        // The last of repeated keys counts, as in a JSON object.
        let model: FxHashMap<&str, u32> = vocab.iter().map(|(t, id)| (t.as_ref(), *id)).collect();
        let mut added_ids = HashMap::new();
        let mut added = BTreeMap::new();
        let mut next = model.len() as u32;
        for token in fast::added_tokens(raw)? {
            if token.content.is_empty() {
                continue;
            }
            let id = match added_ids
                .get(&token.content)
                .or_else(|| model.get(token.content.as_str()))
                .copied()
            {
                Some(id) => id,
                None => {
                    next += 1;
                    next - 1
                }
            };
            added_ids.insert(token.content.clone(), id);
            added.insert(id, token);
        }
        let size = max_id_plus_one(model.values().copied().chain(added.keys().copied()));
        Ok(Vocab {
            lookup: Lookup::Json(model),
            added_ids,
            added,
            size,
        })
    }

    fn token_to_id(&self, text: &str) -> Option<u32> {
        match &self.lookup {
            Lookup::Crate(tokenizer) => tokenizer.token_to_id(text),
            Lookup::Json(model) => self
                .added_ids
                .get(text)
                .or_else(|| model.get(text))
                .copied(),
        }
    }
}

fn max_id_plus_one(ids: impl Iterator<Item = u32>) -> u64 {
    ids.map(|id| u64::from(id) + 1).max().unwrap_or(0)
}

/// Whether the tokenizer's post-processor puts `bos` first when special
/// tokens are added (as `encode(text, add_special_tokens=True)` does).
fn post_processor_adds(raw: &Value, bos: u32) -> std::result::Result<bool, String> {
    let Some(processor) = Option::<PostProcessorWrapper>::deserialize(&raw["post_processor"])
        .map_err(|e| format!("post_processor: {e}"))?
    else {
        return Ok(false);
    };
    // One token with an id no token has.
    let one = Encoding::from_tokens(vec![Token::new(u32::MAX, "a".into(), (0, 1))], 0);
    let out = processor
        .process(one, None, true)
        .map_err(|e| e.to_string())?;
    Ok(out.get_ids().first() == Some(&bos))
}

/// The token string of a config entry: `"</s>"` or `{"content": "</s>", ...}`.
fn token_content(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(m) => m.get("content").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

/// Loads a tokenizer from a tokenizer.json or a model/tokenizer directory.
pub fn load(path: &Path) -> Result<LoadedTokenizer> {
    // Reading and parsing the file take one core; the word cache's memory
    // is faulted in on another meanwhile (see `WordCache::allocated`).
    std::thread::scope(|s| {
        let cache = s.spawn(WordCache::allocated);
        load_from(path, || {
            cache
                .join()
                .expect("allocating the word cache does not panic")
        })
    })
}

/// [`load`], a fast engine's word cache taken from `cache`.
fn load_from(path: &Path, cache: impl FnOnce() -> WordCache) -> Result<LoadedTokenizer> {
    let (json_path, config_path) = resolve_paths(path)?;
    let tok_err = |message: String| TokenmillError::Tokenizer {
        path: json_path.clone(),
        message,
    };
    let bytes = std::fs::read(&json_path).map_err(|e| TokenmillError::io(&json_path, e))?;
    if let Err(at) = utf8(&bytes) {
        return Err(tok_err(format!("not UTF-8: invalid byte at offset {at}")));
    }
    // SAFETY: `utf8` has just checked that `bytes` are UTF-8 (std's own
    // check, which `String::from_utf8` would run again, is several times
    // slower on the byte-level characters of a tokenizer's vocabulary).
    let text = Arc::new(unsafe { String::from_utf8_unchecked(bytes) });
    let file = TokenizerFile::parse(&text)
        .map_err(|e| tok_err(format!("not a valid tokenizer.json: {e}")))?;
    // The fingerprint, the fast engine and the vocabulary's lookup need only
    // the parsed JSON, and are built side by side. Where the fast engine
    // takes the tokenizer, the `tokenizers` object is not built here (its
    // parse is most of a load): ids of named tokens come from the JSON,
    // numbered as the crate numbers them.
    let raw = &file.raw;
    let (fingerprint, json_vocab, fast) = std::thread::scope(|s| {
        let side = s.spawn(|| {
            let vocab = file.vocab.as_deref().map(|v| Vocab::of_bpe(raw, v));
            (fingerprint(&file), vocab)
        });
        let fast = FastBpe::new(&file).map(|f| Arc::new(f.with_cache(cache())));
        let (fingerprint, vocab) = side
            .join()
            .expect("fingerprinting and the lookup do not panic");
        (fingerprint, vocab, fast)
    });
    let mut parsed = None;
    let vocab = match json_vocab.filter(|_| fast.is_ok()) {
        Some(vocab) => vocab.map_err(tok_err)?,
        None => Vocab::of_crate(
            parsed.insert(parse_tokenizer(&text).map_err(|e| tok_err(e.to_string()))?),
        ),
    };
    let config = match &config_path {
        Some(p) => Some(read_json(p)?.1),
        None => None,
    };
    // Older checkpoints keep their special tokens in special_tokens_map.json.
    let map_path = json_path.with_file_name("special_tokens_map.json");
    let special_map = if map_path.is_file() {
        Some(read_json(&map_path)?.1)
    } else {
        None
    };
    let lookup = |name: &str, fallbacks: &[&str]| -> Option<SpecialToken> {
        let entry = [&config, &special_map]
            .into_iter()
            .flatten()
            .find_map(|c| c.get(name));
        let candidates: Vec<String> = match entry {
            Some(v) => token_content(v).into_iter().collect(), // `null` means none
            // Named nowhere: fall back to the conventional names.
            None => fallbacks.iter().map(|s| s.to_string()).collect(),
        };
        candidates.into_iter().find_map(|token| {
            vocab
                .token_to_id(&token)
                .map(|id| SpecialToken { token, id })
        })
    };
    let bos = lookup("bos_token", &["<s>", "<|begin_of_text|>", "<bos>"]);
    let eos = lookup(
        "eos_token",
        &["</s>", "<|endoftext|>", "<|end_of_text|>", "<eos>"],
    );
    let pad = lookup("pad_token", &["<pad>", "<|pad|>"]);

    let adds_bos = match config
        .as_ref()
        .and_then(|c| c.get("add_bos_token"))
        .and_then(Value::as_bool)
    {
        Some(flag) => flag && bos.is_some(),
        None => match &bos {
            Some(b) => post_processor_adds(raw, b.id).map_err(tok_err)?,
            None => false,
        },
    };

    let Vocab { added, size, .. } = vocab;
    Ok(LoadedTokenizer {
        fingerprint,
        text: Arc::clone(&text),
        parsed,
        added,
        json_path,
        vocab_size: size,
        bos,
        eos,
        pad,
        adds_bos,
        fast,
        raw: file.raw,
    })
}

/// A merge in canonical form: `"a b"` and `["a", "b"]` both become `["a", "b"]`.
#[derive(serde::Serialize)]
#[serde(untagged)]
enum CanonMerge<'a> {
    Pair([&'a str; 2]),
    One([&'a str; 1]),
}

/// The vocabulary as a JSON object with sorted keys, or as it is.
enum CanonVocab<'a> {
    Map(Vec<(&'a str, u32)>),
    Tree(&'a Value),
}

impl serde::Serialize for CanonVocab<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            CanonVocab::Map(entries) => s.collect_map(entries.iter().map(|(t, id)| (t, id))),
            CanonVocab::Tree(v) => v.serialize(s),
        }
    }
}

/// What the fingerprint covers, with its fields in sorted order. serde_json
/// maps are sorted by key (the `preserve_order` feature is off), so the
/// serialisation is canonical.
#[derive(serde::Serialize)]
struct Canon<'a> {
    added_tokens: Vec<(u64, &'a str, bool)>,
    merges: Vec<CanonMerge<'a>>,
    model_flags: serde_json::Map<String, Value>,
    model_type: &'a Value,
    normalizer: &'a Value,
    pre_tokenizer: &'a Value,
    vocab: CanonVocab<'a>,
}

/// The vocabulary as a JSON object would hold it: keys sorted by their
/// bytes, the last of repeated keys kept.
///
/// Most comparisons end in the keys' first 8 bytes, read as one number
/// (zero-padded, so that a key sorts before its extensions as in byte
/// order). Comparing whole strings, sorting a 131k vocabulary took 25-35
/// ms, about half of the fingerprint's time.
fn sorted_vocab<'a>(vocab: &'a json::Vocabulary) -> Vec<(&'a str, u32)> {
    let head = |t: &str| {
        let mut bytes = [0u8; 8];
        let n = t.len().min(8);
        bytes[..n].copy_from_slice(&t.as_bytes()[..n]);
        u64::from_be_bytes(bytes)
    };
    // The later of two equal keys first, for `dedup_by` to keep.
    let mut sorted: Vec<(u64, &str, Reverse<usize>, u32)> = vocab
        .iter()
        .enumerate()
        .map(|(i, (t, id))| (head(t), t.as_ref(), Reverse(i), *id))
        .collect();
    sorted.sort_unstable();
    sorted.dedup_by(|later, first| later.1 == first.1);
    sorted.into_iter().map(|(_, t, _, id)| (t, id)).collect()
}

/// Feeds what is written into a sha256.
#[derive(Debug)]
struct HashWriter(Sha256);

impl std::io::Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// sha256 over the canonical vocab, merges, model flags, normaliser,
/// pre-tokenizer and added tokens (id, content, special): what decides the
/// ids. Key order, merge notation and unrelated fields (decoder,
/// truncation, added-token flags) do not change it, and a model flag that
/// is absent, null, false or "" is unset (transformers 5 saves a null
/// `continuing_subword_prefix` as ""), so a tokenizer re-saved by
/// `save_pretrained` keeps its fingerprint.
pub fn fingerprint(file: &TokenizerFile) -> String {
    let (raw, model) = (&file.raw, file.model());
    let merges = file
        .merges
        .iter()
        .flatten()
        .map(|m| match m {
            MergeEntry::Text(s) => match s.split_once(' ') {
                Some((a, b)) => CanonMerge::Pair([a, b]),
                None => CanonMerge::One([s]),
            },
            MergeEntry::Pair(a, b) => CanonMerge::Pair([a, b]),
        })
        .collect();
    let vocab = match &file.vocab {
        Some(vocab) => CanonVocab::Map(sorted_vocab(vocab)),
        None => CanonVocab::Tree(&model["vocab"]),
    };
    let mut model_flags = serde_json::Map::new();
    for key in [
        "unk_token",
        "continuing_subword_prefix",
        "end_of_word_suffix",
        "byte_fallback",
        "fuse_unk",
        "ignore_merges",
    ] {
        match model.get(key) {
            None | Some(Value::Null) | Some(Value::Bool(false)) => {}
            Some(Value::String(s)) if s.is_empty() => {}
            Some(v) => {
                model_flags.insert(key.to_owned(), v.clone());
            }
        }
    }
    let mut added_tokens: Vec<(u64, &str, bool)> = raw["added_tokens"]
        .as_array()
        .map(|ts| {
            ts.iter()
                .map(|t| {
                    (
                        t["id"].as_u64().unwrap_or(u64::MAX),
                        t["content"].as_str().unwrap_or_default(),
                        t["special"].as_bool().unwrap_or(false),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    added_tokens.sort();
    let canon = Canon {
        added_tokens,
        merges,
        model_flags,
        model_type: &model["type"],
        normalizer: &raw["normalizer"],
        pre_tokenizer: &raw["pre_tokenizer"],
        vocab,
    };
    // Buffered: the serialiser writes each string and comma apart.
    let mut hasher = std::io::BufWriter::with_capacity(1 << 16, HashWriter(Sha256::new()));
    serde_json::to_writer(&mut hasher, &canon).expect("writing into a hash cannot fail");
    let HashWriter(sha) = hasher
        .into_inner()
        .expect("writing into a hash cannot fail");
    format!("{:x}", sha.finalize())
}

fn normalizer_is_local(n: &Value) -> bool {
    match n["type"].as_str() {
        None => n.is_null(),
        Some("NFC" | "NFD" | "NFKC" | "NFKD" | "Lowercase") => true,
        Some("Sequence") => n["normalizers"]
            .as_array()
            .is_some_and(|ns| ns.iter().all(normalizer_is_local)),
        Some(_) => false,
    }
}

fn byte_level_no_prefix(p: &Value, use_regex: bool) -> bool {
    p["type"] == "ByteLevel"
        && p["add_prefix_space"] == false
        && p["use_regex"].as_bool().unwrap_or(true) == use_regex
}

fn pre_tokenizer_is_known(p: &Value) -> bool {
    if byte_level_no_prefix(p, true) {
        return true; // GPT-2 regex
    }
    if p["type"] != "Sequence" {
        return false;
    }
    let Some([split, byte_level]) = p["pretokenizers"].as_array().map(Vec::as_slice) else {
        return false;
    };
    let pattern = split["pattern"]["Regex"].as_str().unwrap_or_default();
    split["type"] == "Split"
        && split["behavior"] == "Isolated"
        && split["invert"] == false
        && SplitPattern::from_regex(pattern).is_some()
        && byte_level_no_prefix(byte_level, false)
}

/// Whether a character at the start of a piece is safe: it never composes
/// with what precedes it under NFC/NFKC, and the GPT-2, LLaMA-3 and Qwen2
/// split regexes start a new pre-token at it after a newline.
fn starts_piece(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '\u{4E00}'..='\u{9FFF}' | '\u{3400}'..='\u{4DBF}')
}

/// A cut at byte `p` is safe when `text[..p]` ends in `<non-whitespace>\n`
/// and `text[p..]` starts with an ASCII letter/digit or a CJK ideograph.
/// For the known regexes the full text then has a pre-token ending at `p`
/// (`\n` alone, or punctuation+`\n`), and the same pre-tokens arise on both
/// sides when the text is cut there (no lookbehind; lookahead sees `\S`).
fn safe_cut_at(text: &str, p: usize) -> bool {
    let before = &text[..p];
    let Some(prefix) = before.strip_suffix('\n') else {
        return false;
    };
    let prev_ok = prefix
        .chars()
        .next_back()
        .is_some_and(|c| !c.is_whitespace());
    prev_ok && text[p..].chars().next().is_some_and(starts_piece)
}

/// SentencePiece-style rule: a cut at byte `p` is safe when `text[p]` is a
/// space and the character before it is neither a space nor `▁`. Spaces
/// become `▁` under these tokenizers, and [`sentencepiece_rest`] has checked
/// that no vocabulary token holds `▁` right after another character, so no
/// BPE merge can join the two sides (merges only build vocabulary tokens).
fn safe_space_cut_at(text: &str, p: usize) -> bool {
    text.as_bytes()[p] == b' '
        && text[..p]
            .chars()
            .next_back()
            .is_some_and(|c| c != ' ' && c != '\u{2581}')
}

/// For LLaMA-2-style SentencePiece BPE tokenizers (HF's legacy
/// `Prepend("▁") + Replace(" ", "▁")` normaliser with no pre-tokenizer, or a
/// `Metaspace` pre-tokenizer with no normaliser), the tokenizer.json to use
/// for every piece after the first: the same one with the `▁` prepended to
/// the text's start removed, so each later piece normalises exactly as its
/// span of the whole text does. `None` when the tokenizer is not of that
/// family or its vocabulary lets a merge cross a space.
fn sentencepiece_rest(file: &TokenizerFile, parse_special: bool) -> Option<Value> {
    const SPACE: &str = "\u{2581}";
    let (raw, model) = (&file.raw, file.model());
    let plain_bpe = model["type"] == "BPE"
        && model["dropout"].is_null()
        && model["continuing_subword_prefix"].is_null()
        && model["end_of_word_suffix"].is_null()
        && model["ignore_merges"] != true;
    let vocab: HashSet<&str> = file
        .vocab
        .as_ref()?
        .iter()
        .map(|(t, _)| t.as_ref())
        .collect();
    // fuse_unk could join unknown characters across a cut; with a complete
    // byte fallback no character is unknown.
    let no_unk = model["fuse_unk"] != true
        || (model["byte_fallback"] == true
            && (0..=255).all(|b| vocab.contains(format!("<0x{b:02X}>").as_str())));
    let merges_stay_apart = words::no_space_after_char(vocab.iter().copied());
    // An added token that matches splits the text into segments that are
    // normalised separately, each with its own prepended `▁`; a cut next to
    // one would change that. So no added token may be able to match.
    let added_ok = !parse_special
        && raw["added_tokens"]
            .as_array()
            .is_none_or(|ts| ts.iter().all(|t| t["special"] == true));
    if !(plain_bpe && no_unk && merges_stay_apart && added_ok) {
        return None;
    }
    let (norm, pre) = (&raw["normalizer"], &raw["pre_tokenizer"]);
    let mut rest = file.to_value();
    let legacy = serde_json::json!({"type": "Sequence", "normalizers": [
        {"type": "Prepend", "prepend": SPACE},
        {"type": "Replace", "pattern": {"String": " "}, "content": SPACE},
    ]});
    if *norm == legacy && pre.is_null() {
        rest["normalizer"] = legacy["normalizers"][1].clone();
    } else if norm.is_null() && pre["type"] == "Metaspace" && pre["replacement"] == SPACE {
        rest["pre_tokenizer"]["prepend_scheme"] = Value::from("never");
    } else {
        return None;
    }
    Some(rest)
}

/// Where long documents of a tokenizer may be cut (see the `safe_*` rules).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CutRule {
    /// Long documents are encoded whole.
    Never,
    /// Byte-level BPE with a known split regex: after `<non-space>\n`.
    Newline,
    /// SentencePiece BPE: before a space that follows a non-space.
    Space,
}

/// Which engine produces the ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// The fast engine where it supports the tokenizer, else the reference.
    Auto,
    /// The fast engine; a tokenizer it does not support is an error.
    Fast,
    /// The `tokenizers` crate.
    Reference,
}

/// Ids of a batch of texts (see [`Encoder::encode_many`]).
pub struct EncodedBatch {
    /// Ids of each text, with BOS/EOS.
    pub ids: Vec<Vec<u32>>,
    /// How many texts were encoded in more than one piece.
    pub in_pieces: u64,
    /// How many texts the reference also encoded, as a check.
    pub verified: u64,
}

/// Encodes documents with BOS/EOS as configured.
pub struct Encoder {
    /// The tokenizer.json text, for the reference.
    text: Arc<String>,
    parse_special: bool,
    /// The `tokenizers` object, parsed on first use ([`Encoder::reference`]).
    reference: OnceLock<std::result::Result<Tokenizer, String>>,
    /// The tokenizer for pieces after the first, where it differs (SentencePiece).
    rest: Option<Tokenizer>,
    /// The fast engine, when it is used.
    fast: Option<Arc<FastBpe>>,
    /// Why the reference is used under `auto` (None when fast, or when asked for).
    pub reference_reason: Option<String>,
    /// Share of documents (by content hash) that the reference re-encodes
    /// to check the fast engine.
    verify_fraction: f64,
    json_path: PathBuf,
    /// Prepended to every document.
    pub bos: Option<u32>,
    /// Appended to every document.
    pub eos: Option<u32>,
    rule: CutRule,
}

impl Encoder {
    /// Builds an encoder; `parse_special` lets special-token strings in the
    /// text become special tokens (off by default, see module docs).
    /// With the fast engine, `verify_fraction` of the documents (chosen by
    /// content hash) are also encoded by the reference, and any difference
    /// is an error.
    pub fn new(
        loaded: &LoadedTokenizer,
        bos: Option<u32>,
        eos: Option<u32>,
        parse_special: bool,
        backend: Backend,
        verify_fraction: f64,
    ) -> Result<Encoder> {
        if !(0.0..=1.0).contains(&verify_fraction) {
            return Err(TokenmillError::Invalid(format!(
                "verify_fraction must be in [0, 1], got {verify_fraction}"
            )));
        }
        let (fast, reference_reason) = match backend {
            Backend::Reference => (None, None),
            Backend::Auto | Backend::Fast => match &loaded.fast {
                Ok(f) => (Some(Arc::clone(f)), None),
                Err(reason) if backend == Backend::Auto => (None, Some(reason.clone())),
                Err(reason) => {
                    return Err(TokenmillError::Tokenizer {
                        path: loaded.json_path.clone(),
                        message: format!(
                            "the fast backend does not support this tokenizer ({reason}); \
                             use --tokenizer-backend auto or reference"
                        ),
                    })
                }
            },
        };
        let added_ok = loaded.raw["added_tokens"].as_array().is_none_or(|ts| {
            ts.iter().all(|t| {
                let matched = parse_special || t["special"] != true;
                !matched
                    || (t["lstrip"] != true
                        && t["rstrip"] != true
                        && !t["content"].as_str().unwrap_or_default().contains('\n'))
            })
        });
        let newline = added_ok
            && normalizer_is_local(&loaded.raw["normalizer"])
            && pre_tokenizer_is_known(&loaded.raw["pre_tokenizer"]);
        // The reference's SentencePiece pieces: needed unless the fast
        // engine does all the encoding.
        let reference_pieces = fast.is_none() || verify_fraction > 0.0;
        let rest = if newline || !reference_pieces {
            None
        } else {
            let file = TokenizerFile::parse(&loaded.text).ok();
            file.and_then(|f| sentencepiece_rest(&f, parse_special))
                .and_then(|v| {
                    let mut t = parse_tokenizer(&v.to_string()).ok()?;
                    t.set_encode_special_tokens(!parse_special);
                    Some(t)
                })
        };
        let rule = match (newline, &rest) {
            (true, _) => CutRule::Newline,
            (false, Some(_)) => CutRule::Space,
            (false, None) => CutRule::Never,
        };
        let reference = OnceLock::new();
        if let Some(tokenizer) = &loaded.parsed {
            let mut tokenizer = tokenizer.clone();
            tokenizer.set_encode_special_tokens(!parse_special);
            let _ = reference.set(Ok(tokenizer));
        }
        let encoder = Encoder {
            text: Arc::clone(&loaded.text),
            parse_special,
            reference,
            rest,
            fast,
            reference_reason,
            verify_fraction,
            json_path: loaded.json_path.clone(),
            bos,
            eos,
            rule,
        };
        if encoder.fast.is_none() {
            encoder.reference()?;
        }
        Ok(encoder)
    }

    /// The `tokenizers` object for this encoder's settings, parsed on first
    /// use: with the fast engine it is needed only for texts that hold an
    /// added token's string and for the verification sample.
    fn reference(&self) -> Result<&Tokenizer> {
        self.reference
            .get_or_init(|| {
                let mut tokenizer = parse_tokenizer(&self.text).map_err(|e| e.to_string())?;
                tokenizer.set_encode_special_tokens(!self.parse_special);
                Ok(tokenizer)
            })
            .as_ref()
            .map_err(|message| TokenmillError::Tokenizer {
                path: self.json_path.clone(),
                message: message.clone(),
            })
    }

    /// `"fast"` or `"tokenizers"`: the engine that produces the ids.
    pub fn backend_name(&self) -> &'static str {
        if self.fast.is_some() {
            "fast"
        } else {
            "tokenizers"
        }
    }

    /// Whether long documents of this tokenizer are cut into pieces (the
    /// reference engine only; the fast engine is linear in the length).
    pub fn splits_long_documents(&self) -> bool {
        self.fast.is_none() && self.rule != CutRule::Never
    }

    /// Byte ranges to encode separately; their ids concatenated equal the
    /// ids of the whole text. One range unless the text is long and the
    /// tokenizer is of a family whose safe cut points are known.
    pub fn pieces(&self, text: &str) -> Vec<Range<usize>> {
        let rule = if self.fast.is_some() {
            CutRule::Never
        } else {
            self.rule
        };
        self.pieces_for(text, rule)
    }

    /// The pieces of `text` under `rule` (see [`Encoder::pieces`]).
    fn pieces_for(&self, text: &str, rule: CutRule) -> Vec<Range<usize>> {
        let whole = std::iter::once(0..text.len());
        if rule == CutRule::Never || text.len() <= LONG_DOC_BYTES {
            return whole.collect();
        }
        let bytes = text.as_bytes();
        let mut out = Vec::new();
        let mut start = 0;
        let mut from = PIECE_BYTES;
        while from < text.len() {
            let cut = match rule {
                CutRule::Newline => memchr::memchr_iter(b'\n', &bytes[from..])
                    .map(|i| from + i + 1)
                    .find(|&p| p < text.len() && safe_cut_at(text, p)),
                _ => memchr::memchr_iter(b' ', &bytes[from..])
                    .map(|i| from + i)
                    .find(|&p| safe_space_cut_at(text, p)),
            };
            match cut {
                Some(p) => {
                    out.push(start..p);
                    start = p;
                    from = p + PIECE_BYTES;
                }
                None => break,
            }
        }
        out.push(start..text.len());
        out
    }

    /// Ids of one piece of text, without BOS/EOS; `first` says whether the
    /// piece starts the document (see [`Encoder::pieces`]).
    pub fn encode_piece(&self, text: &str, first: bool) -> Result<Vec<u32>> {
        let tok_err = |message: String| TokenmillError::Tokenizer {
            path: self.json_path.clone(),
            message,
        };
        if let Some(fast) = &self.fast {
            let ids = fast
                .encode(
                    || self.reference().map_err(|e| e.to_string()),
                    text,
                    self.parse_special,
                )
                .map_err(tok_err)?;
            if self.selected_for_check(text) {
                let expected = self.encode_reference(text)?;
                if ids != expected {
                    let at = ids
                        .iter()
                        .zip(&expected)
                        .take_while(|(a, b)| a == b)
                        .count();
                    return Err(tok_err(format!(
                        "the fast backend's ids differ from the tokenizers crate's at token {at} \
                         ({:?} vs {:?}); please report this document, and use \
                         --tokenizer-backend reference meanwhile",
                        ids.get(at),
                        expected.get(at)
                    )));
                }
            }
            return Ok(ids);
        }
        self.reference_piece(text, first)
    }

    /// Ids of one piece by the `tokenizers` crate (see [`Encoder::pieces`]).
    fn reference_piece(&self, text: &str, first: bool) -> Result<Vec<u32>> {
        let tokenizer = match &self.rest {
            Some(rest) if !first => rest,
            _ => self.reference()?,
        };
        tokenizer
            .encode_fast(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| TokenmillError::Tokenizer {
                path: self.json_path.clone(),
                message: e.to_string(),
            })
    }

    /// Whether the fast engine's ids for `text` are checked against the
    /// reference: a deterministic sample by content hash.
    fn selected_for_check(&self, text: &str) -> bool {
        if self.fast.is_none() || self.verify_fraction <= 0.0 {
            return false;
        }
        let h = xxhash_rust::xxh3::xxh3_64_with_seed(text.as_bytes(), 0x7665_7269_6679);
        (h as f64) < self.verify_fraction * 18_446_744_073_709_551_616.0
    }

    /// Ids of a whole text by the `tokenizers` crate, without BOS/EOS.
    pub fn encode_reference(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        for r in self.pieces_for(text, self.rule) {
            ids.extend(self.reference_piece(&text[r.clone()], r.start == 0)?);
        }
        Ok(ids)
    }

    /// Ids of each text including BOS/EOS, on the current rayon pool. Long
    /// texts are cut into pieces first so that one huge document spreads over
    /// all threads; pieces are reassembled in order. Also returns how many
    /// texts were cut into more than one piece. An error comes with the
    /// index of the text that caused it.
    pub fn encode_many(
        &self,
        texts: &[&str],
    ) -> std::result::Result<EncodedBatch, (usize, TokenmillError)> {
        let mut units: Vec<(usize, Range<usize>)> = Vec::with_capacity(texts.len());
        let mut in_pieces = 0;
        for (i, text) in texts.iter().enumerate() {
            let pieces = self.pieces(text);
            in_pieces += u64::from(pieces.len() > 1);
            units.extend(pieces.into_iter().map(|r| (i, r)));
        }
        let encoded: Vec<Result<Vec<u32>>> = map_each(&units, |(i, r)| {
            let mut ids = self.encode_piece(&texts[*i][r.clone()], r.start == 0)?;
            if let Some(bos) = self.bos.filter(|_| r.start == 0) {
                ids.insert(0, bos);
            }
            if let Some(eos) = self.eos.filter(|_| r.end == texts[*i].len()) {
                ids.push(eos);
            }
            Ok(ids)
        });
        // A text's pieces are consecutive units: the first one's ids are
        // kept (no copy for a text in one piece), the others appended.
        let mut out: Vec<Vec<u32>> = Vec::with_capacity(texts.len());
        for ((i, _), ids) in units.iter().zip(encoded) {
            let ids = ids.map_err(|e| (*i, e))?;
            match out.get_mut(*i) {
                Some(first) => first.extend(ids),
                None => out.push(ids),
            }
        }
        let verified = texts.iter().filter(|t| self.selected_for_check(t)).count() as u64;
        Ok(EncodedBatch {
            ids: out,
            in_pieces,
            verified,
        })
    }
}

/// A byte-level BPE tokenizer.json for tests: the 256 byte characters, then
/// the token each merge makes, in order; merges as "left right" in byte
/// characters; the ByteLevel pre-tokenizer with or without GPT-2's regex.
#[cfg(test)]
pub(crate) fn test_byte_level(merges: &[impl AsRef<str>], use_regex: bool) -> Value {
    let merges: Vec<&str> = merges.iter().map(AsRef::as_ref).collect();
    let mut vocab = serde_json::Map::new();
    let merged = merges.iter().map(|m| m.replace(' ', ""));
    for t in byte_chars().iter().map(char::to_string).chain(merged) {
        let id = vocab.len();
        vocab.entry(t).or_insert(Value::from(id));
    }
    serde_json::json!({
        "version": "1.0",
        "added_tokens": [],
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
                          "use_regex": use_regex},
        "post_processor": null,
        "decoder": null,
        "model": {"type": "BPE", "dropout": null, "unk_token": null,
                  "continuing_subword_prefix": null, "end_of_word_suffix": null,
                  "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": merges},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rest_of(raw: &Value, parse_special: bool) -> Option<Value> {
        sentencepiece_rest(
            &TokenizerFile::parse(&raw.to_string()).unwrap(),
            parse_special,
        )
    }

    fn fp(raw: &Value) -> String {
        fingerprint(&TokenizerFile::parse(&raw.to_string()).unwrap())
    }

    #[test]
    fn vocab_sorts_as_whole_strings_keeping_the_last_of_a_repeated_key() {
        // Keys alike in their first 8 bytes, keys ending where another goes
        // on with NUL bytes, non-ASCII and repeated keys.
        let mut keys: Vec<String> = [
            "",
            "a",
            "a\0",
            "a\0\0",
            "a\0b",
            "ab",
            "abcdefgh",
            "abcdefgh\0",
            "abcdefghi",
            "abcdefgha",
            "abcdefg",
            "\u{7f}",
            "é",
            "中文",
            "中",
            "\u{10ffff}",
            "Ġthe",
            "Ġth",
        ]
        .map(String::from)
        .to_vec();
        let n = keys.len();
        for i in 0..200u32 {
            let k = &keys[(i as usize * 7) % n];
            keys.push(format!(
                "{k}{}",
                char::from_u32(0x20 + i * 37 % 0x3000).unwrap_or('x')
            ));
        }
        keys.extend(["ab", "中", "", "abcdefgh"].map(String::from));
        let vocab: Vec<(Cow<str>, u32)> = keys
            .iter()
            .enumerate()
            .map(|(id, k)| (Cow::from(k.as_str()), id as u32))
            .collect();
        // The plain way: reversed, then a stable sort of whole strings.
        let mut want: Vec<(&str, u32)> = vocab.iter().map(|(t, id)| (t.as_ref(), *id)).collect();
        want.reverse();
        want.sort_by(|a, b| a.0.cmp(b.0));
        want.dedup_by(|later, first| later.0 == first.0);
        assert_eq!(sorted_vocab(&vocab), want);
        assert!(want
            .iter()
            .any(|&(t, id)| t == "ab" && id as usize >= n + 200));
    }

    #[test]
    fn cut_rule() {
        assert!(safe_cut_at("ab.\nThe", 4));
        assert!(safe_cut_at("ab\n中文", 3));
        assert!(!safe_cut_at("ab \nThe", 4)); // whitespace before the newline
        assert!(!safe_cut_at("ab\n\nThe", 3));
        assert!(!safe_cut_at("ab\n The", 3));
        assert!(!safe_cut_at("ab\n'The", 3));
    }

    #[test]
    fn sentencepiece_rule() {
        assert!(safe_space_cut_at("ab cd", 2));
        assert!(!safe_space_cut_at("ab  cd", 3)); // inside a run of spaces
        assert!(!safe_space_cut_at("ab\u{2581} cd", 5));
        let mut raw = serde_json::json!({
            "model": {"type": "BPE", "dropout": null, "byte_fallback": true, "fuse_unk": false,
                      "vocab": {"\u{2581}a": 0, "b": 1, "\u{2581}\u{2581}": 2}, "merges": []},
            "normalizer": {"type": "Sequence", "normalizers": [
                {"type": "Prepend", "prepend": "\u{2581}"},
                {"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"}]},
            "pre_tokenizer": null,
            "added_tokens": [{"id": 3, "content": "<s>", "special": true}],
        });
        let rest = rest_of(&raw, false).expect("legacy LLaMA layout qualifies");
        assert_eq!(rest["normalizer"]["type"], "Replace");
        // A token with ▁ after another character lets a merge cross a space.
        raw["model"]["vocab"]["b\u{2581}a"] = serde_json::json!(4);
        assert!(rest_of(&raw, false).is_none());
        raw["model"]["vocab"]
            .as_object_mut()
            .unwrap()
            .remove("b\u{2581}a");
        assert!(rest_of(&raw, false).is_some());
        // Parsed special tokens or plain added tokens split the text.
        assert!(rest_of(&raw, true).is_none());
        raw["added_tokens"][0]["special"] = serde_json::json!(false);
        assert!(rest_of(&raw, false).is_none());
    }

    /// A byte-level BPE tokenizer.json (GPT-2's regex): the 256 byte
    /// characters, "ab" and "abc", and the given merges; `</s>` as a special
    /// added token.
    fn tiny_byte_level(merges: &[&str]) -> Value {
        let mut json = test_byte_level(merges, true);
        let vocab = json["model"]["vocab"].as_object_mut().unwrap();
        vocab.insert("ab".into(), Value::from(256));
        vocab.insert("abc".into(), Value::from(257));
        json["added_tokens"] = serde_json::json!([{"id": 258, "content": "</s>", "special": true,
            "single_word": false, "lstrip": false, "rstrip": false, "normalized": false}]);
        json
    }

    fn load_json(dir: &Path, json: &Value) -> LoadedTokenizer {
        std::fs::write(dir.join("tokenizer.json"), json.to_string()).unwrap();
        load(dir).unwrap()
    }

    #[test]
    fn fast_backend_is_used_and_agrees() {
        // New ids that grow with the merges' ranks (the merge table then
        // keeps no separate table of them), and ids that do not.
        for swapped in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let mut json = tiny_byte_level(&["a b", "ab c"]);
            if swapped {
                json["model"]["vocab"]["ab"] = Value::from(257);
                json["model"]["vocab"]["abc"] = Value::from(256);
            }
            let loaded = load_json(dir.path(), &json);
            let enc = Encoder::new(&loaded, None, Some(258), false, Backend::Auto, 1.0).unwrap();
            assert_eq!(enc.backend_name(), "fast");
            let texts = ["abc abd </s>", "xabcab"];
            let batch = enc.encode_many(&texts).unwrap();
            assert_eq!(batch.verified, 2);
            for (text, ids) in texts.iter().zip(&batch.ids) {
                let mut want = enc.encode_reference(text).unwrap();
                assert!(want.contains(&256) && want.contains(&257), "{want:?}");
                want.push(258);
                assert_eq!(ids, &want);
            }
        }
    }

    #[test]
    fn ignore_merges_words_found_whole_stay_whole_through_the_caches() {
        // "abc" and a 20-byte word are tokens no merge makes: whole under
        // ignore_merges, merged otherwise. Their second and third
        // occurrences come from the caches: the hot cache for "abc", the
        // shared one for the long word, which the hot cache never takes.
        let long = "abcdefghijklmnopqrst";
        for ignore in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let mut json = tiny_byte_level(&["a b"]);
            json["model"]["ignore_merges"] = Value::from(ignore);
            json["model"]["vocab"][long] = Value::from(259);
            let loaded = load_json(dir.path(), &json);
            let enc = Encoder::new(&loaded, None, None, false, Backend::Auto, 1.0).unwrap();
            assert_eq!(enc.backend_name(), "fast");
            let text = format!("abc\nabc\nabc\n{long}\n{long}\n{long}");
            let ids = &enc.encode_many(&[&text]).unwrap().ids[0];
            assert_eq!(ids, &enc.encode_reference(&text).unwrap());
            for id in [257, 259] {
                let n = if ignore { 3 } else { 0 };
                assert_eq!(ids.iter().filter(|&&i| i == id).count(), n, "{ids:?}");
            }
        }
    }

    #[test]
    fn a_token_listed_twice_keeps_its_last_id_in_the_merges() {
        // "ab" is listed as 257, then as 258: the last counts, as in the
        // crate. Its merge follows the one making 256, so the id after that
        // (257) also lists "ab", and must not be taken for it.
        let dir = tempfile::tempdir().unwrap();
        let json = test_byte_level(&["x y", "a b"], true).to_string();
        assert!(json.contains(r#""ab":257"#) && json.contains(r#""xy":256"#));
        let json = json.replace(r#""ab":257"#, r#""ab":257,"ab":258"#);
        std::fs::write(dir.path().join("tokenizer.json"), json).unwrap();
        let loaded = load(dir.path()).unwrap();
        let enc = Encoder::new(&loaded, None, None, false, Backend::Auto, 1.0).unwrap();
        assert_eq!(enc.backend_name(), "fast");
        let text = "ab xy ab";
        let ids = &enc.encode_many(&[text]).unwrap().ids[0];
        assert_eq!(ids, &enc.encode_reference(text).unwrap());
        assert!(ids.contains(&258) && !ids.contains(&257), "{ids:?}");
    }

    #[test]
    fn verify_fraction_stops_at_a_difference() {
        let dir = tempfile::tempdir().unwrap();
        let loaded = load_json(dir.path(), &tiny_byte_level(&["a b", "ab c"]));
        let mut enc = Encoder::new(&loaded, None, None, false, Backend::Fast, 1.0).unwrap();
        // A fast engine built from a tokenizer that lacks the second merge
        // gives other ids for "abc" than the reference does.
        let other = tiny_byte_level(&["a b"]);
        enc.fast = Some(Arc::new(
            FastBpe::new(&TokenizerFile::parse(&other.to_string()).unwrap()).unwrap(),
        ));
        assert!(enc.encode_many(&["xyz"]).is_ok()); // no merge involved: same ids
        let (i, err) = enc
            .encode_many(&["xyz", "abc"])
            .err()
            .expect("a difference");
        assert_eq!(i, 1);
        assert!(
            err.to_string().contains("differ from the tokenizers crate"),
            "{err}"
        );
        // Without the check the run goes on (and would write the wrong ids).
        enc.verify_fraction = 0.0;
        assert!(enc.encode_many(&["abc"]).is_ok());
    }

    #[test]
    fn vocabulary_from_the_json_numbers_tokens_as_the_crate_does() {
        let mut json = tiny_byte_level(&["a b", "ab c"]);
        let token = |id: u32, content: &str, special: bool, normalized: bool| {
            serde_json::json!({"id": id, "content": content, "special": special,
                "single_word": false, "lstrip": false, "rstrip": false, "normalized": normalized})
        };
        // Ids in the file that the crate does not use: a text of the model's
        // vocabulary, a repeated text with other flags, an empty text, ids
        // out of order and one that collides with the model's.
        json["added_tokens"] = serde_json::json!([
            token(900, "<|im_end|>", true, false),
            token(3, "ab", false, true),
            token(258, "</s>", true, false),
            token(7, "<|im_end|>", false, true),
            token(259, "", true, false),
            token(5, "<pad>", true, false),
        ]);
        json["post_processor"] = serde_json::json!({"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<pad>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<pad>": {"id": "<pad>", "ids": [260], "tokens": ["<pad>"]}}});
        let tokenizer = parse_tokenizer(&json.to_string()).unwrap();
        let text = json.to_string();
        let file = TokenizerFile::parse(&text).unwrap();
        let ours = Vocab::of_bpe(&file.raw, file.vocab.as_deref().unwrap()).unwrap();
        let crate_ = Vocab::of_crate(&tokenizer);
        assert_eq!(ours.size, crate_.size);
        assert_eq!(ours.added, crate_.added);
        for text in ["<|im_end|>", "ab", "</s>", "<pad>", "", "abc", "a", "none"] {
            assert_eq!(ours.token_to_id(text), crate_.token_to_id(text), "{text}");
        }
        // The post-processor check agrees with encoding through the crate.
        let first = tokenizer.encode_fast("a", true).unwrap().get_ids()[0];
        assert_eq!(first, 260);
        assert!(post_processor_adds(&json, 260).unwrap());
        assert!(!post_processor_adds(&json, 258).unwrap());
        json["post_processor"] = Value::Null;
        assert!(!post_processor_adds(&json, 260).unwrap());
    }

    #[test]
    fn canonical_fingerprint_ignores_merge_form_and_key_order() {
        let a = serde_json::json!({
            "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"], "dropout": null},
            "normalizer": null, "pre_tokenizer": null, "decoder": {"type": "ByteLevel"},
            "added_tokens": [{"id": 3, "content": "</s>", "special": true, "lstrip": false}]
        });
        let b = serde_json::json!({
            "added_tokens": [{"content": "</s>", "id": 3, "special": true, "normalized": false}],
            "model": {"merges": [["a", "b"]], "vocab": {"ab": 2, "b": 1, "a": 0}, "type": "BPE", "ignore_merges": false},
            "normalizer": null, "pre_tokenizer": null, "post_processor": {"type": "TemplateProcessing"}
        });
        assert_eq!(fp(&a), fp(&b));
        // As transformers 5 re-saves a BPE without affixes.
        let mut resaved = a.clone();
        resaved["model"]["continuing_subword_prefix"] = serde_json::json!("");
        resaved["model"]["end_of_word_suffix"] = serde_json::json!("");
        assert_eq!(fp(&a), fp(&resaved));
        resaved["model"]["continuing_subword_prefix"] = serde_json::json!("##");
        assert_ne!(fp(&a), fp(&resaved));
        let mut c = b.clone();
        c["model"]["vocab"]["ab"] = serde_json::json!(4);
        assert_ne!(fp(&a), fp(&c));
    }
}
