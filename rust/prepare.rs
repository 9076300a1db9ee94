//! The `prepare` pipeline: read -> clean -> tokenize -> write, streaming.
//!
//! Three stages run at once: a reader thread (decompress, split lines, parse
//! JSON, filter, dedup, choose the split) fills bounded batches; the calling
//! thread tokenizes each batch on a rayon pool of `threads` workers; a writer
//! thread appends the ids to the shards. Batches are tokenized in parallel but
//! handed on in input order, so the shards are byte-identical for any thread
//! count, and memory stays bounded by a few batches whatever the corpus size.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crossbeam_channel::{bounded, Receiver, Sender};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::clean::{is_val, CleanOptions, Cleaner};
use crate::dedup::{cluster_files, Lsh, MinHashOptions, NEAR_DUPLICATE};
use crate::dedup_stages::removed_lines;
use crate::error::{Result, TokenmillError};
use crate::input::{
    inputs_digest, Batcher, Budget, Corpus, InputFile, InputSpec, MemoryTable, Part, ReadStats,
    ReaderOptions, TxtMode, DEFAULT_MAX_LINE_BYTES,
};
use crate::manifest::{
    comparable_args, Manifest, PartEntry, SplitEntry, TokenizerEntry, FORMAT, FORMAT_VERSION,
};
use crate::progress::{Counts, Progress};
use crate::shard::{
    finish_splits, prepare_output_dir, remove_unfinished, write_json, Dtype, SplitWriter,
};
use crate::threads::{build_pool, resolve_threads};
use crate::tokenize::{self, Backend, Encoder};

/// Split names, in manifest order.
pub const SPLITS: [&str; 2] = ["train", "val"];

/// Which duplicates `prepare` removes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", from = "DedupArg")]
pub enum DedupMode {
    /// Exact duplicates of the whitespace-normalised text (the default).
    Exact,
    /// Near-duplicates by MinHash LSH (exact duplicates included).
    Minhash,
    None,
}

/// `dedup` as configs give it: a mode name, or `true`/`false` as before modes existed.
#[derive(Deserialize)]
#[serde(untagged)]
enum DedupArg {
    Flag(bool),
    Mode(DedupName),
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum DedupName {
    Exact,
    Minhash,
    None,
}

impl From<DedupArg> for DedupMode {
    fn from(a: DedupArg) -> Self {
        match a {
            DedupArg::Flag(true) | DedupArg::Mode(DedupName::Exact) => DedupMode::Exact,
            DedupArg::Flag(false) | DedupArg::Mode(DedupName::None) => DedupMode::None,
            DedupArg::Mode(DedupName::Minhash) => DedupMode::Minhash,
        }
    }
}

/// Whether to prepend BOS to every document.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BosMode {
    /// As the tokenizer config says (`add_bos_token`, else its post-processor).
    Auto,
    Always,
    Never,
}

/// Every argument of a `prepare` run (the CLI and Python API fill it).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrepareConfig {
    /// Files, directories or globs (.jsonl/.json/.ndjson/.txt, optionally
    /// .gz/.zst, .parquet, .arrow), or tables in memory by index.
    pub inputs: Vec<InputSpec>,
    /// The tables in memory that `inputs` name (the Python API's datasets).
    #[serde(skip)]
    pub tables: Vec<MemoryTable>,
    /// A tokenizer.json or a directory holding one.
    pub tokenizer: String,
    /// Output dataset directory.
    pub output: String,
    /// Dotted path of the text field in JSON records.
    pub text_field: String,
    /// `.txt` inputs: one document per line or per file.
    pub txt_mode: TxtMode,
    /// Longer lines are skipped (reason `line_too_long`) without being held in memory.
    pub max_line_bytes: u64,
    /// Stop at the first bad line with an error naming file and line.
    pub strict: bool,
    pub min_chars: u64,
    pub max_chars: Option<u64>,
    /// `exact` (whitespace-normalised text), `minhash` (near-duplicates) or `none`.
    pub dedup: DedupMode,
    /// `minhash`: Jaccard similarity at or above which documents are near-duplicates.
    pub dedup_threshold: f64,
    /// `minhash`: permutations per signature.
    pub dedup_num_perm: usize,
    /// `minhash`: `auto`, `word` or `char`, optionally `:N`.
    pub dedup_shingle: String,
    /// `minhash`: drop candidate pairs whose exact Jaccard is under the threshold.
    pub dedup_verify: bool,
    /// Stop after this many documents have been kept.
    pub max_docs: Option<u64>,
    /// Fraction of documents (by content hash) sent to the `val` split.
    pub val_fraction: f64,
    /// Seed of the val split hash.
    pub seed: u64,
    pub bos: BosMode,
    /// Append EOS to every document.
    pub eos: bool,
    /// Parse special-token strings in the text as special tokens.
    pub parse_special: bool,
    /// `auto` (the fast engine where it supports the tokenizer), `fast` or `reference`.
    pub tokenizer_backend: Backend,
    /// Share of documents (by content hash) that the reference engine
    /// re-encodes to check the fast one; any difference stops the run.
    pub verify_fraction: f64,
    /// `auto`, `uint16` or `uint32`.
    pub dtype: String,
    /// Shard size limit in bytes of `.bin`.
    pub shard_bytes: u64,
    /// Tokenizer threads; 0 = `TOKENMILL_THREADS` or all cores.
    pub threads: usize,
    /// Replace an existing dataset in `output`.
    pub overwrite: bool,
    /// Draw a progress line on stderr.
    pub progress: bool,
    /// Finish a run that kept no document (else an error naming the likely cause).
    pub allow_empty: bool,
    /// A partitioned run: how many parts the inputs are cut into
    /// ([`Part`]), with `part`.
    pub num_parts: Option<usize>,
    /// A partitioned run: which part this run makes (0-based).
    pub part: Option<usize>,
    /// The work directory of finished dedup stages (`dedup_stages`): the
    /// documents they removed are skipped as `near_duplicate`.
    pub exclude: Option<String>,
}

impl PrepareConfig {
    /// The part of the inputs this run makes, if it is one.
    fn part(&self) -> Result<Option<Part>> {
        match (self.num_parts, self.part) {
            (None, None) => Ok(None),
            (Some(count), Some(index)) => {
                if self.max_docs.is_some() {
                    return Err(TokenmillError::Invalid(
                        "max_docs cannot be combined with parts: it would keep that many \
                         documents in every part"
                            .into(),
                    ));
                }
                Part { index, count }.check().map(Some)
            }
            _ => Err(TokenmillError::Invalid(
                "num_parts and part go together: pass both, or neither".into(),
            )),
        }
    }
}

impl Default for PrepareConfig {
    fn default() -> Self {
        PrepareConfig {
            inputs: Vec::new(),
            tables: Vec::new(),
            tokenizer: String::new(),
            output: String::new(),
            text_field: "text".into(),
            txt_mode: TxtMode::Line,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            strict: false,
            min_chars: 0,
            max_chars: None,
            dedup: DedupMode::Exact,
            dedup_threshold: 0.8,
            dedup_num_perm: 128,
            dedup_shingle: "auto".into(),
            dedup_verify: false,
            max_docs: None,
            val_fraction: 0.01,
            seed: 0,
            bos: BosMode::Auto,
            eos: true,
            parse_special: false,
            tokenizer_backend: Backend::Auto,
            verify_fraction: 0.0,
            dtype: "auto".into(),
            shard_bytes: 1 << 30,
            threads: 0,
            overwrite: false,
            progress: true,
            allow_empty: false,
            num_parts: None,
            part: None,
            exclude: None,
        }
    }
}

/// The length filters of the clean stage (no exact dedup, no hash).
fn clean_options(cfg: &PrepareConfig) -> CleanOptions {
    CleanOptions {
        min_chars: cfg.min_chars as usize,
        max_chars: cfg.max_chars.map(|m| m as usize),
        dedup: false,
        need_hash: cfg.val_fraction > 0.0,
    }
}

/// What the MinHash pass of `prepare --dedup minhash` found.
struct NearDuplicates {
    /// Sorted lines of removed documents, per input file.
    lines: Vec<Vec<u64>>,
    entry: serde_json::Value,
}

/// Runs MinHash LSH over the documents `prepare` would keep (same reader,
/// same length filters) and returns the lines to skip.
fn find_near_duplicates(
    cfg: &PrepareConfig,
    corpus: Corpus,
    interrupted: &dyn Fn() -> bool,
) -> Result<NearDuplicates> {
    let mh = MinHashOptions {
        threshold: cfg.dedup_threshold,
        num_perm: cfg.dedup_num_perm,
        shingle: cfg.dedup_shingle.clone(),
        verify: cfg.dedup_verify,
        ..MinHashOptions::default()
    };
    // The MinHash options are named dedup_* here; their messages start with the name.
    let lsh = Lsh::new(&mh).map_err(|e| match e {
        TokenmillError::Invalid(m) => TokenmillError::Invalid(format!("dedup_{m}")),
        e => e,
    })?;
    let threads = resolve_threads(cfg.threads);
    let pool = build_pool(threads, "dedup")?;
    let clean = CleanOptions {
        need_hash: false,
        ..clean_options(cfg)
    };
    let files = corpus.inputs().len();
    let fc = cluster_files(
        corpus,
        Some(&clean),
        &lsh,
        &pool,
        threads,
        cfg.progress,
        interrupted,
    )?;
    let entry = json!({
        "threshold": lsh.threshold,
        "num_perm": lsh.hasher.num_perm,
        "bands": fc.bands,
        "rows": fc.rows,
        "shingle": lsh.hasher.shingling.to_string(),
        "seed": lsh.hasher.seed,
        "verify": lsh.verify,
        "normalisation": MINHASH_NORMALISATION,
        "docs": fc.roots.len(),
        "removed": fc.removed(),
        "clusters": fc.clusters(),
        "candidate_pairs": fc.stats.candidate_pairs,
        "verified_pairs": fc.stats.verified_pairs,
        "rejected_pairs": fc.stats.rejected_pairs,
        "seconds": fc.signature_seconds + fc.cluster_seconds,
    });
    Ok(NearDuplicates {
        lines: fc.removed_lines(files),
        entry,
    })
}

/// How `minhash` normalises text, as the manifest states it.
pub const MINHASH_NORMALISATION: &str =
    "NFKC, lowercase, non-letter/mark/number characters to separators, separator runs to one space; xxh3-64 shingles";

/// What `prepare` returns: the manifest plus timings.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub output: String,
    pub manifest: Manifest,
    pub threads: usize,
    pub seconds: f64,
    pub text_mb_per_s: f64,
    pub tokens_per_s: f64,
    /// A part that an earlier run with the same arguments had finished:
    /// nothing was done.
    pub already_complete: bool,
}

impl Summary {
    /// Writes `manifest.json` into `out` (atomically, last: it marks the
    /// dataset complete) and times the run from `started`, rates over
    /// `text_bytes` and `tokens`.
    pub fn finish(
        out: &Path,
        manifest: Manifest,
        threads: usize,
        started: Instant,
        text_bytes: u64,
        tokens: u64,
    ) -> Result<Summary> {
        write_json(&out.join("manifest.json"), &manifest)?;
        let seconds = started.elapsed().as_secs_f64();
        Ok(Summary {
            output: out.display().to_string(),
            threads,
            seconds,
            text_mb_per_s: text_bytes as f64 / 1e6 / seconds.max(1e-9),
            tokens_per_s: tokens as f64 / seconds.max(1e-9),
            manifest,
            already_complete: false,
        })
    }
}

/// The summary of a part that `out` already holds, made with the same
/// arguments, tokenizer (fingerprint) and input files: rerunning a finished
/// part (a scheduler's retry) does nothing. `None` where `out` holds no
/// dataset or another one (the run then goes on and, without `overwrite`,
/// refuses to replace it). A killed part left no manifest and is redone.
fn finished_part(
    cfg: &PrepareConfig,
    out: &Path,
    inputs: &[InputFile],
    part: &PartEntry,
    started: Instant,
) -> Result<Option<Summary>> {
    if cfg.overwrite || !out.join("manifest.json").is_file() {
        return Ok(None);
    }
    let m = Manifest::read(out)?;
    let args = serde_json::to_value(cfg).expect("config serialises");
    let paths: Vec<String> = inputs
        .iter()
        .map(|f| f.path.display().to_string())
        .collect();
    let same = m.part.as_ref() == Some(part)
        && comparable_args(&m.args, &[]) == comparable_args(&args, &[])
        && m.inputs.iter().map(|f| &f.path).eq(&paths)
        && m.tokenizer.fingerprint == tokenize::load(Path::new(&cfg.tokenizer))?.fingerprint;
    if !same {
        return Ok(None);
    }
    Ok(Some(Summary {
        output: out.display().to_string(),
        threads: resolve_threads(cfg.threads),
        seconds: started.elapsed().as_secs_f64(),
        text_mb_per_s: 0.0,
        tokens_per_s: 0.0,
        already_complete: true,
        manifest: m,
    }))
}

struct Doc {
    text: String,
    file: usize,
    line: u64,
    val: bool,
}

/// Reader stage: runs on its own thread, sends batches in input order.
fn read_all(
    mut corpus: Corpus,
    cfg: &PrepareConfig,
    near_duplicates: &[Vec<u64>],
    tx: Sender<Vec<Doc>>,
) -> Result<ReadStats> {
    let mut cleaner = Cleaner::new(CleanOptions {
        dedup: cfg.dedup == DedupMode::Exact,
        ..clean_options(cfg)
    });
    // The next near-duplicate of each file (their lines are sorted).
    let mut near_next = vec![0usize; near_duplicates.len()];
    let mut kept = 0u64;
    let mut next_doc = || -> Result<Option<(Doc, usize)>> {
        while cfg.max_docs.is_none_or(|m| kept < m) {
            let Some(doc) = corpus.next_doc()? else {
                break;
            };
            let near = near_duplicates.get(doc.file);
            if near.and_then(|n| n.get(near_next[doc.file])) == Some(&doc.line) {
                near_next[doc.file] += 1;
                corpus.filtered(doc.file, NEAR_DUPLICATE);
                continue;
            }
            match cleaner.check(&doc.text) {
                Err(reason) => corpus.filtered(doc.file, reason.name()),
                Ok(hash) => {
                    corpus.kept(doc.file, doc.text.len());
                    kept += 1;
                    let bytes = doc.text.len();
                    let doc = Doc {
                        val: is_val(hash, cfg.val_fraction, cfg.seed),
                        text: doc.text,
                        file: doc.file,
                        line: doc.line,
                    };
                    return Ok(Some((doc, bytes)));
                }
            }
        }
        Ok(None)
    };
    let mut batcher = Batcher::new(Budget::STREAM);
    while let Some(batch) = batcher.next_batch(&mut next_doc)? {
        if tx.send(batch).is_err() {
            break; // downstream stopped; its error is reported
        }
    }
    Ok(corpus.finish())
}

/// What the tokenizer loop counted.
struct Tokenized {
    file_tokens: Vec<u64>,
    counts: Counts,
    /// Long documents that were encoded in more than one piece.
    docs_in_pieces: u64,
    /// Documents the reference engine re-encoded as a check.
    verified_docs: u64,
}

/// One tokenized document on its way to the writer.
struct Encoded {
    ids: Vec<u32>,
    val: bool,
}

/// Everything that comes from the tokenizer.
struct Setup {
    loaded: tokenize::LoadedTokenizer,
    dtype: Dtype,
    bos: Option<u32>,
    eos: Option<u32>,
    encoder: Encoder,
    threads: usize,
    pool: rayon::ThreadPool,
}

/// Loads the tokenizer and builds the encoder and its thread pool.
fn setup(cfg: &PrepareConfig) -> Result<Setup> {
    let loaded = tokenize::load(Path::new(&cfg.tokenizer))?;
    let dtype = Dtype::choose(&cfg.dtype, loaded.vocab_size)?;
    let bos = match cfg.bos {
        BosMode::Never => None,
        BosMode::Auto => loaded
            .bos
            .as_ref()
            .filter(|_| loaded.adds_bos)
            .map(|t| t.id),
        BosMode::Always => Some(loaded.bos.as_ref().map(|t| t.id).ok_or_else(|| {
            TokenmillError::Invalid(format!(
                "bos='always' but {} defines no BOS token",
                loaded.json_path.display()
            ))
        })?),
    };
    let eos = if cfg.eos {
        Some(loaded.eos.as_ref().map(|t| t.id).ok_or_else(|| {
            TokenmillError::Invalid(format!(
                "{} defines no EOS token: set eos_token in its tokenizer_config.json or pass eos=False",
                loaded.json_path.display()
            ))
        })?)
    } else {
        None
    };
    let encoder = Encoder::new(
        &loaded,
        bos,
        eos,
        cfg.parse_special,
        cfg.tokenizer_backend,
        cfg.verify_fraction,
    )?;
    let threads = resolve_threads(cfg.threads);
    let pool = build_pool(threads, "tok")?;

    Ok(Setup {
        loaded,
        dtype,
        bos,
        eos,
        encoder,
        threads,
        pool,
    })
}

/// Runs the whole pipeline. `interrupted` is polled between batches (the
/// Python bindings check for Ctrl-C there).
pub fn prepare(cfg: &PrepareConfig, interrupted: &dyn Fn() -> bool) -> Result<Summary> {
    let started = Instant::now();
    if !(0.0..1.0).contains(&cfg.val_fraction) {
        return Err(TokenmillError::Invalid(format!(
            "val_fraction must be in [0, 1), got {}",
            cfg.val_fraction
        )));
    }
    if cfg.shard_bytes < 8 {
        return Err(TokenmillError::Invalid(
            "shard_bytes must be at least 8".into(),
        ));
    }
    if cfg.output.is_empty() {
        return Err(TokenmillError::Invalid(
            "an output directory is required".into(),
        ));
    }
    let opts = ReaderOptions::new(&cfg.text_field, cfg.txt_mode, cfg.max_line_bytes as usize)?;
    let part = cfg.part()?;
    let corpus = Corpus::open(
        &cfg.inputs,
        &cfg.tables,
        &[Path::new(&cfg.output)],
        opts,
        cfg.strict,
    )?;
    let out = PathBuf::from(&cfg.output);
    let part_files = part.map(|p| corpus.part_files(p));
    let excluded = match &cfg.exclude {
        None => None,
        Some(_) if cfg.dedup == DedupMode::Minhash => {
            return Err(TokenmillError::Invalid(
                "exclude and dedup='minhash' both remove near-duplicates: pass one of them".into(),
            ))
        }
        Some(work) => {
            let inputs = corpus.inputs();
            let mut lines = removed_lines(Path::new(work), &inputs_digest(inputs), inputs.len())?;
            if let Some(files) = part_files.clone() {
                lines = lines.drain(files).collect();
            }
            Some(lines)
        }
    };
    let (corpus, part) = match part.zip(part_files) {
        None => (corpus, None),
        Some((p, files)) => {
            let entry = PartEntry {
                index: p.index,
                count: p.count,
                input_files: corpus.inputs().len(),
                input_bytes: corpus.total_bytes(),
            };
            let corpus = corpus.keep_files(files);
            if let Some(done) = finished_part(cfg, &out, corpus.inputs(), &entry, started)? {
                return Ok(done);
            }
            (corpus, Some(entry))
        }
    };
    let inputs = corpus.inputs().to_vec();
    let total_raw = corpus.total_bytes();
    let raw_counter = corpus.bytes_read();
    let near = if cfg.dedup == DedupMode::Minhash {
        if out.join("manifest.json").exists() && !cfg.overwrite {
            return Err(TokenmillError::OutputExists(out.clone()));
        }
        let again = corpus.reread(corpus.options().clone(), cfg.strict);
        Some(find_near_duplicates(cfg, again, interrupted)?)
    } else {
        None
    };
    let near_lines = match (&near, &excluded) {
        (Some(n), _) => n.lines.as_slice(),
        (None, Some(lines)) => lines.as_slice(),
        (None, None) => &[][..],
    };

    let run = || -> Result<(Setup, ReadStats, Vec<SplitEntry>, Tokenized)> {
        std::thread::scope(|s| {
            let (batch_tx, batch_rx) = bounded::<Vec<Doc>>(2);
            let named = |name: &str| std::thread::Builder::new().name(format!("tokenmill-{name}"));
            let spawn_err =
                |e: std::io::Error| TokenmillError::Invalid(format!("cannot start a thread: {e}"));
            // The reader needs no tokenizer: it starts while the tokenizer loads.
            let reader = named("read")
                .spawn_scoped(s, || read_all(corpus, cfg, near_lines, batch_tx))
                .map_err(spawn_err)?;
            let ready = setup(cfg).and_then(|st| {
                prepare_output_dir(&out, &SPLITS, cfg.overwrite)?;
                Ok(st)
            });
            let st = match ready {
                Ok(st) => st,
                Err(e) => {
                    drop(batch_rx); // stops the reader
                    let _ = reader.join();
                    return Err(e);
                }
            };
            let (enc_tx, enc_rx) = bounded::<Vec<Encoded>>(2);
            let dtype = st.dtype;
            let out = &out;
            let writer = named("write")
                .spawn_scoped(s, move || write_all(out, dtype, cfg.shard_bytes, enc_rx))
                .map_err(spawn_err)?;
            let tokenized = tokenize_loop(
                &st.pool,
                &st.encoder,
                batch_rx,
                enc_tx,
                &inputs,
                &raw_counter,
                Progress::new("prepare", cfg.progress, total_raw),
                interrupted,
            );
            let written = writer.join().expect("writer thread panicked");
            let read = reader.join().expect("reader thread panicked");
            // Report the root cause: a reader error (e.g. --strict) first.
            let read = read?;
            let tokenized = tokenized?;
            let splits = finish_splits(written?)?;
            Ok((st, read, splits, tokenized))
        })
    };
    let (st, mut read, splits, tokenized) = match run() {
        Ok(r) => r,
        Err(e) => {
            remove_unfinished(&out, &SPLITS);
            return Err(e);
        }
    };
    let Setup {
        loaded,
        dtype,
        bos,
        eos,
        encoder,
        threads,
        ..
    } = st;

    let mut split_map = BTreeMap::new();
    for (name, entry) in SPLITS.iter().zip(splits) {
        split_map.insert(name.to_string(), entry);
    }
    // Lines, docs and text bytes per file come from the reader, tokens from the tokenizer loop.
    for (f, tokens) in read.files.iter_mut().zip(&tokenized.file_tokens) {
        f.tokens = *tokens;
    }
    let totals = read.totals();
    let duplicates = totals.filtered.get("duplicate").copied().unwrap_or(0);
    let near_removed = totals.filtered.get(NEAR_DUPLICATE).copied().unwrap_or(0);
    let manifest = Manifest {
        format: FORMAT.into(),
        format_version: FORMAT_VERSION,
        kind: "pretrain".into(),
        tokenmill_version: crate::VERSION.into(),
        tokenizer: TokenizerEntry {
            verify_fraction: cfg.verify_fraction,
            verified_docs: tokenized.verified_docs,
            ..TokenizerEntry::new(&loaded, &encoder, cfg.parse_special)
        },
        dtype: dtype.name().into(),
        bos_added: bos.is_some(),
        eos_added: eos.is_some(),
        splits: split_map,
        inputs: read.files,
        totals,
        skipped_examples: read.examples,
        dedup: {
            let mut d = json!({
                "method": cfg.dedup,
                "exact": cfg.dedup == DedupMode::Exact,
                "normalisation": "trim, fold whitespace runs to one space; xxh3-128",
                "removed": duplicates + near_removed,
            });
            if let Some(n) = &near {
                d["minhash"] = n.entry.clone();
            }
            if let Some(work) = &cfg.exclude {
                d["exclude"] = json!({"work": work, "removed": near_removed});
            }
            d
        },
        chunking: json!({
            "long_documents_in_pieces": encoder.splits_long_documents(),
            "documents_in_pieces": tokenized.docs_in_pieces,
            "long_document_bytes": tokenize::LONG_DOC_BYTES,
            "piece_bytes": tokenize::PIECE_BYTES,
        }),
        val_split: json!({
            "fraction": cfg.val_fraction,
            "seed": cfg.seed,
            "method": "xxh3-64(content hash, seed) < fraction",
        }),
        args: serde_json::to_value(PrepareConfig {
            threads,
            ..cfg.clone()
        })
        .expect("config serialises"),
        sft: None,
        part,
        merged: None,
    };
    // A part that got no input file (fewer files than parts) is an empty
    // dataset, so that every part of the run exists for `merge`.
    let empty_part = manifest.part.is_some() && manifest.inputs.is_empty();
    manifest.totals.require_documents(
        cfg.allow_empty || empty_part,
        &manifest.skipped_examples,
        crate::clean::filter_hint,
    )?;
    let counts = &tokenized.counts;
    Summary::finish(
        &out,
        manifest,
        threads,
        started,
        counts.text_bytes,
        counts.tokens,
    )
}

#[allow(clippy::too_many_arguments)]
fn tokenize_loop(
    pool: &rayon::ThreadPool,
    encoder: &Encoder,
    batches: Receiver<Vec<Doc>>,
    out: Sender<Vec<Encoded>>,
    inputs: &[InputFile],
    raw_counter: &AtomicU64,
    mut progress: Progress,
    interrupted: &dyn Fn() -> bool,
) -> Result<Tokenized> {
    let mut file_tokens = vec![0u64; inputs.len()];
    let mut counts = Counts::default();
    let mut docs_in_pieces = 0;
    let mut verified_docs = 0;
    for docs in batches {
        if interrupted() {
            return Err(TokenmillError::Interrupted);
        }
        let texts: Vec<&str> = docs.iter().map(|d| d.text.as_str()).collect();
        let batch = pool
            .install(|| encoder.encode_many(&texts))
            .map_err(|(i, e)| TokenmillError::BadLine {
                path: inputs[docs[i].file].path.clone(),
                line: docs[i].line,
                reason: "tokenizer_error",
                detail: e.to_string(),
            })?;
        docs_in_pieces += batch.in_pieces;
        verified_docs += batch.verified;
        let encoded: Vec<Encoded> = batch
            .ids
            .into_iter()
            .zip(&docs)
            .map(|(ids, d)| {
                file_tokens[d.file] += ids.len() as u64;
                counts.text_bytes += d.text.len() as u64;
                counts.tokens += ids.len() as u64;
                Encoded { ids, val: d.val }
            })
            .collect();
        counts.docs += docs.len() as u64;
        counts.raw_bytes = raw_counter.load(Ordering::Relaxed);
        progress.update(counts);
        drop(docs);
        if out.send(encoded).is_err() {
            break; // the writer failed; its error is reported
        }
    }
    counts.raw_bytes = raw_counter.load(Ordering::Relaxed);
    progress.finish(counts);
    Ok(Tokenized {
        file_tokens,
        counts,
        docs_in_pieces,
        verified_docs,
    })
}

/// Writer stage: appends documents to the train/val shards in arrival
/// order. Returns the writers open: the caller commits them
/// (`finish_splits`) only when every stage succeeded.
fn write_all(
    out: &Path,
    dtype: Dtype,
    shard_bytes: u64,
    rx: Receiver<Vec<Encoded>>,
) -> Result<Vec<SplitWriter>> {
    let mut writers: Vec<SplitWriter> = SPLITS
        .iter()
        .map(|s| SplitWriter::new(out, s, dtype, shard_bytes))
        .collect();
    for batch in rx {
        for doc in batch {
            writers[usize::from(doc.val)].write_doc(&doc.ids)?;
        }
    }
    Ok(writers)
}
