//! The `prepare-sft` pipeline: chat JSONL -> rendered, tokenized, masked
//! shards (manifest kind `sft`, a `.mask` beside each `.bin`/`.idx`).
//!
//! It reuses `prepare`'s pieces (input expansion and the bounded line
//! reader, the shard writer, the manifest). Records are read in batches in
//! input order; each batch is parsed, rendered and tokenized on a rayon pool
//! (order kept by `par_iter().collect()`), then written in order, so the
//! shards are byte-identical for any thread count.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::chat::{parse_record, ChatEncoder, ChatFormat, ChatTemplate, Overflow, TrainOn};
use crate::clean::{content_hash, is_val};
use crate::error::{Result, TokenmillError};
use crate::manifest::{FileStats, Manifest, SplitEntry, TokenizerEntry, FORMAT, FORMAT_VERSION};
use crate::prepare::{Summary, SPLITS};
use crate::progress::{Counts, Progress};
use crate::reader::{bad_line, expand_inputs, FileReader, ReaderOptions, TxtMode};
use crate::shard::{finish_splits, prepare_output_dir, remove_unfinished, Dtype, SplitWriter};
use crate::threads::{build_pool, resolve_threads};
use crate::tokenize::{self, Backend, Encoder};

/// Records parsed and tokenized per batch: at most this many, and no more
/// record bytes than [`BATCH_BYTES`] (a batch is held with its rendered and
/// tokenized forms, so 1024 records of 64 MiB must not make one batch).
const BATCH_RECORDS: usize = 1024;
const BATCH_BYTES: usize = 16 << 20;

/// Every argument of a `prepare-sft` run.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SftConfig {
    /// Files, directories or globs of .jsonl/.json/.ndjson, optionally .gz/.zst.
    pub inputs: Vec<String>,
    /// A tokenizer.json or a directory holding one (and its tokenizer_config.json).
    pub tokenizer: String,
    pub output: String,
    /// `auto`, `messages`, `sharegpt` or `alpaca`.
    pub format: ChatFormat,
    /// System message added to conversations that have none.
    pub system: Option<String>,
    /// `all` assistant turns are trained on, or only the `last`.
    pub train_on: TrainOn,
    /// Longest conversation in tokens (None: no limit).
    pub max_length: Option<usize>,
    /// `truncate` at the last whole turn that fits, or `drop`.
    pub overflow: Overflow,
    pub max_line_bytes: u64,
    /// Stop at the first bad record with an error naming file and line.
    pub strict: bool,
    /// Fraction of conversations (by content hash) sent to `val`.
    pub val_fraction: f64,
    pub seed: u64,
    pub tokenizer_backend: Backend,
    pub dtype: String,
    pub shard_bytes: u64,
    pub threads: usize,
    pub overwrite: bool,
    /// Draw a progress line on stderr.
    pub progress: bool,
    /// Finish a run that kept no conversation (else an error naming the likely cause).
    pub allow_empty: bool,
}

impl Default for SftConfig {
    fn default() -> Self {
        SftConfig {
            inputs: Vec::new(),
            tokenizer: String::new(),
            output: String::new(),
            format: ChatFormat::Auto,
            system: None,
            train_on: TrainOn::All,
            max_length: None,
            overflow: Overflow::Truncate,
            max_line_bytes: 64 << 20,
            strict: false,
            val_fraction: 0.01,
            seed: 0,
            tokenizer_backend: Backend::Auto,
            dtype: "auto".into(),
            shard_bytes: 1 << 30,
            threads: 0,
            overwrite: false,
            progress: true,
            allow_empty: false,
        }
    }
}

/// One record read, before parsing.
struct Line {
    text: std::result::Result<String, (&'static str, String)>,
    file: usize,
    line: u64,
}

/// Runs `prepare-sft`. `interrupted` is polled between batches.
pub fn prepare_sft(cfg: &SftConfig, interrupted: &dyn Fn() -> bool) -> Result<Summary> {
    let started = Instant::now();
    if !(0.0..1.0).contains(&cfg.val_fraction) {
        return Err(TokenmillError::Invalid(format!(
            "val_fraction must be in [0, 1), got {}",
            cfg.val_fraction
        )));
    }
    if cfg.output.is_empty() {
        return Err(TokenmillError::Invalid(
            "an output directory is required".into(),
        ));
    }
    if cfg.max_length == Some(0) {
        return Err(TokenmillError::Invalid("max_length must be > 0".into()));
    }
    let mut opts = ReaderOptions::new("text", TxtMode::Line, cfg.max_line_bytes as usize)?;
    opts.whole_json_line = true;
    let inputs = expand_inputs(&cfg.inputs, &[Path::new(&cfg.output)])?;
    if inputs.is_empty() {
        return Err(TokenmillError::Invalid("no input files given".into()));
    }
    let loaded = tokenize::load(Path::new(&cfg.tokenizer))?;
    let dtype = Dtype::choose(&cfg.dtype, loaded.vocab_size)?;
    let template = ChatTemplate::load(Path::new(&cfg.tokenizer), &loaded)?;
    let from_tokenizer = template.from_tokenizer;
    let encoder = Encoder::new(&loaded, None, None, true, cfg.tokenizer_backend, 0.0)?;
    let tokenizer_entry = TokenizerEntry::new(&loaded, &encoder, true);
    let chat = ChatEncoder::new(
        template,
        encoder,
        &loaded,
        cfg.train_on,
        cfg.max_length,
        cfg.overflow,
    );
    let threads = resolve_threads(cfg.threads);
    let pool = build_pool(threads, "sft")?;
    let out = PathBuf::from(&cfg.output);
    prepare_output_dir(&out, &SPLITS, cfg.overwrite)?;

    let mut files: Vec<FileStats> = inputs.iter().map(|f| FileStats::new(&f.path)).collect();
    let mut writers: Vec<SplitWriter> = SPLITS
        .iter()
        .map(|s| SplitWriter::new(&out, s, dtype, cfg.shard_bytes).with_mask())
        .collect();
    let total_raw: u64 = inputs
        .iter()
        .filter_map(|f| std::fs::metadata(&f.path).ok())
        .map(|m| m.len())
        .sum();
    let mut progress = Progress::new("prepare-sft", cfg.progress, total_raw);
    let mut counts = Counts::default();
    let mut examples = Vec::new();
    let mut truncated = 0u64;
    let mut inexact_turns = 0u64;
    let mut masked_tokens = 0u64;
    let counter = Arc::new(AtomicU64::new(0));
    let mut run = || -> Result<()> {
        let mut batch: Vec<Line> = Vec::with_capacity(BATCH_RECORDS);
        let mut batch_bytes = 0usize;
        let mut flush = |batch: &mut Vec<Line>, files: &mut Vec<FileStats>| -> Result<()> {
            if interrupted() {
                return Err(TokenmillError::Interrupted);
            }
            let done: Vec<_> = pool.install(|| {
                batch
                    .par_iter()
                    .map(|l| {
                        let text = l.text.as_ref().map_err(|e| e.clone())?;
                        let messages = parse_record(text, cfg.format, cfg.system.as_deref())?;
                        let conv = chat.encode_conversation(&messages)?;
                        Ok((content_hash(text), conv))
                    })
                    .collect::<Vec<std::result::Result<_, (&'static str, String)>>>()
            });
            for (l, r) in batch.drain(..).zip(done) {
                let stats = &mut files[l.file];
                match r {
                    Ok((hash, conv)) => {
                        counts.docs += 1;
                        counts.tokens += conv.ids.len() as u64;
                        counts.text_bytes += l.text.as_ref().map_or(0, |t| t.len() as u64);
                        stats.docs += 1;
                        stats.tokens += conv.ids.len() as u64;
                        stats.text_bytes += l.text.as_ref().map_or(0, |t| t.len() as u64);
                        truncated += u64::from(conv.truncated);
                        inexact_turns += conv.inexact_turns;
                        masked_tokens += conv.mask.iter().map(|&b| u64::from(b)).sum::<u64>();
                        let val = is_val(hash, cfg.val_fraction, cfg.seed);
                        writers[usize::from(val)].write_masked_doc(&conv.ids, &conv.mask)?;
                    }
                    Err((reason, detail)) => {
                        let path = &inputs[l.file].path;
                        let counts = if reason == "too_long" {
                            &mut stats.filtered
                        } else {
                            &mut stats.skipped
                        };
                        bad_line(
                            cfg.strict,
                            path,
                            l.line,
                            reason,
                            detail,
                            counts,
                            &mut examples,
                        )?;
                    }
                }
            }
            counts.raw_bytes = counter.load(std::sync::atomic::Ordering::Relaxed);
            progress.update(counts);
            Ok(())
        };
        for (fi, input) in inputs.iter().enumerate() {
            let mut reader = FileReader::open(input, &opts, counter.clone())?;
            while let Some(rec) = reader.next_record()? {
                files[fi].lines += 1;
                batch_bytes += rec.text.as_ref().map_or(0, String::len);
                batch.push(Line {
                    text: rec.text.map_err(|(r, d)| (r.name(), d)),
                    file: fi,
                    line: rec.line,
                });
                if batch.len() >= BATCH_RECORDS || batch_bytes >= BATCH_BYTES {
                    flush(&mut batch, &mut files)?;
                    batch_bytes = 0;
                }
            }
            files[fi].repaired_surrogates += reader.repaired_surrogates;
        }
        flush(&mut batch, &mut files)
    };
    let result = run();
    counts.raw_bytes = counter.load(std::sync::atomic::Ordering::Relaxed);
    progress.finish(counts);
    let splits = match result.and_then(|()| finish_splits(writers)) {
        Ok(s) => s,
        Err(e) => {
            remove_unfinished(&out, &SPLITS);
            return Err(e);
        }
    };
    let mut totals = FileStats::default();
    for f in &files {
        totals.add(f);
    }
    let split_map: BTreeMap<String, SplitEntry> =
        SPLITS.iter().map(|s| s.to_string()).zip(splits).collect();
    let manifest = Manifest {
        format: FORMAT.into(),
        format_version: FORMAT_VERSION,
        kind: "sft".into(),
        tokenmill_version: crate::VERSION.into(),
        tokenizer: tokenizer_entry,
        dtype: dtype.name().into(),
        // Whatever BOS/EOS the chat template writes is in the ids; none is added.
        bos_added: false,
        eos_added: false,
        splits: split_map,
        inputs: files,
        totals,
        skipped_examples: examples,
        dedup: json!({"method": "none", "exact": false, "removed": 0}),
        chunking: json!({}),
        val_split: json!({
            "fraction": cfg.val_fraction,
            "seed": cfg.seed,
            "method": "xxh3-64(content hash of the JSON line, seed) < fraction",
        }),
        args: serde_json::to_value(SftConfig {
            threads,
            ..cfg.clone()
        })
        .expect("config serialises"),
        sft: Some(json!({
            "chat_template": if from_tokenizer { "tokenizer" } else { "chatml (built in)" },
            "train_on": cfg.train_on,
            "truncated": truncated,
            "inexact_turns": inexact_turns,
            "masked_tokens": masked_tokens,
        })),
    };
    manifest.totals.require_documents(
        cfg.allow_empty,
        &manifest.skipped_examples,
        crate::chat::record_hint,
    )?;
    let (text_bytes, tokens) = (manifest.totals.text_bytes, manifest.totals.tokens);
    Summary::finish(&out, manifest, threads, started, text_bytes, tokens)
}
