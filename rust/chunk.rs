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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use unicode_segmentation::GraphemeCursor;

use crate::error::{Result, TokenmillError};
use crate::manifest::FileStats;
use crate::output::OutputFile;
use crate::prepare::resolve_threads;
use crate::progress::{Counts, Progress};
use crate::reader::{bad_line, expand_inputs, FileReader, Format, ReaderOptions, TxtMode};
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
        .find(|&(i, c)| i > 0 && !c.is_whitespace() && text[..p + i].ends_with(char::is_whitespace))
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

/// Every argument of a `chunk` run over files.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChunkConfig {
    pub inputs: Vec<String>,
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
            output: String::new(),
            text_field: "text".into(),
            id_field: "id".into(),
            txt_mode: TxtMode::Line,
            max_line_bytes: 64 << 20,
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
        let line = std::str::from_utf8(line).ok()?;
        let line = line.strip_prefix('\u{feff}').unwrap_or(line);
        serde_json::from_str(line)
            .or_else(|_| serde_json::from_str(&crate::reader::repair_lone_surrogates(line)))
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
    let opts = ReaderOptions::new(&cfg.text_field, cfg.txt_mode, cfg.max_line_bytes as usize)?;
    let inputs = expand_inputs(&cfg.inputs)?;
    if inputs.is_empty() {
        return Err(TokenmillError::Invalid("no input files given".into()));
    }
    let threads = resolve_threads(cfg.threads);
    let pool = crate::dedup::build_pool(threads)?;
    let mut out = OutputFile::create(Path::new(&cfg.output), cfg.overwrite)?;
    let total_raw: u64 = inputs
        .iter()
        .filter_map(|f| std::fs::metadata(&f.path).ok())
        .map(|m| m.len())
        .sum();
    let raw = Arc::new(AtomicU64::new(0));
    let mut bar = Progress::new("chunk", cfg.progress, total_raw).without_tokens();
    let mut counts = Counts::default();
    let mut files = Vec::new();
    let mut examples = Vec::new();
    let (mut chunks, mut docs_split) = (0u64, 0u64);
    for input in &inputs {
        let mut stats = FileStats::new(&input.path);
        let mut reader = FileReader::open(input, &opts, raw.clone())?;
        // Text, raw JSONL line (None for plain text), line number.
        let mut batch: Vec<(String, Option<Vec<u8>>, u64)> = Vec::new();
        let mut flush = |batch: &mut Vec<(String, Option<Vec<u8>>, u64)>| -> Result<()> {
            let lines: Vec<Result<Vec<String>>> = pool.install(|| {
                batch
                    .par_iter()
                    .map(|(text, raw, line)| {
                        let members = raw.as_deref().and_then(Members::parse);
                        let id = members
                            .as_ref()
                            .and_then(|m| m.get(&cfg.id_field))
                            .unwrap_or_else(|| format!("{}:{}", input.path.display(), line).into());
                        // Only the tokenizer can fail here: name the document.
                        let ranges = limit.split(text, cfg.overlap).map_err(|e| {
                            TokenmillError::BadLine {
                                path: input.path.clone(),
                                line: *line,
                                reason: "tokenizer_error",
                                detail: e.to_string(),
                            }
                        })?;
                        Ok(ranges
                            .into_iter()
                            .enumerate()
                            .map(|(i, r)| {
                                chunk_line(members.as_ref(), &opts.text_field, &text[r], &id, i)
                            })
                            .collect())
                    })
                    .collect()
            });
            for (doc_lines, (text, _, _)) in lines.into_iter().zip(batch.iter()) {
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
            batch.clear();
            if interrupted() {
                return Err(TokenmillError::Interrupted);
            }
            Ok(())
        };
        while let Some(rec) = reader.next_record()? {
            stats.lines += 1;
            match rec.text {
                Ok(text) => {
                    let raw = (input.format == Format::Jsonl).then(|| reader.raw_line().to_vec());
                    stats.docs += 1;
                    stats.text_bytes += text.len() as u64;
                    batch.push((text, raw, rec.line));
                    if batch.len() >= 1024 {
                        flush(&mut batch)?;
                    }
                }
                Err((reason, detail)) => bad_line(
                    cfg.strict,
                    &input.path,
                    rec.line,
                    reason.name(),
                    detail,
                    &mut stats.skipped,
                    &mut examples,
                )?,
            }
        }
        flush(&mut batch)?;
        stats.repaired_surrogates = reader.repaired_surrogates;
        files.push(stats);
    }
    counts.raw_bytes = raw.load(Ordering::Relaxed);
    bar.finish(counts);
    let mut totals = FileStats::default();
    files.iter().for_each(|f| totals.add(f));
    totals.require_documents(cfg.allow_empty, &examples, crate::reader::skip_hint)?;
    out.finish()?;
    Ok(ChunkSummary {
        docs: files.iter().map(|f| f.docs).sum(),
        inputs: files,
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
}
