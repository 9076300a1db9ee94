//! `merge`: one dataset over the shards of several datasets made alike (the
//! parts of a partitioned `prepare`, or runs over other inputs with the same
//! tokenizer and options), written as one manifest that lists their shards
//! where they are: no token byte is copied or moved.
//!
//! The datasets must lie inside the merged directory (`prepare -o
//! OUT/part-00000 ...`, then `merge OUT/part-* -o OUT`), because the paths
//! in a manifest stay inside its dataset. Rejected: copying the shards
//! (twice the disk and I/O of a corpus that outgrew one machine), moving
//! them (a killed merge would leave parts half moved), absolute paths or
//! `..` (a dataset must stay valid when moved, and must not name files
//! outside itself).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::{Result, TokenmillError};
use crate::input::MAX_EXAMPLES;
use crate::manifest::{comparable_args, inside_dataset, Manifest, MergedEntry};
use crate::shard::{write_json, ShardInfo};
use crate::verify::verify_manifest;

/// Every argument of a `merge` run.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MergeConfig {
    /// The datasets to merge, each a directory inside `output`.
    pub datasets: Vec<String>,
    /// The merged dataset's directory: only its `manifest.json` is written.
    pub output: String,
    /// Replace an existing `output/manifest.json`.
    #[serde(default)]
    pub overwrite: bool,
    /// Checksum threads; 0 = `TOKENMILL_THREADS` or all cores.
    #[serde(default)]
    pub threads: usize,
}

/// What `merge` returns.
#[derive(Debug, Serialize)]
pub struct MergeSummary {
    pub output: String,
    pub manifest: Manifest,
    pub seconds: f64,
}

/// One dataset to merge.
struct Source {
    /// As given, for messages.
    name: String,
    /// Relative to the merged dataset, `/`-separated.
    rel: String,
    manifest: Manifest,
    manifest_sha256: String,
}

/// Merges `cfg.datasets` into `cfg.output` (see the module docs). Checks
/// that they share tokenizer (fingerprint), dtype, BOS/EOS and options, and
/// that parts of a partitioned run are complete; verifies every shard
/// against its checksums before the merged manifest is written.
pub fn merge(cfg: &MergeConfig, interrupted: &dyn Fn() -> bool) -> Result<MergeSummary> {
    let started = Instant::now();
    if cfg.datasets.is_empty() {
        return Err(TokenmillError::Invalid("no datasets to merge".into()));
    }
    let out = PathBuf::from(&cfg.output);
    let root = std::fs::canonicalize(&out).map_err(|e| TokenmillError::io(&out, e))?;
    if out.join("manifest.json").exists() && !cfg.overwrite {
        return Err(TokenmillError::OutputExists(out));
    }
    let mut sources = cfg
        .datasets
        .iter()
        .map(|d| read_source(d, &root, &out))
        .collect::<Result<Vec<_>>>()?;
    order_parts(&mut sources)?;
    let first = &sources[0];
    for s in &sources[1..] {
        same_making(first, s)?;
    }
    for s in &sources {
        if interrupted() {
            return Err(TokenmillError::Interrupted);
        }
        let report = verify_manifest(&out.join(&s.rel), &s.manifest, cfg.threads)?;
        if !report.ok {
            return Err(TokenmillError::Corrupt {
                path: out.join(&s.rel),
                message: format!(
                    "fails verification, so it is not merged: {}",
                    report.errors.join("; ")
                ),
            });
        }
    }
    let manifest = merged_manifest(&sources, &out);
    write_json(&out.join("manifest.json"), &manifest)?;
    Ok(MergeSummary {
        output: out.display().to_string(),
        manifest,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Reads the manifest of dataset `name`, which must be a directory inside
/// `root` (the merged dataset, canonical; `out` as given, for messages).
fn read_source(name: &str, root: &Path, out: &Path) -> Result<Source> {
    let dir = std::fs::canonicalize(name).map_err(|e| TokenmillError::io(Path::new(name), e))?;
    let rel = dir
        .strip_prefix(root)
        .ok()
        .map(|r| {
            r.components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/")
        })
        .filter(|r| inside_dataset(r))
        .ok_or_else(|| {
            TokenmillError::Invalid(format!(
                "{name} is not inside {}: merge lists the shards of its datasets where they \
                 are, so they must be directories inside the merged one (prepare -o \
                 OUT/part-00000 ..., then merge OUT/part-* -o OUT)",
                out.display()
            ))
        })?;
    let path = dir.join("manifest.json");
    let text = std::fs::read(&path).map_err(|e| TokenmillError::io(&path, e))?;
    let manifest = Manifest::parse(&String::from_utf8_lossy(&text), &path)?;
    Ok(Source {
        name: name.to_string(),
        rel,
        manifest,
        manifest_sha256: format!("{:x}", Sha256::digest(&text)),
    })
}

/// Puts the parts of a partitioned run in part order and checks that every
/// part is there once; other datasets keep the order given. Parts and other
/// datasets do not mix.
fn order_parts(sources: &mut [Source]) -> Result<()> {
    let parts = sources.iter().filter(|s| s.manifest.part.is_some()).count();
    if parts == 0 {
        return check_unique(sources);
    }
    if parts < sources.len() {
        let plain = sources.iter().find(|s| s.manifest.part.is_none());
        return Err(TokenmillError::Invalid(format!(
            "{} is not a part of a partitioned run, but other datasets are: merge the parts \
             of one run, or datasets that are not parts",
            plain.map_or("", |s| &s.name)
        )));
    }
    sources.sort_by_key(|s| s.manifest.part.as_ref().map(|p| p.index));
    check_unique(sources)?;
    let first = sources[0].manifest.part.clone().expect("all are parts");
    let indices: Vec<usize> = sources
        .iter()
        .filter_map(|s| s.manifest.part.as_ref().map(|p| p.index))
        .collect();
    for s in sources.iter() {
        let p = s.manifest.part.as_ref().expect("all are parts");
        if (p.count, p.input_files, p.input_bytes)
            != (first.count, first.input_files, first.input_bytes)
        {
            return Err(TokenmillError::Invalid(format!(
                "{} is part {} of {} over {} input files ({} bytes), {} is part {} of {} over {} \
                 ({} bytes): not parts of one run",
                s.name,
                p.index,
                p.count,
                p.input_files,
                p.input_bytes,
                sources[0].name,
                first.index,
                first.count,
                first.input_files,
                first.input_bytes
            )));
        }
    }
    if let Some(missing) = (0..first.count).find(|i| !indices.contains(i)) {
        return Err(TokenmillError::Invalid(format!(
            "part {missing} of {} is missing (given: {})",
            first.count,
            indices
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    if indices.len() != first.count {
        return Err(TokenmillError::Invalid(format!(
            "a part is given twice (given: {indices:?})"
        )));
    }
    let files: usize = sources.iter().map(|s| s.manifest.inputs.len()).sum();
    if files != first.input_files {
        return Err(TokenmillError::Invalid(format!(
            "the parts list {files} input files, their run had {}",
            first.input_files
        )));
    }
    Ok(())
}

fn check_unique(sources: &[Source]) -> Result<()> {
    for (i, s) in sources.iter().enumerate() {
        if sources[..i].iter().any(|o| o.rel == s.rel) {
            return Err(TokenmillError::Invalid(format!(
                "{} is given twice",
                s.name
            )));
        }
    }
    Ok(())
}

/// An error naming the first thing in which `b` was made otherwise than
/// `a`: kind, tokenizer (fingerprint), dtype, BOS/EOS, or an argument (the
/// split rule's among them) other than those that only say how a run ran (and, for datasets
/// that are not parts of one run, their inputs).
fn same_making(a: &Source, b: &Source) -> Result<()> {
    let (ma, mb) = (&a.manifest, &b.manifest);
    let differs = |what: &str, va: String, vb: String| {
        Err(TokenmillError::Invalid(format!(
            "{} and {} were made differently, so they cannot be merged: {what} is {vb} in the \
             second, {va} in the first",
            a.name, b.name
        )))
    };
    if ma.kind != mb.kind {
        return differs("kind", ma.kind.clone(), mb.kind.clone());
    }
    if ma.tokenizer.fingerprint != mb.tokenizer.fingerprint {
        return differs(
            "the tokenizer fingerprint",
            format!("{} ({})", ma.tokenizer.fingerprint, ma.tokenizer.path),
            format!("{} ({})", mb.tokenizer.fingerprint, mb.tokenizer.path),
        );
    }
    if ma.dtype != mb.dtype {
        return differs("dtype", ma.dtype.clone(), mb.dtype.clone());
    }
    if (ma.bos_added, ma.eos_added) != (mb.bos_added, mb.eos_added) {
        let f = |m: &Manifest| format!("bos_added={} eos_added={}", m.bos_added, m.eos_added);
        return differs("BOS/EOS", f(ma), f(mb));
    }
    let also: &[&str] = if ma.part.is_some() {
        &["part"]
    } else {
        &["inputs", "part", "num_parts"]
    };
    let (aa, ab) = (
        comparable_args(&ma.args, also),
        comparable_args(&mb.args, also),
    );
    if aa != ab {
        let empty = serde_json::Map::new();
        let (oa, ob) = (
            aa.as_object().unwrap_or(&empty),
            ab.as_object().unwrap_or(&empty),
        );
        let key = oa
            .keys()
            .chain(ob.keys())
            .find(|k| oa.get(*k) != ob.get(*k))
            .cloned()
            .unwrap_or_default();
        let show = |o: &serde_json::Map<String, Value>| {
            o.get(&key).map_or("absent".into(), Value::to_string)
        };
        return differs(&format!("args.{key}"), show(oa), show(ob));
    }
    Ok(())
}

/// Adds the numbers under `keys` of `from` to those of `into`.
fn add_counts(into: &mut Value, from: &Value, keys: &[&str]) {
    for key in keys {
        let (Some(a), Some(b)) = (into.get(*key), from.get(*key)) else {
            continue;
        };
        let sum = match (a.as_u64(), b.as_u64()) {
            (Some(x), Some(y)) => Value::from(x.saturating_add(y)),
            _ => Value::from(a.as_f64().unwrap_or(0.0) + b.as_f64().unwrap_or(0.0)),
        };
        into[*key] = sum;
    }
}

/// The manifest over every source's shards, in order: settings from the
/// first, counts added up, arguments as the first's with every input and
/// the merged output.
fn merged_manifest(sources: &[Source], out: &Path) -> Manifest {
    let parts = sources[0].manifest.part.is_some();
    // The first source's settings and counts; the others' counts are added.
    let mut m = sources[0].manifest.clone();
    m.tokenmill_version = crate::VERSION.into();
    m.splits = BTreeMap::new();
    m.inputs = Vec::new();
    m.totals = Default::default();
    m.skipped_examples = Vec::new();
    m.tokenizer.verified_docs = 0;
    let mut inputs = Vec::new();
    for (i, s) in sources.iter().enumerate() {
        let sm = &s.manifest;
        for (name, split) in &sm.splits {
            let merged = m.splits.entry(name.clone()).or_default();
            merged.tokens += split.tokens;
            merged.docs += split.docs;
            let inside = |p: &str| format!("{}/{p}", s.rel);
            merged
                .shards
                .extend(split.shards.iter().map(|sh| ShardInfo {
                    bin: inside(&sh.bin),
                    idx: inside(&sh.idx),
                    mask: sh.mask.as_deref().map(inside),
                    ..sh.clone()
                }));
        }
        m.inputs.extend(sm.inputs.iter().cloned());
        m.totals.add(&sm.totals);
        m.skipped_examples
            .extend(sm.skipped_examples.iter().cloned());
        m.tokenizer.verified_docs += sm.tokenizer.verified_docs;
        // The parts of one run share their input arguments.
        if !parts || i == 0 {
            let specs = sm.args.get("inputs").and_then(Value::as_array);
            inputs.extend(specs.into_iter().flatten().cloned());
        }
        if i == 0 {
            continue;
        }
        add_counts(&mut m.dedup, &sm.dedup, &["removed"]);
        if let (Some(a), Some(b)) = (m.dedup.get_mut("minhash"), sm.dedup.get("minhash")) {
            let counts = [
                "docs",
                "removed",
                "clusters",
                "candidate_pairs",
                "verified_pairs",
                "rejected_pairs",
                "seconds",
            ];
            add_counts(a, b, &counts);
        }
        add_counts(&mut m.chunking, &sm.chunking, &["documents_in_pieces"]);
        if let (Some(a), Some(b)) = (m.sft.as_mut(), sm.sft.as_ref()) {
            add_counts(a, b, &["truncated", "inexact_turns", "masked_tokens"]);
        }
    }
    m.skipped_examples.truncate(MAX_EXAMPLES);
    if let Some(args) = m.args.as_object_mut() {
        args.insert("inputs".into(), Value::from(inputs));
        args.insert("output".into(), Value::from(out.display().to_string()));
        if parts {
            args.insert("part".into(), Value::Null);
        }
    }
    m.part = None;
    m.merged = Some(
        sources
            .iter()
            .map(|s| MergedEntry {
                path: s.rel.clone(),
                manifest_sha256: s.manifest_sha256.clone(),
            })
            .collect(),
    );
    m
}
