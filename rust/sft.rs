//! The `prepare-sft` pipeline: chat JSONL -> rendered, tokenized, masked
//! shards (manifest kind `sft`, a `.mask` beside each `.bin`/`.idx`).
//!
//! It reuses `prepare`'s pieces (input expansion and the bounded line
//! reader, the shard writer, the manifest). Records are read in batches in
//! input order; each batch is parsed, rendered and tokenized on a rayon pool
//! (order kept by `threads::map_each`), then written in order, so the
//! shards are byte-identical for any thread count.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::chat::{parse_record, ChatEncoder, ChatFormat, ChatTemplate, Overflow, TrainOn};
use crate::clean::{content_hash, is_val};
use crate::error::{Result, TokenmillError};
use crate::input::{
    Batcher, Budget, Corpus, Entry, InputSpec, MemoryTable, ReaderOptions, TxtMode,
    DEFAULT_MAX_LINE_BYTES,
};
use crate::manifest::{Manifest, SplitEntry, TokenizerEntry, FORMAT, FORMAT_VERSION};
use crate::prepare::{Summary, SPLITS};
use crate::progress::{Counts, Progress};
use crate::shard::{finish_splits, prepare_output_dir, remove_unfinished, Dtype, SplitWriter};
use crate::threads::{build_pool, map_each, resolve_threads};
use crate::tokenize::{self, Backend, Encoder};

/// Every argument of a `prepare-sft` run.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SftConfig {
    /// Files, directories or globs (.jsonl/.json/.ndjson/.txt, optionally
    /// .gz/.zst, .parquet, .arrow), or tables in memory by index.
    pub inputs: Vec<InputSpec>,
    /// The tables in memory that `inputs` name (the Python API's datasets).
    #[serde(skip)]
    pub tables: Vec<MemoryTable>,
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
            tables: Vec::new(),
            tokenizer: String::new(),
            output: String::new(),
            format: ChatFormat::Auto,
            system: None,
            train_on: TrainOn::All,
            max_length: None,
            overflow: Overflow::Truncate,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
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
    let mut corpus = Corpus::open(
        &cfg.inputs,
        &cfg.tables,
        &[Path::new(&cfg.output)],
        opts,
        cfg.strict,
    )?;
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

    let mut writers: Vec<SplitWriter> = SPLITS
        .iter()
        .map(|s| SplitWriter::new(&out, s, dtype, cfg.shard_bytes).with_mask())
        .collect();
    let mut progress = Progress::new("prepare-sft", cfg.progress, corpus.total_bytes());
    let raw = corpus.bytes_read();
    let mut counts = Counts::default();
    let mut truncated = 0u64;
    let mut inexact_turns = 0u64;
    let mut masked_tokens = 0u64;
    let mut run = || -> Result<()> {
        // Records that give no text stay in the batch, so that every bad
        // record is counted (and, under strict, reported) in input order.
        let mut batcher = Batcher::new(Budget::HELD);
        let next = |corpus: &mut Corpus| -> Result<Option<(Entry, usize)>> {
            let entry = corpus.next_entry()?;
            Ok(entry.map(|e| {
                let bytes = e.text.as_ref().map_or(0, String::len);
                (e, bytes)
            }))
        };
        while let Some(batch) = batcher.next_batch(|| next(&mut corpus))? {
            if interrupted() {
                return Err(TokenmillError::Interrupted);
            }
            let done: Vec<std::result::Result<_, (&'static str, String)>> = pool.install(|| {
                map_each(&batch, |e| {
                    let text = e.text.as_ref().map_err(|(r, d)| (r.name(), d.clone()))?;
                    let messages = parse_record(text, cfg.format, cfg.system.as_deref())?;
                    let conv = chat.encode_conversation(&messages)?;
                    Ok((content_hash(text), conv))
                })
            });
            for (e, r) in batch.iter().zip(done) {
                match r {
                    Ok((hash, conv)) => {
                        let text_bytes = e.text.as_ref().map_or(0, String::len);
                        counts.docs += 1;
                        counts.tokens += conv.ids.len() as u64;
                        counts.text_bytes += text_bytes as u64;
                        corpus.kept(e.file, text_bytes);
                        corpus.stats_mut(e.file).tokens += conv.ids.len() as u64;
                        truncated += u64::from(conv.truncated);
                        inexact_turns += conv.inexact_turns;
                        masked_tokens += conv.mask.iter().map(|&b| u64::from(b)).sum::<u64>();
                        let val = is_val(hash, cfg.val_fraction, cfg.seed);
                        writers[usize::from(val)].write_masked_doc(&conv.ids, &conv.mask)?;
                    }
                    Err(("too_long", detail)) => {
                        corpus.refuse(e.file, e.line, "too_long", detail)?
                    }
                    Err((reason, detail)) => corpus.skip(e.file, e.line, reason, detail)?,
                }
            }
            counts.raw_bytes = raw.load(Ordering::Relaxed);
            progress.update(counts);
        }
        Ok(())
    };
    let result = run();
    counts.raw_bytes = raw.load(Ordering::Relaxed);
    progress.finish(counts);
    let splits = match result.and_then(|()| finish_splits(writers)) {
        Ok(s) => s,
        Err(e) => {
            remove_unfinished(&out, &SPLITS);
            return Err(e);
        }
    };
    let read = corpus.finish();
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
        totals: read.totals(),
        inputs: read.files,
        skipped_examples: read.examples,
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
        part: None,
        merged: None,
    };
    manifest.totals.require_documents(
        cfg.allow_empty,
        &manifest.skipped_examples,
        crate::chat::record_hint,
    )?;
    let (text_bytes, tokens) = (manifest.totals.text_bytes, manifest.totals.tokens);
    Summary::finish(&out, manifest, threads, started, text_bytes, tokens)
}
