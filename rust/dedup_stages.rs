//! MinHash dedup as stages that exchange files on shared storage, so that
//! near-duplicates are found across the parts of a partitioned run, each
//! stage on as many machines as it has parts:
//!
//! 1. `signatures` (one run per input part, [`Part`]): the band hashes of
//!    every document of the part, written as records `(band, hash, doc)`
//!    into one file per bucket (a range of hash values), each sorted.
//! 2. `buckets` (one run per bucket): every part's file of that bucket;
//!    documents that share a `(band, hash)` are candidates, linked to the
//!    first of them: the edges.
//! 3. `clusters` (one run): union-find over every edge; each cluster keeps
//!    its first document in input order, the others are listed as removed.
//! 4. `prepare --exclude WORK` skips the removed documents (as
//!    `near_duplicate`), in one run or in parts.
//!
//! A document is named by its input file's position in the run's expanded
//! inputs and its line (row): `file << 40 | line`, never by a position
//! inside a worker, so every stage agrees and the order of the keys is the
//! input order. The clusters are the connected components of the same
//! bucket links as the one-machine `dedup` (same shingles, hashes, bands
//! and rows), and the first document of each is kept there too: the kept
//! set is the same. Candidate verification (`verify`) needs the texts of
//! both documents of a pair in one place, so the stages do not offer it.
//!
//! Every stage writes its files atomically and a small JSON record of what
//! it did last (`done.json` per signature part, `bucket-K.json` per bucket,
//! `manifest.json` for the clusters); a stage whose record exists with the
//! same settings is not redone, so schedulers may retry any of them.

use std::path::{Path, PathBuf};
use std::time::Instant;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::dedup::{clusters_of, read_docs, BandIndex, Lsh, MinHashOptions, UnionFind};
use crate::error::{Result, TokenmillError};
use crate::input::{
    inputs_digest, Corpus, InputSpec, MemoryTable, Part, ReaderOptions, TxtMode,
    DEFAULT_MAX_LINE_BYTES,
};
use crate::manifest::FileStats;
use crate::shard::{write_atomic, write_json};
use crate::threads::{build_pool, resolve_threads};

/// Bytes of one signature record: band (u32), hash (u64), document (u64).
const RECORD: usize = 20;
/// Bytes of one edge: two documents (u64 each).
const EDGE: usize = 16;
/// Bits of a document key that hold the line; the file index is above them.
const LINE_BITS: u32 = 40;

/// The key of line `line` of input file `file` (its index in the run's
/// expanded inputs).
fn doc_key(file: usize, line: u64) -> Result<u64> {
    if file >= 1 << (64 - LINE_BITS) || line >= 1 << LINE_BITS {
        return Err(TokenmillError::Invalid(format!(
            "dedup stages name documents by file ({} at most) and line ({} at most); \
             input file {file} line {line} is beyond that",
            1u64 << (64 - LINE_BITS),
            1u64 << LINE_BITS
        )));
    }
    Ok(((file as u64) << LINE_BITS) | line)
}

/// The bucket of a band hash: `buckets` equal ranges of hash values.
fn bucket_of(hash: u64, buckets: usize) -> usize {
    ((u128::from(hash) * buckets as u128) >> 64) as usize
}

/// Every argument of the `signatures` stage.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SignaturesConfig {
    pub inputs: Vec<InputSpec>,
    #[serde(skip)]
    pub tables: Vec<MemoryTable>,
    /// The stages' shared directory.
    pub work: String,
    pub text_field: String,
    pub txt_mode: TxtMode,
    pub max_line_bytes: u64,
    pub strict: bool,
    pub minhash: MinHashOptions,
    /// Parts of the inputs, and this run's part ([`Part`]).
    pub num_parts: usize,
    pub part: usize,
    /// Buckets (hash ranges) the `buckets` stage is run for.
    pub buckets: usize,
    pub threads: usize,
    pub progress: bool,
}

impl Default for SignaturesConfig {
    fn default() -> Self {
        SignaturesConfig {
            inputs: Vec::new(),
            tables: Vec::new(),
            work: String::new(),
            text_field: "text".into(),
            txt_mode: TxtMode::Line,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            strict: false,
            minhash: MinHashOptions::default(),
            num_parts: 1,
            part: 0,
            buckets: 1,
            threads: 0,
            progress: true,
        }
    }
}

/// What a finished signatures part records (`signatures/part-NNNNN/done.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SignaturesPart {
    /// Everything that decides the band hashes and the buckets; equal in every part.
    pub settings: Value,
    /// sha256 over the paths and sizes of the run's expanded inputs (all parts).
    pub inputs_digest: String,
    pub part: Part,
    /// Index of the part's first file in the run's inputs, and its files' counts.
    pub first_file: usize,
    pub inputs: Vec<FileStats>,
    /// Documents with at least one shingle (the others have no band hash).
    pub docs: u64,
    /// Records per bucket file.
    pub records: Vec<u64>,
    /// True when a rerun found the part done and did nothing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub already_complete: bool,
}

/// The settings the stages must share, as recorded.
fn settings(lsh: &Lsh, cfg: &SignaturesConfig) -> Value {
    json!({
        "threshold": lsh.threshold,
        "num_perm": lsh.hasher.num_perm,
        "bands": lsh.bands,
        "rows": lsh.rows,
        "shingle": lsh.hasher.shingling.to_string(),
        "seed": lsh.hasher.seed,
        "buckets": cfg.buckets,
        "text_field": cfg.text_field,
        "txt_mode": cfg.txt_mode,
        "max_line_bytes": cfg.max_line_bytes,
    })
}

fn part_dir(work: &Path, index: usize) -> PathBuf {
    work.join("signatures").join(format!("part-{index:05}"))
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| TokenmillError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| TokenmillError::Corrupt {
        path: path.to_path_buf(),
        message: format!("not a tokenmill dedup stage record: {e}"),
    })
}

/// Stage 1: the band hashes of one part's documents, bucketed (module docs).
pub fn signatures(
    cfg: &SignaturesConfig,
    interrupted: &dyn Fn() -> bool,
) -> Result<SignaturesPart> {
    if cfg.minhash.verify {
        return Err(TokenmillError::Invalid(
            "verify is not available in the dedup stages: it needs both texts of a pair in one \
             place (use tokenmill dedup --verify on one machine)"
                .into(),
        ));
    }
    if cfg.buckets == 0 || cfg.buckets > 1 << 16 {
        return Err(TokenmillError::Invalid(format!(
            "buckets={} must be in 1..=65536",
            cfg.buckets
        )));
    }
    let part = Part {
        index: cfg.part,
        count: cfg.num_parts,
    }
    .check()?;
    let lsh = Lsh::new(&cfg.minhash)?;
    let work = Path::new(&cfg.work);
    let dir = part_dir(work, part.index);
    let opts = ReaderOptions::new(&cfg.text_field, cfg.txt_mode, cfg.max_line_bytes as usize)?;
    let corpus = Corpus::open(&cfg.inputs, &cfg.tables, &[work], opts, cfg.strict)?;
    let digest = inputs_digest(corpus.inputs());
    let files = corpus.part_files(part);
    let first_file = files.start;
    let corpus = corpus.keep_files(files);
    let settings = settings(&lsh, cfg);
    let done = dir.join("done.json");
    if done.is_file() {
        let old: SignaturesPart = read_json(&done)?;
        if old.settings == settings && old.inputs_digest == digest && old.part == part {
            return Ok(SignaturesPart {
                already_complete: true,
                ..old
            });
        }
        return Err(TokenmillError::OutputExists(dir));
    }
    let threads = resolve_threads(cfg.threads);
    let pool = build_pool(threads, "minhash")?;
    let mut index = BandIndex::new(lsh.bands);
    let mut keys = Vec::new();
    let read = read_docs(corpus, None, interrupted, |batch| {
        let texts: Vec<&str> = batch.iter().map(|d| d.text.as_str()).collect();
        pool.install(|| index.push(&lsh, &texts))?;
        for d in &batch {
            keys.push(doc_key(first_file + d.file, d.line)?);
        }
        Ok(())
    })?;
    // Sized exactly first: the records are most of this stage's memory.
    let mut sizes = vec![0usize; cfg.buckets];
    for i in 0..keys.len() {
        for &hash in index.hashes_of(i).unwrap_or_default() {
            sizes[bucket_of(hash, cfg.buckets)] += 1;
        }
    }
    let mut buckets: Vec<Vec<(u32, u64, u64)>> =
        sizes.iter().map(|&n| Vec::with_capacity(n)).collect();
    let mut docs = 0;
    for (i, &key) in keys.iter().enumerate() {
        let Some(hashes) = index.hashes_of(i) else {
            continue;
        };
        docs += 1;
        for (band, &hash) in hashes.iter().enumerate() {
            buckets[bucket_of(hash, cfg.buckets)].push((band as u32, hash, key));
        }
    }
    drop(index);
    std::fs::create_dir_all(&dir).map_err(|e| TokenmillError::io(&dir, e))?;
    let records = pool.install(|| {
        buckets
            .into_par_iter()
            .enumerate()
            .map(|(k, mut records)| {
                records.sort_unstable();
                let mut bytes = Vec::with_capacity(records.len() * RECORD);
                for (band, hash, key) in &records {
                    bytes.extend_from_slice(&band.to_le_bytes());
                    bytes.extend_from_slice(&hash.to_le_bytes());
                    bytes.extend_from_slice(&key.to_le_bytes());
                }
                write_atomic(&dir.join(format!("bucket-{k:05}.bin")), &bytes)?;
                Ok(records.len() as u64)
            })
            .collect::<Result<Vec<u64>>>()
    })?;
    let result = SignaturesPart {
        settings,
        inputs_digest: digest,
        part,
        first_file,
        inputs: read.files,
        docs,
        records,
        already_complete: false,
    };
    write_json(&done, &result)?;
    Ok(result)
}

/// Every finished signatures part under `work`, in part order, checked to
/// be all the parts of one run with the same settings.
fn signature_parts(work: &Path) -> Result<Vec<SignaturesPart>> {
    let root = work.join("signatures");
    let entries = std::fs::read_dir(&root).map_err(|e| TokenmillError::io(&root, e))?;
    let mut parts = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| TokenmillError::io(&root, e))?.path();
        let done = path.join("done.json");
        if done.is_file() {
            parts.push(read_json::<SignaturesPart>(&done)?);
        }
    }
    parts.sort_by_key(|p| p.part.index);
    let Some(first) = parts.first().cloned() else {
        return Err(TokenmillError::Invalid(format!(
            "{} holds no finished signatures part: run the signatures stage first",
            root.display()
        )));
    };
    for p in &parts {
        if p.settings != first.settings
            || p.inputs_digest != first.inputs_digest
            || p.part.count != first.part.count
        {
            return Err(TokenmillError::Invalid(format!(
                "signatures part {} was made with other settings or inputs than part {}",
                p.part.index, first.part.index
            )));
        }
    }
    let have: Vec<usize> = parts.iter().map(|p| p.part.index).collect();
    if let Some(missing) = (0..first.part.count).find(|i| !have.contains(i)) {
        return Err(TokenmillError::Invalid(format!(
            "signatures part {missing} of {} is not finished (finished: {have:?})",
            first.part.count
        )));
    }
    Ok(parts)
}

fn buckets_of(parts: &[SignaturesPart]) -> usize {
    parts[0].settings["buckets"].as_u64().unwrap_or(1) as usize
}

/// What a finished bucket records (`edges/bucket-NNNNN.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BucketDone {
    pub settings: Value,
    pub inputs_digest: String,
    pub bucket: usize,
    /// Signature records read, and distinct candidate edges written.
    pub records: u64,
    pub edges: u64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub already_complete: bool,
}

/// Stage 2: the candidate edges of one bucket (module docs).
pub fn bucket_edges(work: &Path, bucket: usize) -> Result<BucketDone> {
    let parts = signature_parts(work)?;
    let buckets = buckets_of(&parts);
    if bucket >= buckets {
        return Err(TokenmillError::Invalid(format!(
            "bucket {bucket} does not exist: the signatures have {buckets} buckets (0 to {})",
            buckets - 1
        )));
    }
    let dir = work.join("edges");
    let done = dir.join(format!("bucket-{bucket:05}.json"));
    if done.is_file() {
        let old: BucketDone = read_json(&done)?;
        if old.settings == parts[0].settings && old.inputs_digest == parts[0].inputs_digest {
            return Ok(BucketDone {
                already_complete: true,
                ..old
            });
        }
        return Err(TokenmillError::OutputExists(done));
    }
    let mut records: Vec<(u32, u64, u64)> = Vec::new();
    for p in &parts {
        let path = part_dir(work, p.part.index).join(format!("bucket-{bucket:05}.bin"));
        let bytes = std::fs::read(&path).map_err(|e| TokenmillError::io(&path, e))?;
        // A record file anyone can edit: its counts are checked, not trusted.
        let expected = p
            .records
            .get(bucket)
            .and_then(|&n| n.checked_mul(RECORD as u64));
        if expected != Some(bytes.len() as u64) {
            return Err(TokenmillError::Corrupt {
                path,
                message: format!(
                    "{} bytes, but its part recorded {:?} records of {RECORD} bytes",
                    bytes.len(),
                    p.records.get(bucket)
                ),
            });
        }
        records.extend(bytes.chunks_exact(RECORD).map(|r| {
            let u64_at = |i: usize| u64::from_le_bytes(r[i..i + 8].try_into().expect("8 bytes"));
            let band = u32::from_le_bytes(r[..4].try_into().expect("4 bytes"));
            (band, u64_at(4), u64_at(12))
        }));
    }
    records.par_sort_unstable();
    let mut edges: Vec<(u64, u64)> = Vec::new();
    for group in records.chunk_by(|a, b| (a.0, a.1) == (b.0, b.1)) {
        edges.extend(group[1..].iter().map(|r| (group[0].2, r.2)));
    }
    edges.par_sort_unstable();
    edges.dedup();
    let bytes: Vec<u8> = edges
        .iter()
        .flat_map(|&(a, b)| a.to_le_bytes().into_iter().chain(b.to_le_bytes()))
        .collect();
    std::fs::create_dir_all(&dir).map_err(|e| TokenmillError::io(&dir, e))?;
    write_atomic(&dir.join(format!("bucket-{bucket:05}.bin")), &bytes)?;
    let result = BucketDone {
        settings: parts[0].settings.clone(),
        inputs_digest: parts[0].inputs_digest.clone(),
        bucket,
        records: records.len() as u64,
        edges: edges.len() as u64,
        already_complete: false,
    };
    write_json(&done, &result)?;
    Ok(result)
}

/// What the clusters stage writes (`WORK/manifest.json`), and what
/// `prepare --exclude WORK` reads; the removed documents are in
/// `WORK/removed.bin` (sorted little-endian u64 keys).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DedupStagesManifest {
    /// `tokenmill-dedup-stages`.
    pub format: String,
    pub settings: Value,
    pub inputs_digest: String,
    /// The run's input files in order (index = the file part of a key).
    pub inputs: Vec<FileStats>,
    /// Documents with a band hash, documents removed, clusters of two or more.
    pub docs: u64,
    pub removed: u64,
    pub clusters: u64,
    /// Distinct candidate edges over all buckets.
    pub candidate_pairs: u64,
    pub seconds: f64,
}

/// Format name of the clusters stage's manifest.
pub const STAGES_FORMAT: &str = "tokenmill-dedup-stages";

/// Stage 3: clusters over every bucket's edges; writes the removed
/// documents and the manifest (module docs).
pub fn clusters(work: &Path) -> Result<DedupStagesManifest> {
    let started = Instant::now();
    let parts = signature_parts(work)?;
    let buckets = buckets_of(&parts);
    let mut edges: Vec<(u64, u64)> = Vec::new();
    for k in 0..buckets {
        let done = work.join("edges").join(format!("bucket-{k:05}.json"));
        if !done.is_file() {
            return Err(TokenmillError::Invalid(format!(
                "bucket {k} of {buckets} is not finished ({} is missing): run the buckets stage \
                 for it first",
                done.display()
            )));
        }
        let record: BucketDone = read_json(&done)?;
        if record.settings != parts[0].settings || record.inputs_digest != parts[0].inputs_digest {
            return Err(TokenmillError::Invalid(format!(
                "{} was made from other signatures",
                done.display()
            )));
        }
        let path = done.with_extension("bin");
        let bytes = std::fs::read(&path).map_err(|e| TokenmillError::io(&path, e))?;
        if record.edges.checked_mul(EDGE as u64) != Some(bytes.len() as u64) {
            return Err(TokenmillError::Corrupt {
                path,
                message: format!("{} bytes for {} edges", bytes.len(), record.edges),
            });
        }
        edges.extend(bytes.chunks_exact(EDGE).map(|e| {
            let at = |i: usize| u64::from_le_bytes(e[i..i + 8].try_into().expect("8 bytes"));
            (at(0), at(8))
        }));
    }
    // Dense ordinals for the documents that have an edge, in key order, so
    // that union-find roots (the smallest ordinal) are the first in input order.
    let mut nodes: Vec<u64> = edges.iter().flat_map(|&(a, b)| [a, b]).collect();
    nodes.par_sort_unstable();
    nodes.dedup();
    if nodes.len() > u32::MAX as usize {
        return Err(TokenmillError::Invalid(format!(
            "{} documents have candidates; the clusters stage handles {} at most",
            nodes.len(),
            u32::MAX
        )));
    }
    let ordinal = |key: u64| nodes.binary_search(&key).expect("every edge end is a node") as u32;
    let mut uf = UnionFind::new(nodes.len());
    for &(a, b) in &edges {
        uf.union(ordinal(a), ordinal(b));
    }
    let roots = uf.roots();
    let removed: Vec<u64> = (0..roots.len())
        .filter(|&i| roots[i] as usize != i)
        .map(|i| nodes[i]) // in key order: sorted
        .collect();
    let clusters = clusters_of(&roots);
    let bytes: Vec<u8> = removed.iter().flat_map(|k| k.to_le_bytes()).collect();
    write_atomic(&work.join("removed.bin"), &bytes)?;
    let mut inputs = Vec::new();
    for p in &parts {
        inputs.extend(p.inputs.iter().cloned());
    }
    let manifest = DedupStagesManifest {
        format: STAGES_FORMAT.into(),
        settings: parts[0].settings.clone(),
        inputs_digest: parts[0].inputs_digest.clone(),
        inputs,
        docs: parts.iter().map(|p| p.docs).sum(),
        removed: removed.len() as u64,
        clusters,
        candidate_pairs: edges.len() as u64,
        seconds: started.elapsed().as_secs_f64(),
    };
    write_json(&work.join("manifest.json"), &manifest)?;
    Ok(manifest)
}

/// The documents the clusters stage in `work` removed, as sorted lines per
/// input file of a run whose expanded inputs have `digest`
/// ([`inputs_digest`]) and are `files` long.
pub fn removed_lines(work: &Path, digest: &str, files: usize) -> Result<Vec<Vec<u64>>> {
    let path = work.join("manifest.json");
    let m: DedupStagesManifest = read_json(&path)?;
    if m.format != STAGES_FORMAT {
        return Err(TokenmillError::Corrupt {
            path,
            message: format!("format {:?} is not {STAGES_FORMAT}", m.format),
        });
    }
    if m.inputs_digest != digest || m.inputs.len() != files {
        return Err(TokenmillError::Invalid(format!(
            "{} was made over other input files ({} files) than this run's ({files}): give the \
             same inputs, in the same order, as to the signatures stage",
            work.display(),
            m.inputs.len()
        )));
    }
    let bin = work.join("removed.bin");
    let bytes = std::fs::read(&bin).map_err(|e| TokenmillError::io(&bin, e))?;
    if m.removed.checked_mul(8) != Some(bytes.len() as u64) {
        return Err(TokenmillError::Corrupt {
            path: bin,
            message: format!("{} bytes for {} removed documents", bytes.len(), m.removed),
        });
    }
    let mut out = vec![Vec::new(); files];
    for k in bytes.chunks_exact(8) {
        let key = u64::from_le_bytes(k.try_into().expect("8 bytes"));
        let file = (key >> LINE_BITS) as usize;
        let lines = out.get_mut(file).ok_or_else(|| TokenmillError::Corrupt {
            path: bin.clone(),
            message: format!("a removed document of input file {file}, of {files}"),
        })?;
        lines.push(key & ((1 << LINE_BITS) - 1));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_input_order_and_buckets_cover_every_hash() {
        assert!(doc_key(0, (1 << LINE_BITS) - 1).unwrap() < doc_key(1, 0).unwrap());
        assert!(doc_key(3, 7).unwrap() < doc_key(3, 8).unwrap());
        assert!(doc_key(1 << (64 - LINE_BITS), 0).is_err());
        assert!(doc_key(0, 1 << LINE_BITS).is_err());
        for buckets in [1, 2, 7, 65536] {
            assert_eq!(bucket_of(0, buckets), 0);
            assert_eq!(bucket_of(u64::MAX, buckets), buckets - 1);
            let mut last = 0;
            for k in 0..1000u64 {
                let b = bucket_of(k.wrapping_mul(0x9E37_79B9_7F4A_7C15), buckets);
                assert!(b < buckets);
                let ordered = bucket_of(k * (u64::MAX / 1000), buckets);
                assert!(ordered >= last, "ranges, in hash order");
                last = ordered;
            }
        }
    }
}
