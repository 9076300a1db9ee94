//! One input file at a time: expands inputs (files, directories, globs),
//! decompresses, splits lines with bounded memory, parses JSON and extracts
//! the text field.
//!
//! Every line that does not yield a document gets a [`SkipReason`];
//! [`super::Corpus`] counts them per file and, under `strict`, stops at the
//! first one.
//! Why a hand-rolled line splitter: `BufRead::read_line` grows its buffer to
//! the longest line, so one 2 GB line would take 2 GB of RAM; here a line over
//! `max_line_bytes` is skipped while being read, never held.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::columnar::ColumnReader;
use crate::chars::utf8;
use crate::error::{Result, TokenmillError};

/// Compression of one input file, chosen from its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// Record layout of one input file, chosen from its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// JSON Lines (`.jsonl`, `.json`, `.ndjson`): one object per line.
    Jsonl,
    /// Plain text (`.txt`): one document per line or per file, see [`TxtMode`].
    Text,
    /// Parquet (`.parquet`): one record per row, see [`super::columnar`].
    Parquet,
    /// Arrow IPC (`.arrow`, as `Dataset.save_to_disk` writes): one record per row.
    Arrow,
}

impl Format {
    /// Whether the file holds records with fields (JSON, or rows of
    /// columns), rather than lines of text.
    pub fn has_fields(self) -> bool {
        self != Format::Text
    }

    /// Whether the file is read by columns ([`super::columnar`]).
    pub fn is_columnar(self) -> bool {
        matches!(self, Format::Parquet | Format::Arrow)
    }
}

/// An input as a command names it: a path (a file, a directory or a glob),
/// or a table the Python API hands over in memory, by its index in the
/// run's tables (`{"table": 0}` in a configuration).
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(untagged)]
pub enum InputSpec {
    Path(String),
    Table { table: usize },
}

impl From<&str> for InputSpec {
    fn from(path: &str) -> Self {
        InputSpec::Path(path.to_owned())
    }
}

/// A table in memory (a `datasets.Dataset` without files of its own,
/// imported through the Arrow C stream interface without copying its
/// buffers), read as the rows of an Arrow file are.
#[derive(Clone)]
pub struct MemoryTable {
    /// What messages and manifests call it (in place of a path).
    pub name: String,
    pub schema: arrow_schema::SchemaRef,
    pub batches: Arc<[arrow_array::RecordBatch]>,
}

impl MemoryTable {
    /// Bytes of Arrow memory it holds (a progress bar's total).
    pub fn bytes(&self) -> u64 {
        self.batches
            .iter()
            .map(|b| b.get_array_memory_size() as u64)
            .sum()
    }
}

impl std::fmt::Debug for MemoryTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rows: usize = self.batches.iter().map(|b| b.num_rows()).sum();
        write!(f, "MemoryTable({:?}, {rows} rows)", self.name)
    }
}

/// One input file after expansion.
#[derive(Clone, Debug)]
pub struct InputFile {
    /// The file, or the name of a table in memory.
    pub path: PathBuf,
    pub format: Format,
    pub compression: Compression,
    /// The rows of a table in memory (then `format` is `Arrow`).
    pub table: Option<MemoryTable>,
}

impl InputFile {
    /// Its size on disk, or a table's bytes in memory.
    pub fn size(&self) -> u64 {
        match &self.table {
            Some(t) => t.bytes(),
            None => std::fs::metadata(&self.path).map_or(0, |m| m.len()),
        }
    }
}

/// How plain `.txt` inputs are cut into documents.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TxtMode {
    /// Every non-empty line is a document.
    Line,
    /// The whole file is one document.
    File,
}

/// Why an input line produced no document.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SkipReason {
    MalformedJson,
    MissingField,
    NotAString,
    InvalidUtf8,
    Empty,
    LineTooLong,
}

impl SkipReason {
    /// All reasons, in the order reports list them.
    pub const ALL: [SkipReason; 6] = [
        SkipReason::MalformedJson,
        SkipReason::MissingField,
        SkipReason::NotAString,
        SkipReason::InvalidUtf8,
        SkipReason::Empty,
        SkipReason::LineTooLong,
    ];

    /// The stable name used in manifests, reports and error messages.
    pub fn name(self) -> &'static str {
        match self {
            SkipReason::MalformedJson => "malformed_json",
            SkipReason::MissingField => "missing_field",
            SkipReason::NotAString => "not_a_string",
            SkipReason::InvalidUtf8 => "invalid_utf8",
            SkipReason::Empty => "empty",
            SkipReason::LineTooLong => "line_too_long",
        }
    }
}

/// What to change when most lines were skipped for `reason` ("" when
/// nothing general can be said); options are named as the Python API names them.
pub fn skip_hint(reason: &str) -> &'static str {
    match reason {
        "missing_field" => {
            "check text_field, and that each line holds one JSON object (JSON Lines) or a \
             .json file one array of records"
        }
        "not_a_string" => "check text_field (the dotted path of the text in each record)",
        "malformed_json" => {
            "each line must hold one JSON object (JSON Lines); a file holding one JSON array \
             of records must be named .json"
        }
        "invalid_utf8" => "the inputs must be UTF-8 text",
        "line_too_long" => "raise max_line_bytes",
        _ => "",
    }
}

/// Bad lines quoted (`file:line: reason (detail)`) in manifests and summaries.
pub const MAX_EXAMPLES: usize = 10;

/// Options of the reader stage.
#[derive(Clone, Debug)]
pub struct ReaderOptions {
    /// Dotted path of the text field, already split (`meta.body` -> `["meta", "body"]`).
    pub text_field: Vec<String>,
    pub txt_mode: TxtMode,
    /// Lines (or whole `.txt` documents in file mode) longer than this are skipped.
    pub max_line_bytes: usize,
    /// Hand JSON lines over whole (`prepare-sft` parses the record itself)
    /// instead of extracting `text_field`.
    pub whole_json_line: bool,
    /// Make [`FileReader::raw_line`] hold each Parquet/Arrow row as JSON
    /// beside the extracted text (a JSON line is always there); `chunk`
    /// keeps every source field.
    pub rows_as_json: bool,
}

impl ReaderOptions {
    /// Builds options from a dotted field path.
    pub fn new(text_field: &str, txt_mode: TxtMode, max_line_bytes: usize) -> Result<Self> {
        let text_field: Vec<String> = text_field.split('.').map(str::to_owned).collect();
        if text_field.iter().any(String::is_empty) {
            return Err(TokenmillError::Invalid(format!(
                "text_field={:?} has an empty path component",
                text_field.join(".")
            )));
        }
        if max_line_bytes == 0 {
            return Err(TokenmillError::Invalid("max_line_bytes must be > 0".into()));
        }
        Ok(ReaderOptions {
            text_field,
            txt_mode,
            max_line_bytes,
            whole_json_line: false,
            rows_as_json: false,
        })
    }
}

/// One line (or file) of input: a document's text or the reason it has none.
#[derive(Debug)]
pub struct Record {
    /// 1-based line number in the decompressed file.
    pub line: u64,
    pub text: std::result::Result<String, (SkipReason, String)>,
}

/// The record layout and compression a file's name says (inputs, and the
/// output of `dedup`); `None` for unsupported names.
pub fn classify(path: &Path) -> Option<(Format, Compression)> {
    let name = path.file_name()?.to_string_lossy().to_lowercase();
    let (stem, compression) = if let Some(s) = name.strip_suffix(".gz") {
        (s, Compression::Gzip)
    } else if let Some(s) = name
        .strip_suffix(".zst")
        .or_else(|| name.strip_suffix(".zstd"))
    {
        (s, Compression::Zstd)
    } else {
        (name.as_str(), Compression::None)
    };
    let format = if stem.ends_with(".jsonl") || stem.ends_with(".json") || stem.ends_with(".ndjson")
    {
        Format::Jsonl
    } else if stem.ends_with(".txt") {
        Format::Text
    } else if stem.ends_with(".parquet") && compression == Compression::None {
        Format::Parquet
    } else if stem.ends_with(".arrow") && compression == Compression::None {
        Format::Arrow
    } else {
        return None;
    };
    Some((format, compression))
}

/// Whether `path` is one of the run's own outputs (`skip`, canonical).
fn is_output(path: &Path, skip: &[PathBuf]) -> bool {
    !skip.is_empty() && std::fs::canonicalize(path).is_ok_and(|p| skip.contains(&p))
}

/// Whether `dir` is a finished tokenmill dataset (its `manifest.json` starts
/// with our format name). Walks skip them: the parts of a partitioned run
/// written under an input directory would otherwise add their manifests to
/// the inputs of the parts that start after them.
fn holds_dataset(dir: &Path) -> bool {
    let mut head = [0u8; 64];
    let read = std::fs::File::open(dir.join("manifest.json")).and_then(|mut f| f.read(&mut head));
    read.is_ok_and(|n| {
        head[..n]
            .windows(crate::manifest::FORMAT.len())
            .any(|w| w == crate::manifest::FORMAT.as_bytes())
    })
}

fn walk_dir(dir: &Path, skip: &[PathBuf], out: &mut Vec<PathBuf>) -> Result<()> {
    if let Some(files) = saved_dataset_files(dir)? {
        out.extend(files);
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| TokenmillError::io(dir, e))?
        .map(|e| e.map(|e| e.path()))
        .collect::<io::Result<_>>()
        .map_err(|e| TokenmillError::io(dir, e))?;
    entries.sort();
    for path in entries {
        let hidden = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if hidden || is_output(&path, skip) {
            continue;
        }
        if path.is_dir() {
            if holds_dataset(&path) {
                continue;
            }
            walk_dir(&path, skip, out)?;
        } else if classify(&path).is_some() {
            out.push(path);
        }
    }
    Ok(())
}

/// The Arrow files of a directory written by `datasets`' `save_to_disk`,
/// in their order (`state.json` lists them; `dataset_info.json` and
/// `state.json` are not data). `None` for any other directory. A
/// `DatasetDict` directory is refused with its splits named: each split is
/// a dataset directory of its own.
fn saved_dataset_files(dir: &Path) -> Result<Option<Vec<PathBuf>>> {
    #[derive(serde::Deserialize)]
    struct DataFile {
        filename: String,
    }
    #[derive(serde::Deserialize)]
    struct State {
        #[serde(rename = "_data_files")]
        data_files: Vec<DataFile>,
    }
    #[derive(serde::Deserialize)]
    struct Dict {
        splits: Vec<String>,
    }
    let read = |name: &str| -> Result<Option<String>> {
        let path = dir.join(name);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(TokenmillError::io(&path, e)),
        }
    };
    let bad = |name: &str, e: serde_json::Error| TokenmillError::Corrupt {
        path: dir.join(name),
        message: format!("not a datasets {name}: {e}"),
    };
    if let Some(text) = read("dataset_dict.json")? {
        let dict: Dict = serde_json::from_str(&text).map_err(|e| bad("dataset_dict.json", e))?;
        let splits: Vec<String> = dict
            .splits
            .iter()
            .map(|s| dir.join(s).display().to_string())
            .collect();
        return Err(TokenmillError::Invalid(format!(
            "{}: a DatasetDict; pick a split with --input-split (input_split= in Python) or by its directory: {}",
            dir.display(),
            splits.join(", ")
        )));
    }
    let Some(text) = read("state.json")? else {
        return Ok(None);
    };
    let state: State = serde_json::from_str(&text).map_err(|e| bad("state.json", e))?;
    let mut files = Vec::new();
    for f in state.data_files {
        let name = Path::new(&f.filename);
        // Names from a file: only plain names inside the directory.
        if name.components().count() != 1 || classify(name).map(|c| c.0) != Some(Format::Arrow) {
            return Err(TokenmillError::Corrupt {
                path: dir.join("state.json"),
                message: format!(
                    "data file {:?} is not an .arrow file in the directory",
                    f.filename
                ),
            });
        }
        files.push(dir.join(name));
    }
    Ok(Some(files))
}

/// Expands command-line inputs into files, in a deterministic order: specs in
/// the order given, directory contents and glob matches sorted by path.
/// Directories are walked recursively and keep only supported files; a file
/// named explicitly must be supported. A file reached twice is read once.
/// Walks and globs never yield the run's own `outputs` (directories or
/// files) or anything in them: `prepare data/ -o data/shards` must not read
/// its own manifest.json on the next run. A table spec names one of `tables`.
pub fn expand_inputs(
    specs: &[InputSpec],
    tables: &[MemoryTable],
    outputs: &[&Path],
) -> Result<Vec<InputFile>> {
    let skip: Vec<PathBuf> = outputs
        .iter()
        .filter_map(|o| std::fs::canonicalize(o).ok())
        .collect();
    let skip = &skip[..];
    let mut paths = Vec::new();
    let mut in_memory = std::collections::HashMap::new();
    for spec in specs {
        let spec = match spec {
            InputSpec::Path(p) => p,
            InputSpec::Table { table } => {
                let t = tables.get(*table).ok_or_else(|| {
                    TokenmillError::Invalid(format!(
                        "input table {table} was not handed over ({} tables)",
                        tables.len()
                    ))
                })?;
                paths.push(PathBuf::from(&t.name));
                in_memory.insert(PathBuf::from(&t.name), t.clone());
                continue;
            }
        };
        let path = Path::new(spec);
        if path.is_dir() {
            let before = paths.len();
            walk_dir(path, skip, &mut paths)?;
            if paths.len() == before {
                return Err(TokenmillError::Invalid(format!(
                    "{spec}: directory holds no .jsonl/.json/.txt(.gz/.zst), .parquet or .arrow files"
                )));
            }
        } else if path.exists() {
            if classify(path).is_none() {
                return Err(TokenmillError::Invalid(format!(
                    "{spec}: unsupported input; expected .jsonl, .json, .ndjson or .txt (optionally .gz or .zst), .parquet, .arrow, or a directory"
                )));
            }
            paths.push(path.to_path_buf());
        } else if spec.contains(['*', '?', '[']) {
            // Like a shell: `*` does not match hidden files.
            let options = glob::MatchOptions {
                require_literal_leading_dot: true,
                ..glob::MatchOptions::new()
            };
            let matches = glob::glob_with(spec, options)
                .map_err(|e| TokenmillError::Invalid(format!("{spec}: bad glob pattern: {e}")))?;
            let mut found: Vec<PathBuf> = matches.filter_map(std::result::Result::ok).collect();
            found.sort();
            let before = paths.len();
            for p in found {
                if is_output(&p, skip) {
                    continue;
                }
                if p.is_dir() {
                    walk_dir(&p, skip, &mut paths)?;
                } else if classify(&p).is_some() {
                    paths.push(p);
                }
            }
            if paths.len() == before {
                return Err(TokenmillError::Invalid(format!(
                    "{spec}: glob matched no supported files"
                )));
            }
        } else {
            return Err(TokenmillError::io(
                path,
                io::Error::new(io::ErrorKind::NotFound, "no such file or directory"),
            ));
        }
    }
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for path in paths {
        if let Some(table) = in_memory.get(&path) {
            out.push(InputFile {
                path,
                format: Format::Arrow,
                compression: Compression::None,
                table: Some(table.clone()),
            });
            continue;
        }
        let key = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
        if seen.insert(key) {
            let (format, compression) = classify(&path).expect("filtered above");
            out.push(InputFile {
                path,
                format,
                compression,
                table: None,
            });
        }
    }
    Ok(out)
}

/// Counts raw (compressed) bytes consumed, for progress reporting.
struct CountingReader<R> {
    inner: R,
    counter: Arc<AtomicU64>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.counter.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Opens one input as a decompressed byte stream.
pub fn open_stream(input: &InputFile, counter: Arc<AtomicU64>) -> Result<Box<dyn BufRead + Send>> {
    let file = File::open(&input.path).map_err(|e| TokenmillError::io(&input.path, e))?;
    let raw = CountingReader {
        inner: file,
        counter,
    };
    const BUF: usize = 1 << 20;
    Ok(match input.compression {
        Compression::None => Box::new(BufReader::with_capacity(BUF, raw)),
        Compression::Gzip => Box::new(BufReader::with_capacity(
            BUF,
            flate2::read::MultiGzDecoder::new(BufReader::new(raw)),
        )),
        Compression::Zstd => Box::new(BufReader::with_capacity(
            BUF,
            zstd::Decoder::new(raw).map_err(|e| TokenmillError::io(&input.path, e))?,
        )),
    })
}

/// `r.fill_buf()`, retried when a read is interrupted (EINTR).
fn fill(r: &mut dyn BufRead) -> io::Result<&[u8]> {
    loop {
        match r.fill_buf() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
            // Asked again to return the borrow: the buffer is filled now.
            Ok(_) => return r.fill_buf(),
        }
    }
}

/// Reads one line into `buf` (without its `\n`), holding at most `max` bytes.
/// Returns `None` at end of input, `Some(false)` for a line that fits and
/// `Some(true)` for a line that was longer than `max` (then `buf` is cleared).
pub(crate) fn read_line_bounded(
    r: &mut dyn BufRead,
    buf: &mut Vec<u8>,
    max: usize,
) -> io::Result<Option<bool>> {
    buf.clear();
    let mut too_long = false;
    let mut any = false;
    loop {
        let available = fill(r)?;
        if available.is_empty() {
            return Ok(if any { Some(too_long) } else { None });
        }
        any = true;
        let (chunk, used, end) = match memchr::memchr(b'\n', available) {
            Some(i) => (&available[..i], i + 1, true),
            None => (available, available.len(), false),
        };
        if !too_long {
            if buf.len() + chunk.len() > max {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(chunk);
            }
        }
        r.consume(used);
        if end {
            return Ok(Some(too_long));
        }
    }
}

/// How a JSON input holds its records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    /// One record per line (JSON Lines, and plain text).
    Lines,
    /// A `.json` file not looked at yet: JSON Lines, or one top-level array.
    Undecided,
    /// One top-level array (alpaca_data.json, Belle, most SFT sets): the
    /// records are its elements, read one at a time.
    Array,
}

/// The outcome of [`read_array_element`].
#[derive(Debug, PartialEq)]
enum ArrayStep {
    /// An element, in `buf` without the whitespace between its tokens;
    /// `true` when it was longer than the limit (then `buf` is empty).
    Element(bool),
    /// The closing `]`.
    End,
    /// The array's structure is broken here; nothing after it can be read.
    Broken(&'static str),
}

/// The first byte of `r` that is not JSON whitespace (not consumed), or
/// `None` at the end.
fn skip_json_whitespace(r: &mut dyn BufRead) -> io::Result<Option<u8>> {
    loop {
        let available = fill(r)?;
        if available.is_empty() {
            return Ok(None);
        }
        match available.iter().position(|b| !b" \t\r\n".contains(b)) {
            Some(i) => {
                let b = available[i];
                r.consume(i);
                return Ok(Some(b));
            }
            None => {
                let n = available.len();
                r.consume(n);
            }
        }
    }
}

/// Reads the next element of a top-level JSON array (after the `[`, or
/// after the previous element when `first` is false) into `buf`, holding
/// at most `max` bytes. Only the array's structure is followed here
/// (strings, escapes, nesting); each element is then parsed like a JSON
/// line. Whitespace between tokens is dropped, so an element of a
/// pretty-printed file becomes one line (`dedup` and `chunk` write it back
/// as JSON Lines), except one space between two scalar tokens: `1 2` must
/// stay malformed, not become `12`.
fn read_array_element(
    r: &mut dyn BufRead,
    buf: &mut Vec<u8>,
    max: usize,
    first: bool,
) -> io::Result<ArrayStep> {
    buf.clear();
    let mut need_comma = !first;
    loop {
        match skip_json_whitespace(r)? {
            None => {
                return Ok(ArrayStep::Broken(
                    "the file ends before the array's closing ]",
                ))
            }
            Some(b']') => {
                r.consume(1);
                return Ok(ArrayStep::End);
            }
            Some(b',') if need_comma => {
                r.consume(1);
                need_comma = false;
            }
            Some(_) if need_comma => {
                return Ok(ArrayStep::Broken("expected , or ] after a record"))
            }
            Some(b',') => return Ok(ArrayStep::Broken("two commas with no record between")),
            Some(_) => break,
        }
    }
    let (mut depth, mut in_string, mut escaped, mut too_long) = (0usize, false, false, false);
    // Whitespace seen since the last byte kept, outside strings.
    let mut gap = false;
    loop {
        let available = fill(r)?;
        if available.is_empty() {
            // Only a scalar element (a number, true, ...) may end the input;
            // the missing `]` is reported by the next call.
            return Ok(if depth == 0 && !in_string {
                ArrayStep::Element(too_long)
            } else {
                ArrayStep::Broken("the file ends inside a record")
            });
        }
        let mut used = 0;
        let mut done = false;
        for &b in available {
            let keep = if in_string {
                if escaped {
                    escaped = false;
                } else if b == b'\\' {
                    escaped = true;
                } else if b == b'"' {
                    in_string = false;
                    done = depth == 0;
                }
                true
            } else {
                match b {
                    // A scalar element ends at whitespace or a delimiter.
                    b' ' | b'\t' | b'\r' | b'\n' | b',' | b']' | b'}' if depth == 0 => break,
                    b' ' | b'\t' | b'\r' | b'\n' => {
                        gap = true;
                        false
                    }
                    b'"' => {
                        in_string = true;
                        true
                    }
                    b'{' | b'[' => {
                        depth += 1;
                        true
                    }
                    b'}' | b']' => {
                        depth -= 1;
                        done = depth == 0;
                        true
                    }
                    _ => true,
                }
            };
            used += 1;
            if keep && !too_long {
                // One space where whitespace separated two scalar tokens.
                let scalar = |c: u8| !b"{}[],:\"".contains(&c);
                let space = gap && scalar(b) && buf.last().is_some_and(|&c| scalar(c));
                if buf.len() + 1 + usize::from(space) > max {
                    too_long = true;
                    buf.clear();
                } else {
                    if space {
                        buf.push(b' ');
                    }
                    buf.push(b);
                }
            }
            gap &= !keep;
            if done {
                break;
            }
        }
        let scalar_ended = used < available.len() && !done;
        r.consume(used);
        if done || scalar_ended {
            return Ok(ArrayStep::Element(too_long));
        }
    }
}

/// Whether an input's name allows a top-level array (`.json`, maybe
/// compressed); `.jsonl`/`.ndjson` are JSON Lines only.
fn may_hold_array(path: &Path) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let stem = [".gz", ".zst", ".zstd"]
        .iter()
        .find_map(|c| name.strip_suffix(c))
        .unwrap_or(&name);
    stem.ends_with(".json")
}

/// Streams [`Record`]s out of one input file.
pub struct FileReader {
    src: Box<dyn BufRead + Send>,
    path: PathBuf,
    format: Format,
    layout: Layout,
    opts: ReaderOptions,
    line: u64,
    buf: Vec<u8>,
    finished: bool,
    /// Rows of a Parquet or Arrow file (then `src` is empty and unused).
    columns: Option<ColumnReader>,
    /// Lines whose lone surrogate escapes were replaced by U+FFFD.
    pub repaired_surrogates: u64,
}

impl FileReader {
    /// Opens `input`; `counter` receives the raw bytes read.
    pub fn open(input: &InputFile, opts: &ReaderOptions, counter: Arc<AtomicU64>) -> Result<Self> {
        if input.format.is_columnar() {
            let field: &[String] = if opts.whole_json_line {
                &[]
            } else {
                &opts.text_field
            };
            let columns = ColumnReader::open(
                input,
                field,
                opts.rows_as_json,
                opts.max_line_bytes,
                counter,
            )?;
            let mut reader =
                FileReader::from_stream(Box::new(io::empty()), &input.path, input.format, opts);
            reader.columns = Some(columns);
            return Ok(reader);
        }
        let src = open_stream(input, counter)?;
        Ok(FileReader::from_stream(
            src,
            &input.path,
            input.format,
            opts,
        ))
    }

    /// Reads an already decompressed stream; `path` only names it in errors.
    pub fn from_stream(
        src: Box<dyn BufRead + Send>,
        path: &Path,
        format: Format,
        opts: &ReaderOptions,
    ) -> Self {
        let layout = if format == Format::Jsonl && may_hold_array(path) {
            Layout::Undecided
        } else {
            Layout::Lines
        };
        FileReader {
            src,
            path: path.to_path_buf(),
            format,
            layout,
            opts: opts.clone(),
            line: 0,
            buf: Vec::new(),
            finished: false,
            columns: None,
            repaired_surrogates: 0,
        }
    }

    /// The next record, `None` at end of file.
    pub fn next_record(&mut self) -> Result<Option<Record>> {
        if self.finished {
            return Ok(None);
        }
        if let Some(columns) = &mut self.columns {
            return columns.next_record(&mut self.buf);
        }
        if self.format == Format::Text && self.opts.txt_mode == TxtMode::File {
            self.finished = true;
            return self.read_whole_file().map(Some);
        }
        if self.layout == Layout::Undecided {
            self.layout = self.sniff_layout()?;
        }
        let io_err = |e| TokenmillError::io(&self.path, e);
        let too_long = if self.layout == Layout::Array {
            let max = self.opts.max_line_bytes;
            match read_array_element(&mut *self.src, &mut self.buf, max, self.line == 0)
                .map_err(io_err)?
            {
                ArrayStep::Element(too_long) => too_long,
                ArrayStep::End => {
                    self.finished = true;
                    return self.after_array();
                }
                ArrayStep::Broken(why) => {
                    self.finished = true;
                    self.line += 1;
                    return Ok(Some(skip(self.line, SkipReason::MalformedJson, why.into())));
                }
            }
        } else {
            let status = read_line_bounded(&mut *self.src, &mut self.buf, self.opts.max_line_bytes)
                .map_err(io_err)?;
            let Some(too_long) = status else {
                self.finished = true;
                return Ok(None);
            };
            too_long
        };
        self.line += 1;
        let line = self.line;
        if too_long {
            return Ok(Some(skip(
                line,
                SkipReason::LineTooLong,
                format!("over {} bytes", self.opts.max_line_bytes),
            )));
        }
        let mut bytes = &self.buf[..];
        if line == 1 {
            bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        }
        bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
        let text = match utf8(bytes) {
            Ok(t) => t,
            Err(at) => {
                let detail = format!("invalid byte at offset {at}");
                return Ok(Some(skip(line, SkipReason::InvalidUtf8, detail)));
            }
        };
        let record = if self.format == Format::Text {
            text_record(line, text.to_owned())
        } else if text.trim().is_empty() {
            skip(line, SkipReason::Empty, "blank line".into())
        } else if self.opts.whole_json_line {
            text_record(line, text.to_owned())
        } else {
            match extract_text(text, &self.opts.text_field) {
                Extracted::Text(t, repaired) => {
                    self.repaired_surrogates += u64::from(repaired);
                    text_record(line, t)
                }
                Extracted::Skip(reason, detail) => skip(line, reason, detail),
            }
        };
        Ok(Some(record))
    }

    /// The raw bytes of the line last returned by [`FileReader::next_record`]
    /// (without its `\n`; empty for a line that was too long or a whole file;
    /// for an element of a JSON array, the element on one line; for a row
    /// read whole, the row as a JSON object).
    pub fn raw_line(&self) -> &[u8] {
        &self.buf
    }

    /// Looks at the start of a `.json` file (without consuming a JSON Lines
    /// file's bytes): a `[` first, after a BOM and whitespace, makes it one
    /// array of records. The BOM and whitespace may span reads (a
    /// decompressor can return a few bytes at a time), so they are taken
    /// byte by byte and put back in front of a JSON Lines file.
    fn sniff_layout(&mut self) -> Result<Layout> {
        const BOM: &[u8] = b"\xEF\xBB\xBF";
        let mut head = Vec::new();
        let first = loop {
            let byte = fill(&mut *self.src)
                .map_err(|e| TokenmillError::io(&self.path, e))?
                .first()
                .copied();
            let Some(b) = byte else { break None };
            let in_bom =
                head.len() < BOM.len() && head == BOM[..head.len()] && b == BOM[head.len()];
            let blank = head
                .strip_prefix(BOM)
                .unwrap_or(&head)
                .iter()
                .all(|c| b" \t\r\n".contains(c));
            if !(in_bom || (blank && b" \t\r\n".contains(&b))) {
                break Some((b, blank));
            }
            self.src.consume(1);
            head.push(b);
        };
        if first == Some((b'[', true)) {
            self.src.consume(1);
            return Ok(Layout::Array);
        }
        if !head.is_empty() {
            let rest = std::mem::replace(&mut self.src, Box::new(io::empty()));
            self.src = Box::new(io::Cursor::new(head).chain(rest));
        }
        Ok(Layout::Lines)
    }

    /// After an array's `]`: anything but whitespace is one malformed record.
    fn after_array(&mut self) -> Result<Option<Record>> {
        let rest =
            skip_json_whitespace(&mut *self.src).map_err(|e| TokenmillError::io(&self.path, e))?;
        if rest.is_none() {
            return Ok(None);
        }
        io::copy(&mut self.src, &mut io::sink()).map_err(|e| TokenmillError::io(&self.path, e))?;
        self.line += 1;
        Ok(Some(skip(
            self.line,
            SkipReason::MalformedJson,
            "data after the array's closing ]".into(),
        )))
    }

    fn read_whole_file(&mut self) -> Result<Record> {
        let max = self.opts.max_line_bytes;
        let mut data = Vec::new();
        let mut limited = (&mut self.src).take(max as u64 + 1);
        limited
            .read_to_end(&mut data)
            .map_err(|e| TokenmillError::io(&self.path, e))?;
        self.line = 1;
        if data.len() > max {
            // Drain the rest so the byte counter reaches the end of the file.
            io::copy(&mut self.src, &mut io::sink())
                .map_err(|e| TokenmillError::io(&self.path, e))?;
            return Ok(skip(
                1,
                SkipReason::LineTooLong,
                format!("file over {max} bytes"),
            ));
        }
        let bytes = data.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&data);
        match utf8(bytes) {
            Ok(t) => Ok(text_record(1, t.to_owned())),
            Err(at) => Ok(skip(
                1,
                SkipReason::InvalidUtf8,
                format!("invalid byte at offset {at}"),
            )),
        }
    }
}

pub(crate) fn skip(line: u64, reason: SkipReason, detail: String) -> Record {
    Record {
        line,
        text: Err((reason, detail)),
    }
}

pub(crate) fn text_record(line: u64, text: String) -> Record {
    if text.trim().is_empty() {
        skip(
            line,
            SkipReason::Empty,
            "text is empty or whitespace".into(),
        )
    } else {
        Record {
            line,
            text: Ok(text),
        }
    }
}

/// Outcome of extracting the text field from one JSON line.
#[derive(Debug, PartialEq)]
pub enum Extracted {
    /// The text, and whether lone surrogate escapes had to be replaced.
    Text(String, bool),
    Skip(SkipReason, String),
}

/// Parses one JSON line and returns the string at `path`, without building
/// the other fields (they are skipped with `IgnoredAny`).
///
/// Lone UTF-16 surrogate escapes (`"\ud800"`), which Python's `json` accepts
/// but UTF-8 cannot hold, are replaced by U+FFFD and the line is kept.
pub fn extract_text(line: &str, path: &[String]) -> Extracted {
    match parse_path(line, path) {
        Ok(found) => found.into_extracted(path, false),
        Err(e) if is_surrogate_error(&e) => {
            let repaired = repair_lone_surrogates(line);
            match parse_path(&repaired, path) {
                Ok(found) => found.into_extracted(path, true),
                Err(e) => Extracted::Skip(SkipReason::MalformedJson, e.to_string()),
            }
        }
        Err(e) => Extracted::Skip(SkipReason::MalformedJson, e.to_string()),
    }
}

/// serde_json's errors for unpaired surrogate escapes.
fn is_surrogate_error(e: &serde_json::Error) -> bool {
    let msg = e.to_string();
    msg.contains("surrogate") || msg.contains("end of hex escape")
}

fn parse_path(line: &str, path: &[String]) -> serde_json::Result<Found> {
    let mut de = serde_json::Deserializer::from_str(line);
    let found = PathSeed(path).deserialize(&mut de)?;
    de.end()?;
    Ok(found)
}

enum Found {
    Text(String),
    Missing,
    NotString(&'static str),
}

impl Found {
    fn into_extracted(self, path: &[String], repaired: bool) -> Extracted {
        let field = path.join(".");
        match self {
            Found::Text(t) => Extracted::Text(t, repaired),
            Found::Missing => {
                Extracted::Skip(SkipReason::MissingField, format!("no field '{field}'"))
            }
            Found::NotString(kind) => {
                Extracted::Skip(SkipReason::NotAString, format!("field '{field}' is {kind}"))
            }
        }
    }
}

struct PathSeed<'p>(&'p [String]);

impl<'de> DeserializeSeed<'de> for PathSeed<'_> {
    type Value = Found;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<Found, D::Error> {
        d.deserialize_any(PathVisitor(self.0))
    }
}

struct PathVisitor<'p>(&'p [String]);

impl PathVisitor<'_> {
    fn scalar(&self, kind: &'static str) -> Found {
        if self.0.is_empty() {
            Found::NotString(kind)
        } else {
            Found::Missing
        }
    }
}

impl<'de> Visitor<'de> for PathVisitor<'_> {
    type Value = Found;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_str<E>(self, v: &str) -> std::result::Result<Found, E> {
        Ok(if self.0.is_empty() {
            Found::Text(v.to_owned())
        } else {
            Found::Missing
        })
    }
    fn visit_string<E>(self, v: String) -> std::result::Result<Found, E> {
        Ok(if self.0.is_empty() {
            Found::Text(v)
        } else {
            Found::Missing
        })
    }
    fn visit_bool<E>(self, _: bool) -> std::result::Result<Found, E> {
        Ok(self.scalar("a boolean"))
    }
    fn visit_i64<E>(self, _: i64) -> std::result::Result<Found, E> {
        Ok(self.scalar("a number"))
    }
    fn visit_u64<E>(self, _: u64) -> std::result::Result<Found, E> {
        Ok(self.scalar("a number"))
    }
    fn visit_f64<E>(self, _: f64) -> std::result::Result<Found, E> {
        Ok(self.scalar("a number"))
    }
    fn visit_unit<E>(self) -> std::result::Result<Found, E> {
        Ok(self.scalar("null"))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Found, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(self.scalar("an array"))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Found, A::Error> {
        let Some((head, rest)) = self.0.split_first() else {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            return Ok(Found::NotString("an object"));
        };
        let mut found = Found::Missing;
        // A repeated key: the last one wins, as in Python's json.
        while let Some(hit) = map.next_key_seed(KeyIs(head))? {
            if hit {
                found = map.next_value_seed(PathSeed(rest))?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// Compares a map key with the wanted one without allocating.
struct KeyIs<'a>(&'a str);

impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyIs<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E>(self, v: &str) -> std::result::Result<bool, E> {
        Ok(v == self.0)
    }
}

fn hex4(b: &[u8], at: usize) -> Option<u32> {
    let digits = b.get(at..at + 4)?;
    let s = std::str::from_utf8(digits).ok()?;
    u32::from_str_radix(s, 16).ok()
}

/// Rewrites unpaired `\uD800`-`\uDFFF` escapes to `\ufffd`; paired ones stay.
pub(crate) fn repair_lone_surrogates(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let (mut i, mut last) = (0, 0);
    while i + 1 < b.len() {
        if b[i] != b'\\' {
            i += 1;
            continue;
        }
        if b[i + 1] != b'u' {
            i += 2; // any other escape, including `\\`
            continue;
        }
        let Some(cp) = hex4(b, i + 2) else {
            i += 2;
            continue;
        };
        let lone = match cp {
            0xD800..=0xDBFF => {
                let paired = b.get(i + 6) == Some(&b'\\')
                    && b.get(i + 7) == Some(&b'u')
                    && hex4(b, i + 8).is_some_and(|c| (0xDC00..=0xDFFF).contains(&c));
                if paired {
                    i += 12;
                    continue;
                }
                true
            }
            0xDC00..=0xDFFF => true,
            _ => false,
        };
        if lone {
            out.push_str(&s[last..i]);
            out.push_str("\\ufffd");
            last = i + 6;
        }
        i += 6;
    }
    out.push_str(&s[last..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(p: &str) -> Vec<String> {
        p.split('.').map(str::to_owned).collect()
    }

    /// Records of `bytes` read as a file called `name`, with a 1 kB limit and
    /// a tiny buffer (elements and lines cross many reads): (number, text or
    /// reason), and the raw line of each.
    fn records(name: &str, bytes: &[u8]) -> Vec<(u64, String, String)> {
        let mut opts = ReaderOptions::new("text", TxtMode::Line, 1000).unwrap();
        opts.whole_json_line = false;
        let src = Box::new(io::BufReader::with_capacity(
            7,
            io::Cursor::new(bytes.to_vec()),
        ));
        let mut r = FileReader::from_stream(src, Path::new(name), Format::Jsonl, &opts);
        let mut out = Vec::new();
        while let Some(rec) = r.next_record().unwrap() {
            let text = match rec.text {
                Ok(t) => t,
                Err((reason, _)) => format!("<{}>", reason.name()),
            };
            out.push((
                rec.line,
                text,
                String::from_utf8_lossy(r.raw_line()).into_owned(),
            ));
        }
        out
    }

    #[test]
    fn a_json_array_file_is_read_element_by_element() {
        let pretty = "\u{feff} \n[\n  {\"text\": \"a [\\\"]\\\\\", \"n\": [1, {\"x\": \"}\"}]},\n  {\"text\": \"中文\"},\n  \
                      {\"other\": 1}, 7, \"s\", {\"text\": \"big\"}\n]\n";
        let got = records("data.json", pretty.as_bytes());
        let texts: Vec<(u64, &str)> = got.iter().map(|(n, t, _)| (*n, t.as_str())).collect();
        assert_eq!(
            texts,
            [
                (1, "a [\"]\\"),
                (2, "中文"),
                (3, "<missing_field>"),
                (4, "<missing_field>"),
                (5, "<missing_field>"),
                (6, "big"),
            ]
        );
        // Each element on one line, whitespace between tokens dropped.
        assert_eq!(got[0].2, r#"{"text":"a [\"]\\","n":[1,{"x":"}"}]}"#);
        // The same bytes named .jsonl are JSON Lines: not one record parses.
        assert!(records("data.jsonl", pretty.as_bytes())
            .iter()
            .all(|(_, t, _)| t.starts_with('<')));
    }

    #[test]
    fn the_array_check_sees_past_short_reads() {
        // A BOM and whitespace longer than the 7-byte buffer (the fuzz
        // target found a 1-byte read deciding JSON Lines).
        let array = "\u{feff}\t \n\n  \r\n [ {\"text\": \"a\"} ]";
        assert_eq!(records("d.json", array.as_bytes())[0].1, "a");
        // Put back for JSON Lines: line numbers and the BOM stay as they were.
        let lines = "\u{feff} \t\n\n\n        {\"text\": \"b\"}\n";
        let got = records("d.json", lines.as_bytes());
        assert_eq!(got.len(), 4);
        assert_eq!(got[3].0, 4);
        assert_eq!(got[3].1, "b");
        let half_bom = records("d.json", b"\xEF\xBB [1]");
        assert_eq!(half_bom[0].1, "<invalid_utf8>");
    }

    #[test]
    fn array_elements_keep_scalar_tokens_apart() {
        // Dropping the whitespace would turn `1 2` into `12` and `tr ue`
        // into `true` (found by the jsonl_reader fuzz target).
        let got = records(
            "d.json",
            b"[{\"text\": \"a\", \"n\": 1 2},\n {\"text\": tr ue}]",
        );
        assert_eq!(got[0].1, "<malformed_json>");
        assert_eq!(got[0].2, r#"{"text":"a","n":1 2}"#);
        assert_eq!(got[1].1, "<malformed_json>");
        assert_eq!(
            records("d.json", b"[ { \"text\" : \"a b\" } ]")[0].2,
            r#"{"text":"a b"}"#
        );
    }

    #[test]
    fn a_broken_json_array_ends_in_one_counted_record() {
        let reason = |bytes: &str| {
            records("d.json", bytes.as_bytes())
                .into_iter()
                .map(|(n, t, _)| format!("{n}:{t}"))
                .collect::<Vec<_>>()
        };
        assert_eq!(reason("[]"), Vec::<String>::new());
        assert_eq!(reason("[{\"text\": \"a\"}"), ["1:a", "2:<malformed_json>"]);
        assert_eq!(
            reason("[{\"text\": \"a\"} {\"text\": \"b\"}]"),
            ["1:a", "2:<malformed_json>"]
        );
        assert_eq!(
            reason("[{\"text\": \"a\"},,]"),
            ["1:a", "2:<malformed_json>"]
        );
        assert_eq!(reason("[{\"text\": \"a"), ["1:<malformed_json>"]);
        assert_eq!(
            reason("[{\"text\": \"a\"}] trailing"),
            ["1:a", "2:<malformed_json>"]
        );
        assert_eq!(reason("[}"), ["1:<empty>", "2:<malformed_json>"]);
        let long = format!(
            "[{{\"text\": \"{}\"}}, {{\"text\": \"b\"}}]",
            "x".repeat(2000)
        );
        assert_eq!(reason(&long), ["1:<line_too_long>", "2:b"]);
        // A JSON Lines .json file stays JSON Lines.
        assert_eq!(reason("\n{\"text\": \"a\"}\n"), ["1:<empty>", "2:a"]);
    }

    #[test]
    fn extracts_nested_and_reports_reasons() {
        let f = field("meta.body");
        assert_eq!(
            extract_text(
                r#"{"meta": {"x": [1, {"y": 2}], "body": "hé\n"}, "z": null}"#,
                &f
            ),
            Extracted::Text("hé\n".into(), false)
        );
        let t = field("text");
        assert!(matches!(
            extract_text("{\"text\": 3}", &t),
            Extracted::Skip(SkipReason::NotAString, _)
        ));
        assert!(matches!(
            extract_text("{\"other\": \"a\"}", &t),
            Extracted::Skip(SkipReason::MissingField, _)
        ));
        assert!(matches!(
            extract_text("{\"text\": \"a\"", &t),
            Extracted::Skip(SkipReason::MalformedJson, _)
        ));
        assert!(matches!(
            extract_text("{\"text\": \"a\"} x", &t),
            Extracted::Skip(SkipReason::MalformedJson, _)
        ));
        assert!(matches!(
            extract_text("[\"text\"]", &t),
            Extracted::Skip(SkipReason::MissingField, _)
        ));
        // Last duplicate key wins, as in Python.
        assert_eq!(
            extract_text(r#"{"text": "a", "text": "b"}"#, &t),
            Extracted::Text("b".into(), false)
        );
    }

    #[test]
    fn surrogates() {
        let t = field("text");
        assert_eq!(
            extract_text(r#"{"text": "a\ud800b\udc00c\ud83d\ude00"}"#, &t),
            Extracted::Text("a\u{fffd}b\u{fffd}c😀".into(), true)
        );
        assert_eq!(
            extract_text(r#"{"text": "\\ud800"}"#, &t),
            Extracted::Text("\\ud800".into(), false)
        );
    }

    #[test]
    fn bounded_lines() {
        let data = b"short\nthis line is too long\nok\r\nlast";
        let mut r: &[u8] = data;
        let mut buf = Vec::new();
        let mut got = Vec::new();
        while let Some(long) = read_line_bounded(&mut r, &mut buf, 10).unwrap() {
            got.push((long, String::from_utf8(buf.clone()).unwrap()));
        }
        assert_eq!(
            got,
            vec![
                (false, "short".into()),
                (true, String::new()),
                (false, "ok\r".into()),
                (false, "last".into())
            ]
        );
    }
}
