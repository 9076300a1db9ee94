//! The BPE model on byte strings: vocabulary, the merge table, and the
//! merge loop (a linear scan for short words, the crate's heap procedure
//! beyond), with ids identical to the `tokenizers` crate.

use std::borrow::Cow;
use std::ops::Range;

use std::hash::BuildHasher;

use hashbrown::HashTable;
use rustc_hash::{FxBuildHasher, FxHashMap};

use crate::chars::char_at;

use super::cache::{HotCache, Short, WordCache, CACHE_WORD_BYTES};
use super::joins::Joins;
use super::json::{MergeEntry, TokenizerFile, Vocabulary};
use super::pages::Zeroed;

/// Words of at most this many initial symbols are merged by a linear scan
/// instead of a heap.
pub(super) const SHORT_WORD_SYMBOLS: usize = 256;
/// How many words ahead of its lookup [`Bpe::encode_words`] asks for a
/// word's hot-cache set.
const AHEAD: usize = 32;

/// [`Bpe::isolated_chars`] covers the characters below this.
const ISOLATED_END: usize = 0x10000;

/// The characters of [`byte_chars`] are below this.
const BYTE_CHARS_END: usize = 0x144;

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

/// The BPE model, on byte strings: for byte-level models a vocabulary token
/// is keyed by the bytes its characters stand for.
pub(super) struct Bpe {
    vocab: TokenMap,
    merges: MergeTable,
    byte_level: bool,
    /// Byte-level: the id of each byte's character. SentencePiece: the id of
    /// each `<0xXX>` byte-fallback token (`u32::MAX` when absent).
    byte_ids: [u32; 256],
    /// Byte-level: for each byte whose character is missing from the
    /// vocabulary, its byte-fallback ids (see [`Symbols::missing`]).
    char_fallback: Vec<Option<Box<[u32]>>>,
    /// Byte-level: the rank of the merge of each pair of bytes, NO_MERGE for none.
    byte_pairs: Vec<u32>,
    unk: Option<u32>,
    fuse_unk: bool,
    byte_fallback: bool,
    ignore_merges: bool,
    /// No two vocabulary strings share an id (see [`Bpe::merge_short`]).
    unique_ids: bool,
    /// Pre-token -> ids, shared by the worker threads.
    cache: WordCache,
    /// Characters that start as one symbol, code point -> id: byte-level,
    /// those [`Bpe::whole_chars`] allows; otherwise every character that is
    /// a token.
    chars: FxHashMap<u32, u32>,
    /// SentencePiece: the characters of the Basic Multilingual Plane a word
    /// can be cut around, a bit per code point (see [`Bpe::isolated_chars`]).
    isolated: Box<[u64]>,
    /// Byte-level with a token for every byte: where a word can be cut into
    /// parts that merge apart (see [`Joins`], [`Bpe::encode_parts`]).
    /// (A missing byte can become an unknown token, which the crate fuses
    /// with its neighbours across any cut.)
    joins: Option<Joins>,
}

/// Bytes of the UTF-8 character that starts with `lead` (1 for other bytes).
pub(super) fn utf8_len(lead: u8) -> usize {
    match lead {
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF7 => 4,
        _ => 1,
    }
}

/// In `Worker::bytes`, a symbol that is a whole character.
pub(super) const NOT_A_BYTE: u16 = u16::MAX;

pub(super) const NONE: u32 = u32::MAX;

#[derive(Clone, Copy)]
pub(super) struct Symbol {
    id: u32,
    prev: i32,
    next: i32,
    /// 0 once merged into its left neighbour.
    len: u32,
}

/// Byte strings -> ids, the strings end to end in one buffer: one
/// allocation for a whole vocabulary, not one per token (allocating and
/// freeing o200k's 200k keys one by one took about a tenth of a second).
struct TokenMap {
    bytes: Vec<u8>,
    /// Each string's start and end in `bytes`, and its id.
    table: HashTable<(u32, u32, u32)>,
}

impl TokenMap {
    fn with_capacity(n: usize) -> TokenMap {
        TokenMap {
            bytes: Vec::new(),
            table: HashTable::with_capacity(n),
        }
    }

    fn hash(token: &[u8]) -> u64 {
        FxBuildHasher.hash_one(token)
    }

    fn key<'a>(bytes: &'a [u8], &(start, end, _): &(u32, u32, u32)) -> &'a [u8] {
        &bytes[start as usize..end as usize]
    }

    /// Maps `token` to `id`, in place of the id it had.
    fn insert(&mut self, token: &[u8], id: u32) -> std::result::Result<(), String> {
        let TokenMap { bytes, table } = self;
        let hash = Self::hash(token);
        if let Some(entry) = table.find_mut(hash, |e| Self::key(bytes, e) == token) {
            entry.2 = id;
            return Ok(());
        }
        let end = u32::try_from(bytes.len() + token.len())
            .map_err(|_| "vocabulary of over 4 GiB".to_string())?;
        let entry = (end - token.len() as u32, end, id);
        bytes.extend_from_slice(token);
        table.insert_unique(hash, entry, |e| Self::hash(Self::key(bytes, e)));
        Ok(())
    }

    #[inline]
    fn get(&self, token: &[u8]) -> Option<u32> {
        let eq = |e: &(u32, u32, u32)| Self::key(&self.bytes, e) == token;
        self.table.find(Self::hash(token), eq).map(|e| e.2)
    }
}

/// What the tokens' strings give besides their ids (see [`Bpe::from_model`]).
struct TokenBytes {
    /// Whole tokens, where words are looked up whole (byte-level: by the
    /// bytes their characters stand for).
    vocab: TokenMap,
    /// SentencePiece: every one-character token, code point -> id.
    chars: FxHashMap<u32, u32>,
    /// Byte-level tokens with a byte outside ASCII: the only ones that can
    /// hold a whole or a partial multi-byte character (see
    /// [`Bpe::whole_chars`]): their bytes end to end, and where each lies
    /// and its id.
    wide_bytes: Vec<u8>,
    wide_at: Vec<(Range<usize>, u32)>,
}

impl TokenBytes {
    fn of(
        vocab_json: &Vocabulary,
        byte_level: bool,
        need_vocab: bool,
    ) -> std::result::Result<TokenBytes, String> {
        // Byte-level tokens are keyed by the bytes their characters stand for.
        let mut byte_of = [None; BYTE_CHARS_END];
        for (b, c) in byte_chars().into_iter().enumerate() {
            byte_of[c as usize] = Some(b as u8);
        }
        let bytes_of = |token: &str, key: &mut Vec<u8>| -> bool {
            key.clear();
            token.chars().all(|c| {
                let b = byte_of.get(c as usize).copied().flatten();
                key.extend(b);
                b.is_some()
            })
        };
        let mut out = TokenBytes {
            vocab: TokenMap::with_capacity(if need_vocab { vocab_json.len() } else { 0 }),
            chars: FxHashMap::default(),
            wide_bytes: Vec::new(),
            wide_at: Vec::new(),
        };
        let mut key = Vec::new();
        for (token, id) in vocab_json {
            let (token, id) = (token.as_ref(), *id);
            if !byte_level {
                out.vocab.insert(token.as_bytes(), id)?;
                let mut cs = token.chars();
                if let (Some(c), None) = (cs.next(), cs.next()) {
                    out.chars.insert(c as u32, id);
                }
            } else if bytes_of(token, &mut key) {
                if need_vocab {
                    out.vocab.insert(&key, id)?;
                }
                if !key.is_ascii() {
                    let at = out.wide_bytes.len();
                    out.wide_at.push((at..at + key.len(), id));
                    out.wide_bytes.extend_from_slice(&key);
                }
            }
        }
        Ok(out)
    }
}

/// The merges read as ids (see [`Bpe::merges`]).
struct MergeIds<'a> {
    /// Token -> id (the last listed where tokens repeat).
    by_token: FxHashMap<&'a str, u32>,
    /// No two tokens share an id.
    unique_ids: bool,
    table: MergeTable,
    /// (left, right, new id) in rank order.
    list: Vec<(u32, u32, u32)>,
}

/// Pair -> (rank, new id): open addressing at most half full over 8-byte
/// slots (both ids and the rank packed into one word), so that the table
/// is half the size of a plain map and a lookup touches one cache line.
///
/// The new id comes from a table by rank; or, when the new ids grow with
/// the rank (as in every BPE trained by merging, where each merge makes the
/// next id), a slot's rank is the new id itself: it orders the merges
/// alike, and a merge then waits on no second load.
pub(super) struct MergeTable {
    slots: Zeroed<u64>,
    new_ids: Vec<u32>,
    ids_are_ranks: bool,
}

/// Bits of each id and of the rank in a slot.
pub(super) const ID_BITS: u32 = 21;
pub(super) const RANK_BITS: u32 = 64 - 2 * ID_BITS;
/// Ids below this fit a slot (the all-ones key marks an empty slot).
pub const MAX_FAST_IDS: u32 = (1 << ID_BITS) - 1;
pub(super) const EMPTY_SLOT: u64 = u64::MAX;
/// The rank of a pair that does not merge (above every real rank).
const NO_MERGE: u32 = u32::MAX;

impl MergeTable {
    fn with_capacity(n: usize) -> MergeTable {
        let mut slots = Zeroed::new((2 * n).next_power_of_two().max(16));
        slots.fill(EMPTY_SLOT);
        MergeTable {
            slots,
            new_ids: Vec::with_capacity(n),
            ids_are_ranks: false,
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

    /// The rank of the merge of `a` and `b`; [`NO_MERGE`] when there is none.
    #[inline]
    fn rank(&self, a: u32, b: u32) -> u32 {
        let slot = self.slots[self.slot(Self::key(a, b))];
        if slot == EMPTY_SLOT {
            NO_MERGE
        } else {
            (slot & ((1 << RANK_BITS) - 1)) as u32
        }
    }

    /// After the last [`MergeTable::push`]: ranks become the new ids where
    /// these grow with the rank.
    fn finish(&mut self) {
        let mask = (1 << RANK_BITS) - 1;
        self.ids_are_ranks = self.new_ids.windows(2).all(|p| p[0] < p[1])
            && self.new_ids.last().is_none_or(|&id| u64::from(id) <= mask);
        if self.ids_are_ranks {
            for slot in self.slots.iter_mut().filter(|s| **s != EMPTY_SLOT) {
                *slot = (*slot & !mask) | u64::from(self.new_ids[(*slot & mask) as usize]);
            }
        }
    }

    /// The id the merge of rank `rank` makes.
    #[inline]
    fn new_id(&self, rank: u32) -> u32 {
        if self.ids_are_ranks {
            rank
        } else {
            self.new_ids[rank as usize]
        }
    }

    #[inline]
    fn get(&self, a: u32, b: u32) -> Option<(u32, u32)> {
        let rank = self.rank(a, b);
        (rank != NO_MERGE).then(|| (rank, self.new_id(rank)))
    }
}

/// A queued merge: `rank` then `pos`, smallest first (as the crate's heap).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Merge {
    rank: u32,
    pos: u32,
    new_id: u32,
}

/// Per-thread state: the word caches and reusable buffers.
#[derive(Default)]
pub(super) struct Worker {
    hot: HotCache,
    /// [`Bpe::encode_words`]: the cache hash of each word.
    hashes: Vec<u64>,
    /// [`Bpe::encode_parts`]: a word's parts and their cache hashes, and
    /// whether cutting words pays.
    parts: Vec<(Range<usize>, u64)>,
    parts_pay: PartsPay,
    /// The words of the segment being encoded (see `FastBpe`).
    pub(super) words: Vec<Range<usize>>,
    symbols: Vec<Symbol>,
    /// Byte-level: each initial symbol's byte, or NOT_A_BYTE.
    bytes: Vec<u16>,
    ids: Vec<u32>,
    ranks: Vec<u32>,
    heap: std::collections::BinaryHeap<std::cmp::Reverse<Merge>>,
}

/// Whether cutting words into parts ([`Bpe::encode_parts`]) pays in one
/// worker: it does while most parts are found in a cache. Where they are
/// not (a vocabulary whose tokens span most points between the corpus's
/// characters: then parts are long and rare), merging the parts costs what
/// merging the word would, and the cut and the lookups come on top; then
/// only every [`PartsPay::PROBE`]th word is cut, to see whether that has
/// changed. Either way the ids are the same.
struct PartsPay {
    /// Parts found in a cache and parts merged, lately (both are halved
    /// when their sum reaches [`PartsPay::WINDOW`]).
    found: u32,
    merged: u32,
    /// Words not cut since the last probe.
    skipped: u32,
}

impl Default for PartsPay {
    /// A new worker cuts: it counts half a window of parts found to begin
    /// with, so that the misses of cold caches do not stop it.
    fn default() -> PartsPay {
        PartsPay {
            found: Self::WINDOW / 2,
            merged: 0,
            skipped: 0,
        }
    }
}

impl PartsPay {
    const WINDOW: u32 = 4096;
    const PROBE: u32 = 16;

    /// Whether to cut the next word: while at least four parts in five are
    /// found, and on a probe.
    fn paying(&mut self) -> bool {
        if self.merged * 4 <= self.found {
            return true;
        }
        self.skipped += 1;
        self.skipped.is_multiple_of(Self::PROBE)
    }

    fn count(&mut self, found: u32, merged: u32) {
        self.found += found;
        self.merged += merged;
        if self.found + self.merged >= Self::WINDOW {
            self.found /= 2;
            self.merged /= 2;
        }
    }
}

/// A word's initial symbols as they are built, with the unknown-token
/// run still pending.
struct Symbols<'w> {
    symbols: &'w mut Vec<Symbol>,
    bytes: &'w mut Vec<u16>,
    unk: Option<(u32, usize)>,
}

impl<'w> Symbols<'w> {
    fn new(symbols: &'w mut Vec<Symbol>, bytes: &'w mut Vec<u16>) -> Symbols<'w> {
        symbols.clear();
        bytes.clear();
        Symbols {
            symbols,
            bytes,
            unk: None,
        }
    }

    fn push(&mut self, id: u32, len: usize, byte: u16) {
        let n = self.symbols.len() as i32;
        self.symbols.push(Symbol {
            id,
            prev: n - 1,
            next: n + 1,
            len: len as u32,
        });
        self.bytes.push(byte);
    }

    /// A vocabulary token; a pending unknown token goes first.
    fn known(&mut self, id: u32, len: usize, byte: u16) {
        if let Some((unk, unk_len)) = self.unk.take() {
            self.push(unk, unk_len, NOT_A_BYTE);
        }
        self.push(id, len, byte);
    }

    /// A character (of `len` bytes) missing from the vocabulary, as the
    /// crate treats it: its byte-fallback tokens when it has them all
    /// (ahead of a pending unknown token, as the crate orders them), else the
    /// unknown token (one run under `fuse_unk`), else nothing.
    fn missing(&mut self, bpe: &Bpe, fallback: Option<&[u32]>, len: usize) {
        if let Some(ids) = fallback {
            for &id in ids {
                self.push(id, 1, NOT_A_BYTE);
            }
            return;
        }
        let Some(unk) = bpe.unk else {
            return;
        };
        self.unk = match self.unk.take() {
            Some((id, pending)) if bpe.fuse_unk => Some((id, pending + len)),
            Some((id, pending)) => {
                self.push(id, pending, NOT_A_BYTE);
                Some((unk, len))
            }
            None => Some((unk, len)),
        };
    }

    fn finish(mut self) {
        if let Some((id, len)) = self.unk.take() {
            self.push(id, len, NOT_A_BYTE);
        }
        if let Some(last) = self.symbols.last_mut() {
            last.next = -1;
        }
    }
}

impl Bpe {
    pub(super) fn from_model(
        file: &TokenizerFile,
        byte_level: bool,
    ) -> std::result::Result<Bpe, String> {
        let model = file.model();
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
        let vocab_json = file.vocab.as_deref().ok_or("BPE without vocab")?;
        let raw_merges = file.merges.as_deref().ok_or("BPE without merges")?;
        // Byte-level words are looked up whole only with ignore_merges;
        // SentencePiece words start from their characters' ids.
        let need_vocab = !byte_level || model["ignore_merges"] == true;
        // The tokens' byte strings are read on a second thread while this
        // one maps the merges to ids.
        let (strings, merge_ids) = std::thread::scope(|s| {
            let strings = s.spawn(|| TokenBytes::of(vocab_json, byte_level, need_vocab));
            let merges = Self::merges(vocab_json, raw_merges);
            let strings = strings
                .join()
                .expect("reading token strings does not panic");
            Ok::<_, String>((strings?, merges?))
        })?;
        let TokenBytes {
            vocab,
            chars: char_ids,
            wide_bytes,
            wide_at,
        } = strings;
        let MergeIds {
            by_token,
            unique_ids,
            table: merges,
            list: merge_list,
        } = merge_ids;
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
        // Byte-level: a byte whose character is missing falls back to the
        // `<0xXX>` tokens of that character's UTF-8 bytes, if all exist.
        let mut char_fallback = vec![None; 256];
        if byte_level && model["byte_fallback"] == true {
            for b in (0..256).filter(|&b| byte_ids[b] == NONE) {
                char_fallback[b] = chars[b]
                    .to_string()
                    .bytes()
                    .map(|u| by_token.get(format!("<0x{u:02X}>").as_str()).copied())
                    .collect();
            }
        }
        let mut byte_pairs = Vec::new();
        if byte_level {
            byte_pairs = (0..1 << 16)
                .map(|i| merges.rank(byte_ids[i >> 8], byte_ids[i & 0xFF]))
                .collect();
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
            char_fallback,
            byte_pairs,
            unk,
            fuse_unk: model["fuse_unk"] == true,
            byte_fallback: model["byte_fallback"] == true,
            ignore_merges: model["ignore_merges"] == true,
            unique_ids,
            cache: WordCache::default(),
            chars: char_ids,
            isolated: Box::new([]),
            joins: None,
        };
        if !byte_level {
            bpe.isolated = bpe.isolated_chars(&merge_list);
        }
        let wide: Vec<(&[u8], u32)> = wide_at
            .into_iter()
            .map(|(at, id)| (&wide_bytes[at], id))
            .collect();
        if byte_level && !bpe.byte_ids.contains(&NONE) {
            bpe.joins = Some(Joins::new(wide.iter().map(|&(t, _)| t)));
        }
        if byte_level && bpe.unique_ids {
            bpe.chars = bpe.whole_chars(&wide, &merge_list);
        }
        Ok(bpe)
    }

    /// The model with `cache` as its word cache (see [`WordCache::allocated`]).
    pub(super) fn with_cache(self, cache: WordCache) -> Bpe {
        Bpe { cache, ..self }
    }

    /// The merges as ids, and token -> id.
    fn merges<'a>(
        vocab_json: &'a Vocabulary<'a>,
        raw_merges: &[MergeEntry],
    ) -> std::result::Result<MergeIds<'a>, String> {
        let mut by_token: FxHashMap<&str, u32> = FxHashMap::default();
        by_token.reserve(vocab_json.len());
        // Each id's token (the last listed where ids repeat).
        let mut by_id = vec![None; vocab_json.len()];
        let mut unique_ids = true;
        for (token, id) in vocab_json {
            let (token, id) = (token.as_ref(), *id);
            if id >= MAX_FAST_IDS {
                return Err(format!("vocab id {id} is not below {MAX_FAST_IDS}"));
            }
            by_token.insert(token, id);
            let i = id as usize;
            if i >= by_id.len() {
                by_id.resize(i + 1, None);
            }
            unique_ids &= by_id[i].replace(token).is_none();
        }
        let mut merges = MergeTable::with_capacity(raw_merges.len());
        let mut concat = String::new();
        let mut merge_list = Vec::new();
        // Where no token is listed twice, the token of an id is the one the
        // map holds.
        let unique_tokens = by_token.len() == vocab_json.len();
        let mut last = 0;
        for m in raw_merges {
            // Legacy merges are "a b" strings (a merges.txt `#version` line is skipped).
            let (a, b) = match m {
                MergeEntry::Pair(a, b) => (a.as_ref(), b.as_ref()),
                MergeEntry::Text(s) if s.starts_with("#version") => continue,
                MergeEntry::Text(s) => {
                    let mut parts = s.split(' ');
                    match (parts.next(), parts.next(), parts.next()) {
                        (Some(a), Some(b), None) => (a, b),
                        _ => return Err("merge is not a pair of strings".into()),
                    }
                }
            };
            let id = |t: &str| {
                by_token
                    .get(t)
                    .copied()
                    .ok_or_else(|| format!("merge token {t:?} not in vocab"))
            };
            concat.clear();
            concat.push_str(a);
            concat.push_str(b);
            // Files list the merges by the ids they make (one merge per id, or,
            // converted from tiktoken ranks, several): the last merge's id and
            // the next are tried before the map, a third of the lookups.
            let new_id = match [last, last + 1]
                .into_iter()
                .find(|&i| unique_tokens && by_id.get(i as usize) == Some(&Some(concat.as_str())))
            {
                Some(i) => i,
                None => id(&concat)?,
            };
            last = new_id;
            let (a, b) = (id(a)?, id(b)?);
            merges.push(a, b, new_id)?;
            merge_list.push((a, b, new_id));
        }
        merges.finish();
        Ok(MergeIds {
            by_token,
            unique_ids,
            table: merges,
            list: merge_list,
        })
    }

    /// SentencePiece: the characters below U+10000 around which a word can
    /// be cut without changing its ids (in LLaMA-2's and Mistral's
    /// vocabularies the newline, the digits and most CJK characters).
    ///
    /// Such a character starts as one symbol, its own token or, where every
    /// byte has a fallback token (so no character becomes unknown, whose
    /// token the crate would queue behind later fallback tokens), its
    /// byte-fallback token, and no merge takes that symbol as a side. No
    /// merge then joins it to a neighbour, so the merges on either side of
    /// it never meet: each side merges, lowest rank and leftmost first, as
    /// it would alone. Not under `ignore_merges`, where a word found whole
    /// in the vocabulary skips the merges.
    fn isolated_chars(&self, merges: &[(u32, u32, u32)]) -> Box<[u64]> {
        let mut set = vec![0u64; ISOLATED_END / 64].into_boxed_slice();
        if self.ignore_merges {
            return set;
        }
        let sides: rustc_hash::FxHashSet<u32> = merges.iter().flat_map(|m| [m.0, m.1]).collect();
        let every_byte = self.byte_fallback && !self.byte_ids.contains(&NONE);
        let mut utf8 = [0; 4];
        for c in (0..ISOLATED_END as u32).filter_map(char::from_u32) {
            let alone = match self.chars.get(&(c as u32)) {
                Some(id) => !sides.contains(id),
                None => {
                    let bytes = c.encode_utf8(&mut utf8).bytes();
                    every_byte
                        && bytes
                            .map(|b| self.byte_ids[usize::from(b)])
                            .all(|id| !sides.contains(&id))
                }
            };
            set[c as usize / 64] |= u64::from(alone) << (c as usize % 64);
        }
        set
    }

    /// Whether a SentencePiece word can be cut around `c` (see
    /// [`Bpe::isolated_chars`]).
    #[inline]
    pub(super) fn isolated(&self, c: char) -> bool {
        self.isolated
            .get(c as usize / 64)
            .is_some_and(|bits| bits >> (c as usize % 64) & 1 == 1)
    }

    /// Byte-level: the multi-byte characters that can start as one symbol
    /// (their own token) instead of their bytes, without changing any ids.
    ///
    /// Take a character C whose bytes each have a token and, merged alone,
    /// become one token T, and let R be the highest rank among those merges.
    /// In any text, until C is T, the pairs inside C are those of C alone,
    /// and the lowest of them is C's next merge. C can join a symbol outside
    /// it only through a merge taking its first symbol as the right side or
    /// its last symbol as the left side. If every such merge ranks above
    /// C's next merge at each step, none applies while C is not yet T, and
    /// C's merges run as they do alone. If also every merge taking T as a
    /// side ranks above R, the merges outside C run as they would with C
    /// starting as T: those that apply while C is not yet T rank below C's
    /// next merge, so below R. Once C is T the two runs are the same, so
    /// starting from T gives the same ids. This asks nothing of the order of
    /// the merges, so it also holds for merges converted from tiktoken ranks
    /// (Tekken, LLaMA-3), where a token can be made by several merges and a
    /// merge can come before those making its parts.
    fn whole_chars(
        &self,
        tokens: &[(&[u8], u32)],
        merges: &[(u32, u32, u32)],
    ) -> FxHashMap<u32, u32> {
        // Tables by id, over every id in `tokens` and `merges`.
        let ids = merges.iter().flat_map(|m| [m.0, m.1, m.2]);
        let len = ids
            .chain(tokens.iter().map(|t| t.1))
            .max()
            .map_or(0, |m| m as usize + 1);
        // Whether a token can end right before a character (its last
        // character is whole), and start at one (not with a continuation
        // byte). Tokens outside `tokens` are ASCII.
        let (mut ends_char, mut starts_char) = (vec![true; len], vec![true; len]);
        for &(t, id) in tokens {
            let id = id as usize;
            if let Some(p) = t.iter().rposition(|&b| b >= 0xC0) {
                ends_char[id] = p + utf8_len(t[p]) == t.len();
            }
            starts_char[id] = !(0x80..0xC0).contains(&t[0]);
        }
        // The lowest rank of a merge that can join two symbols across a
        // character boundary, for each token as its left side and as its
        // right side (ranks as the merge table orders them; NO_MERGE: none).
        let (mut left_at, mut right_at) = (vec![NO_MERGE; len], vec![NO_MERGE; len]);
        for &(a, b, _) in merges {
            let (a, b) = (a as usize, b as usize);
            if ends_char[a] && starts_char[b] {
                if let Some((rank, _)) = self.merge_of(a as u32, b as u32) {
                    left_at[a] = left_at[a].min(rank);
                    right_at[b] = right_at[b].min(rank);
                }
            }
        }
        let above = |at: &[u32], id: u32, rank: u32| at.get(id as usize).is_none_or(|&r| r > rank);
        let mut worker = Worker::default();
        let mut out = Vec::new();
        let mut chars = FxHashMap::default();
        for &(t, want) in tokens {
            let Some(c) = std::str::from_utf8(t).ok().filter(|s| s.len() > 1) else {
                continue;
            };
            let mut cs = c.chars();
            let (Some(ch), None) = (cs.next(), cs.next()) else {
                continue;
            };
            if t.iter().any(|&b| self.byte_ids[usize::from(b)] == NONE) {
                continue;
            }
            self.init_symbols(t, &mut worker);
            out.clear();
            let (mut highest, mut apart) = (0, true);
            self.merge_short(&mut worker, &mut out, |ids, rank| {
                highest = highest.max(rank);
                apart &=
                    above(&right_at, ids[0], rank) && above(&left_at, ids[ids.len() - 1], rank);
            });
            if apart
                && out == [want]
                && above(&right_at, want, highest)
                && above(&left_at, want, highest)
            {
                chars.insert(ch as u32, want);
            }
        }
        chars
    }

    /// The parts [`Bpe::joins`] cuts `word` into (the word alone where it
    /// cuts nothing or there are no joins).
    #[cfg(test)]
    pub(super) fn parts<'w>(&self, word: &'w str) -> Vec<&'w str> {
        let mut parts = Vec::new();
        match &self.joins {
            Some(joins) => joins.cut(word.as_bytes(), 0..word.len(), |r| parts.push(&word[r])),
            None => parts.push(word),
        }
        parts
    }

    /// Whether `c` starts as one symbol (see [`Bpe::whole_chars`]).
    #[cfg(test)]
    pub(super) fn starts_whole(&self, c: char) -> bool {
        self.byte_level && self.chars.contains_key(&(c as u32))
    }

    /// Initial symbols of a word, as the crate's `merge_word` builds them.
    fn init_symbols(&self, word: &[u8], w: &mut Worker) {
        let mut s = Symbols::new(&mut w.symbols, &mut w.bytes);
        if self.byte_level {
            // One symbol per byte, or per character where [`Bpe::whole_chars`]
            // allows; `bytes` keeps each symbol's byte (NOT_A_BYTE for a
            // character) for the dense first lookups.
            let mut i = 0;
            while i < word.len() {
                let b = word[i];
                if b >= 0xC0 && !self.chars.is_empty() {
                    let c = char_at(word, i);
                    if let Some((c, &id)) = c.and_then(|c| Some((c, self.chars.get(&(c as u32))?)))
                    {
                        s.known(id, c.len_utf8(), NOT_A_BYTE);
                        i += c.len_utf8();
                        continue;
                    }
                }
                match self.byte_ids[b as usize] {
                    NONE => s.missing(self, self.char_fallback[b as usize].as_deref(), 1),
                    id => s.known(id, 1, u16::from(b)),
                }
                i += 1;
            }
        } else {
            let text = std::str::from_utf8(word).expect("words are cut at character boundaries");
            let mut fallback = Vec::new();
            for (i, c) in text.char_indices() {
                let bytes = &word[i..i + c.len_utf8()];
                if let Some(&id) = self.chars.get(&(c as u32)) {
                    s.known(id, bytes.len(), NOT_A_BYTE);
                    continue;
                }
                fallback.clear();
                fallback.extend(bytes.iter().map(|&b| self.byte_ids[b as usize]));
                let fallback =
                    (self.byte_fallback && !fallback.contains(&NONE)).then_some(&fallback);
                s.missing(self, fallback.map(Vec::as_slice), bytes.len());
            }
        }
        s.finish();
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
    /// starting at a position would be longer. `before_merge` sees the live
    /// symbols and the rank about to apply before each merge.
    fn merge_short(
        &self,
        w: &mut Worker,
        out: &mut Vec<u32>,
        mut before_merge: impl FnMut(&[u32], u32),
    ) {
        let (ids, ranks) = (&mut w.ids, &mut w.ranks);
        ids.clear();
        ids.extend(w.symbols.iter().map(|s| s.id));
        // ids: the live symbols, in order; ranks[i]: the rank of the merge
        // of ids[i] and ids[i + 1] (its new id is looked up only when it is
        // applied). A merge removes one entry of each, so every scan is
        // over live symbols only.
        ranks.clear();
        for (i, p) in ids.windows(2).enumerate() {
            // Pairs of bytes (most first pairs): one dense-table read each.
            ranks.push(match (w.bytes.get(i), w.bytes.get(i + 1)) {
                (Some(&a), Some(&b)) if a != NOT_A_BYTE && b != NOT_A_BYTE => {
                    self.byte_pairs[(usize::from(a) << 8) | usize::from(b)]
                }
                _ => self.merges.rank(p[0], p[1]),
            });
        }
        loop {
            // A plain min and a search for it: both vectorise.
            let best = ranks.iter().copied().min().unwrap_or(NO_MERGE);
            if best == NO_MERGE {
                break;
            }
            before_merge(ids, best);
            let at = ranks.iter().position(|&r| r == best).unwrap_or(0);
            // Merge ids[at] and ids[at + 1], then re-rank the pairs that
            // changed: those on either side of the new symbol.
            ids[at] = self.merges.new_id(best);
            ids.remove(at + 1);
            ranks.remove(at);
            if let Some(&after) = ids.get(at + 1) {
                ranks[at] = self.merges.rank(ids[at], after);
            }
            if let Some(before) = at.checked_sub(1) {
                ranks[before] = self.merges.rank(ids[before], ids[at]);
            }
        }
        out.extend_from_slice(ids);
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

    /// The id of a one-byte word that is its byte's token (byte-level).
    #[inline]
    fn byte_token(&self, word: &[u8]) -> Option<u32> {
        match word {
            &[b] if self.byte_level => Some(self.byte_ids[b as usize]).filter(|&id| id != NONE),
            _ => None,
        }
    }

    /// The cache hash of the word `text[r]` (`apart`: see
    /// [`Bpe::keyed_apart`]); 0 when it is not cached: too long, or a byte
    /// token.
    #[inline(always)]
    fn cache_hash(&self, text: &[u8], r: Range<usize>, apart: bool) -> u64 {
        if r.len() <= CACHE_WORD_BYTES && self.byte_token(&text[r.clone()]).is_none() {
            WordCache::hash(text, r, apart)
        } else {
            0
        }
    }

    /// Whether a word of `len` bytes with cache hash `hash` goes through
    /// the hot cache.
    #[inline]
    fn hot_cached(len: usize, hash: u64) -> bool {
        hash != 0 && len <= HotCache::MAX_WORD_BYTES
    }

    /// Appends the ids of `words` (byte ranges of `text`), in order.
    ///
    /// A cache lookup mostly waits for memory, so the cache is asked to
    /// load each word's first line [`AHEAD`] words before its lookup, and
    /// the waits of many words overlap: a short word's hot-cache set, or a
    /// longer word's slot in the shared cache (the hot cache never takes
    /// it). A short word that misses the hot cache gets no such request:
    /// finding those early read the hot cache ahead of time, and that cost
    /// more than it saved (see docs/tokenizer-engines.md).
    ///
    /// `spaces`: the words are SentencePiece words of text not yet
    /// normalised, whose spaces stand for this string (see
    /// `FastBpe::encode_spaced`). They are cached under their own bytes,
    /// and only a word that is merged is written out with the string.
    pub(super) fn encode_words(
        &self,
        text: &[u8],
        words: &[Range<usize>],
        spaces: Option<&str>,
        w: &mut Worker,
        out: &mut Vec<u32>,
    ) {
        let mut hashes = std::mem::take(&mut w.hashes);
        hashes.clear();
        hashes.extend(
            words
                .iter()
                .map(|r| self.cache_hash(text, r.clone(), false)),
        );
        for (i, r) in words.iter().enumerate() {
            if let (Some(&hash), Some(ahead)) = (hashes.get(i + AHEAD), words.get(i + AHEAD)) {
                if Self::hot_cached(ahead.len(), hash) {
                    w.hot.prefetch(hash);
                } else if hash != 0 {
                    self.cache.prefetch(hash);
                }
            }
            self.encode_hashed::<false>(text, r.clone(), hashes[i], spaces, w, out);
        }
        w.hashes = hashes;
    }

    /// Byte-level: appends the ids of the word `text[r]`, which no cache
    /// holds, as those of its parts, where [`Bpe::joins`] cuts it in two or
    /// more: each part is looked up in the caches or merged, as a word. False,
    /// and nothing appended, where it is not cut.
    ///
    /// A word is cut only once it has missed the caches, so a word that
    /// recurs costs one lookup, and the cut replaces its merge: a run of CJK
    /// characters unique in the corpus becomes parts of one to three
    /// characters that recur.
    // A miss path, kept out of the loop over words that the word's
    // `encode_hashed` is inlined into.
    #[inline(never)]
    fn encode_parts(
        &self,
        text: &[u8],
        r: Range<usize>,
        w: &mut Worker,
        out: &mut Vec<u32>,
    ) -> bool {
        let Some(joins) = &self.joins else {
            return false;
        };
        if !w.parts_pay.paying() {
            return false;
        }
        let mut parts = std::mem::take(&mut w.parts);
        parts.clear();
        joins.cut(text, r, |part| parts.push((part, 0)));
        let cut = parts.len() > 1;
        if cut {
            let apart = self.keyed_apart(true);
            for (part, hash) in &mut parts {
                *hash = self.cache_hash(text, part.clone(), apart);
                if Self::hot_cached(part.len(), *hash) {
                    w.hot.prefetch(*hash);
                }
            }
            let mut merged = 0;
            for (part, hash) in &parts {
                merged +=
                    u32::from(self.encode_hashed::<true>(text, part.clone(), *hash, None, w, out));
            }
            w.parts_pay.count(parts.len() as u32 - merged, merged);
        }
        w.parts = parts;
        cut
    }

    /// Whether the caches key a part of a word (`part`) apart from a word
    /// with the same bytes: under `ignore_merges`, where the part's bytes
    /// may also be a word that is one token while the part merges to
    /// several. Elsewhere both have the same ids.
    #[inline]
    fn keyed_apart(&self, part: bool) -> bool {
        part && self.ignore_merges
    }

    /// Appends the ids of one word (a pre-token), `text[r]`, to `out`, or of
    /// a part of one (`PART`, see [`Bpe::encode_parts`]); `hash` is its
    /// [`Bpe::cache_hash`], `spaces` as in [`Bpe::encode_words`]. A part is
    /// never looked up whole in the vocabulary, nor cut. True where the word
    /// was merged, found in no cache.
    ///
    /// `PART` is a constant so that the word's version, which calls the
    /// part's, is not recursive and can be inlined into the loop over words.
    fn encode_hashed<const PART: bool>(
        &self,
        text: &[u8],
        r: Range<usize>,
        hash: u64,
        spaces: Option<&str>,
        w: &mut Worker,
        out: &mut Vec<u32>,
    ) -> bool {
        let word = &text[r.clone()];
        if word.is_empty() {
            return false;
        }
        if let Some(id) = self.byte_token(word) {
            out.push(id);
            return false;
        }
        let apart = self.keyed_apart(PART);
        let cacheable = hash != 0;
        // The hot cache's key, for a word it takes.
        let hot = Self::hot_cached(word.len(), hash)
            .then(|| Short::at(text, r.clone(), apart))
            .flatten();
        if let Some(key) = hot {
            if w.hot.get(key, hash, out) {
                return false;
            }
        }
        let start = out.len();
        let mut merged = false;
        // The word as the model sees it.
        let model_word = || match spaces {
            Some(to) if word.contains(&b' ') => {
                Cow::Owned(String::from_utf8_lossy(word).replace(' ', to).into_bytes())
            }
            _ => Cow::Borrowed(word),
        };
        // A word found in the shared cache, or whole in the vocabulary
        // under ignore_merges, or merged; the hot cache is then offered its
        // ids. The shared cache comes first: its slot was prefetched where
        // the hot cache does not take the word, and a vocabulary lookup
        // waits for two loads (the map's slot, then the token's bytes).
        if !(cacheable && self.cache.get(word, apart, hash, out)) {
            let whole = (self.ignore_merges && !PART)
                .then(|| self.vocab.get(&model_word()))
                .flatten();
            if let Some(id) = whole {
                out.push(id);
            } else if PART || word.is_ascii() || !self.encode_parts(text, r, w, out) {
                merged = true;
                self.init_symbols(&model_word(), w);
                if self.unique_ids && w.symbols.len() <= SHORT_WORD_SYMBOLS {
                    self.merge_short(w, out, |_, _| ());
                } else {
                    self.merge_all(w);
                    out.extend(w.symbols.iter().filter(|s| s.len > 0).map(|s| s.id));
                }
            }
            if cacheable {
                self.cache.insert(word, apart, hash, &out[start..]);
            }
        }
        if let Some(key) = hot {
            w.hot.offer(key, hash, &out[start..]);
        }
        merged
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_map_keeps_the_last_id_and_grows() {
        // From a capacity of two to thousands: the table rehashes from the
        // keys' bytes.
        let mut map = TokenMap::with_capacity(2);
        let tokens: Vec<Vec<u8>> = (0..5000).map(|i| format!("t{i}").into_bytes()).collect();
        for (id, t) in tokens.iter().enumerate() {
            map.insert(t, id as u32).unwrap();
        }
        let stored = map.bytes.len();
        map.insert(b"t7", 9999).unwrap();
        map.insert("中".as_bytes(), 10_000).unwrap();
        map.insert(b"", 10_001).unwrap();
        // A key given a new id is not stored again.
        assert_eq!(map.bytes.len(), stored + "中".len());
        for (id, t) in tokens.iter().enumerate() {
            let want = if t == b"t7" { 9999 } else { id as u32 };
            assert_eq!(map.get(t), Some(want));
        }
        assert_eq!(map.get("中".as_bytes()), Some(10_000));
        assert_eq!(map.get(b""), Some(10_001));
        for absent in [&b"t5000"[..], b"t", b"t05", "中中".as_bytes()] {
            assert_eq!(map.get(absent), None);
        }
    }
}
