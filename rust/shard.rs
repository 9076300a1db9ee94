//! Shard writer for format v1 (see docs/shard-format.md):
//! `SPLIT/NNNNN.bin` little-endian token ids, `SPLIT/NNNNN.idx` little-endian
//! u64 document start offsets (docs + 1 entries, the last = tokens).
//!
//! Why flat arrays: numpy memmaps them with no parsing, any language can read
//! them, and document boundaries stay explicit. Why uint16 when the vocab
//! fits: half the disk and page-cache footprint of uint32 (nanoGPT's choice),
//! but never by truncation: an id that does not fit is an error.
//!
//! Atomicity: a shard is written under `*.tmp` names, fsynced and renamed
//! when complete; the manifest, written last, is what makes a directory a
//! dataset. A crash leaves at worst finished shards and temp files with no
//! manifest, which the next run clears.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Result, TokenmillError};
use crate::manifest::SplitEntry;

/// Width of a stored token id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    U16,
    U32,
}

impl Dtype {
    /// The numpy name written in the manifest.
    pub fn name(self) -> &'static str {
        match self {
            Dtype::U16 => "uint16",
            Dtype::U32 => "uint32",
        }
    }

    /// Bytes per token.
    pub fn itemsize(self) -> u64 {
        match self {
            Dtype::U16 => 2,
            Dtype::U32 => 4,
        }
    }

    /// Parses a manifest name.
    pub fn from_name(name: &str) -> Option<Dtype> {
        match name {
            "uint16" => Some(Dtype::U16),
            "uint32" => Some(Dtype::U32),
            _ => None,
        }
    }

    /// Picks the dtype for a vocabulary: `requested` is "auto", "uint16" or "uint32".
    pub fn choose(requested: &str, vocab_size: u64) -> Result<Dtype> {
        let fits16 = vocab_size <= 1 << 16;
        match requested {
            "auto" => Ok(if fits16 { Dtype::U16 } else { Dtype::U32 }),
            "uint32" => Ok(Dtype::U32),
            "uint16" if fits16 => Ok(Dtype::U16),
            "uint16" => Err(TokenmillError::Invalid(format!(
                "dtype='uint16' cannot hold this tokenizer's ids: vocab size {vocab_size} (with added tokens) > 65536; use uint32 or auto"
            ))),
            other => Err(TokenmillError::Invalid(format!(
                "dtype={other:?} is not auto, uint16 or uint32"
            ))),
        }
    }
}

/// One finished shard as listed in the manifest (paths relative to the dataset root).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ShardInfo {
    pub bin: String,
    pub idx: String,
    pub tokens: u64,
    pub docs: u64,
    pub bin_sha256: String,
    pub idx_sha256: String,
    /// SFT datasets: the `.mask` file (one uint8 per token, 1 = trained on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask_sha256: Option<String>,
}

/// Checks a shard's `.idx` bytes against its manifest entry: `docs + 1`
/// little-endian `uint64` offsets that start at 0, never decrease and end
/// at `tokens`. Returns the first problem found. `verify` and every reader
/// (`open_shards` through the bindings) run it before trusting the offsets.
pub fn check_offsets(idx: &[u8], docs: u64, tokens: u64) -> std::result::Result<(), String> {
    if !idx.len().is_multiple_of(8) || Some(idx.len() as u64 / 8) != docs.checked_add(1) {
        return Err(format!(
            "{} bytes, expected {docs} documents + 1 offsets x 8",
            idx.len()
        ));
    }
    let mut previous = 0u64;
    for (i, c) in idx.chunks_exact(8).enumerate() {
        let offset = u64::from_le_bytes(c.try_into().expect("8 bytes"));
        if i == 0 && offset != 0 {
            return Err(format!("first offset is {offset}, not 0"));
        }
        if offset < previous {
            return Err(format!("offsets decrease at entry {i}"));
        }
        previous = offset;
    }
    if previous != tokens {
        return Err(format!(
            "last offset {previous} is not the token count {tokens}"
        ));
    }
    Ok(())
}

/// Writes `value` as pretty JSON to `path`, atomically ([`write_atomic`]):
/// manifests and stage records.
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value).expect("tokenmill's records serialise");
    write_atomic(path, &bytes)
}

/// Writes a file's bytes to `NAME.tmp`, fsyncs and renames it into place.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = tmp_name(path);
    let mut f = File::create(&tmp).map_err(|e| TokenmillError::io(&tmp, e))?;
    f.write_all(bytes)
        .map_err(|e| TokenmillError::io(&tmp, e))?;
    f.sync_all().map_err(|e| TokenmillError::io(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| TokenmillError::io(path, e))?;
    sync_dir(path.parent().unwrap_or(Path::new(".")));
    Ok(())
}

fn tmp_name(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Best-effort fsync of a directory, so renames inside it are durable.
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Write-back to disk of a file being written is started every this many
/// bytes, so that the fsync at its end waits for the last few only: a 264
/// MB shard's fsync took about 0.1 s, 6% of a two-thread `prepare`, when it
/// wrote it all back.
const WRITEBACK_STEP: u64 = 8 << 20;

/// A new file written from its start, whose write-back to disk is started
/// every [`WRITEBACK_STEP`] bytes, without waiting for it (Linux; elsewhere
/// a plain file). Best effort: the fsync at the end reports failures.
pub struct WriteBack {
    file: File,
    /// Bytes written, and bytes whose write-back has been started.
    written: u64,
    started: u64,
}

impl WriteBack {
    pub fn new(file: File) -> WriteBack {
        WriteBack {
            file,
            written: 0,
            started: 0,
        }
    }

    pub fn into_file(self) -> File {
        self.file
    }

    /// Starts the write-back of what was written since the last start.
    fn start(&mut self) {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let (from, len) = (self.started, self.written - self.started);
            if let (Ok(from), Ok(len)) = (i64::try_from(from), i64::try_from(len)) {
                // SAFETY: sync_file_range reads and writes no memory of this
                // process; a bad descriptor or range only makes it return an
                // error.
                unsafe {
                    libc::sync_file_range(
                        self.file.as_raw_fd(),
                        from,
                        len,
                        libc::SYNC_FILE_RANGE_WRITE,
                    );
                }
            }
        }
        self.started = self.written;
    }
}

impl Write for WriteBack {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written += n as u64;
        if self.written - self.started >= WRITEBACK_STEP {
            self.start();
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// A file being written under a temp name while its sha256 accumulates.
struct HashedFile {
    out: BufWriter<WriteBack>,
    tmp: PathBuf,
    path: PathBuf,
    hasher: Sha256,
}

impl HashedFile {
    fn create(path: PathBuf) -> Result<Self> {
        let tmp = tmp_name(&path);
        let file = File::create(&tmp).map_err(|e| TokenmillError::io(&tmp, e))?;
        Ok(HashedFile {
            out: BufWriter::with_capacity(1 << 20, WriteBack::new(file)),
            tmp,
            path,
            hasher: Sha256::new(),
        })
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.hasher.update(bytes);
        self.out
            .write_all(bytes)
            .map_err(|e| TokenmillError::io(&self.tmp, e))
    }

    /// Flushes, fsyncs and renames into place; returns the sha256 (hex).
    fn commit(self) -> Result<String> {
        let file = self
            .out
            .into_inner()
            .map_err(|e| TokenmillError::io(&self.tmp, e.into_error()))?
            .into_file();
        file.sync_all()
            .map_err(|e| TokenmillError::io(&self.tmp, e))?;
        fs::rename(&self.tmp, &self.path).map_err(|e| TokenmillError::io(&self.path, e))?;
        Ok(format!("{:x}", self.hasher.finalize()))
    }
}

struct OpenShard {
    index: usize,
    bin: HashedFile,
    mask: Option<HashedFile>,
    offsets: Vec<u64>,
}

/// Appends documents to the shards of one split, rolling over at a size limit.
pub struct SplitWriter {
    root: PathBuf,
    split: String,
    dtype: Dtype,
    max_shard_bytes: u64,
    current: Option<OpenShard>,
    shards: Vec<ShardInfo>,
    buf: Vec<u8>,
    /// Whether shards get a `.mask` file (SFT).
    masked: bool,
}

impl SplitWriter {
    /// A writer for `root/split/`; the directory is created on the first document.
    pub fn new(root: &Path, split: &str, dtype: Dtype, max_shard_bytes: u64) -> Self {
        SplitWriter {
            root: root.to_path_buf(),
            split: split.to_owned(),
            dtype,
            max_shard_bytes,
            current: None,
            shards: Vec::new(),
            buf: Vec::new(),
            masked: false,
        }
    }

    /// A writer whose shards carry a `.mask` file beside `.bin`/`.idx`.
    pub fn with_mask(mut self) -> Self {
        self.masked = true;
        self
    }

    /// Appends one document with its loss mask (one byte per token).
    pub fn write_masked_doc(&mut self, ids: &[u32], mask: &[u8]) -> Result<()> {
        if !self.masked || mask.len() != ids.len() {
            return Err(TokenmillError::Invalid(format!(
                "mask of {} bytes for {} tokens (writer masked: {})",
                mask.len(),
                ids.len(),
                self.masked
            )));
        }
        self.write_doc(ids)?;
        let cur = self.current.as_mut().expect("opened by write_doc");
        cur.mask.as_mut().expect("masked writer").write(mask)
    }

    /// Appends one document. A document never spans shards: a new shard
    /// starts when this one would pass the limit (a single document larger
    /// than the limit gets a shard of its own).
    pub fn write_doc(&mut self, ids: &[u32]) -> Result<()> {
        let itemsize = self.dtype.itemsize();
        if let Some(cur) = &self.current {
            let tokens = *cur.offsets.last().expect("offsets start with 0");
            if cur.offsets.len() > 1
                && (tokens + ids.len() as u64) * itemsize > self.max_shard_bytes
            {
                self.close_current()?;
            }
        }
        if self.current.is_none() {
            let dir = self.root.join(&self.split);
            fs::create_dir_all(&dir).map_err(|e| TokenmillError::io(&dir, e))?;
            let index = self.shards.len();
            self.current = Some(OpenShard {
                index,
                bin: HashedFile::create(dir.join(format!("{index:05}.bin")))?,
                mask: if self.masked {
                    Some(HashedFile::create(dir.join(format!("{index:05}.mask")))?)
                } else {
                    None
                },
                offsets: vec![0],
            });
        }
        self.buf.clear();
        match self.dtype {
            Dtype::U16 => {
                for &id in ids {
                    let narrow = u16::try_from(id).map_err(|_| {
                        TokenmillError::Invalid(format!("token id {id} does not fit uint16"))
                    })?;
                    self.buf.extend_from_slice(&narrow.to_le_bytes());
                }
            }
            Dtype::U32 => {
                for &id in ids {
                    self.buf.extend_from_slice(&id.to_le_bytes());
                }
            }
        }
        let cur = self.current.as_mut().expect("opened above");
        cur.bin.write(&self.buf)?;
        let end = cur.offsets.last().expect("offsets start with 0") + ids.len() as u64;
        cur.offsets.push(end);
        Ok(())
    }

    fn close_current(&mut self) -> Result<()> {
        let Some(cur) = self.current.take() else {
            return Ok(());
        };
        let dir = self.root.join(&self.split);
        let mut idx = HashedFile::create(dir.join(format!("{:05}.idx", cur.index)))?;
        let mut bytes = Vec::with_capacity(cur.offsets.len() * 8);
        for off in &cur.offsets {
            bytes.extend_from_slice(&off.to_le_bytes());
        }
        idx.write(&bytes)?;
        let idx_sha256 = idx.commit()?;
        let bin_sha256 = cur.bin.commit()?;
        let mask_sha256 = cur.mask.map(HashedFile::commit).transpose()?;
        let rel = |ext: &str| format!("{}/{:05}.{ext}", self.split, cur.index);
        self.shards.push(ShardInfo {
            bin: rel("bin"),
            idx: rel("idx"),
            tokens: *cur.offsets.last().expect("offsets start with 0"),
            docs: cur.offsets.len() as u64 - 1,
            bin_sha256,
            idx_sha256,
            mask: mask_sha256.as_ref().map(|_| rel("mask")),
            mask_sha256,
        });
        Ok(())
    }

    /// Closes the open shard and returns every shard written.
    pub fn finish(mut self) -> Result<Vec<ShardInfo>> {
        self.close_current()?;
        sync_dir(&self.root.join(&self.split));
        Ok(self.shards)
    }
}

/// Readies `out` for a new dataset. An existing manifest means a finished
/// dataset: refused unless `overwrite`, in which case the manifest goes
/// first (so a crash from here on never leaves a dataset that looks
/// complete). Leftover shards and temp files of earlier runs (`is_shard_file`
/// names) are removed. Any other file in a split directory is not ours: an
/// error listing them unless `overwrite`, and never removed.
pub fn prepare_output_dir(out: &Path, splits: &[&str], overwrite: bool) -> Result<()> {
    let manifest = out.join("manifest.json");
    if manifest.exists() && !overwrite {
        return Err(TokenmillError::OutputExists(out.to_path_buf()));
    }
    let mut ours = Vec::new();
    for split in splits {
        let dir = out.join(split);
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        let mut foreign = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if is_shard_file(&name) {
                ours.push(entry.path());
            } else {
                foreign.push(name);
            }
        }
        if !foreign.is_empty() && !overwrite {
            foreign.sort();
            let more = foreign.len().saturating_sub(5);
            foreign.truncate(5);
            if more > 0 {
                foreign.push(format!("and {more} more"));
            }
            return Err(TokenmillError::ForeignFiles {
                dir,
                names: foreign,
            });
        }
    }
    if manifest.exists() {
        fs::remove_file(&manifest).map_err(|e| TokenmillError::io(&manifest, e))?;
        sync_dir(out);
    }
    fs::create_dir_all(out).map_err(|e| TokenmillError::io(out, e))?;
    let _ = fs::remove_file(out.join("manifest.json.tmp"));
    for path in ours {
        fs::remove_file(&path).map_err(|e| TokenmillError::io(&path, e))?;
    }
    Ok(())
}

/// Whether `name` is a shard file tokenmill writes: five or more digits,
/// then `.bin`, `.idx` or `.mask`, maybe with `.tmp` (being written).
pub fn is_shard_file(name: &str) -> bool {
    let name = name.strip_suffix(".tmp").unwrap_or(name);
    let Some((stem, ext)) = name.split_once('.') else {
        return false;
    };
    stem.len() >= 5
        && stem.bytes().all(|b| b.is_ascii_digit())
        && matches!(ext, "bin" | "idx" | "mask")
}

/// Removes the shard files of a failed run (best effort): without a
/// manifest they are no dataset, and a final name on a shard cut short
/// would mislead. Only `is_shard_file` names go, and `prepare_output_dir`
/// made sure at the start that every such file in the split directories
/// is this run's own.
pub fn remove_unfinished(out: &Path, splits: &[&str]) {
    for split in splits {
        if let Ok(entries) = fs::read_dir(out.join(split)) {
            for entry in entries.flatten() {
                if is_shard_file(&entry.file_name().to_string_lossy()) {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
    }
}

/// Commits the writers of a run that succeeded: closes each split's open
/// shard (renamed into place only now, so an aborted run never gives a
/// partial shard a final name) and returns the manifest entries.
pub fn finish_splits(writers: Vec<SplitWriter>) -> Result<Vec<SplitEntry>> {
    writers
        .into_iter()
        .map(|w| {
            let shards = w.finish()?;
            Ok(SplitEntry {
                tokens: shards.iter().map(|s| s.tokens).sum(),
                docs: shards.iter().map(|s| s.docs).sum(),
                shards,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_back_starts_while_a_file_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.bin");
        let mut f = HashedFile::create(path.clone()).unwrap();
        let chunk: Vec<u8> = (0..=255u8).cycle().take(1000 * 1000 + 7).collect();
        for k in 1..=20 {
            f.write(&chunk).unwrap();
            // Started over what the buffer has handed to the file, in steps,
            // and never more than a step behind it.
            let wb = f.out.get_ref();
            assert_eq!(
                wb.written + f.out.buffer().len() as u64,
                k * chunk.len() as u64
            );
            assert!(wb.started <= wb.written && wb.written - wb.started < WRITEBACK_STEP);
        }
        assert!(f.out.get_ref().started >= 2 * WRITEBACK_STEP);
        let sha = f.commit().unwrap();
        let written = fs::read(&path).unwrap();
        assert_eq!(written, chunk.repeat(20));
        assert_eq!(sha, format!("{:x}", Sha256::digest(&written)));
    }

    #[test]
    fn rollover_and_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = SplitWriter::new(dir.path(), "train", Dtype::U16, 10);
        w.write_doc(&[1, 2, 3]).unwrap();
        w.write_doc(&[4, 5]).unwrap(); // 5 tokens = 10 bytes: fits
        w.write_doc(&[6]).unwrap(); // would be 12 bytes: new shard
        w.write_doc(&[7; 9]).unwrap(); // larger than the limit: own shard
        let shards = w.finish().unwrap();
        assert_eq!(
            shards.iter().map(|s| s.docs).collect::<Vec<_>>(),
            vec![2, 1, 1]
        );
        let idx = fs::read(dir.path().join("train/00000.idx")).unwrap();
        let offs: Vec<u64> = idx
            .chunks(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(offs, vec![0, 3, 5]);
        let bin = fs::read(dir.path().join("train/00000.bin")).unwrap();
        assert_eq!(bin, vec![1, 0, 2, 0, 3, 0, 4, 0, 5, 0]);
        assert!(fs::read_dir(dir.path().join("train")).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".tmp")));
    }

    /// Reads a split back through its `.idx`/`.bin` files.
    fn read_back(root: &Path, shards: &[ShardInfo], dtype: Dtype) -> Vec<Vec<u32>> {
        let mut docs = Vec::new();
        for s in shards {
            let bin = fs::read(root.join(&s.bin)).unwrap();
            let ids: Vec<u32> = match dtype {
                Dtype::U16 => bin
                    .chunks(2)
                    .map(|c| u32::from(u16::from_le_bytes([c[0], c[1]])))
                    .collect(),
                Dtype::U32 => bin
                    .chunks(4)
                    .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
            };
            let idx = fs::read(root.join(&s.idx)).unwrap();
            let offs: Vec<usize> = idx
                .chunks(8)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap()) as usize)
                .collect();
            assert_eq!(offs.len() as u64, s.docs + 1);
            docs.extend(offs.windows(2).map(|w| ids[w[0]..w[1]].to_vec()));
        }
        docs
    }

    #[test]
    fn random_round_trips() {
        // A small LCG keeps the test dependency-free and reproducible.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = |n: u64| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) % n
        };
        for case in 0..40 {
            let dtype = if case % 2 == 0 {
                Dtype::U16
            } else {
                Dtype::U32
            };
            let max_id = if dtype == Dtype::U16 {
                1 << 16
            } else {
                1 << 32
            };
            let docs: Vec<Vec<u32>> = (0..next(60))
                .map(|_| (0..next(50)).map(|_| next(max_id) as u32).collect())
                .collect();
            let limit = 8 + next(200);
            let dir = tempfile::tempdir().unwrap();
            let mut w = SplitWriter::new(dir.path(), "train", dtype, limit);
            for d in &docs {
                w.write_doc(d).unwrap();
            }
            let shards = w.finish().unwrap();
            assert_eq!(read_back(dir.path(), &shards, dtype), docs, "case {case}");
            for s in &shards {
                assert!(
                    s.tokens * dtype.itemsize() <= limit || s.docs == 1,
                    "case {case}"
                );
            }
        }
    }

    #[test]
    fn masks_follow_their_documents() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = SplitWriter::new(dir.path(), "train", Dtype::U16, 8).with_mask();
        w.write_masked_doc(&[1, 2, 3], &[0, 1, 1]).unwrap();
        w.write_masked_doc(&[4, 5], &[1, 0]).unwrap(); // new shard: 10 bytes > 8
        assert!(w.write_masked_doc(&[6], &[]).is_err());
        let shards = w.finish().unwrap();
        assert_eq!(shards.len(), 2);
        let masks: Vec<Vec<u8>> = shards
            .iter()
            .map(|s| fs::read(dir.path().join(s.mask.as_ref().unwrap())).unwrap())
            .collect();
        assert_eq!(masks, vec![vec![0, 1, 1], vec![1, 0]]);
        assert!(shards.iter().all(|s| s.mask_sha256.is_some()));
        let mut plain = SplitWriter::new(dir.path(), "val", Dtype::U16, 8);
        assert!(plain.write_masked_doc(&[1], &[1]).is_err());
    }

    #[test]
    fn uint16_refused_for_large_vocab() {
        assert!(Dtype::choose("uint16", 70_000).is_err());
        assert_eq!(Dtype::choose("auto", 70_000).unwrap(), Dtype::U32);
        assert_eq!(Dtype::choose("auto", 65_536).unwrap(), Dtype::U16);
        let dir = tempfile::tempdir().unwrap();
        let mut w = SplitWriter::new(dir.path(), "train", Dtype::U16, 100);
        assert!(w.write_doc(&[70_000]).is_err());
    }
}
