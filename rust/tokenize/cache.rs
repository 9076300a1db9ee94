//! The caches of pre-token -> ids: a hot per-thread cache of short words in
//! front of a capped cache shared by an encoder's threads, read without
//! locks (see [`WordCache`]).

use std::ops::Range;
use std::sync::{OnceLock, PoisonError};

// The `loom` feature swaps in loom's atomics and lock for its model-checking
// test (`loom_model` below), and shrinks the cache so that loom can try
// every interleaving; builds users get never have it.
#[cfg(feature = "loom")]
use loom::sync::{
    atomic::{fence, AtomicU32, AtomicU64, Ordering},
    Mutex,
};
#[cfg(not(feature = "loom"))]
use std::sync::{
    atomic::{fence, AtomicU32, AtomicU64, Ordering},
    Mutex,
};

#[cfg(not(feature = "loom"))]
use super::pages::{ZeroIsValid, Zeroed};

/// Words of at most this many bytes are cached.
pub(super) const CACHE_WORD_BYTES: usize = 128;
// A cached word's length, and its ids (at most one per byte), fit 8 bits.
const _: () = assert!(CACHE_WORD_BYTES < 256);
/// The word cache is shared by the worker threads of one encoder, in this
/// many shards (chosen by the word's hash); see [`WordCache`].
#[cfg(not(feature = "loom"))]
const CACHE_SHARDS: usize = 16;
/// Slots of one shard (a power of two); a shard holds at most half as many
/// words and is emptied when that many are in it.
#[cfg(not(feature = "loom"))]
const SHARD_SLOTS: usize = (1 << 20) / CACHE_SHARDS;
/// A shard is also emptied when its words' bytes or ids reach these sizes.
#[cfg(not(feature = "loom"))]
const SHARD_KEY_BYTES: usize = (16 << 20) / CACHE_SHARDS;
#[cfg(not(feature = "loom"))]
const SHARD_IDS: usize = (4 << 20) / CACHE_SHARDS;
/// The most slots a lookup reads. A shard is at most half full, so an
/// honest probe is a few slots long.
#[cfg(not(feature = "loom"))]
const MAX_PROBES: usize = 64;
// Under loom: one shard of four slots, holding two words in at most four
// key chunks and eight ids.
#[cfg(feature = "loom")]
const CACHE_SHARDS: usize = 1;
#[cfg(feature = "loom")]
const SHARD_SLOTS: usize = 4;
#[cfg(feature = "loom")]
const SHARD_KEY_BYTES: usize = 32;
#[cfg(feature = "loom")]
const SHARD_IDS: usize = 8;
#[cfg(feature = "loom")]
const MAX_PROBES: usize = SHARD_SLOTS;
/// The most bytes the word cache of one encoder holds (16 per slot plus the
/// two arenas, over all shards); each worker thread adds a hot cache of
/// [`HOT_SETS`] x 64 bytes.
pub const CACHE_MAX_BYTES: usize =
    CACHE_SHARDS * (SHARD_SLOTS * 16 + SHARD_KEY_BYTES + SHARD_IDS * 4);

/// Asks the CPU to start loading the cache line of `p`, without waiting.
#[inline]
fn prefetch<T>(p: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads nothing into the program and never faults.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>((p as *const T).cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// The pre-token -> ids cache shared by an encoder's threads, with a hard
/// cap, in [`CACHE_SHARDS`] shards chosen by the word's hash: each shard
/// does open addressing over slots that point into two arenas, and is
/// emptied when half its slots are used.
///
/// Readers take no lock and write nothing, so a lookup does not pull a
/// cache line over from the other core as taking a lock does (with a lock
/// per shard, two threads used up to a sixth more CPU than two processes
/// doing the same work). Writers take the shard's `fill`.
/// A slot is published by storing its hash last (release); until the shard
/// is emptied, a published slot and what it points to never change. A
/// reader that raced with an emptying sees the shard's `generation` changed
/// (it is odd while one runs) and treats its lookup as a miss. Everything
/// shared is an atomic, so a racing read is never undefined behaviour, only
/// discarded. The tests in `loom_model` check this protocol in every
/// interleaving of a reader with one or two writers, under the weak memory
/// orderings loom models; each ordering that makes it work fails them when
/// weakened.
#[derive(Default)]
pub(super) struct WordCache {
    /// All shards' memory, in one allocation so that it can sit on huge
    /// pages; allocated on the first insert, or by [`WordCache::allocated`].
    arenas: OnceLock<Arenas>,
    shards: [Shard; CACHE_SHARDS],
}

#[derive(Default)]
struct Shard {
    generation: AtomicU64,
    fill: Mutex<Fill>,
}

/// The memory of all shards, shard after shard. Words are stored in 8-byte
/// little-endian chunks, zero-padded, each starting a chunk.
struct Arenas {
    /// Per slot: the word's hash (0 = empty), then where it lives ([`meta`]).
    slots: Table<[AtomicU64; 2]>,
    keys: Table<AtomicU64>,
    ids: Table<AtomicU32>,
}

/// `n` zeros of `T`: on huge pages where the system gives them
/// ([`Zeroed`]); under loom, values its model tracks.
#[cfg(not(feature = "loom"))]
type Table<T> = Zeroed<T>;
#[cfg(feature = "loom")]
type Table<T> = Box<[T]>;

#[cfg(not(feature = "loom"))]
fn table<T: ZeroIsValid>(n: usize) -> Table<T> {
    Zeroed::new(n)
}

#[cfg(feature = "loom")]
fn table<T: Default>(n: usize) -> Table<T> {
    (0..n).map(|_| T::default()).collect()
}

/// One shard's part of [`Arenas`].
struct ShardArenas<'a> {
    slots: &'a [[AtomicU64; 2]],
    keys: &'a [AtomicU64],
    ids: &'a [AtomicU32],
}

/// What a shard's writers have used of it.
#[derive(Default)]
struct Fill {
    words: usize,
    key_chunks: usize,
    ids: usize,
}

/// Where a cached word lives, and whether it is a part of a word keyed
/// apart (see [`WordCache::get`]): that flag, key chunk offset, ids offset,
/// byte length and ids length, packed (1 + 23 + 24 + 8 + 8 bits).
fn meta(key_at: usize, ids_at: usize, len: usize, n: usize, apart: bool) -> u64 {
    (u64::from(apart) << 63)
        | ((key_at as u64) << 40)
        | ((ids_at as u64) << 16)
        | ((len as u64) << 8)
        | n as u64
}

const _: () = assert!(SHARD_KEY_BYTES / 8 < 1 << 23);

/// A [`meta`]'s fields: key chunk offset, ids offset, length, ids length,
/// and whether it is a part keyed apart.
fn unmeta(m: u64) -> (usize, usize, usize, usize, bool) {
    let f = |shift: u32, bits: u32| ((m >> shift) & ((1 << bits) - 1)) as usize;
    (f(40, 23), f(16, 24), f(8, 8), f(0, 8), f(63, 1) == 1)
}

/// The 8-byte chunks a word is stored in.
#[inline]
fn chunks(word: &[u8]) -> impl Iterator<Item = u64> + '_ {
    word.chunks(8).map(|c| match <[u8; 8]>::try_from(c) {
        Ok(full) => u64::from_le_bytes(full),
        // The last, shorter chunk: byte by byte (a copy of a variable
        // length would call memcpy).
        Err(_) => c.iter().rev().fold(0, |v, &b| (v << 8) | u64::from(b)),
    })
}

impl Arenas {
    fn new() -> Arenas {
        let arenas = Arenas {
            slots: table(CACHE_SHARDS * SHARD_SLOTS),
            keys: table(CACHE_SHARDS * SHARD_KEY_BYTES / 8),
            ids: table(CACHE_SHARDS * SHARD_IDS),
        };
        // Lookups read slots that no insert has written yet. A page read
        // before it is written maps the kernel's shared zero page, and the
        // later write then costs a copy and a TLB flush on every core (35 ms
        // more for a first encode of 300 documents). Writing the slots first
        // avoids that; keys and ids are read only where an insert wrote.
        for s in 0..CACHE_SHARDS {
            arenas.shard(s).empty();
        }
        arenas
    }

    #[inline]
    fn shard(&self, s: usize) -> ShardArenas<'_> {
        const KEY_CHUNKS: usize = SHARD_KEY_BYTES / 8;
        ShardArenas {
            slots: &self.slots[s * SHARD_SLOTS..][..SHARD_SLOTS],
            keys: &self.keys[s * KEY_CHUNKS..][..KEY_CHUNKS],
            ids: &self.ids[s * SHARD_IDS..][..SHARD_IDS],
        }
    }
}

impl ShardArenas<'_> {
    /// The slot where the probe for `hash` starts (its bit 0 is always set).
    #[inline]
    fn home(&self, hash: u64) -> usize {
        (hash >> 1) as usize & (self.slots.len() - 1)
    }

    /// Marks every slot empty.
    fn empty(&self) {
        for slot in self.slots {
            slot[0].store(0, Ordering::Relaxed);
        }
    }

    /// The slot holding `word` (`apart`: as a part, see [`WordCache::get`]),
    /// or the empty slot where it would go, with that slot's meta. Reads
    /// only; `None` where a racing write left something out of range, or
    /// after [`MAX_PROBES`] slots: words made to share a hash then cost a
    /// bounded time each, and go uncached.
    fn find(&self, word: &[u8], apart: bool, hash: u64) -> Option<(usize, u64)> {
        let mask = self.slots.len() - 1;
        let mut i = self.home(hash);
        for _ in 0..MAX_PROBES {
            let h = self.slots[i][0].load(Ordering::Acquire);
            if h == 0 {
                return Some((i, 0));
            }
            if h == hash {
                let m = self.slots[i][1].load(Ordering::Relaxed);
                let (key_at, _, len, _, stored_apart) = unmeta(m);
                if len == word.len() && stored_apart == apart {
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
    /// A cache whose memory is allocated, and its slots written (16 MiB, see
    /// `Arenas::new`), now instead of at the first insert, so that a
    /// thread of its own can do it while the tokenizer loads: on huge pages
    /// the kernel may first compact memory. Keys and ids fault in as inserts
    /// reach them; writing those too cut the slowest one-document `prepare`
    /// a little further but kept 34 MB more resident.
    pub(super) fn allocated() -> WordCache {
        let cache = WordCache::default();
        cache.arenas.get_or_init(Arenas::new);
        cache
    }

    /// The hash of the word `text[r]` (never 0, bit 0 set), as a part of a
    /// word when `apart`: words of up to 16 bytes hashed from their [`Short`]
    /// form, longer ones by xxh3.
    #[inline]
    pub(super) fn hash(text: &[u8], r: Range<usize>, apart: bool) -> u64 {
        match Short::at(text, r.clone(), apart) {
            Some(short) => short.hash(),
            None => xxhash_rust::xxh3::xxh3_64_with_seed(&text[r], u64::from(apart)) | 1,
        }
    }

    /// The shard of `hash`: its top bits (its low bits pick the slot).
    #[inline]
    #[cfg_attr(feature = "loom", allow(clippy::modulo_one))] // one shard under loom
    fn shard_of(hash: u64) -> usize {
        (hash >> 60) as usize % CACHE_SHARDS
    }

    /// Starts loading the slot where the lookup of `hash` begins.
    #[inline]
    pub(super) fn prefetch(&self, hash: u64) {
        if let Some(arenas) = self.arenas.get() {
            let shard = arenas.shard(Self::shard_of(hash));
            prefetch(&shard.slots[shard.home(hash)]);
        }
    }

    /// Appends the cached ids of `word` to `out`; false on a miss. A word
    /// cut into parts, each merged apart, may have a part whose bytes are
    /// also a word that is one token under `ignore_merges`; `apart` keys such
    /// parts apart from the words.
    pub(super) fn get(&self, word: &[u8], apart: bool, hash: u64, out: &mut Vec<u32>) -> bool {
        let Some(arenas) = self.arenas.get() else {
            return false;
        };
        let s = Self::shard_of(hash);
        let (arenas, generation) = (arenas.shard(s), &self.shards[s].generation);
        let seen = generation.load(Ordering::Acquire);
        if seen % 2 == 1 {
            return false;
        }
        let start = out.len();
        let found = arenas
            .find(word, apart, hash)
            .filter(|&(_, m)| m != 0)
            .and_then(|(_, m)| {
                let (_, ids_at, _, n, _) = unmeta(m);
                arenas.ids.get(ids_at..ids_at + n)
            })
            .map(|ids| out.extend(ids.iter().map(|id| id.load(Ordering::Relaxed))))
            .is_some();
        fence(Ordering::Acquire);
        if generation.load(Ordering::Relaxed) != seen {
            out.truncate(start);
            return false;
        }
        found
    }

    /// Caches the ids of `word` (`apart` as in [`WordCache::get`]).
    pub(super) fn insert(&self, word: &[u8], apart: bool, hash: u64, ids: &[u32]) {
        let s = Self::shard_of(hash);
        let arenas = self.arenas.get_or_init(Arenas::new).shard(s);
        let shard = &self.shards[s];
        let mut fill = shard.fill.lock().unwrap_or_else(PoisonError::into_inner);
        let key_chunks = word.len().div_ceil(8);
        if fill.words >= SHARD_SLOTS / 2
            || fill.key_chunks + key_chunks > arenas.keys.len()
            || fill.ids + ids.len() > arenas.ids.len()
        {
            // Readers that overlap this see the generation change. The
            // emptying writes only zeros, which a reader takes for a miss,
            // so it needs no fence of its own; the words written after it
            // do (below).
            let g = shard.generation.load(Ordering::Relaxed);
            shard.generation.store(g + 1, Ordering::Relaxed);
            arenas.empty();
            shard.generation.store(g + 2, Ordering::Release);
            *fill = Fill::default();
        }
        let Some((i, 0)) = arenas.find(word, apart, hash) else {
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
            meta(key_at, ids_at, word.len(), ids.len(), apart),
            Ordering::Relaxed,
        );
        slot[0].store(hash, Ordering::Release);
        fill.words += 1;
        fill.key_chunks += key_chunks;
        fill.ids += ids.len();
    }
}

/// A word of at most 16 bytes as two words and its length: its bytes 0..8
/// and 8..16, each zero past the word's end. Two words are equal exactly
/// when their `Short` forms are; a compare or a hash of it then takes no
/// loop over bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Short {
    a: u64,
    b: u64,
    len: u8,
}

impl Short {
    /// The longest word that has a short form.
    const MAX_BYTES: usize = 16;

    /// Set in `len` for a part of a word (see [`WordCache::get`]).
    pub(super) const APART: u8 = 0x80;

    /// The short form of `text[r]` (`apart`: as a part of a word). Where
    /// `text` has 16 bytes from the word's start they are read as two words
    /// and masked to the word, with no branch on its length (which varies
    /// from word to word and defeats branch prediction).
    #[inline]
    pub(super) fn at(text: &[u8], r: Range<usize>, apart: bool) -> Option<Short> {
        let n = r.len();
        if n > Self::MAX_BYTES {
            return None;
        }
        let mut padded = [0u8; Self::MAX_BYTES];
        let bytes = match text.get(r.start..r.start + Self::MAX_BYTES) {
            Some(bytes) => bytes,
            None => {
                padded[..n].copy_from_slice(&text[r]);
                &padded
            }
        };
        let u64_at = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
        let [low, high] = Self::MASKS[n];
        Some(Short {
            a: u64_at(0) & low,
            b: u64_at(8) & high,
            len: n as u8 | if apart { Self::APART } else { 0 },
        })
    }

    /// The masks of an `n`-byte word's bytes 0..8 and 8..16, by `n`: a
    /// table, as the masks' shifts (by up to 64 bits) cost more than a load.
    const MASKS: [[u64; 2]; Self::MAX_BYTES + 1] = {
        // The low `k` bytes (k <= 8) of a word set.
        const fn low_bytes(k: usize) -> u64 {
            ((1u128 << (8 * k)) - 1) as u64
        }
        let mut masks = [[0; 2]; Self::MAX_BYTES + 1];
        let mut n = 0;
        while n <= Self::MAX_BYTES {
            let high = n.saturating_sub(8);
            masks[n] = [low_bytes(n - high), low_bytes(high)];
            n += 1;
        }
        masks
    };

    /// A hash of the two words and the length (a folded 128-bit product,
    /// as in wyhash), never 0.
    #[inline]
    fn hash(self) -> u64 {
        let x = self.a ^ 0x2D35_8DCC_AA6C_78A5;
        let y = self.b ^ 0x8BB8_4B93_962E_ACC9 ^ u64::from(self.len).rotate_right(8);
        let product = u128::from(x) * u128::from(y);
        (product as u64 ^ (product >> 64) as u64) | 1
    }
}

/// The most ids of a word in the hot cache.
const HOT_IDS: usize = 3;
/// Sets of a worker's hot cache (a power of two; 64 bytes each, two entries).
pub const HOT_SETS: usize = 1 << 16;

/// A small per-thread cache of short, frequent words in front of the
/// shared [`WordCache`], with keys and ids inline so that a hit takes no
/// lock and touches one cache line. It is two-way set-associative: a word
/// may sit in either entry of the set its hash picks.
#[derive(Clone, Copy, Default)]
#[repr(C)]
struct HotEntry {
    /// The word's [`Short`] form with its length in the top byte (words of
    /// up to 15 bytes leave it zero); all zero: empty.
    key: [u64; 2],
    ids: [u32; HOT_IDS],
    n: u8,
    /// Hits minus attempts to replace it, saturating: frequent words stay.
    score: u8,
}
const _: () = assert!(std::mem::size_of::<HotEntry>() == 32);

/// The two entries a word may sit in, in one cache line.
#[derive(Clone, Copy, Default)]
#[repr(C, align(64))]
struct HotSet([HotEntry; 2]);

/// A worker's hot cache (see [`HotEntry`]), allocated on first use.
#[derive(Default)]
pub(super) struct HotCache {
    sets: Vec<HotSet>,
}

impl HotCache {
    /// The longest words the hot cache takes (the top byte of a key holds
    /// the length).
    pub(super) const MAX_WORD_BYTES: usize = Short::MAX_BYTES - 1;

    /// The set of `hash` (its bit 0 is always set).
    #[inline]
    fn index(hash: u64) -> usize {
        (hash >> 1) as usize & (HOT_SETS - 1)
    }

    #[inline]
    fn set(&mut self, hash: u64) -> &mut HotSet {
        if self.sets.is_empty() {
            self.sets = vec![HotSet::default(); HOT_SETS];
        }
        &mut self.sets[Self::index(hash)]
    }

    /// The entry key of a word of at most [`HotCache::MAX_WORD_BYTES`]
    /// (which leave the top byte free for the length and [`Short::APART`]).
    #[inline]
    fn key(word: Short) -> [u64; 2] {
        debug_assert!(usize::from(word.len & !Short::APART) <= Self::MAX_WORD_BYTES);
        [word.a, word.b | u64::from(word.len) << 56]
    }

    /// Starts loading the set of `hash`.
    #[inline]
    pub(super) fn prefetch(&self, hash: u64) {
        if let Some(set) = self.sets.get(Self::index(hash)) {
            prefetch(set);
        }
    }

    /// Appends the ids of the word of `word` (hashed by [`WordCache::hash`])
    /// to `out`; false on a miss.
    ///
    /// All [`HOT_IDS`] ids of the entry are copied, a fixed-size copy, and
    /// the ones past its own are cut off again: no branch or call on how
    /// many the word has. Always inlined: an unrelated change elsewhere once
    /// made the compiler call it instead, and the word loop took 6% more CPU.
    #[inline(always)]
    pub(super) fn get(&mut self, word: Short, hash: u64, out: &mut Vec<u32>) -> bool {
        let key = Self::key(word);
        let set = self.set(hash);
        let Some(e) = set.0.iter_mut().find(|e| e.key == key) else {
            return false;
        };
        e.score = e.score.saturating_add(1);
        let end = out.len() + usize::from(e.n);
        out.extend_from_slice(&e.ids);
        out.truncate(end);
        true
    }

    /// Offers the ids of the word of `word`: kept when they fit and the
    /// word in the set's entry with the lower score has not been hit more
    /// often than it was offered a replacement.
    pub(super) fn offer(&mut self, word: Short, hash: u64, ids: &[u32]) {
        if ids.len() > HOT_IDS {
            return;
        }
        let key = Self::key(word);
        let [a, b] = &mut self.set(hash).0;
        let e = if b.score < a.score { b } else { a };
        if e.score > 0 {
            e.score -= 1;
            return;
        }
        e.key = key;
        e.score = 1;
        e.n = ids.len() as u8;
        e.ids = [0; HOT_IDS];
        e.ids[..ids.len()].copy_from_slice(ids);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A word's short form is the same read from inside a text (two
    /// eight-byte loads, masked) as from the word alone (copied and
    /// padded), and two words have the same form exactly when they are
    /// equal, zero bytes at their ends included.
    #[test]
    fn short_forms_are_exact_wherever_the_word_is() {
        let words: Vec<Vec<u8>> = (0..=Short::MAX_BYTES)
            .flat_map(|n| {
                let mut x_then_zeros = vec![0; n];
                x_then_zeros[..n.min(1)].fill(b'x');
                // `a`s with one `b`, at each place: every byte counts.
                let one_b = (0..n).map(move |p| {
                    let mut w = vec![b'a'; n];
                    w[p] = b'b';
                    w
                });
                [
                    vec![b'a'; n],
                    vec![0; n],
                    (1..=n as u8).collect(),
                    x_then_zeros,
                ]
                .into_iter()
                .chain(one_b)
            })
            .collect();
        let around: Vec<u8> = (0..40u8).map(|i| i.wrapping_mul(37) | 1).collect();
        for w in &words {
            let alone = Short::at(w, 0..w.len(), false).expect("short");
            for at in 0..=around.len() {
                let mut text = around.clone();
                text.splice(at..at, w.iter().copied());
                assert_eq!(
                    Short::at(&text, at..at + w.len(), false),
                    Some(alone),
                    "{w:?} at {at}"
                );
            }
        }
        for a in &words {
            for b in &words {
                let (sa, sb) = (
                    Short::at(a, 0..a.len(), false),
                    Short::at(b, 0..b.len(), false),
                );
                assert_eq!(sa == sb, a == b, "{a:?} {b:?}");
            }
        }
        assert!(Short::at(&[0; 17], 0..17, false).is_none());
    }

    /// A word and a part of a word with the same bytes (see
    /// [`WordCache::get`]) are two keys in both caches, even under one hash.
    #[test]
    fn parts_of_words_are_not_found_as_words() {
        let (mut hot, shared) = (HotCache::default(), WordCache::default());
        for text in [&b"abc"[..], &[b'x'; 40]] {
            let r = 0..text.len();
            let hash = WordCache::hash(text, r.clone(), false);
            assert_ne!(hash, WordCache::hash(text, r.clone(), true));
            shared.insert(text, false, hash, &[7]);
            let mut out = Vec::new();
            assert!(!shared.get(text, true, hash, &mut out));
            assert!(shared.get(text, false, hash, &mut out));
            assert_eq!(out, [7]);
            if let (Some(word), Some(part)) = (
                Short::at(text, r.clone(), false),
                Short::at(text, r.clone(), true),
            ) {
                hot.offer(word, hash, &[8]);
                assert!(!hot.get(part, hash, &mut out));
                assert!(hot.get(word, hash, &mut out));
                assert_eq!(out, [7, 8]);
            }
        }
    }

    /// A hot-cache hit appends exactly the word's own ids (none to
    /// [`HOT_IDS`]) after what `out` held; more are not kept.
    #[test]
    fn hot_cache_hits_append_the_words_own_ids() {
        let mut hot = HotCache::default();
        let word = |n: usize| format!("word{n}").into_bytes();
        let key = |n: usize| Short::at(&word(n), 0..word(n).len(), false).expect("short");
        let hash = |n: usize| WordCache::hash(&word(n), 0..word(n).len(), false);
        let ids = |n: usize| {
            (0..n as u32)
                .map(|i| 100 * n as u32 + i)
                .collect::<Vec<_>>()
        };
        for n in 0..=HOT_IDS + 1 {
            hot.offer(key(n), hash(n), &ids(n));
        }
        for n in 0..=HOT_IDS + 1 {
            let mut out = vec![7, 8];
            let hit = hot.get(key(n), hash(n), &mut out);
            assert_eq!(hit, n <= HOT_IDS, "{n} ids");
            let want: Vec<u32> = [7, 8]
                .into_iter()
                .chain(if hit { ids(n) } else { vec![] })
                .collect();
            assert_eq!(out, want, "{n} ids");
        }
    }

    /// Two words in one set are both held, even when they differ only in
    /// trailing zero bytes; a third takes the entry of the one hit less
    /// often, once that one has been refused as often as it was hit.
    #[test]
    fn hot_cache_sets_hold_two_words_and_keep_the_frequent_one() {
        let mut hot = HotCache::default();
        let words: [&[u8]; 3] = [b"ab", b"ab\0", b"cd"];
        let key = |i: usize| Short::at(words[i], 0..words[i].len(), false).expect("short");
        let hash = 0x55; // one set for all three
        let get = |hot: &mut HotCache, i: usize| {
            let mut out = Vec::new();
            hot.get(key(i), hash, &mut out).then_some(out)
        };
        hot.offer(key(0), hash, &[10]);
        hot.offer(key(1), hash, &[11]);
        assert_eq!(get(&mut hot, 0), Some(vec![10]));
        assert_eq!(get(&mut hot, 1), Some(vec![11]));
        for _ in 0..3 {
            get(&mut hot, 0); // word 0: score 5, word 1: score 2
        }
        hot.offer(key(2), hash, &[12]); // refused: word 1's score 2 -> 1
        assert_eq!(get(&mut hot, 2), None);
        hot.offer(key(2), hash, &[12]); // refused: 1 -> 0
        hot.offer(key(2), hash, &[12]); // replaces word 1
        assert_eq!(get(&mut hot, 2), Some(vec![12]));
        assert_eq!(get(&mut hot, 1), None);
        assert_eq!(get(&mut hot, 0), Some(vec![10]));
    }

    /// Words that all share one hash (as text crafted against the hash
    /// could make them) are looked up and inserted in bounded time: the
    /// first [`MAX_PROBES`] are cached, the rest are not. The same for a
    /// cache allocated before its first insert.
    #[test]
    fn words_sharing_a_hash_cost_bounded_probes() {
        for cache in [WordCache::default(), WordCache::allocated()] {
            let hash = 0x1234_5678_9ABC_DEF1;
            let word = |i: usize| format!("w{i}").into_bytes();
            let n = 4 * MAX_PROBES;
            let mut out = Vec::new();
            assert!(!cache.get(&word(0), false, hash, &mut out));
            for i in 0..n {
                cache.insert(&word(i), false, hash, &[i as u32]);
            }
            for i in 0..n {
                out.clear();
                let hit = cache.get(&word(i), false, hash, &mut out);
                assert_eq!(hit, i < MAX_PROBES, "word {i}");
                assert_eq!(out, if hit { vec![i as u32] } else { vec![] });
            }
        }
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
                            let h = WordCache::hash(&w, 0..w.len(), false);
                            out.clear();
                            if cache.get(&w, false, h, &mut out) {
                                assert_eq!(out, ids(i), "word {i}");
                                hits += 1;
                            } else {
                                assert!(out.is_empty());
                                cache.insert(&w, false, h, &ids(i));
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
            cache
                .shards
                .iter()
                .all(|s| s.generation.load(Ordering::Relaxed) >= 2),
            "a shard never emptied"
        );
        assert!(inserts > 0);
    }
}

/// The word cache under loom's model checker (`--features loom`), which
/// runs each test below in every interleaving of its threads that differs
/// in what a read may see (up to a bound on preemptions where noted),
/// weak memory orderings included.
#[cfg(all(test, feature = "loom"))]
mod loom_model {
    use super::*;
    use loom::sync::Arc;

    /// The cache holds "ab" and "cd", which fill its shard; writer threads
    /// insert `inserts`, the one that takes the shard's lock first emptying
    /// the shard and writing where "ab" was, while the main thread looks up
    /// every word: each lookup gives the word's own ids or a miss, never
    /// ids written for another word.
    fn race(inserts: &'static [(&'static [u8], &'static [u32])], preemptions: Option<usize>) {
        let mut model = loom::model::Builder::new();
        model.preemption_bound = preemptions;
        model.check(move || {
            let hash = |w: &[u8]| WordCache::hash(w, 0..w.len(), false);
            let cache = Arc::new(WordCache::default());
            let before: [(&[u8], &[u32]); 2] = [(b"ab", &[1, 2]), (b"cd", &[3])];
            for (w, ids) in before {
                cache.insert(w, false, hash(w), ids);
            }
            let writers: Vec<_> = inserts
                .iter()
                .map(|&(w, ids)| {
                    let cache = Arc::clone(&cache);
                    loom::thread::spawn(move || cache.insert(w, false, hash(w), ids))
                })
                .collect();
            for &(w, ids) in before.iter().chain(inserts) {
                let mut out = vec![9];
                let hit = cache.get(w, false, hash(w), &mut out);
                let want: Vec<u32> = [9]
                    .into_iter()
                    .chain(ids.iter().copied().filter(|_| hit))
                    .collect();
                assert_eq!(out, want, "{:?}", std::str::from_utf8(w));
            }
            for writer in writers {
                writer.join().expect("a writer does not panic");
            }
        });
    }

    /// Every interleaving (14 s on this machine).
    #[test]
    fn lookups_racing_an_emptying_get_the_words_own_ids_or_a_miss() {
        race(&[(b"ef", &[4, 5])], None);
    }

    /// Two writers: the second to take the lock writes where "cd" was.
    /// Only here does the release fence before a word's stores matter (the
    /// writer did not empty the shard itself); up to three preemptions.
    #[test]
    fn lookups_racing_two_writers_get_the_words_own_ids_or_a_miss() {
        race(&[(b"ef", &[4, 5]), (b"gh", &[6])], Some(3));
    }
}
