//! Chunking: splits long documents into pieces of at most N characters or N
//! tokens, cutting at the best boundary inside the limit: after a blank line
//! (paragraph), else after a sentence end (`。！？` anywhere, `.!?` before
//! whitespace), else after whitespace, else at the last grapheme cluster
//! boundary. Paragraph and sentence cuts are taken only when they keep at
//! least a quarter of the window (no tiny chunks in front of a late blank
//! line); otherwise the latest boundary of any kind wins. No cut ever falls
//! inside a UTF-8 character or a grapheme cluster, so one grapheme longer
//! than the limit (a letter with hundreds of combining marks) is the only
//! chunk that can exceed it. Without overlap the chunks tile the text
//! exactly; with `overlap`, each chunk starts at most `overlap` units before
//! the previous one ended (moved forward to a word start where there is one).

use std::ops::Range;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Instant;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use unicode_segmentation::GraphemeCursor;

use crate::error::{Result, TokenmillError};
use crate::input::{
    skip_hint, Batcher, Budget, Corpus, InputSpec, MemoryTable, ReaderOptions, TxtMode,
    DEFAULT_MAX_LINE_BYTES,
};
use crate::manifest::FileStats;
use crate::output::OutputFile;
use crate::progress::{Counts, Progress};
use crate::threads::{build_pool, resolve_threads};
use crate::tokenize::{self, Backend, Encoder};

/// Default `--max-chars` (the seed recipe's `split_text`).
pub const DEFAULT_MAX_CHARS: usize = 512;

/// Measures a piece of text in the unit of the limit.
pub trait Measure: Sync {
    fn measure(&self, s: &str) -> Result<usize>;
    /// Whether the unit is the character (then windows are found directly).
    fn is_chars(&self) -> bool {
        false
    }
}

/// Unicode scalar values.
pub struct Chars;

impl Measure for Chars {
    fn measure(&self, s: &str) -> Result<usize> {
        Ok(s.chars().count())
    }
    fn is_chars(&self) -> bool {
        true
    }
}

/// Tokens of an encoder built without BOS/EOS.
pub struct Tokens<'a>(pub &'a Encoder);

impl Measure for Tokens<'_> {
    fn measure(&self, s: &str) -> Result<usize> {
        if s.is_empty() {
            return Ok(0);
        }
        let batch = self.0.encode_many(&[s]).map_err(|(_, e)| e)?;
        Ok(batch.ids[0].len())
    }
}

/// Whether `pos` is a grapheme cluster boundary of `text`, given `base <=
/// pos`, a boundary already known: the segmentation of `text[base..]` is
/// that of `text` from `base` on (no rule looks back across a boundary: a
/// regional-indicator pair or an emoji ZWJ sequence never spans one). With
/// the whole text as context, a position inside a long run of regional
/// indicators (flags) would count the run back from its start on every call:
/// quadratic in the run.
fn is_grapheme_boundary(text: &str, base: usize, pos: usize) -> bool {
    if pos == base || pos == text.len() {
        return true;
    }
    if !text.is_char_boundary(pos) {
        return false;
    }
    GraphemeCursor::new(pos - base, text.len() - base, true)
        .is_boundary(&text[base..], 0)
        .unwrap_or(false)
}

/// The first grapheme cluster boundary after `pos` (`base` as in
/// [`is_grapheme_boundary`]).
fn next_grapheme_boundary(text: &str, base: usize, pos: usize) -> usize {
    GraphemeCursor::new(pos - base, text.len() - base, true)
        .next_boundary(&text[base..], 0)
        .ok()
        .flatten()
        .map_or(text.len(), |p| base + p)
}

/// Byte offset `n` characters after `start` (or the end).
fn chars_after(text: &str, start: usize, n: usize) -> usize {
    text[start..]
        .char_indices()
        .nth(n)
        .map_or(text.len(), |(i, _)| start + i)
}

/// A rest of the document is measured whole only when it is at most this
/// many times as long (in bytes) as a prefix of it that already exceeds the
/// limit (see [`fit`]).
const WHOLE_REST_FACTOR: usize = 16;

/// The end of the longest prefix from `start` that measures at most `max`
/// (a character boundary, possibly `start` itself): the whole rest when it
/// fits, else found by an exponential then a binary search on the number of
/// characters.
///
/// Token counts are not monotone in the prefix: a word cut in two can take
/// more tokens than the whole word, so a rest that fits can start with a
/// prefix that does not. Measuring the whole rest first, for every chunk,
/// made a document's cost quadratic (a 20 MB document at 16 tokens would
/// have taken more than a day), so the search comes first: a probe that reaches
/// the end measures the whole rest anyway, and otherwise the rest is
/// measured on its own only when it is at most [`WHOLE_REST_FACTOR`] times
/// as long as the probe that exceeded the limit: for the last few chunks of
/// a document. A longer rest that still fits would need 16 times as many
/// bytes per token as its own prefix: a tokenizer that turns a whole long
/// word into one `[UNK]` (WordPiece) can do that, byte-level BPE only with
/// very long vocabulary tokens; there the chunks keep the limit but are cut
/// at other places than a whole-rest check would give.
fn fit(text: &str, start: usize, max: usize, m: &dyn Measure) -> Result<usize> {
    if m.is_chars() {
        return Ok(chars_after(text, start, max));
    }
    let (mut lo, mut hi) = (0usize, max.max(1));
    loop {
        let end = chars_after(text, start, hi);
        let fits = m.measure(&text[start..end])? <= max;
        if fits && end == text.len() {
            return Ok(end);
        }
        if !fits {
            if end < text.len()
                && text.len() - start <= WHOLE_REST_FACTOR * (end - start)
                && m.measure(&text[start..])? <= max
            {
                return Ok(text.len());
            }
            break;
        }
        lo = hi;
        hi *= 2;
    }
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if m.measure(&text[start..chars_after(text, start, mid)])? <= max {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(chars_after(text, start, lo))
}

fn is_sentence_end(c: char) -> bool {
    matches!(c, '。' | '！' | '？')
}

/// The best cut in `(min, end]` for a chunk starting at `start`.
fn best_cut(text: &str, start: usize, min: usize, end: usize) -> usize {
    let window = &text[..end];
    let floor = start + (end - start) / 4;
    let ok = |c: usize| c > min && c <= end && is_grapheme_boundary(text, start, c);
    let mut fallback: Option<usize> = None;
    let mut consider = |c: Option<usize>, floored: bool| -> Option<usize> {
        let c = c?;
        if !floored || c >= floor {
            return Some(c);
        }
        fallback = Some(fallback.map_or(c, |f: usize| f.max(c)));
        None
    };
    // Paragraph: after the last blank line.
    let mut para = None;
    let mut from = end;
    while let Some(i) = window[min.min(from)..from].rfind('\n') {
        let i = min.min(from) + i;
        let before = window[..i].trim_end_matches([' ', '\t', '\r']);
        if before.ends_with('\n') && ok(i + 1) {
            para = Some(i + 1);
            break;
        }
        from = i;
    }
    if let Some(c) = consider(para, true) {
        return c;
    }
    // Sentence: after 。！？, or after .!? and the whitespace that follows it.
    let mut sentence = None;
    for (i, c) in window[min..].char_indices().rev() {
        let i = min + i;
        let after = i + c.len_utf8();
        let cut = if is_sentence_end(c) {
            Some(after)
        } else if matches!(c, '.' | '!' | '?') {
            text[after..]
                .chars()
                .next()
                .filter(|n| n.is_whitespace())
                .map(|n| {
                    if after + n.len_utf8() <= end {
                        after + n.len_utf8()
                    } else {
                        after
                    }
                })
        } else {
            None
        };
        if let Some(cut) = cut.filter(|&c| ok(c)) {
            sentence = Some(cut);
            break;
        }
    }
    if let Some(c) = consider(sentence, true) {
        return c;
    }
    // Whitespace: after the last one.
    let space = window[min..]
        .char_indices()
        .rev()
        .filter(|(_, c)| c.is_whitespace())
        .map(|(i, c)| min + i + c.len_utf8())
        .find(|&c| ok(c));
    if let Some(c) = consider(space, false) {
        return c;
    }
    if let Some(c) = fallback {
        return c;
    }
    // The last grapheme boundary, or past one grapheme longer than the limit.
    let mut c = end;
    while c > min {
        if is_grapheme_boundary(text, start, c) {
            return c;
        }
        c -= 1;
    }
    next_grapheme_boundary(text, start, min)
}

/// Where the chunk after `[start, cut)` begins: at most `overlap` units
/// before `cut`, moved forward to a word start when there is one.
fn overlap_start(
    text: &str,
    start: usize,
    cut: usize,
    overlap: usize,
    m: &dyn Measure,
) -> Result<usize> {
    if overlap == 0 {
        return Ok(cut);
    }
    let chars: Vec<usize> = text[start..cut]
        .char_indices()
        .map(|(i, _)| start + i)
        .collect();
    // Smallest p with measure(text[p..cut]) <= overlap.
    let p = if m.is_chars() {
        chars[chars.len().saturating_sub(overlap)]
    } else {
        let (mut lo, mut hi) = (0, chars.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            if m.measure(&text[chars[mid]..cut])? <= overlap {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        chars.get(lo).copied().unwrap_or(cut)
    };
    let word = text[p..cut]
        .char_indices()
        .find(|&(i, c)| i > 0 && !c.is_whitespace() && text[..p + i].ends_with(char::is_whitespace))
        .map(|(i, _)| p + i);
    let p = match word {
        Some(w) if p > start && !text[..p].ends_with(char::is_whitespace) => w,
        _ => p,
    };
    let mut p = p;
    while p < cut && !is_grapheme_boundary(text, start, p) {
        p += 1;
    }
    Ok(if p <= start { cut } else { p })
}

/// Byte ranges of the chunks of `text` (see module docs). `max` >= 1 and
/// `overlap < max`.
pub fn split(text: &str, max: usize, overlap: usize, m: &dyn Measure) -> Result<Vec<Range<usize>>> {
    if max == 0 {
        return Err(TokenmillError::Invalid(
            "the chunk limit must be at least 1".into(),
        ));
    }
    if overlap >= max {
        return Err(TokenmillError::Invalid(format!(
            "overlap={overlap} must be smaller than the chunk limit ({max})"
        )));
    }
    let mut out = Vec::new();
    let (mut start, mut min) = (0, 0);
    while start < text.len() {
        let end = fit(text, start, max, m)?;
        if end == text.len() && end > min {
            out.push(start..end);
            break;
        }
        let cut = best_cut(text, start, min.max(start), end.max(min));
        out.push(start..cut);
        if cut >= text.len() {
            break;
        }
        start = overlap_start(text, start, cut, overlap, m)?;
        min = cut;
    }
    Ok(out)
}

/// Character offsets of byte ranges of `text`, in one walk for the starts
/// and one for the ends (each never decreases along the chunks, with or
/// without overlap).
fn char_offsets(text: &str, ranges: &[Range<usize>]) -> Vec<(usize, usize)> {
    // (byte, character) offsets of the last start and of the last end.
    let (mut start, mut end) = ((0, 0), (0, 0));
    let walk = |at: &mut (usize, usize), b: usize| {
        if b < at.0 {
            at.1 -= text[b..at.0].chars().count();
        } else {
            at.1 += text[at.0..b].chars().count();
        }
        at.0 = b;
        at.1
    };
    ranges
        .iter()
        .map(|r| (walk(&mut start, r.start), walk(&mut end, r.end)))
        .collect()
}

/// `(start, end)` character offsets of the chunks of each text (see
/// [`Limit::split`]), on a pool of `threads` workers.
pub fn chunk_char_spans(
    texts: &[&str],
    limit: &Limit,
    overlap: usize,
    threads: usize,
) -> Result<Vec<Vec<(usize, usize)>>> {
    let pool = build_pool(threads, "chunk")?;
    pool.install(|| {
        texts
            .par_iter()
            .map(|t| Ok(char_offsets(t, &limit.split(t, overlap)?)))
            .collect()
    })
}

/// Every argument of a `chunk` run over files.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChunkConfig {
    /// Files, directories or globs (.jsonl/.json/.ndjson/.txt, optionally
    /// .gz/.zst, .parquet, .arrow), or tables in memory by index.
    pub inputs: Vec<InputSpec>,
    /// The tables in memory that `inputs` name (the Python API's datasets).
    #[serde(skip)]
    pub tables: Vec<MemoryTable>,
    pub output: String,
    pub text_field: String,
    /// Field copied as `source_id` when a record has it (else `file:line`).
    pub id_field: String,
    pub txt_mode: TxtMode,
    pub max_line_bytes: u64,
    pub strict: bool,
    /// Limit in characters (the default, 512, when no limit is given).
    pub max_chars: Option<usize>,
    /// Limit in tokens of `tokenizer` (without BOS/EOS).
    pub max_tokens: Option<usize>,
    pub tokenizer: Option<String>,
    /// Units (characters or tokens) shared by consecutive chunks.
    pub overlap: usize,
    pub threads: usize,
    pub overwrite: bool,
    pub progress: bool,
    /// Finish a run that read no document (else an error naming the likely cause).
    pub allow_empty: bool,
}

impl Default for ChunkConfig {
    fn default() -> Self {
        ChunkConfig {
            inputs: Vec::new(),
            tables: Vec::new(),
            output: String::new(),
            text_field: "text".into(),
            id_field: "id".into(),
            txt_mode: TxtMode::Line,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            strict: false,
            max_chars: None,
            max_tokens: None,
            tokenizer: None,
            overlap: 0,
            threads: 0,
            overwrite: false,
            progress: true,
            allow_empty: false,
        }
    }
}

/// What a `chunk` run did.
#[derive(Clone, Debug, Serialize)]
pub struct ChunkSummary {
    pub inputs: Vec<FileStats>,
    pub output: String,
    pub docs: u64,
    pub chunks: u64,
    /// Documents cut into more than one chunk.
    pub docs_split: u64,
    pub unit: String,
    pub max: usize,
    pub overlap: usize,
    pub threads: usize,
    pub seconds: f64,
}

/// The limit and its measure, from the arguments.
pub enum Limit {
    Chars(usize),
    Tokens(usize, Box<Encoder>),
}

impl Limit {
    /// `max_tokens` needs a tokenizer; without a limit, 512 characters.
    pub fn new(
        max_chars: Option<usize>,
        max_tokens: Option<usize>,
        tokenizer: Option<&str>,
    ) -> Result<Limit> {
        match (max_chars, max_tokens, tokenizer) {
            (Some(_), Some(_), _) => Err(TokenmillError::Invalid(
                "give max_chars or max_tokens, not both".into(),
            )),
            (_, Some(n), Some(tok)) => {
                let loaded = tokenize::load(Path::new(tok))?;
                let enc = Encoder::new(&loaded, None, None, false, Backend::Auto, 0.0)?;
                Ok(Limit::Tokens(n, Box::new(enc)))
            }
            (_, Some(_), None) => Err(TokenmillError::Invalid(
                "max_tokens needs tokenizer=PATH".into(),
            )),
            (c, None, _) => Ok(Limit::Chars(c.unwrap_or(DEFAULT_MAX_CHARS))),
        }
    }

    pub fn max(&self) -> usize {
        match self {
            Limit::Chars(n) | Limit::Tokens(n, _) => *n,
        }
    }

    pub fn unit(&self) -> &'static str {
        match self {
            Limit::Chars(_) => "chars",
            Limit::Tokens(..) => "tokens",
        }
    }

    /// Byte ranges of the chunks of `text`.
    pub fn split(&self, text: &str, overlap: usize) -> Result<Vec<Range<usize>>> {
        match self {
            Limit::Chars(n) => split(text, *n, overlap, &Chars),
            Limit::Tokens(n, enc) => split(text, *n, overlap, &Tokens(enc)),
        }
    }
}

/// The top-level members of a JSON object in source order, each value as
/// its raw JSON text: a chunk record keeps the source record's other fields
/// byte for byte and in their order.
struct Members(Vec<(String, Box<RawValue>)>);

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Members;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Members, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = map.next_entry::<String, Box<RawValue>>()? {
                    out.push(entry);
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(Visit)
    }
}

impl Members {
    /// The members of a JSONL line (lone surrogate escapes repaired as the
    /// reader repairs them), or None when it is not an object.
    fn parse(line: &[u8]) -> Option<Members> {
        let line = crate::chars::utf8(line).ok()?;
        let line = line.strip_prefix('\u{feff}').unwrap_or(line);
        serde_json::from_str(line)
            .or_else(|_| serde_json::from_str(&crate::input::reader::repair_lone_surrogates(line)))
            .ok()
    }

    /// The value of the top-level member `key`.
    fn get(&self, key: &str) -> Option<serde_json::Value> {
        let (_, v) = self.0.iter().find(|(k, _)| k == key)?;
        serde_json::from_str(v.get()).ok()
    }
}

/// Names of the members every chunk record gets (after the source's own).
const SOURCE_ID: &str = "source_id";
const CHUNK_INDEX: &str = "chunk_index";

/// One chunk record as a JSON line: the source record's members in order,
/// the text field (`path`, dotted for a nested one) holding the chunk, then
/// `source_id` and `chunk_index` (replacing members of those names). Without
/// a source object (plain text input), `{"text", "source_id", "chunk_index"}`.
fn chunk_line(
    members: Option<&Members>,
    path: &[String],
    chunk: &str,
    id: &serde_json::Value,
    index: usize,
) -> String {
    let quote = |s: &str| serde_json::Value::from(s).to_string();
    let mut line = String::from("{");
    let mut member = |key: &str, value: &str| {
        if line.len() > 1 {
            line.push(',');
        }
        line.push_str(&quote(key));
        line.push(':');
        line.push_str(value);
    };
    match members {
        Some(m) => {
            for (key, raw) in &m.0 {
                if key == SOURCE_ID || key == CHUNK_INDEX {
                    continue;
                }
                if *key != path[0] {
                    member(key, raw.get());
                } else if path.len() == 1 {
                    member(key, &quote(chunk));
                } else {
                    // A nested text field: only this member is rewritten
                    // (its own members then come in key order).
                    let mut v: serde_json::Value =
                        serde_json::from_str(raw.get()).unwrap_or(serde_json::Value::Null);
                    let pointer: String = path[1..]
                        .iter()
                        .map(|p| format!("/{}", p.replace('~', "~0").replace('/', "~1")))
                        .collect();
                    if let Some(slot) = v.pointer_mut(&pointer) {
                        *slot = chunk.into();
                    }
                    member(key, &v.to_string());
                }
            }
        }
        None => member("text", &quote(chunk)),
    }
    member(SOURCE_ID, &id.to_string());
    member(CHUNK_INDEX, &index.to_string());
    line.push('}');
    line
}

/// Chunks every document of the inputs into records that keep the source
/// record's fields, the text field holding the chunk, plus `source_id` and
/// `chunk_index` ([`chunk_line`]), in input order.
pub fn chunk_files(cfg: &ChunkConfig, interrupted: &dyn Fn() -> bool) -> Result<ChunkSummary> {
    let started = Instant::now();
    let limit = Limit::new(cfg.max_chars, cfg.max_tokens, cfg.tokenizer.as_deref())?;
    if cfg.overlap >= limit.max() {
        return Err(TokenmillError::Invalid(format!(
            "overlap={} must be smaller than the chunk limit ({})",
            cfg.overlap,
            limit.max()
        )));
    }
    let mut opts = ReaderOptions::new(&cfg.text_field, cfg.txt_mode, cfg.max_line_bytes as usize)?;
    opts.rows_as_json = true;
    let mut corpus = Corpus::open(
        &cfg.inputs,
        &cfg.tables,
        &[Path::new(&cfg.output)],
        opts,
        cfg.strict,
    )?;
    let inputs = corpus.inputs().to_vec();
    let text_field = corpus.options().text_field.clone();
    let threads = resolve_threads(cfg.threads);
    let pool = build_pool(threads, "chunk")?;
    let mut out = OutputFile::create(Path::new(&cfg.output), cfg.overwrite)?;
    let raw = corpus.bytes_read();
    let mut bar = Progress::new("chunk", cfg.progress, corpus.total_bytes()).without_tokens();
    let mut counts = Counts::default();
    let (mut chunks, mut docs_split) = (0u64, 0u64);
    // A document: its text, its record as a JSON line (None for plain
    // text), and its file and line.
    type Source = (String, Option<Vec<u8>>, usize, u64);
    let next_doc = |corpus: &mut Corpus| -> Result<Option<(Source, usize)>> {
        let Some(doc) = corpus.next_doc()? else {
            return Ok(None);
        };
        let record = inputs[doc.file]
            .format
            .has_fields()
            .then(|| corpus.raw_line().to_vec());
        corpus.kept(doc.file, doc.text.len());
        let bytes = doc.text.len() + record.as_ref().map_or(0, Vec::len);
        Ok(Some(((doc.text, record, doc.file, doc.line), bytes)))
    };
    let mut batcher = Batcher::new(Budget::HELD);
    while let Some(batch) = batcher.next_batch(|| next_doc(&mut corpus))? {
        let lines: Vec<Result<Vec<String>>> = pool.install(|| {
            batch
                .par_iter()
                .map(|(text, record, file, line)| {
                    let path = &inputs[*file].path;
                    let members = record.as_deref().and_then(Members::parse);
                    let id = members
                        .as_ref()
                        .and_then(|m| m.get(&cfg.id_field))
                        .unwrap_or_else(|| format!("{}:{}", path.display(), line).into());
                    // Only the tokenizer can fail here: name the document.
                    let ranges =
                        limit
                            .split(text, cfg.overlap)
                            .map_err(|e| TokenmillError::BadLine {
                                path: path.clone(),
                                line: *line,
                                reason: "tokenizer_error",
                                detail: e.to_string(),
                            })?;
                    Ok(ranges
                        .into_iter()
                        .enumerate()
                        .map(|(i, r)| chunk_line(members.as_ref(), &text_field, &text[r], &id, i))
                        .collect())
                })
                .collect()
        });
        for (doc_lines, (text, ..)) in lines.into_iter().zip(&batch) {
            let doc_lines = doc_lines?;
            chunks += doc_lines.len() as u64;
            docs_split += u64::from(doc_lines.len() > 1);
            counts.text_bytes += text.len() as u64;
            for l in doc_lines {
                out.write_line(l.as_bytes())?;
            }
        }
        counts.docs += batch.len() as u64;
        counts.raw_bytes = raw.load(Ordering::Relaxed);
        bar.update(counts);
        if interrupted() {
            return Err(TokenmillError::Interrupted);
        }
    }
    counts.raw_bytes = raw.load(Ordering::Relaxed);
    bar.finish(counts);
    let read = corpus.finish();
    read.totals()
        .require_documents(cfg.allow_empty, &read.examples, skip_hint)?;
    out.finish()?;
    Ok(ChunkSummary {
        docs: read.files.iter().map(|f| f.docs).sum(),
        inputs: read.files,
        output: cfg.output.clone(),
        chunks,
        docs_split,
        unit: limit.unit().into(),
        max: limit.max(),
        overlap: cfg.overlap,
        threads,
        seconds: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The chunker as it was before it was made linear (issue 16), kept
    /// verbatim as the oracle of the differential tests: whole-text grapheme
    /// context, and the whole rest measured before every chunk.
    mod oracle {
        use crate::chunk::Measure;
        use crate::error::{Result, TokenmillError};
        use std::ops::Range;
        use unicode_segmentation::GraphemeCursor;

        fn is_grapheme_boundary(text: &str, pos: usize) -> bool {
            if pos == 0 || pos == text.len() {
                return true;
            }
            if !text.is_char_boundary(pos) {
                return false;
            }
            GraphemeCursor::new(pos, text.len(), true)
                .is_boundary(text, 0)
                .unwrap_or(false)
        }

        fn next_grapheme_boundary(text: &str, pos: usize) -> usize {
            GraphemeCursor::new(pos, text.len(), true)
                .next_boundary(text, 0)
                .ok()
                .flatten()
                .unwrap_or(text.len())
        }

        /// Byte offset `n` characters after `start` (or the end).
        fn chars_after(text: &str, start: usize, n: usize) -> usize {
            text[start..]
                .char_indices()
                .nth(n)
                .map_or(text.len(), |(i, _)| start + i)
        }

        /// The end of the longest prefix from `start` that measures at most `max`
        /// (a character boundary, possibly `start` itself).
        fn fit(text: &str, start: usize, max: usize, m: &dyn Measure) -> Result<usize> {
            if m.is_chars() {
                return Ok(chars_after(text, start, max));
            }
            if m.measure(&text[start..])? <= max {
                return Ok(text.len());
            }
            // Exponential then binary search on the number of characters.
            let (mut lo, mut hi) = (0usize, max.max(1));
            loop {
                let end = chars_after(text, start, hi);
                if m.measure(&text[start..end])? > max {
                    break;
                }
                lo = hi;
                hi *= 2;
            }
            while hi - lo > 1 {
                let mid = (lo + hi) / 2;
                if m.measure(&text[start..chars_after(text, start, mid)])? <= max {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            Ok(chars_after(text, start, lo))
        }

        fn is_sentence_end(c: char) -> bool {
            matches!(c, '。' | '！' | '？')
        }

        /// The best cut in `(min, end]` for a chunk starting at `start`.
        fn best_cut(text: &str, start: usize, min: usize, end: usize) -> usize {
            let window = &text[..end];
            let floor = start + (end - start) / 4;
            let ok = |c: usize| c > min && c <= end && is_grapheme_boundary(text, c);
            let mut fallback: Option<usize> = None;
            let mut consider = |c: Option<usize>, floored: bool| -> Option<usize> {
                let c = c?;
                if !floored || c >= floor {
                    return Some(c);
                }
                fallback = Some(fallback.map_or(c, |f: usize| f.max(c)));
                None
            };
            // Paragraph: after the last blank line.
            let mut para = None;
            let mut from = end;
            while let Some(i) = window[min.min(from)..from].rfind('\n') {
                let i = min.min(from) + i;
                let before = window[..i].trim_end_matches([' ', '\t', '\r']);
                if before.ends_with('\n') && ok(i + 1) {
                    para = Some(i + 1);
                    break;
                }
                from = i;
            }
            if let Some(c) = consider(para, true) {
                return c;
            }
            // Sentence: after 。！？, or after .!? and the whitespace that follows it.
            let mut sentence = None;
            for (i, c) in window[min..].char_indices().rev() {
                let i = min + i;
                let after = i + c.len_utf8();
                let cut = if is_sentence_end(c) {
                    Some(after)
                } else if matches!(c, '.' | '!' | '?') {
                    text[after..]
                        .chars()
                        .next()
                        .filter(|n| n.is_whitespace())
                        .map(|n| {
                            if after + n.len_utf8() <= end {
                                after + n.len_utf8()
                            } else {
                                after
                            }
                        })
                } else {
                    None
                };
                if let Some(cut) = cut.filter(|&c| ok(c)) {
                    sentence = Some(cut);
                    break;
                }
            }
            if let Some(c) = consider(sentence, true) {
                return c;
            }
            // Whitespace: after the last one.
            let space = window[min..]
                .char_indices()
                .rev()
                .filter(|(_, c)| c.is_whitespace())
                .map(|(i, c)| min + i + c.len_utf8())
                .find(|&c| ok(c));
            if let Some(c) = consider(space, false) {
                return c;
            }
            if let Some(c) = fallback {
                return c;
            }
            // The last grapheme boundary, or past one grapheme longer than the limit.
            let mut c = end;
            while c > min {
                if is_grapheme_boundary(text, c) {
                    return c;
                }
                c -= 1;
            }
            next_grapheme_boundary(text, min)
        }

        /// Where the chunk after `[start, cut)` begins: at most `overlap` units
        /// before `cut`, moved forward to a word start when there is one.
        fn overlap_start(
            text: &str,
            start: usize,
            cut: usize,
            overlap: usize,
            m: &dyn Measure,
        ) -> Result<usize> {
            if overlap == 0 {
                return Ok(cut);
            }
            let chars: Vec<usize> = text[start..cut]
                .char_indices()
                .map(|(i, _)| start + i)
                .collect();
            // Smallest p with measure(text[p..cut]) <= overlap.
            let p = if m.is_chars() {
                chars[chars.len().saturating_sub(overlap)]
            } else {
                let (mut lo, mut hi) = (0, chars.len());
                while lo < hi {
                    let mid = (lo + hi) / 2;
                    if m.measure(&text[chars[mid]..cut])? <= overlap {
                        hi = mid;
                    } else {
                        lo = mid + 1;
                    }
                }
                chars.get(lo).copied().unwrap_or(cut)
            };
            let word = text[p..cut]
                .char_indices()
                .find(|&(i, c)| {
                    i > 0 && !c.is_whitespace() && text[..p + i].ends_with(char::is_whitespace)
                })
                .map(|(i, _)| p + i);
            let p = match word {
                Some(w) if p > start && !text[..p].ends_with(char::is_whitespace) => w,
                _ => p,
            };
            let mut p = p;
            while p < cut && !is_grapheme_boundary(text, p) {
                p += 1;
            }
            Ok(if p <= start { cut } else { p })
        }

        /// Byte ranges of the chunks of `text` (see module docs). `max` >= 1 and
        /// `overlap < max`.
        pub fn split(
            text: &str,
            max: usize,
            overlap: usize,
            m: &dyn Measure,
        ) -> Result<Vec<Range<usize>>> {
            if max == 0 {
                return Err(TokenmillError::Invalid(
                    "the chunk limit must be at least 1".into(),
                ));
            }
            if overlap >= max {
                return Err(TokenmillError::Invalid(format!(
                    "overlap={overlap} must be smaller than the chunk limit ({max})"
                )));
            }
            let mut out = Vec::new();
            let (mut start, mut min) = (0, 0);
            while start < text.len() {
                let end = fit(text, start, max, m)?;
                if end == text.len() && end > min {
                    out.push(start..end);
                    break;
                }
                let cut = best_cut(text, start, min.max(start), end.max(min));
                out.push(start..cut);
                if cut >= text.len() {
                    break;
                }
                start = overlap_start(text, start, cut, overlap, m)?;
                min = cut;
            }
            Ok(out)
        }
    }

    fn pieces(text: &str, max: usize, overlap: usize) -> Vec<&str> {
        split(text, max, overlap, &Chars)
            .unwrap()
            .into_iter()
            .map(|r| &text[r])
            .collect()
    }

    #[test]
    fn chunk_records_keep_the_source_fields() {
        let raw = br#"{"z": [1, {"b": 2, "a": 1}], "text": "long text", "id": "x\u00e9", "chunk_index": 9, "m": {"t": "s", "k": 1}}"#;
        let m = Members::parse(raw).unwrap();
        let id = m.get("id").unwrap();
        assert_eq!(id, "x\u{e9}");
        let path = vec!["text".to_string()];
        assert_eq!(
            chunk_line(Some(&m), &path, "te\"xt", &id, 1),
            r#"{"z":[1, {"b": 2, "a": 1}],"text":"te\"xt","id":"x\u00e9","m":{"t": "s", "k": 1},"source_id":"xé","chunk_index":1}"#
        );
        let nested = vec!["m".to_string(), "t".to_string()];
        let line = chunk_line(Some(&m), &nested, "part", &id, 0);
        assert!(line.contains(r#""m":{"k":1,"t":"part"}"#), "{line}");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["text"], "long text");
        let bom = Members::parse("\u{feff}{\"text\": \"a\"}".as_bytes()).unwrap();
        assert_eq!(bom.0.len(), 1);
        assert!(Members::parse(b"[1]").is_none());
        let id = serde_json::Value::from("f:3");
        assert_eq!(
            chunk_line(None, &path, "a", &id, 0),
            r#"{"text":"a","source_id":"f:3","chunk_index":0}"#
        );
    }

    #[test]
    fn prefers_paragraph_then_sentence_then_space() {
        let text = "First paragraph here.\n\nSecond one. It goes on and on";
        assert_eq!(
            pieces(text, 30, 0),
            ["First paragraph here.\n\n", "Second one. It goes on and on"]
        );
        assert_eq!(
            pieces("One two. Three four five six", 20, 0),
            ["One two. ", "Three four five six"]
        );
        assert_eq!(
            pieces("alpha beta gamma delta", 12, 0),
            ["alpha beta ", "gamma delta"]
        );
        assert_eq!(
            pieces("今天天气很好。我们去公园散步吧", 10, 0),
            ["今天天气很好。", "我们去公园散步吧"]
        );
        assert_eq!(pieces("abcdefghij", 4, 0), ["abcd", "efgh", "ij"]);
    }

    #[test]
    fn never_splits_a_grapheme() {
        let family = "👨\u{200d}👩\u{200d}👧";
        let text = format!("ab{family}cd");
        for p in pieces(&text, 3, 0) {
            assert!(
                !p.starts_with('\u{200d}') && !p.ends_with('\u{200d}'),
                "{p:?}"
            );
        }
        assert_eq!(pieces(&text, 3, 0).concat(), text);
        let long = format!("x{}y", "\u{301}".repeat(20));
        assert_eq!(
            pieces(&long, 5, 0),
            [format!("x{}", "\u{301}".repeat(20)), "y".into()]
        );
    }

    #[test]
    fn overlap_repeats_the_tail() {
        let text = "one two three four five six seven eight nine ten";
        let ranges = split(text, 20, 8, &Chars).unwrap();
        for w in ranges.windows(2) {
            assert!(w[1].start < w[0].end && w[1].start > w[0].start);
            assert!(text[w[1].start..w[0].end].chars().count() <= 8);
        }
        assert_eq!(ranges.last().unwrap().end, text.len());
        assert!(split(text, 5, 5, &Chars).is_err());
    }

    /// A fixed-seed xorshift generator: the differential tests are the same
    /// on every run.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }
    }

    /// Pieces of random documents: words the test tokenizer merges, CJK,
    /// paragraph and sentence ends, combining marks, ZWJ emoji with skin
    /// tones, flags (regional indicator pairs), CR LF.
    const PIECES: &[&str] = &[
        "abc", "ab", "the", "and", "ing", "of", " ", " ", " ", "x", "中文", "字", "\n", "\n\n",
        " \n", ". ", "!", "? ", "。", "！", ",", "\u{301}", "\u{200d}", "👨", "👩", "🏽", "🇨", "🇳",
        "🇨🇳", "\u{3000}", "\r\n", "\t",
    ];

    fn random_doc(rng: &mut Rng, max_pieces: usize) -> String {
        let n = rng.below(max_pieces + 1);
        (0..n).map(|_| PIECES[rng.below(PIECES.len())]).collect()
    }

    /// A made-up measure that is not monotone in the prefix, as tokens are
    /// not: "abc" counts one, "ab" two.
    struct Lumpy;

    impl Measure for Lumpy {
        fn measure(&self, s: &str) -> Result<usize> {
            Ok(s.chars().count() - 2 * s.matches("abc").count())
        }
    }

    /// A byte-level BPE encoder (GPT-2 regex) whose merges make "abc" one
    /// token but "ab" two, plus a few English words.
    fn test_encoder(dir: &Path) -> Encoder {
        let merges = [
            "b c", "a bc", "t h", "th e", "Ġ the", "a n", "an d", "Ġ and", "i n", "in g", "o f",
            "Ġ of", "Ġ abc", "Ċ Ċ",
        ];
        let json = tokenize::test_byte_level(&merges, true);
        std::fs::write(dir.join("tokenizer.json"), json.to_string()).unwrap();
        let loaded = tokenize::load(dir).unwrap();
        Encoder::new(&loaded, None, None, false, Backend::Auto, 0.0).unwrap()
    }

    /// The chunks equal the old chunker's for random documents, limits and
    /// overlaps: by characters, by a non-monotone measure, by BPE tokens.
    #[test]
    fn chunks_equal_the_old_chunkers() {
        let dir = tempfile::tempdir().unwrap();
        let enc = test_encoder(dir.path());
        assert_eq!(Tokens(&enc).measure("abc").unwrap(), 1);
        assert_eq!(Tokens(&enc).measure("ab").unwrap(), 2);
        let measures: [(&dyn Measure, usize, usize); 3] = [
            (&Chars, 3000, 60),
            (&Lumpy, 2000, 60),
            (&Tokens(&enc), 1500, 40),
        ];
        let mut rng = Rng(0x5eed_c0ff_ee00_0016);
        for (m, cases, max_pieces) in measures {
            for _ in 0..cases {
                let text = random_doc(&mut rng, max_pieces);
                let max = 1 + rng.below(24);
                let overlap = if rng.below(2) == 0 { 0 } else { rng.below(max) };
                assert_eq!(
                    split(&text, max, overlap, m).unwrap(),
                    oracle::split(&text, max, overlap, m).unwrap(),
                    "{text:?} max={max} overlap={overlap}"
                );
            }
        }
    }

    /// A measure that counts a word of 20 characters or more as one unit
    /// (as WordPiece counts a long word as one `[UNK]`).
    struct LongWordsAreOne;

    impl Measure for LongWordsAreOne {
        fn measure(&self, s: &str) -> Result<usize> {
            Ok(s.split(' ')
                .map(|w| match w.chars().count() {
                    n if n >= 20 => 1,
                    n => n,
                })
                .sum())
        }
    }

    /// A rest that fits although a prefix of it does not is one chunk, when
    /// it is at most 16 times as long as that prefix; a longer one is cut
    /// (the one case in which the old chunker's cuts are not kept).
    #[test]
    fn a_rest_that_fits_is_one_chunk() {
        let pairs = |r: Result<Vec<Range<usize>>>| -> Vec<(usize, usize)> {
            r.unwrap().into_iter().map(|r| (r.start, r.end)).collect()
        };
        // "ab" measures 2, "abc" 1; "aabcab" 4, "aabcabc" 3.
        for (text, max) in [("abc", 1), ("aabcabc", 3)] {
            assert_eq!(pairs(split(text, max, 0, &Lumpy)), [(0, text.len())]);
            let old = oracle::split(text, max, 0, &Lumpy);
            assert_eq!(pairs(old), [(0, text.len())]);
        }
        // 200 letters measure 1, but 4 of them measure 4: the rest is 50
        // times as long as the probe that exceeded 2 units. So 2-letter
        // chunks, until the rest is at most 64 letters.
        let word = "a".repeat(200);
        let old = oracle::split(&word, 2, 0, &LongWordsAreOne);
        assert_eq!(pairs(old), [(0, 200)]);
        let new = pairs(split(&word, 2, 0, &LongWordsAreOne));
        assert_eq!((new.len(), new[0], new[68]), (69, (0, 2), (136, 200)));
        let word = "a".repeat(60); // 15 times the probe: measured whole
        assert_eq!(pairs(split(&word, 2, 0, &LongWordsAreOne)), [(0, 60)]);
    }

    /// Hostile: one 4 MB document chunked at 16 tokens with overlap. The old
    /// chunker measured the whole rest before every chunk: about an hour for
    /// this one (1.2 s for 80 kB, growing with the square). Now about 2 s;
    /// 60 s is a guard for a loaded machine, not a benchmark.
    #[test]
    fn a_huge_document_by_tokens_is_linear() {
        let dir = tempfile::tempdir().unwrap();
        let enc = test_encoder(dir.path());
        let mut rng = Rng(16);
        let mut text = String::new();
        while text.len() < 4 << 20 {
            text.push_str(["the ", "and ", "abc ", "of ", "ing. ", "x", "\n"][rng.below(7)]);
        }
        let started = Instant::now();
        let ranges = Limit::Tokens(16, Box::new(enc)).split(&text, 4).unwrap();
        let took = started.elapsed().as_secs_f64();
        assert!(took < 60.0, "{took:.1} s");
        assert!(ranges.len() > 100_000);
        assert_eq!(
            (ranges[0].start, ranges.last().unwrap().end),
            (0, text.len())
        );
    }

    /// Hostile: 8 MB of flags (regional indicator pairs). Each boundary test
    /// counted the run back from its start: about 6 min for this one (0.14 s
    /// for 160 kB, growing with the square). Now well under a second; the
    /// limit is a guard.
    #[test]
    fn a_long_run_of_flags_is_linear() {
        let text = "🇨🇳".repeat(1 << 20);
        let started = Instant::now();
        let ranges = split(&text, 63, 10, &Chars).unwrap();
        let took = started.elapsed().as_secs_f64();
        assert!(took < 30.0, "{took:.1} s");
        // 31 flags a chunk (an odd limit cannot take the 32nd's first half).
        assert!(ranges.iter().all(|r| r.len() % 8 == 0));
        assert_eq!(ranges[0], 0..31 * 8);
    }

    #[test]
    fn char_spans_count_characters() {
        let text = "añb 中文 🇨🇳 one two three four";
        let limit = Limit::Chars(6);
        for overlap in [0, 3] {
            let spans = chunk_char_spans(&[text, ""], &limit, overlap, 1).unwrap();
            let ranges = limit.split(text, overlap).unwrap();
            let want: Vec<(usize, usize)> = ranges
                .iter()
                .map(|r| {
                    (
                        text[..r.start].chars().count(),
                        text[..r.end].chars().count(),
                    )
                })
                .collect();
            assert_eq!(spans, [want, vec![]]);
        }
    }
}
