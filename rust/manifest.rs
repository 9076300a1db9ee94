//! `manifest.json`: what a dataset holds and how it was made. Written last
//! and atomically by the pipeline; a directory without it is not a dataset.

use std::collections::BTreeMap;
use std::path::{Component, Path};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Result, TokenmillError};
use crate::shard::{Dtype, ShardInfo};
use crate::tokenize::{Encoder, LoadedTokenizer};

/// Format name written into every manifest.
pub const FORMAT: &str = "tokenmill-shards";
/// Shard format version (DESIGN.md, "Shard format v1").
pub const FORMAT_VERSION: u32 = 1;

/// The tokenizer a dataset was made with.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TokenizerEntry {
    pub path: String,
    pub fingerprint: String,
    pub vocab_size: u64,
    pub bos_id: Option<u32>,
    pub eos_id: Option<u32>,
    pub pad_id: Option<u32>,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    pub pad_token: Option<String>,
    /// Whether special-token strings in the text were parsed as special tokens.
    pub parse_special: bool,
    /// Engine that produced the ids: `fast` or `tokenizers`.
    pub backend: String,
    /// Why `auto` fell back to the `tokenizers` crate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_reason: Option<String>,
    /// Share of documents the reference re-encoded to check the fast engine.
    #[serde(default)]
    pub verify_fraction: f64,
    /// Documents so checked (all identical, or the run would have failed).
    #[serde(default)]
    pub verified_docs: u64,
}

impl TokenizerEntry {
    /// The entry of a loaded tokenizer and the encoder that made the ids
    /// (no verification sample; callers that verify set those fields).
    pub fn new(loaded: &LoadedTokenizer, encoder: &Encoder, parse_special: bool) -> Self {
        let path = std::fs::canonicalize(&loaded.json_path).unwrap_or(loaded.json_path.clone());
        TokenizerEntry {
            path: path.display().to_string(),
            fingerprint: loaded.fingerprint.clone(),
            vocab_size: loaded.vocab_size,
            bos_id: loaded.bos.as_ref().map(|t| t.id),
            eos_id: loaded.eos.as_ref().map(|t| t.id),
            pad_id: loaded.pad.as_ref().map(|t| t.id),
            bos_token: loaded.bos.as_ref().map(|t| t.token.clone()),
            eos_token: loaded.eos.as_ref().map(|t| t.token.clone()),
            pad_token: loaded.pad.as_ref().map(|t| t.token.clone()),
            parse_special,
            backend: encoder.backend_name().into(),
            reference_reason: encoder.reference_reason.clone(),
            verify_fraction: 0.0,
            verified_docs: 0,
        }
    }
}

/// One split (train or val).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SplitEntry {
    pub tokens: u64,
    pub docs: u64,
    pub shards: Vec<ShardInfo>,
}

/// Counts for one input file.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct FileStats {
    /// The input file (empty, and left out, in `totals`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path: String,
    /// Physical lines read (1 per file for whole-file `.txt` documents).
    pub lines: u64,
    /// Documents written to the dataset.
    pub docs: u64,
    pub tokens: u64,
    /// UTF-8 bytes of the documents written.
    pub text_bytes: u64,
    /// Lines that gave no document, by reason.
    pub skipped: BTreeMap<String, u64>,
    /// Well-formed documents dropped by the clean stage, by reason.
    pub filtered: BTreeMap<String, u64>,
    /// Lines kept after replacing lone surrogate escapes with U+FFFD.
    pub repaired_surrogates: u64,
}

impl FileStats {
    /// Zero counts for the input file at `path`.
    pub fn new(path: &Path) -> FileStats {
        FileStats {
            path: path.display().to_string(),
            ..FileStats::default()
        }
    }

    /// Refuses a run that kept no document (`self` holds its totals) unless
    /// `allow_empty`, so that nothing is finished: the error names the
    /// commonest reason lines gave none, what `hint` says to change for it,
    /// and the first of `examples`.
    pub fn require_documents(
        &self,
        allow_empty: bool,
        examples: &[String],
        hint: fn(&str) -> &'static str,
    ) -> Result<()> {
        if self.docs > 0 || allow_empty {
            return Ok(());
        }
        let commonest = self
            .skipped
            .iter()
            .chain(&self.filtered)
            .max_by_key(|(_, n)| **n);
        Err(TokenmillError::NoDocuments {
            lines: self.lines,
            reason: commonest.map(|(name, n)| (name.clone(), *n, hint(name))),
            example: examples.first().cloned(),
        })
    }

    /// Adds another file's counts (for totals).
    pub fn add(&mut self, o: &FileStats) {
        self.lines += o.lines;
        self.docs += o.docs;
        self.tokens += o.tokens;
        self.text_bytes += o.text_bytes;
        self.repaired_surrogates += o.repaired_surrogates;
        for (k, v) in &o.skipped {
            *self.skipped.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &o.filtered {
            *self.filtered.entry(k.clone()).or_default() += v;
        }
    }
}

/// The whole manifest.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub format_version: u32,
    /// `pretrain` or `sft`.
    pub kind: String,
    pub tokenmill_version: String,
    pub tokenizer: TokenizerEntry,
    /// `uint16` or `uint32`.
    pub dtype: String,
    pub bos_added: bool,
    pub eos_added: bool,
    pub splits: BTreeMap<String, SplitEntry>,
    pub inputs: Vec<FileStats>,
    pub totals: FileStats,
    /// The first bad lines, as `file:line: reason (detail)`.
    pub skipped_examples: Vec<String>,
    pub dedup: Value,
    pub chunking: Value,
    pub val_split: Value,
    /// The full resolved arguments of the run.
    pub args: Value,
    /// SFT datasets: chat template source, truncated conversations, masked tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sft: Option<Value>,
    /// A part of a partitioned run (`prepare --num-parts N --part I`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<PartEntry>,
    /// A merged dataset (`tokenmill merge`): the datasets whose shards it
    /// lists, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged: Option<Vec<MergedEntry>>,
}

/// Which part of a partitioned run a dataset is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartEntry {
    /// 0-based.
    pub index: usize,
    pub count: usize,
    /// Input files, and their bytes, of the whole run (all parts).
    pub input_files: usize,
    pub input_bytes: u64,
}

/// One dataset of a merge.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergedEntry {
    /// Its directory, relative to the merged dataset.
    pub path: String,
    /// sha256 of its manifest.json as merged.
    pub manifest_sha256: String,
}

impl Manifest {
    /// Reads and checks `root/manifest.json`.
    pub fn read(root: &Path) -> Result<Manifest> {
        let path = root.join("manifest.json");
        let text = std::fs::read_to_string(&path).map_err(|e| TokenmillError::io(&path, e))?;
        Manifest::parse(&text, &path)
    }

    /// Parses and checks manifest text (`path` names it in errors). A
    /// manifest is a file anyone can edit or download, so it is checked
    /// before any count or path in it is used: format and version, a known
    /// dtype, shard paths confined to the dataset (relative, no `..`), and
    /// split totals equal to the sums of their shards (added checked).
    pub fn parse(text: &str, path: &Path) -> Result<Manifest> {
        let corrupt = |message: String| TokenmillError::Corrupt {
            path: path.to_path_buf(),
            message,
        };
        let m: Manifest = serde_json::from_str(text)
            .map_err(|e| corrupt(format!("not a tokenmill manifest: {e}")))?;
        if m.format != FORMAT || m.format_version != FORMAT_VERSION {
            return Err(corrupt(format!(
                "format {} v{} is not {FORMAT} v{FORMAT_VERSION}",
                m.format, m.format_version
            )));
        }
        m.check().map_err(corrupt)?;
        Ok(m)
    }

    fn check(&self) -> std::result::Result<(), String> {
        if Dtype::from_name(&self.dtype).is_none() {
            return Err(format!("dtype {:?} is not uint16 or uint32", self.dtype));
        }
        for m in self.merged.iter().flatten() {
            if !inside_dataset(&m.path) {
                return Err(format!(
                    "merged dataset {:?} leaves the dataset directory (must be relative, without ..)",
                    m.path
                ));
            }
        }
        for (name, split) in &self.splits {
            if !inside_dataset(name) || name.contains('/') {
                return Err(format!("split name {name:?} is not a plain directory name"));
            }
            let (mut tokens, mut docs) = (0u64, 0u64);
            for s in &split.shards {
                for file in [Some(&s.bin), Some(&s.idx), s.mask.as_ref()]
                    .into_iter()
                    .flatten()
                {
                    if !inside_dataset(file) {
                        return Err(format!(
                            "shard path {file:?} leaves the dataset directory (must be relative, \
                             without ..)"
                        ));
                    }
                }
                tokens = tokens
                    .checked_add(s.tokens)
                    .ok_or_else(|| format!("split {name}: token counts overflow"))?;
                docs = docs
                    .checked_add(s.docs)
                    .ok_or_else(|| format!("split {name}: document counts overflow"))?;
            }
            if (tokens, docs) != (split.tokens, split.docs) {
                return Err(format!(
                    "split {name}: {} tokens and {} documents, but its shards hold {tokens} and {docs}",
                    split.tokens, split.docs
                ));
            }
        }
        Ok(())
    }
}

/// Arguments that say how a run ran, not what it made.
const RUN_ONLY_ARGS: [&str; 4] = ["output", "threads", "progress", "overwrite"];

/// A run's `args` for comparing what two runs made: without the arguments
/// that only say how a run ran (output, threads, progress, overwrite) and
/// those named in `also`.
pub fn comparable_args(args: &Value, also: &[&str]) -> Value {
    let mut args = args.clone();
    if let Some(map) = args.as_object_mut() {
        for key in RUN_ONLY_ARGS.iter().chain(also) {
            map.remove(*key);
        }
    }
    args
}

/// Whether a path from a manifest stays inside the dataset: relative and
/// made of plain names only (no root, no `..`).
pub(crate) fn inside_dataset(rel: &str) -> bool {
    !rel.is_empty()
        && Path::new(rel)
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_without_documents_names_its_commonest_reason() {
        let mut totals = FileStats {
            lines: 5,
            ..FileStats::default()
        };
        totals.skipped.insert("malformed_json".into(), 1);
        totals.skipped.insert("missing_field".into(), 3);
        totals.filtered.insert("too_short".into(), 1);
        let examples = vec!["a.jsonl:1: malformed_json (x)".to_string()];
        let hint = |r: &str| {
            if r == "missing_field" {
                "check text_field"
            } else {
                ""
            }
        };
        assert!(totals.require_documents(true, &examples, hint).is_ok());
        let err = totals
            .require_documents(false, &examples, hint)
            .unwrap_err();
        assert!(matches!(err, TokenmillError::NoDocuments { .. }));
        assert_eq!(
            err.to_string(),
            "no documents kept from 5 lines (3 missing_field): check text_field; \
             pass allow_empty=True to accept an empty result\n  e.g. a.jsonl:1: malformed_json (x)"
        );
        let empty = FileStats::default();
        assert_eq!(
            empty.require_documents(false, &[], hint).unwrap_err().to_string(),
            "no documents kept: the inputs hold no lines; pass allow_empty=True to accept an empty result"
        );
        totals.docs = 1;
        assert!(totals.require_documents(false, &examples, hint).is_ok());
    }

    fn manifest_with(dtype: &str, bin: &str, split_tokens: u64) -> String {
        serde_json::json!({
            "format": FORMAT, "format_version": FORMAT_VERSION, "kind": "pretrain",
            "tokenmill_version": "0", "dtype": dtype, "bos_added": false, "eos_added": true,
            "tokenizer": {"path": "t", "fingerprint": "f", "vocab_size": 10, "bos_id": null,
                "eos_id": 1, "bos_token": null, "eos_token": "e", "pad_id": null,
                "pad_token": null, "parse_special": false, "backend": "fast",
                "reference_reason": null, "verify_fraction": 0.0, "verified_docs": 0},
            "splits": {"train": {"tokens": split_tokens, "docs": 1, "shards": [{
                "bin": bin, "idx": "train/00000.idx", "tokens": 3, "docs": 1,
                "bin_sha256": "", "idx_sha256": ""}]}},
            "inputs": [], "totals": FileStats::default(), "skipped_examples": [],
            "dedup": null, "chunking": null, "val_split": null, "args": null,
        })
        .to_string()
    }

    #[test]
    fn hostile_manifests_are_refused_by_name() {
        let path = Path::new("m.json");
        let ok = manifest_with("uint16", "train/00000.bin", 3);
        Manifest::parse(&ok, path).expect("a plain manifest parses");
        for (text, expected) in [
            (manifest_with("float64", "train/00000.bin", 3), "dtype"),
            (
                manifest_with("uint16", "../../etc/passwd", 3),
                "leaves the dataset",
            ),
            (
                manifest_with("uint16", "/etc/passwd", 3),
                "leaves the dataset",
            ),
            (
                manifest_with("uint16", "train/00000.bin", 4),
                "its shards hold 3",
            ),
            ("[]".to_string(), "not a tokenmill manifest"),
        ] {
            let err = Manifest::parse(&text, path).unwrap_err();
            assert!(matches!(err, TokenmillError::Corrupt { .. }), "{err}");
            assert!(err.to_string().contains(expected), "{err}");
        }
    }

    #[test]
    fn damaged_offsets_are_named() {
        use crate::shard::check_offsets;
        let le = |v: &[u64]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        assert_eq!(check_offsets(&le(&[0, 2, 5]), 2, 5), Ok(()));
        for (idx, expected) in [
            (le(&[0, 6, 5]), "decrease at entry 2"),
            (le(&[1, 2, 5]), "first offset is 1"),
            (le(&[0, 2, 7]), "last offset 7 is not the token count 5"),
            (le(&[0, 5]), "expected 2 documents"),
            (vec![0u8; 7], "7 bytes"),
        ] {
            let err = check_offsets(&idx, 2, 5).unwrap_err();
            assert!(err.contains(expected), "{err}");
        }
    }
}
