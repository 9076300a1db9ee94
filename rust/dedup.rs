//! Near-duplicate removal: MinHash signatures, LSH buckets, union-find.
//!
//! Pass 1 reads the inputs once (the `reader` stage, on its own thread) and
//! keeps per document only its band hashes, its line number and whether it
//! had any shingle: no texts, no full signatures. LSH groups equal (band,
//! hash) keys by sorting each band's keys, bands in parallel; every bucket
//! links its members to its first one. Union-find makes each root the
//! smallest ordinal of its component, so the kept document of a cluster is
//! the first in input order and the clusters do not depend on the thread
//! count. `verify` re-reads the inputs and keeps only candidate pairs whose
//! exact Jaccard (on the shingle hashes) reaches the threshold, holding the
//! shingle set of a document only until its last later partner is read.
//! Pass 2 copies the kept lines byte for byte into the output and writes the
//! report. Memory: docs/dedup.md.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crossbeam_channel::bounded;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::clean::{CleanOptions, Cleaner};
use crate::error::{Result, TokenmillError};
use crate::input::{
    classify, skip_hint, Batcher, Budget, Corpus, Doc, Format, InputFile, InputSpec, MemoryTable,
    ReadStats, ReaderOptions, TxtMode, DEFAULT_MAX_LINE_BYTES,
};
use crate::manifest::FileStats;
use crate::minhash::{jaccard, optimal_params, MinHasher, Shingling};
use crate::output::OutputFile;
use crate::progress::{Counts, Progress};
use crate::threads::{build_pool, resolve_threads};

/// Default seed of the MinHash permutations.
pub const DEFAULT_SEED: u64 = 1;
/// Name of the filter reason for removed near-duplicates.
pub const NEAR_DUPLICATE: &str = "near_duplicate";

/// MinHash LSH settings, shared by `dedup`, `prepare --dedup minhash` and the Python API.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MinHashOptions {
    /// Jaccard similarity at or above which two documents are near-duplicates.
    pub threshold: f64,
    pub num_perm: usize,
    /// Bands and rows of the LSH index; chosen from the threshold when unset.
    pub bands: Option<usize>,
    pub rows: Option<usize>,
    /// `auto`, `word`, `char`, optionally `:N`.
    pub shingle: String,
    /// n of the shingles when `shingle` does not give it.
    pub ngram: usize,
    pub seed: u64,
    /// Drop candidate pairs whose exact Jaccard is under the threshold.
    pub verify: bool,
}

impl Default for MinHashOptions {
    fn default() -> Self {
        MinHashOptions {
            threshold: 0.8,
            num_perm: 128,
            bands: None,
            rows: None,
            shingle: "auto".into(),
            ngram: 5,
            seed: DEFAULT_SEED,
            verify: false,
        }
    }
}

/// A resolved LSH: the hasher and its bands x rows.
pub struct Lsh {
    pub hasher: MinHasher,
    pub bands: usize,
    pub rows: usize,
    pub threshold: f64,
    pub verify: bool,
}

impl Lsh {
    /// Checks the options and picks bands x rows. Without `verify` they
    /// minimise false positive + false negative probability with equal
    /// weights (datasketch's default); with `verify`, false positives are
    /// removed afterwards, so false negatives weigh 0.9 and false positives 0.1.
    pub fn new(o: &MinHashOptions) -> Result<Lsh> {
        if !(o.threshold > 0.0 && o.threshold <= 1.0) {
            return Err(TokenmillError::Invalid(format!(
                "threshold={} must be in (0, 1]",
                o.threshold
            )));
        }
        let shingling = Shingling::parse(&o.shingle, o.ngram)?;
        let hasher = MinHasher::new(o.num_perm, shingling, o.seed)?;
        let (bands, rows) = match (o.bands, o.rows) {
            (Some(b), Some(r)) => (b, r),
            (Some(b), None) => (b, o.num_perm / b.max(1)),
            (None, Some(r)) => (o.num_perm / r.max(1), r),
            (None, None) if o.verify => optimal_params(o.threshold, o.num_perm, 0.1, 0.9),
            (None, None) => optimal_params(o.threshold, o.num_perm, 0.5, 0.5),
        };
        // Checked: options are untrusted, and a product that wraps would pass.
        let fits = bands.checked_mul(rows).is_some_and(|n| n <= o.num_perm);
        if bands == 0 || rows == 0 || !fits {
            return Err(TokenmillError::Invalid(format!(
                "bands={bands} x rows={rows} must be at least 1 x 1 and at most num_perm={}",
                o.num_perm
            )));
        }
        Ok(Lsh {
            hasher,
            bands,
            rows,
            threshold: o.threshold,
            verify: o.verify,
        })
    }
}

/// Band hashes of every document, in input order.
#[derive(Default)]
pub struct BandIndex {
    bands: usize,
    hashes: Vec<u64>,
    /// Whether the document had at least one shingle.
    present: Vec<bool>,
}

impl BandIndex {
    pub fn new(bands: usize) -> Self {
        BandIndex {
            bands,
            ..Default::default()
        }
    }

    /// Number of documents.
    pub fn len(&self) -> usize {
        self.present.len()
    }

    pub fn is_empty(&self) -> bool {
        self.present.is_empty()
    }

    /// Appends the band hashes of `texts`, computed on the current rayon pool.
    pub fn push(&mut self, lsh: &Lsh, texts: &[&str]) -> Result<()> {
        if self.len() + texts.len() > u32::MAX as usize {
            return Err(TokenmillError::Invalid(format!(
                "dedup handles at most {} documents in one run",
                u32::MAX
            )));
        }
        let b = self.bands;
        let old = self.hashes.len();
        self.hashes.resize(old + texts.len() * b, 0);
        let present: Vec<bool> = self.hashes[old..]
            .par_chunks_mut(b)
            .zip(texts.par_iter())
            .with_min_len(8)
            .map(|(out, t)| lsh.hasher.band_hashes_into(t, b, lsh.rows, out))
            .collect();
        self.present.extend(present);
        Ok(())
    }

    /// The band hashes of document `i`; `None` when it had no shingle.
    pub fn hashes_of(&self, i: usize) -> Option<&[u64]> {
        let b = self.bands;
        self.present[i].then(|| &self.hashes[i * b..(i + 1) * b])
    }

    /// Bytes held per document (band hashes and the presence flag).
    pub fn bytes_per_doc(&self) -> usize {
        self.bands * 8 + 1
    }

    /// Candidate pairs `(first, other)` of one band: every member of a bucket
    /// with the bucket's first member, and with `chain` also with the
    /// member before it.
    fn band_edges(&self, j: usize, chain: bool) -> Vec<(u32, u32)> {
        let mut keys: Vec<(u64, u32)> = (0..self.len())
            .filter(|&i| self.present[i])
            .map(|i| (self.hashes[i * self.bands + j], i as u32))
            .collect();
        keys.sort_unstable();
        let mut edges = Vec::new();
        for group in keys.chunk_by(|x, y| x.0 == y.0).filter(|g| g.len() > 1) {
            let first = group[0].1;
            for k in 1..group.len() {
                edges.push((first, group[k].1));
                if chain && k > 1 {
                    edges.push((group[k - 1].1, group[k].1));
                }
            }
        }
        edges
    }

    /// Candidate pairs of all bands, `threads` bands at a time (each band
    /// sorts 16 bytes per document), passed to `f` in band order.
    fn for_each_band_edges(&self, threads: usize, chain: bool, mut f: impl FnMut(Vec<(u32, u32)>)) {
        let bands: Vec<usize> = (0..self.bands).collect();
        for group in bands.chunks(threads.max(1)) {
            let edges: Vec<Vec<(u32, u32)>> = group
                .par_iter()
                .map(|&j| self.band_edges(j, chain))
                .collect();
            edges.into_iter().for_each(&mut f);
        }
    }
}

/// Union-find over document ordinals whose roots are component minima.
pub struct UnionFind {
    parent: Vec<u32>,
}

impl UnionFind {
    pub fn new(n: usize) -> Self {
        UnionFind {
            parent: (0..n as u32).collect(),
        }
    }

    pub fn find(&mut self, mut x: u32) -> u32 {
        while self.parent[x as usize] != x {
            let p = self.parent[x as usize];
            self.parent[x as usize] = self.parent[p as usize];
            x = p;
        }
        x
    }

    /// Joins two sets; the smaller root wins, whatever the order of calls.
    pub fn union(&mut self, a: u32, b: u32) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            let (lo, hi) = if ra < rb { (ra, rb) } else { (rb, ra) };
            self.parent[hi as usize] = lo;
        }
    }

    /// The root (smallest member of its cluster) of every document.
    pub fn roots(mut self) -> Vec<u32> {
        for i in 0..self.parent.len() as u32 {
            let r = self.find(i);
            self.parent[i as usize] = r;
        }
        self.parent
    }
}

/// Counts of the clustering step.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ClusterStats {
    /// Distinct candidate pairs from the LSH buckets (with `verify`); without
    /// it, bucket links (a pair found in several bands counts once per band).
    pub candidate_pairs: u64,
    /// Candidate pairs whose exact Jaccard reached the threshold (`verify`).
    pub verified_pairs: u64,
    /// Candidate pairs dropped by `verify`.
    pub rejected_pairs: u64,
}

/// Streams documents in input order and checks candidate pairs on their
/// exact shingle sets, holding a set only until its last partner is read.
pub struct Verifier {
    /// Pairs `(anchor, later)` sorted by `later`.
    edges: Vec<(u32, u32)>,
    next_edge: usize,
    uses: HashMap<u32, u32>,
    held: HashMap<u32, Vec<u64>>,
    passed: Vec<bool>,
    next_doc: u32,
}

impl Verifier {
    /// Collects the candidate pairs of `index`.
    pub fn new(index: &BandIndex, threads: usize) -> Verifier {
        let mut edges = Vec::new();
        index.for_each_band_edges(threads, true, |e| edges.extend(e));
        edges.par_sort_unstable_by_key(|&(a, m)| (m, a));
        edges.dedup();
        let mut uses: HashMap<u32, u32> = HashMap::new();
        for &(a, _) in &edges {
            *uses.entry(a).or_default() += 1;
        }
        Verifier {
            passed: Vec::with_capacity(edges.len()),
            edges,
            next_edge: 0,
            uses,
            held: HashMap::new(),
            next_doc: 0,
        }
    }

    /// Whether any document still needs to be read.
    pub fn done(&self) -> bool {
        self.next_edge == self.edges.len()
    }

    /// Feeds the next documents in input order, on the current rayon pool.
    pub fn feed(&mut self, lsh: &Lsh, texts: &[&str]) {
        let first = self.next_doc;
        let end = first + texts.len() as u32;
        self.next_doc = end;
        let hi = self.next_edge + self.edges[self.next_edge..].partition_point(|e| e.1 < end);
        let mut needed = vec![false; texts.len()];
        for &(_, m) in &self.edges[self.next_edge..hi] {
            needed[(m - first) as usize] = true;
        }
        for (i, n) in needed.iter_mut().enumerate() {
            *n |= self.uses.contains_key(&(first + i as u32));
        }
        let mut sets: Vec<Option<Vec<u64>>> = texts
            .par_iter()
            .zip(&needed)
            .map(|(t, &n)| n.then(|| lsh.hasher.shingle_set(t)))
            .collect();
        for (i, s) in sets.iter_mut().enumerate() {
            let d = first + i as u32;
            if self.uses.contains_key(&d) {
                self.held.insert(d, s.take().expect("needed"));
            }
        }
        let (held, threshold) = (&self.held, lsh.threshold);
        let set_of = |d: u32| -> &[u64] {
            held.get(&d)
                .or_else(|| sets[(d - first) as usize].as_ref())
                .expect("the set of a pair member is held")
        };
        let passed: Vec<bool> = self.edges[self.next_edge..hi]
            .par_iter()
            .map(|&(a, m)| jaccard(set_of(a), set_of(m)) >= threshold)
            .collect();
        self.passed.extend(passed);
        for &(a, _) in &self.edges[self.next_edge..hi] {
            let left = self.uses.get_mut(&a).expect("counted");
            *left -= 1;
            if *left == 0 {
                self.uses.remove(&a);
                self.held.remove(&a);
            }
        }
        self.next_edge = hi;
    }

    /// The clusters of the pairs that passed.
    pub fn finish(self, n: usize) -> (UnionFind, ClusterStats) {
        let mut uf = UnionFind::new(n);
        let mut stats = ClusterStats {
            candidate_pairs: self.edges.len() as u64,
            ..Default::default()
        };
        for (&(a, m), &ok) in self.edges.iter().zip(&self.passed) {
            if ok {
                uf.union(a, m);
                stats.verified_pairs += 1;
            } else {
                stats.rejected_pairs += 1;
            }
        }
        (uf, stats)
    }
}

/// Clusters without verification: every bucket link is a union.
pub fn cluster_unverified(index: &BandIndex, threads: usize) -> (UnionFind, ClusterStats) {
    let mut uf = UnionFind::new(index.len());
    let mut stats = ClusterStats::default();
    index.for_each_band_edges(threads, false, |edges| {
        stats.candidate_pairs += edges.len() as u64;
        for (a, m) in edges {
            uf.union(a, m);
        }
    });
    (uf, stats)
}

/// Root of every text's cluster, for texts in memory (Python API). With
/// `verify` the texts are read a second time from memory.
pub fn dedup_texts(
    texts: &[&str],
    opts: &MinHashOptions,
    threads: usize,
) -> Result<(Vec<u32>, ClusterStats, (usize, usize))> {
    let lsh = Lsh::new(opts)?;
    let threads = resolve_threads(threads);
    let pool = build_pool(threads, "dedup")?;
    pool.install(|| {
        let mut index = BandIndex::new(lsh.bands);
        for chunk in texts.chunks(Budget::STREAM.docs) {
            index.push(&lsh, chunk)?;
        }
        let (uf, stats) = if lsh.verify {
            let mut v = Verifier::new(&index, threads);
            for chunk in texts.chunks(Budget::STREAM.docs) {
                if v.done() {
                    break;
                }
                v.feed(&lsh, chunk);
            }
            v.finish(index.len())
        } else {
            cluster_unverified(&index, threads)
        };
        Ok((uf.roots(), stats, (lsh.bands, lsh.rows)))
    })
}

/// Reads the documents of `corpus` on a reader thread and hands them to
/// `consume` in batches, in input order. Bad lines are counted (or, under
/// the corpus's `strict`, an error naming file and line); with `clean`,
/// documents the clean stage's length filters drop are counted and skipped
/// too.
pub(crate) fn read_docs(
    mut corpus: Corpus,
    clean: Option<&CleanOptions>,
    interrupted: &dyn Fn() -> bool,
    mut consume: impl FnMut(Vec<Doc>) -> Result<()>,
) -> Result<ReadStats> {
    std::thread::scope(|s| {
        let (tx, rx) = bounded::<Vec<Doc>>(2);
        let reader = std::thread::Builder::new()
            .name("tokenmill-read".into())
            .spawn_scoped(s, move || -> Result<ReadStats> {
                let mut cleaner = clean.map(|c| Cleaner::new(c.clone()));
                let mut next_doc = || -> Result<Option<(Doc, usize)>> {
                    while let Some(doc) = corpus.next_doc()? {
                        if let Some(Err(reason)) = cleaner.as_mut().map(|c| c.check(&doc.text)) {
                            corpus.filtered(doc.file, reason.name());
                            continue;
                        }
                        corpus.kept(doc.file, doc.text.len());
                        let bytes = doc.text.len();
                        return Ok(Some((doc, bytes)));
                    }
                    Ok(None)
                };
                let mut batcher = Batcher::new(Budget::STREAM);
                while let Some(batch) = batcher.next_batch(&mut next_doc)? {
                    if tx.send(batch).is_err() {
                        break; // the consumer stopped; its error is reported
                    }
                }
                Ok(corpus.finish())
            })
            .map_err(|e| TokenmillError::Invalid(format!("cannot start a thread: {e}")))?;
        let mut result = Ok(());
        for batch in rx.iter() {
            if interrupted() {
                result = Err(TokenmillError::Interrupted);
                break;
            }
            if let Err(e) = consume(batch) {
                result = Err(e);
                break;
            }
        }
        drop(rx); // stops the reader if we stopped early
        let read = reader.join().expect("reader thread panicked");
        let read = read?; // a reader error (e.g. strict) is the root cause
        result.map(|_| read)
    })
}

/// Clusters with more than one member, given every member's root (union-find
/// roots: a cluster's smallest ordinal).
pub fn clusters_of(roots: &[u32]) -> u64 {
    let mut has = vec![false; roots.len()];
    for (i, &r) in roots.iter().enumerate() {
        if r as usize != i {
            has[r as usize] = true;
        }
    }
    has.iter().filter(|&&h| h).count() as u64
}

/// Result of the MinHash passes over files: the cluster root of every
/// document and where each document is.
pub struct FileClusters {
    pub roots: Vec<u32>,
    /// Line of every document.
    pub lines: Vec<u64>,
    /// Input file of every document.
    pub files: Vec<u32>,
    pub read: ReadStats,
    pub stats: ClusterStats,
    pub bands: usize,
    pub rows: usize,
    pub text_bytes: u64,
    /// Peak bytes per document held by pass 1 and the LSH step (estimate).
    pub bytes_per_doc: usize,
    pub signature_seconds: f64,
    pub cluster_seconds: f64,
}

impl FileClusters {
    /// Documents removed (not the first of their cluster).
    pub fn removed(&self) -> u64 {
        self.roots
            .iter()
            .enumerate()
            .filter(|&(i, &r)| r as usize != i)
            .count() as u64
    }

    /// Clusters with more than one member.
    pub fn clusters(&self) -> u64 {
        clusters_of(&self.roots)
    }

    /// Sorted lines of removed documents, per input file.
    pub fn removed_lines(&self, n_files: usize) -> Vec<Vec<u64>> {
        let mut out = vec![Vec::new(); n_files];
        for (i, &r) in self.roots.iter().enumerate() {
            if r as usize != i {
                out[self.files[i] as usize].push(self.lines[i]);
            }
        }
        out
    }
}

/// Runs pass 1 (band hashes), LSH and clustering (with `verify`, a second
/// read) over `corpus`.
#[allow(clippy::too_many_arguments)]
pub fn cluster_files(
    corpus: Corpus,
    clean: Option<&CleanOptions>,
    lsh: &Lsh,
    pool: &rayon::ThreadPool,
    threads: usize,
    progress: bool,
    interrupted: &dyn Fn() -> bool,
) -> Result<FileClusters> {
    let started = Instant::now();
    let total_raw = corpus.total_bytes();
    let again = lsh
        .verify
        .then(|| corpus.reread(corpus.options().clone(), false));
    let raw = corpus.bytes_read();
    let mut progress_bar = Progress::new("minhash", progress, total_raw).without_tokens();
    let mut counts = Counts::default();
    let mut index = BandIndex::new(lsh.bands);
    let mut lines = Vec::new();
    let mut files = Vec::new();
    let read = read_docs(corpus, clean, interrupted, |b| {
        let texts: Vec<&str> = b.iter().map(|d| d.text.as_str()).collect();
        pool.install(|| index.push(lsh, &texts))?;
        lines.extend(b.iter().map(|d| d.line));
        files.extend(b.iter().map(|d| d.file as u32));
        counts.docs += texts.len() as u64;
        counts.text_bytes += texts.iter().map(|t| t.len() as u64).sum::<u64>();
        counts.raw_bytes = raw.load(Ordering::Relaxed);
        progress_bar.update(counts);
        Ok(())
    })?;
    counts.raw_bytes = raw.load(Ordering::Relaxed);
    progress_bar.finish(counts);
    let signature_seconds = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let (uf, stats) = if let Some(again) = again {
        let mut v = pool.install(|| Verifier::new(&index, threads));
        if !v.done() {
            let raw = again.bytes_read();
            let mut bar = Progress::new("verify", progress, total_raw).without_tokens();
            let mut c = Counts::default();
            let r = read_docs(again, clean, interrupted, |b| {
                let texts: Vec<&str> = b.iter().map(|d| d.text.as_str()).collect();
                if !v.done() {
                    pool.install(|| v.feed(lsh, &texts));
                }
                c.docs += texts.len() as u64;
                c.raw_bytes = raw.load(Ordering::Relaxed);
                bar.update(c);
                Ok(())
            })?;
            bar.finish(c);
            let docs: u64 = r.files.iter().map(|f| f.docs).sum();
            if docs != index.len() as u64 {
                return Err(TokenmillError::Invalid(format!(
                    "the inputs changed between two reads ({} documents, then {docs})",
                    index.len()
                )));
            }
        }
        v.finish(index.len())
    } else {
        pool.install(|| cluster_unverified(&index, threads))
    };
    let roots = uf.roots();
    // Band hashes + presence, line (8), file (4), parent (4), and the sort
    // keys of `threads` bands at a time (16 each).
    let bytes_per_doc = index.bytes_per_doc() + 16 + 16 * threads.min(lsh.bands);
    let text_bytes = read.files.iter().map(|f| f.text_bytes).sum();
    Ok(FileClusters {
        roots,
        lines,
        files,
        read,
        stats,
        bands: lsh.bands,
        rows: lsh.rows,
        text_bytes,
        bytes_per_doc,
        signature_seconds,
        cluster_seconds: started.elapsed().as_secs_f64(),
    })
}

/// Every argument of a `dedup` run over files.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DedupConfig {
    /// Files, directories or globs (.jsonl/.json/.ndjson/.txt, optionally
    /// .gz/.zst, .parquet, .arrow), or tables in memory by index.
    pub inputs: Vec<InputSpec>,
    /// The tables in memory that `inputs` name (the Python API's datasets).
    #[serde(skip)]
    pub tables: Vec<MemoryTable>,
    /// The kept records, compressed as the name says; none: no output.
    pub output: Option<String>,
    /// One JSON line per cluster: kept and removed documents.
    pub report: Option<String>,
    pub text_field: String,
    /// Field quoted in the report when a record has it.
    pub id_field: String,
    pub txt_mode: TxtMode,
    pub max_line_bytes: u64,
    pub strict: bool,
    pub minhash: MinHashOptions,
    pub threads: usize,
    pub overwrite: bool,
    pub progress: bool,
    /// Finish a run that read no document (else an error naming the likely cause).
    pub allow_empty: bool,
}

impl Default for DedupConfig {
    fn default() -> Self {
        DedupConfig {
            inputs: Vec::new(),
            tables: Vec::new(),
            output: None,
            report: None,
            text_field: "text".into(),
            id_field: "id".into(),
            txt_mode: TxtMode::Line,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            strict: false,
            minhash: MinHashOptions::default(),
            threads: 0,
            overwrite: false,
            progress: true,
            allow_empty: false,
        }
    }
}

/// What a `dedup` run did.
#[derive(Clone, Debug, Serialize)]
pub struct DedupSummary {
    pub inputs: Vec<FileStats>,
    pub skipped_examples: Vec<String>,
    pub docs: u64,
    pub kept: u64,
    pub removed: u64,
    pub clusters: u64,
    pub stats: ClusterStats,
    pub threshold: f64,
    pub num_perm: usize,
    pub bands: usize,
    pub rows: usize,
    pub shingle: String,
    pub seed: u64,
    pub verify: bool,
    pub output: Option<String>,
    /// `jsonl` or `txt`: what `output` holds, chosen by its name.
    pub output_format: Option<&'static str>,
    pub report: Option<String>,
    pub text_bytes: u64,
    pub bytes_per_doc: usize,
    pub threads: usize,
    pub signature_seconds: f64,
    pub cluster_seconds: f64,
    pub write_seconds: f64,
    pub seconds: f64,
    pub text_mb_per_s: f64,
}

/// Removes near-duplicates from files: clusters, then writes the kept
/// records unchanged and the report. Returns the summary and the cluster
/// root of every document.
pub fn dedup_files(
    cfg: &DedupConfig,
    interrupted: &dyn Fn() -> bool,
) -> Result<(DedupSummary, Vec<u32>)> {
    let started = Instant::now();
    let lsh = Lsh::new(&cfg.minhash)?;
    let opts = ReaderOptions::new(&cfg.text_field, cfg.txt_mode, cfg.max_line_bytes as usize)?;
    let outputs: Vec<&Path> = [&cfg.output, &cfg.report]
        .into_iter()
        .flatten()
        .map(Path::new)
        .collect();
    let corpus = Corpus::open(&cfg.inputs, &cfg.tables, &outputs, opts, cfg.strict)?;
    let inputs = corpus.inputs().to_vec();
    let output_format = cfg
        .output
        .as_deref()
        .map(|o| output_format(Path::new(o), &inputs))
        .transpose()?;
    if cfg.output.is_some()
        && cfg.txt_mode == TxtMode::File
        && inputs.iter().any(|f| f.format == Format::Text)
    {
        return Err(TokenmillError::Invalid(
            "txt_mode='file' makes whole .txt files the documents, which dedup cannot write \
             back as records; give only report=PATH"
                .into(),
        ));
    }
    for path in [&cfg.output, &cfg.report].into_iter().flatten() {
        let p = Path::new(path);
        if p.exists() && !cfg.overwrite {
            return Err(TokenmillError::Invalid(format!(
                "{path} already exists; pass overwrite=True to replace it"
            )));
        }
        let output = std::fs::canonicalize(p).ok();
        if output.is_some()
            && inputs
                .iter()
                .any(|f| f.table.is_none() && std::fs::canonicalize(&f.path).ok() == output)
        {
            return Err(TokenmillError::Invalid(format!("{path} is also an input")));
        }
    }
    let threads = resolve_threads(cfg.threads);
    let pool = build_pool(threads, "dedup")?;
    let mut whole = corpus.options().clone();
    whole.whole_json_line = true;
    let again = corpus.reread(whole, false);
    let fc = cluster_files(
        corpus,
        None,
        &lsh,
        &pool,
        threads,
        cfg.progress,
        interrupted,
    )?;
    let totals = fc.read.totals();
    totals.require_documents(cfg.allow_empty, &fc.read.examples, skip_hint)?;
    let write_started = Instant::now();
    let removed_per_file = fc.removed_lines(inputs.len());
    if cfg.output.is_some() || cfg.report.is_some() {
        write_outputs(cfg, again, &fc, output_format, interrupted)?;
    }
    let mut files = fc.read.files.clone();
    for (f, removed) in files.iter_mut().zip(&removed_per_file) {
        if !removed.is_empty() {
            f.filtered
                .insert(NEAR_DUPLICATE.into(), removed.len() as u64);
        }
        f.docs -= removed.len() as u64;
    }
    let removed = fc.removed();
    let docs = fc.roots.len() as u64;
    let seconds = started.elapsed().as_secs_f64();
    let summary = DedupSummary {
        inputs: files,
        skipped_examples: fc.read.examples.clone(),
        docs,
        kept: docs - removed,
        removed,
        clusters: fc.clusters(),
        stats: fc.stats.clone(),
        threshold: lsh.threshold,
        num_perm: lsh.hasher.num_perm,
        bands: fc.bands,
        rows: fc.rows,
        shingle: lsh.hasher.shingling.to_string(),
        seed: lsh.hasher.seed,
        verify: lsh.verify,
        output: cfg.output.clone(),
        output_format: output_format.map(|f| match f {
            Format::Text => "txt",
            _ => "jsonl",
        }),
        report: cfg.report.clone(),
        text_bytes: fc.text_bytes,
        bytes_per_doc: fc.bytes_per_doc,
        threads,
        signature_seconds: fc.signature_seconds,
        cluster_seconds: fc.cluster_seconds,
        write_seconds: write_started.elapsed().as_secs_f64(),
        seconds,
        text_mb_per_s: fc.text_bytes as f64 / 1e6 / seconds.max(1e-9),
    };
    Ok((summary, fc.roots))
}

/// The `id_field` of a JSON record, if it has one.
/// What `dedup -o PATH` writes, by PATH's name as inputs are named: JSON
/// Lines (records kept as they are, a Parquet or Arrow row as a JSON object;
/// a `.txt` line becomes a record with the text field) or text lines (from `.txt` inputs only: a JSON record has no
/// faithful text line).
fn output_format(path: &Path, inputs: &[InputFile]) -> Result<Format> {
    let Some((format, _)) = classify(path).filter(|(f, _)| !f.is_columnar()) else {
        return Err(TokenmillError::Invalid(format!(
            "{}: name the output .jsonl (JSON Lines) or .txt (text lines), optionally .gz or .zst",
            path.display()
        )));
    };
    if format == Format::Text {
        if let Some(json) = inputs.iter().find(|f| f.format.has_fields()) {
            return Err(TokenmillError::Invalid(format!(
                "{}: a .txt output cannot hold the JSON records of {}; name it .jsonl",
                path.display(),
                json.path.display()
            )));
        }
    }
    Ok(format)
}

/// A record holding `text` at the dotted `field` (`meta.body` nests).
fn text_record_json(field: &str, text: &str) -> Vec<u8> {
    let mut value = serde_json::Value::from(text);
    for key in field.rsplit('.') {
        let mut object = serde_json::Map::new();
        object.insert(key.to_owned(), value);
        value = serde_json::Value::Object(object);
    }
    serde_json::to_vec(&value).expect("a JSON value serializes")
}

fn record_id(line: &[u8], field: &str) -> Option<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_slice(line).ok()?;
    v.get(field).cloned()
}

/// Pass 2: copies the kept records (each line byte for byte, less a BOM; an
/// element of a JSON array on one line; a `.txt` line as a record with the
/// text field when the output is JSON Lines) and writes one report line per
/// cluster. `corpus` reads the inputs again, each record whole (no text
/// extraction); `output_format` is [`output_format`]'s answer for
/// `cfg.output`.
fn write_outputs(
    cfg: &DedupConfig,
    mut corpus: Corpus,
    fc: &FileClusters,
    output_format: Option<Format>,
    interrupted: &dyn Fn() -> bool,
) -> Result<()> {
    let n = fc.roots.len();
    let mut has_members = vec![false; n];
    for (i, &r) in fc.roots.iter().enumerate() {
        if r as usize != i {
            has_members[r as usize] = true;
        }
    }
    let in_cluster = |i: usize| fc.roots[i] as usize != i || has_members[i];
    let mut out = match &cfg.output {
        Some(p) => Some(OutputFile::create(Path::new(p), cfg.overwrite)?),
        None => None,
    };
    let inputs = corpus.inputs().to_vec();
    let raw = corpus.bytes_read();
    let mut bar = Progress::new("write", cfg.progress, corpus.total_bytes()).without_tokens();
    let mut counts = Counts::default();
    // (root, ordinal, id) of every document in a cluster.
    let mut members: Vec<(u32, u32, Option<serde_json::Value>)> = Vec::new();
    let as_json = output_format == Some(Format::Jsonl);
    let gone = |ord: usize| {
        let file = &inputs[fc.files[ord] as usize].path;
        TokenmillError::Invalid(format!(
            "{}: changed between two reads (line {} is gone)",
            file.display(),
            fc.lines[ord]
        ))
    };
    let mut ord = 0usize;
    while ord < n {
        let Some(entry) = corpus.next_entry()? else {
            return Err(gone(ord));
        };
        let want = (fc.files[ord] as usize, fc.lines[ord]);
        match (entry.file, entry.line).cmp(&want) {
            std::cmp::Ordering::Less => continue, // a bad line, not a document
            std::cmp::Ordering::Greater => return Err(gone(ord)),
            std::cmp::Ordering::Equal => {}
        }
        let Ok(text) = entry.text else {
            return Err(gone(ord));
        };
        let jsonl = inputs[entry.file].format.has_fields();
        // The line byte for byte (a CR kept), less a BOM.
        let line = corpus.raw_line();
        let line = match entry.line {
            1 => line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line),
            _ => line,
        };
        if in_cluster(ord) {
            let id = if jsonl {
                record_id(line, &cfg.id_field)
            } else {
                None
            };
            members.push((fc.roots[ord], ord as u32, id));
        }
        if fc.roots[ord] as usize == ord {
            if let Some(out) = out.as_mut() {
                if as_json && !jsonl {
                    out.write_line(&text_record_json(&cfg.text_field, &text))?;
                } else {
                    out.write_line(line)?;
                }
            }
            counts.docs += 1;
            counts.text_bytes += line.len() as u64;
        }
        ord += 1;
        if ord.is_multiple_of(4096) {
            if interrupted() {
                return Err(TokenmillError::Interrupted);
            }
            counts.raw_bytes = raw.load(Ordering::Relaxed);
            bar.update(counts);
        }
    }
    counts.raw_bytes = raw.load(Ordering::Relaxed);
    bar.finish(counts);
    if let Some(path) = &cfg.report {
        members.sort_by_key(|m| (m.0, m.1));
        let mut report = OutputFile::create(Path::new(path), cfg.overwrite)?;
        let entry = |ord: u32, id: &Option<serde_json::Value>| {
            let o = ord as usize;
            let mut e = serde_json::json!({
                "file": inputs[fc.files[o] as usize].path.display().to_string(),
                "line": fc.lines[o],
                "doc": ord,
            });
            if let Some(id) = id {
                e["id"] = id.clone();
            }
            e
        };
        for group in members.chunk_by(|a, b| a.0 == b.0) {
            let kept = &group[0];
            debug_assert_eq!(kept.0, kept.1);
            let removed: Vec<_> = group[1..].iter().map(|m| entry(m.1, &m.2)).collect();
            let line = serde_json::json!({
                "kept": entry(kept.1, &kept.2),
                "removed": removed,
            });
            report.write_line(line.to_string().as_bytes())?;
        }
        report.finish()?;
    }
    if let Some(out) = out {
        out.finish()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(seed: u64, n: usize) -> Vec<String> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                format!("w{}", (s >> 33) % 5000)
            })
            .collect()
    }

    #[test]
    fn union_find_roots_are_minima_in_any_order() {
        let pairs = [(5, 3), (3, 9), (1, 7), (9, 0)];
        let mut a = UnionFind::new(10);
        let mut b = UnionFind::new(10);
        pairs.iter().for_each(|&(x, y)| a.union(x, y));
        pairs.iter().rev().for_each(|&(x, y)| b.union(y, x));
        let (ra, rb) = (a.roots(), b.roots());
        assert_eq!(ra, rb);
        assert_eq!(ra, vec![0, 1, 2, 0, 4, 0, 6, 1, 8, 0]);
    }

    #[test]
    fn clusters_near_duplicates_and_keeps_the_first() {
        let base = words(1, 300);
        let mut near = base.clone();
        near[150] = "changed".into();
        let other = words(2, 300);
        let texts = [
            other.join(" "),
            base.join(" "),
            near.join(" "),
            "!!!".to_string(),
            "!!!".to_string(),
            base.join(" ").to_uppercase(),
        ];
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        for verify in [false, true] {
            let opts = MinHashOptions {
                verify,
                ..Default::default()
            };
            for threads in [1, 2] {
                let (roots, stats, _) = dedup_texts(&refs, &opts, threads).unwrap();
                // Documents without shingles are never duplicates.
                assert_eq!(roots, vec![0, 1, 1, 3, 4, 1], "verify={verify}");
                if verify {
                    assert!(stats.verified_pairs >= 2);
                }
            }
        }
    }

    #[test]
    fn verify_rejects_pairs_under_the_threshold() {
        // Forced single-row bands make nearly every pair with some overlap a candidate.
        let base = words(3, 200);
        let mut half = base[..100].to_vec();
        half.extend(words(4, 100));
        let texts = [base.join(" "), half.join(" ")];
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let mut opts = MinHashOptions {
            bands: Some(128),
            rows: Some(1),
            ..Default::default()
        };
        let (roots, _, _) = dedup_texts(&refs, &opts, 1).unwrap();
        assert_eq!(roots, vec![0, 0]);
        opts.verify = true;
        let (roots, stats, _) = dedup_texts(&refs, &opts, 1).unwrap();
        assert_eq!(roots, vec![0, 1]);
        assert_eq!((stats.candidate_pairs, stats.rejected_pairs), (1, 1));
    }

    #[test]
    fn bad_params() {
        let bad = |o: MinHashOptions| Lsh::new(&o).is_err();
        assert!(bad(MinHashOptions {
            threshold: 0.0,
            ..Default::default()
        }));
        assert!(bad(MinHashOptions {
            bands: Some(20),
            rows: Some(10),
            ..Default::default()
        }));
        assert!(bad(MinHashOptions {
            shingle: "sentence".into(),
            ..Default::default()
        }));
    }
}
