//! The input layer: every stage reads its records through a [`Corpus`].
//!
//! [`reader`] expands the inputs a user names (files, directories, globs,
//! `save_to_disk` directories) and reads one file of lines, JSON records or
//! text (optionally gzip/zstd); [`columnar`] reads the rows of Parquet and
//! Arrow files as records. A [`Corpus`] reads its files one after another,
//! counts per file what it read (lines, bad records by reason, repaired
//! surrogates) and, under `strict`, stops at the first bad record with an
//! error naming file and line (row). A [`Batcher`] groups what a stage keeps
//! into batches bounded in documents and bytes ([`Budget`]).
//!
//! Why pull-based (a stage asks for the next record) rather than a reader
//! that pushes into callbacks: `prepare` and `dedup` read on a thread of
//! their own and send batches through a channel, `prepare-sft` and `chunk`
//! work on a batch in parallel between reads, and the Python `TextBatches`
//! iterator reads one batch per `__next__`; all three drive the same loop.

pub mod columnar;
pub mod reader;

use std::ops::Range;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use crate::error::{Result, TokenmillError};
use crate::manifest::FileStats;
pub use reader::{
    classify, expand_inputs, skip_hint, Compression, FileReader, Format, InputFile, InputSpec,
    MemoryTable, ReaderOptions, SkipReason, TxtMode, MAX_EXAMPLES,
};

/// Longest line (JSON record, Parquet/Arrow row, whole-file `.txt`
/// document) read by default; a longer one is skipped as `line_too_long`
/// without being held in memory. The one default of every command and of
/// the Python API.
pub const DEFAULT_MAX_LINE_BYTES: u64 = 64 << 20;

/// How many documents, and bytes of them, one batch may hold; a single
/// document over the byte budget is a batch of its own. No output depends on
/// the budget, only memory and how well threads are kept busy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    pub docs: usize,
    pub bytes: usize,
}

impl Budget {
    /// For a reader thread that streams batches to a worker pool through a
    /// channel two batches deep (`prepare`, `dedup`): small, so that the
    /// pool starts early and little text is in flight.
    pub const STREAM: Budget = Budget {
        docs: 8192,
        bytes: 4 << 20,
    };

    /// For a stage that works on a batch in parallel and holds its results
    /// beside it until they are written in order (`prepare-sft`, `chunk`,
    /// the Python `TextBatches`): enough documents to keep every thread
    /// busy, and bytes bounded so that 1024 records of 64 MiB are never
    /// held at once.
    pub const HELD: Budget = Budget {
        docs: 1024,
        bytes: 16 << 20,
    };
}

/// Groups items into batches within a [`Budget`], in order.
pub struct Batcher<T> {
    items: Vec<T>,
    bytes: usize,
    budget: Budget,
}

impl<T> Batcher<T> {
    pub fn new(budget: Budget) -> Self {
        Batcher {
            items: Vec::new(),
            bytes: 0,
            budget: Budget {
                docs: budget.docs.max(1),
                ..budget
            },
        }
    }

    /// Adds `item` of `bytes` bytes; returns the batch before it when the
    /// item does not fit there.
    fn push(&mut self, item: T, bytes: usize) -> Option<Vec<T>> {
        let full = !self.items.is_empty()
            && (self.items.len() >= self.budget.docs
                || self.bytes.saturating_add(bytes) > self.budget.bytes);
        let batch = full.then(|| self.take());
        self.items.push(item);
        self.bytes = self.bytes.saturating_add(bytes);
        batch
    }

    /// The batch so far (possibly empty).
    fn take(&mut self) -> Vec<T> {
        self.bytes = 0;
        std::mem::take(&mut self.items)
    }

    /// The next batch of what `next` yields (an item and its bytes; `None`
    /// at the end), or `None` once everything was handed out.
    pub fn next_batch(
        &mut self,
        mut next: impl FnMut() -> Result<Option<(T, usize)>>,
    ) -> Result<Option<Vec<T>>> {
        while let Some((item, bytes)) = next()? {
            if let Some(batch) = self.push(item, bytes) {
                return Ok(Some(batch));
            }
        }
        let rest = self.take();
        Ok((!rest.is_empty()).then_some(rest))
    }
}

/// One of `count` parts of a run's inputs (`prepare --num-parts N --part I`),
/// so that a scheduler can run the parts anywhere and `merge` them.
///
/// A part is a contiguous run of the expanded input files, cut by size: file
/// `j` (starting `S` bytes into the inputs, `s` bytes long, of `T` in all)
/// goes to part `floor(count * (S + s/2) / T)`. Contiguous, so the parts in
/// order read the files in input order and their merge equals one run over
/// the same inputs; by size, so parts of a corpus of many files take similar
/// time. A file is never split: a corpus of fewer files than parts leaves
/// some parts empty. Rejected: round-robin over files (balances no better on
/// sizes and breaks the input order), byte ranges inside files (impossible
/// in gzip/zstd streams, and Parquet would need row-group ranges).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Part {
    /// 0-based.
    pub index: usize,
    pub count: usize,
}

impl Part {
    /// An error unless `index < count`.
    pub fn check(self) -> Result<Part> {
        if self.index >= self.count {
            return Err(TokenmillError::Invalid(format!(
                "part {} does not exist: parts are numbered 0 to num_parts - 1 ({} parts)",
                self.index, self.count
            )));
        }
        Ok(self)
    }

    /// The files of this part, given every input file's size in order.
    pub fn files(self, sizes: &[u64]) -> Range<usize> {
        let total: u128 = sizes.iter().map(|&s| u128::from(s)).sum();
        let count = self.count as u128;
        let mut start = 0u128;
        let part_of: Vec<usize> = sizes
            .iter()
            .enumerate()
            .map(|(j, &s)| {
                let s = u128::from(s);
                // Twice the file's midpoint against twice the total; empty
                // inputs go by position.
                let p = if total == 0 {
                    j as u128 * count / sizes.len() as u128
                } else {
                    (2 * start + s) * count / (2 * total)
                };
                start += s;
                p.min(count - 1) as usize
            })
            .collect();
        let first = part_of.partition_point(|&p| p < self.index);
        let end = part_of.partition_point(|&p| p <= self.index);
        first..end
    }
}

/// sha256 over the paths and sizes of `inputs`, in order: stages of one
/// run that expand the same inputs on other machines check that they agree.
pub fn inputs_digest(inputs: &[InputFile]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for f in inputs {
        h.update(f.path.to_string_lossy().as_bytes());
        h.update([0]);
        h.update(f.size().to_le_bytes());
    }
    format!("{:x}", h.finalize())
}

/// A record as read: its text, or why it has none.
#[derive(Debug)]
pub struct Entry {
    /// Index of the input file in [`Corpus::inputs`].
    pub file: usize,
    /// 1-based line (or row) in the file.
    pub line: u64,
    pub text: std::result::Result<String, (SkipReason, String)>,
}

/// A record that has a text.
#[derive(Debug)]
pub struct Doc {
    pub file: usize,
    pub line: u64,
    pub text: String,
}

/// What a read counted: per input file, and the first bad records quoted
/// (`file:line: reason (detail)`).
#[derive(Clone, Debug, Default)]
pub struct ReadStats {
    pub files: Vec<FileStats>,
    pub examples: Vec<String>,
}

impl ReadStats {
    /// The counts of every file added up.
    pub fn totals(&self) -> FileStats {
        let mut totals = FileStats::default();
        self.files.iter().for_each(|f| totals.add(f));
        totals
    }
}

/// The records of a list of input files, read in order.
pub struct Corpus {
    inputs: Vec<InputFile>,
    opts: ReaderOptions,
    strict: bool,
    /// The file being read, with its index.
    current: Option<(usize, FileReader)>,
    next_file: usize,
    bytes_read: Arc<AtomicU64>,
    stats: ReadStats,
}

impl Corpus {
    /// The inputs `specs` name ([`expand_inputs`]: files, and `tables` in
    /// memory; never `outputs` or what is in them); an error when they name
    /// none.
    pub fn open(
        specs: &[InputSpec],
        tables: &[MemoryTable],
        outputs: &[&Path],
        opts: ReaderOptions,
        strict: bool,
    ) -> Result<Corpus> {
        let inputs = expand_inputs(specs, tables, outputs)?;
        if inputs.is_empty() {
            return Err(TokenmillError::Invalid("no input files given".into()));
        }
        Ok(Corpus::new(inputs, opts, strict))
    }

    fn new(inputs: Vec<InputFile>, opts: ReaderOptions, strict: bool) -> Corpus {
        let stats = ReadStats {
            files: inputs.iter().map(|f| FileStats::new(&f.path)).collect(),
            examples: Vec::new(),
        };
        Corpus {
            inputs,
            opts,
            strict,
            current: None,
            next_file: 0,
            bytes_read: Arc::new(AtomicU64::new(0)),
            stats,
        }
    }

    /// The files of `part` ([`Part::files`]), as positions in [`Corpus::inputs`].
    pub fn part_files(&self, part: Part) -> Range<usize> {
        let sizes: Vec<u64> = self.inputs.iter().map(InputFile::size).collect();
        part.files(&sizes)
    }

    /// Only the inputs at `files`, from the start.
    pub fn keep_files(self, files: Range<usize>) -> Corpus {
        Corpus::new(self.inputs[files].to_vec(), self.opts, self.strict)
    }

    /// The same files from the start, with other options (a second pass).
    pub fn reread(&self, opts: ReaderOptions, strict: bool) -> Corpus {
        Corpus::new(self.inputs.clone(), opts, strict)
    }

    pub fn inputs(&self) -> &[InputFile] {
        &self.inputs
    }

    pub fn options(&self) -> &ReaderOptions {
        &self.opts
    }

    /// The size of every input (on disk, or in memory): the total of a
    /// progress bar.
    pub fn total_bytes(&self) -> u64 {
        self.inputs.iter().map(InputFile::size).sum()
    }

    /// Bytes read from the files so far (compressed, as on disk), for a
    /// progress bar on any thread.
    pub fn bytes_read(&self) -> Arc<AtomicU64> {
        self.bytes_read.clone()
    }

    /// The next record, counted as a line of its file; `None` at the end.
    pub fn next_entry(&mut self) -> Result<Option<Entry>> {
        loop {
            if self.current.is_none() {
                let Some(input) = self.inputs.get(self.next_file) else {
                    return Ok(None);
                };
                let reader = FileReader::open(input, &self.opts, self.bytes_read.clone())?;
                self.current = Some((self.next_file, reader));
                self.next_file += 1;
            }
            let (file, reader) = self.current.as_mut().expect("opened above");
            match reader.next_record()? {
                Some(rec) => {
                    self.stats.files[*file].lines += 1;
                    return Ok(Some(Entry {
                        file: *file,
                        line: rec.line,
                        text: rec.text,
                    }));
                }
                None => self.close_file(),
            }
        }
    }

    /// The next record that has a text; the others are counted by reason
    /// ([`Corpus::skip`]).
    pub fn next_doc(&mut self) -> Result<Option<Doc>> {
        while let Some(entry) = self.next_entry()? {
            match entry.text {
                Ok(text) => {
                    return Ok(Some(Doc {
                        file: entry.file,
                        line: entry.line,
                        text,
                    }))
                }
                Err((reason, detail)) => {
                    self.skip(entry.file, entry.line, reason.name(), detail)?
                }
            }
        }
        Ok(None)
    }

    /// The raw bytes of the record last returned ([`FileReader::raw_line`]).
    pub fn raw_line(&self) -> &[u8] {
        self.current.as_ref().map_or(&[], |(_, r)| r.raw_line())
    }

    /// A record that gives no document: under `strict` the error naming
    /// file and line; otherwise counted under `skipped` by `reason`.
    pub fn skip(
        &mut self,
        file: usize,
        line: u64,
        reason: &'static str,
        detail: String,
    ) -> Result<()> {
        self.count_bad(file, line, reason, detail, false)
    }

    /// A record whose document a stage refused as `reason` (`prepare-sft`'s
    /// `too_long`): as [`Corpus::skip`], but counted under `filtered`.
    pub fn refuse(
        &mut self,
        file: usize,
        line: u64,
        reason: &'static str,
        detail: String,
    ) -> Result<()> {
        self.count_bad(file, line, reason, detail, true)
    }

    fn count_bad(
        &mut self,
        file: usize,
        line: u64,
        reason: &'static str,
        detail: String,
        filtered: bool,
    ) -> Result<()> {
        let path = &self.inputs[file].path;
        if self.strict {
            return Err(TokenmillError::BadLine {
                path: path.clone(),
                line,
                reason,
                detail,
            });
        }
        let stats = &mut self.stats.files[file];
        let counts = if filtered {
            &mut stats.filtered
        } else {
            &mut stats.skipped
        };
        *counts.entry(reason.into()).or_default() += 1;
        if self.stats.examples.len() < MAX_EXAMPLES {
            let example = format!("{}:{line}: {reason} ({detail})", path.display());
            self.stats.examples.push(example);
        }
        Ok(())
    }

    /// A document a stage's filters dropped (clean, near-duplicates):
    /// counted under `filtered`, never an error.
    pub fn filtered(&mut self, file: usize, reason: &str) {
        *self.stats.files[file]
            .filtered
            .entry(reason.into())
            .or_default() += 1;
    }

    /// A document a stage keeps, of `text_bytes` bytes.
    pub fn kept(&mut self, file: usize, text_bytes: usize) {
        let stats = &mut self.stats.files[file];
        stats.docs += 1;
        stats.text_bytes += text_bytes as u64;
    }

    /// The counts of one file, for what a stage adds (tokens).
    pub fn stats_mut(&mut self, file: usize) -> &mut FileStats {
        &mut self.stats.files[file]
    }

    /// What was counted so far.
    pub fn stats(&self) -> &ReadStats {
        &self.stats
    }

    /// What was counted, the file being read included.
    pub fn finish(mut self) -> ReadStats {
        self.close_file();
        self.stats
    }

    fn close_file(&mut self) {
        if let Some((file, reader)) = self.current.take() {
            self.stats.files[file].repaired_surrogates += reader.repaired_surrogates;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_keep_order_and_the_budget() {
        let budget = Budget { docs: 3, bytes: 10 };
        let mut b = Batcher::new(budget);
        let sizes = [4, 4, 4, 1, 1, 1, 1, 25, 2, 0];
        let mut items = sizes.iter().copied().enumerate();
        let mut batches = Vec::new();
        while let Some(batch) = b
            .next_batch(|| Ok(items.next().map(|(i, n)| ((i, n), n))))
            .unwrap()
        {
            batches.push(batch);
        }
        let ids: Vec<Vec<usize>> = batches
            .iter()
            .map(|b| b.iter().map(|x| x.0).collect())
            .collect();
        // 4+4 fit in 10, a third 4 does not; three docs at most; 25 alone.
        assert_eq!(
            ids,
            [vec![0, 1], vec![2, 3, 4], vec![5, 6], vec![7], vec![8, 9]]
        );
        for batch in &batches {
            let bytes: usize = batch.iter().map(|x| x.1).sum();
            assert!(batch.len() <= 3);
            assert!(bytes <= 10 || batch.len() == 1, "{batch:?}");
        }
        assert!(b.next_batch(|| Ok(None)).unwrap().is_none());
    }

    /// Random sizes, a tenth of them over the budget: every item once, in
    /// order, and every batch within the budget or one item alone.
    #[test]
    fn batches_keep_the_byte_budget() {
        let mut state = 1024u64;
        let mut below = |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n) as usize
        };
        let sizes: Vec<usize> = (0..5000)
            .map(|_| match below(10) {
                0 => 64 + below(200),
                1 => 30 + below(40),
                _ => below(8),
            })
            .collect();
        let mut b = Batcher::new(Budget {
            docs: 16,
            bytes: 100,
        });
        let mut items = sizes.iter().copied().enumerate();
        let mut batches = Vec::new();
        while let Some(batch) = b
            .next_batch(|| Ok(items.next().map(|(i, n)| ((i, n), n))))
            .unwrap()
        {
            batches.push(batch);
        }
        let order: Vec<usize> = batches.iter().flatten().map(|&(i, _)| i).collect();
        assert_eq!(order, (0..sizes.len()).collect::<Vec<_>>());
        for batch in &batches {
            let bytes: usize = batch.iter().map(|&(_, n)| n).sum();
            assert!(!batch.is_empty() && batch.len() <= 16, "{batch:?}");
            assert!(bytes <= 100 || batch.len() == 1, "{batch:?}");
        }
        assert!(batches.iter().filter(|b| b.len() == 16).count() > 10);
    }

    #[test]
    fn parts_are_contiguous_cover_every_file_once_and_follow_sizes() {
        let parts = |sizes: &[u64], count: usize| -> Vec<Range<usize>> {
            (0..count)
                .map(|index| Part { index, count }.files(sizes))
                .collect()
        };
        // Equal sizes: as even as the count allows.
        assert_eq!(parts(&[10; 8], 4), [0..2, 2..4, 4..6, 6..8]);
        assert_eq!(parts(&[10; 3], 3), [0..1, 1..2, 2..3]);
        // One big file takes a part of its own; small ones share.
        assert_eq!(parts(&[1, 1, 100, 1, 1], 3), [0..2, 2..3, 3..5]);
        // Fewer files than parts: some parts are empty, none is lost.
        assert_eq!(parts(&[5, 5], 4), [0..0, 0..1, 1..1, 1..2]);
        assert_eq!(parts(&[0, 0, 0], 2), [0..2, 2..3]);
        assert_eq!(parts(&[], 3), [0..0, 0..0, 0..0]);
        // Any sizes and counts: contiguous, in order, every file once.
        let mut state = 7u64;
        for _ in 0..300 {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let n = (state >> 59) as usize;
            let count = 1 + (state >> 61) as usize;
            let sizes: Vec<u64> = (0..n as u64).map(|i| (state >> (i % 40)) % 1000).collect();
            let ranges = parts(&sizes, count);
            assert_eq!(ranges[0].start, 0);
            assert_eq!(ranges[count - 1].end, n);
            for w in ranges.windows(2) {
                assert_eq!(w[0].end, w[1].start, "{sizes:?} in {count}");
            }
        }
        assert!(Part { index: 4, count: 4 }.check().is_err());
        assert!(Part { index: 3, count: 4 }.check().is_ok());
    }

    #[test]
    fn a_corpus_counts_per_file_and_strict_names_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.jsonl");
        let b = dir.path().join("b.txt");
        std::fs::write(&a, "{\"text\": \"one\"}\nnot json\n{\"text\": \"two\"}\n").unwrap();
        std::fs::write(&b, "three\n\nfour\n").unwrap();
        let specs = [a.display().to_string(), b.display().to_string()];
        let specs: Vec<InputSpec> = specs.iter().map(|s| s.as_str().into()).collect();
        let opts = ReaderOptions::new("text", TxtMode::Line, 1 << 20).unwrap();
        let mut corpus = Corpus::open(&specs, &[], &[], opts.clone(), false).unwrap();
        let mut docs = Vec::new();
        while let Some(d) = corpus.next_doc().unwrap() {
            docs.push((d.file, d.line, d.text));
        }
        let want = [
            (0, 1, "one"),
            (0, 3, "two"),
            (1, 1, "three"),
            (1, 3, "four"),
        ];
        let want: Vec<_> = want.iter().map(|&(f, l, t)| (f, l, t.to_owned())).collect();
        assert_eq!(docs, want);
        let stats = corpus.finish();
        assert_eq!(stats.files[0].lines, 3);
        assert_eq!(stats.files[0].skipped["malformed_json"], 1);
        assert_eq!(stats.files[1].lines, 3);
        assert_eq!(stats.files[1].skipped["empty"], 1);
        assert_eq!(stats.examples.len(), 2);
        assert!(stats.examples[0].contains("a.jsonl:2: malformed_json"));

        let mut strict = Corpus::open(&specs, &[], &[], opts.clone(), true).unwrap();
        assert!(strict.next_doc().unwrap().is_some());
        match strict.next_doc() {
            Err(TokenmillError::BadLine { path, line, .. }) => {
                assert_eq!((path, line), (a.clone(), 2));
            }
            other => panic!("{other:?}"),
        }
        assert!(Corpus::open(&[], &[], &[], opts, false).is_err());
    }
}
