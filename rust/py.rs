//! PyO3 bindings: the only module that knows about Python. Arguments are
//! extracted before the GIL is released, heavy work runs detached through
//! [`detached`], and results cross back as JSON strings or plain lists that
//! `python/tokenmill` turns into typed objects. Errors are converted in one
//! place, [`to_py`].

use std::path::Path;
use std::sync::{Mutex, PoisonError};

use arrow_array::ffi_stream::RecordBatchStreamReader;
use arrow_array::RecordBatchReader;
use pyo3::create_exception;
use pyo3::exceptions::{
    PyException, PyFileExistsError, PyFileNotFoundError, PyKeyboardInterrupt, PyOSError,
    PyPermissionError, PyValueError,
};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyCapsule, PyDict, PyString, PyTuple, PyType};

use crate::chunk::{chunk_files as run_chunk_files, ChunkConfig, Limit};
use crate::dedup::{
    dedup_files as run_dedup_files, dedup_texts as run_dedup_texts, DedupConfig, MinHashOptions,
};
use crate::error::TokenmillError as CoreError;
use crate::input::{
    Batcher, Budget, Corpus, InputSpec, MemoryTable, ReaderOptions, TxtMode, DEFAULT_MAX_LINE_BYTES,
};
use crate::minhash::{MinHasher, Shingling};
use crate::prepare::{prepare as run_prepare, PrepareConfig};
use crate::sft::{prepare_sft as run_prepare_sft, SftConfig};
use crate::threads::{build_pool, resolve_threads};
use crate::tokenize::{self, Backend, Encoder as CoreEncoder};

create_exception!(
    _core,
    TokenmillError,
    PyException,
    "Base class of tokenmill errors."
);
create_exception!(
    _core,
    BadLineError,
    TokenmillError,
    "A bad input line under strict mode; the message names file and line."
);
create_exception!(
    _core,
    TokenizerError,
    TokenmillError,
    "A tokenizer could not be loaded or used."
);
create_exception!(
    _core,
    NoDocumentsError,
    TokenmillError,
    "A run kept no document, so nothing was finished (allow_empty=True accepts that)."
);
create_exception!(
    _core,
    CorruptDatasetError,
    TokenmillError,
    "A dataset on disk does not match its manifest or format."
);

create_exception!(
    _core,
    InternalError,
    TokenmillError,
    "A bug in tokenmill (a Rust panic, caught at the boundary); the message says where."
);

/// The exception classes with two bases, a tokenmill one and a built-in one,
/// so that `except TokenmillError` and `except FileNotFoundError` (or
/// `OSError`, `ValueError`) both catch them. `create_exception!` takes one
/// base, so they are made with `type(name, bases, dict)` once.
struct MixedErrors {
    os: Py<PyType>,
    not_found: Py<PyType>,
    permission: Py<PyType>,
    exists: Py<PyType>,
    invalid: Py<PyType>,
}

impl MixedErrors {
    fn get(py: Python<'_>) -> PyResult<&'static MixedErrors> {
        static TYPES: PyOnceLock<MixedErrors> = PyOnceLock::new();
        TYPES.get_or_try_init(py, || {
            let make =
                |name: &str, bases: &[Bound<'_, PyType>], doc: &str| -> PyResult<Py<PyType>> {
                    let dict = PyDict::new(py);
                    dict.set_item("__module__", "tokenmill._core")?;
                    dict.set_item("__doc__", doc)?;
                    let bases = PyTuple::new(py, bases)?;
                    let ty = py.get_type::<PyType>().call1((name, bases, dict))?;
                    Ok(ty.cast_into::<PyType>()?.unbind())
                };
            let base = py.get_type::<TokenmillError>();
            let os = make(
                "TokenmillOSError",
                &[base.clone(), py.get_type::<PyOSError>()],
                "An I/O failure; errno, strerror and filename are set as on OSError.",
            )?;
            let os_bound = os.bind(py).clone();
            Ok(MixedErrors {
                not_found: make(
                    "TokenmillFileNotFoundError",
                    &[os_bound.clone(), py.get_type::<PyFileNotFoundError>()],
                    "A file or directory to read does not exist.",
                )?,
                permission: make(
                    "TokenmillPermissionError",
                    &[os_bound, py.get_type::<PyPermissionError>()],
                    "A file or directory could not be read or written for lack of permission.",
                )?,
                exists: make(
                    "OutputExistsError",
                    &[base.clone(), py.get_type::<PyFileExistsError>()],
                    "The output already holds a dataset, or files tokenmill did not write.",
                )?,
                invalid: make(
                    "InvalidOptionError",
                    &[base, py.get_type::<PyValueError>()],
                    "An invalid option or an inconsistent request.",
                )?,
                os,
            })
        })
    }
}

/// Maps every core error to the Python exception that fits it: a
/// `TokenmillError` subclass, also an `OSError` (with `errno`, `strerror`
/// and `filename`) for I/O failures. Ctrl-C stays `KeyboardInterrupt`.
fn to_py(e: CoreError) -> PyErr {
    Python::attach(|py| {
        let types = match MixedErrors::get(py) {
            Ok(types) => types,
            Err(err) => return err,
        };
        let ty = |ty: &Py<PyType>| ty.bind(py).clone();
        let msg = e.to_string();
        match e {
            CoreError::Io { path, source } => {
                use std::io::ErrorKind;
                let (class, errno) = match source.kind() {
                    ErrorKind::NotFound => (&types.not_found, Some(libc::ENOENT)),
                    ErrorKind::PermissionDenied => (&types.permission, Some(libc::EACCES)),
                    _ => (&types.os, None),
                };
                // OSError(errno, strerror, filename) sets the three attributes;
                // errors that did not come from the OS keep the message only
                // (or the errno their kind implies, with tokenmill's text).
                match source.raw_os_error().or(errno) {
                    Some(code) => PyErr::from_type(
                        ty(class),
                        (code, os_strerror(&source), path.display().to_string()),
                    ),
                    None => PyErr::from_type(ty(class), (msg,)),
                }
            }
            CoreError::BadLine { .. } => BadLineError::new_err(msg),
            CoreError::Tokenizer { .. } => TokenizerError::new_err(msg),
            CoreError::Invalid(_) => PyErr::from_type(ty(&types.invalid), (msg,)),
            CoreError::OutputExists(_) | CoreError::ForeignFiles { .. } => {
                PyErr::from_type(ty(&types.exists), (msg,))
            }
            CoreError::Corrupt { .. } => CorruptDatasetError::new_err(msg),
            CoreError::Interrupted => PyKeyboardInterrupt::new_err(msg),
            CoreError::NoDocuments { .. } => NoDocumentsError::new_err(msg),
        }
    })
}

/// The OS's text for an error, without Rust's " (os error N)" suffix
/// (Python prints the number itself: "[Errno 28] No space left on device").
fn os_strerror(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.rfind(" (os error ") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

/// `InvalidOptionError(msg)`: a `TokenmillError` that is also a `ValueError`.
fn invalid_err(msg: impl Into<String>) -> PyErr {
    let msg = msg.into();
    Python::attach(|py| match MixedErrors::get(py) {
        Ok(types) => PyErr::from_type(types.invalid.bind(py).clone(), (msg,)),
        Err(err) => err,
    })
}

/// Runs `f`, turning a Rust panic (a bug) into `InternalError` with the
/// panic's message instead of pyo3's `PanicException`, a `BaseException`
/// that `except Exception` misses. Every binding runs its body through this.
fn guarded<T>(f: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        Err(InternalError::new_err(format!(
            "internal error (a bug in tokenmill, please report it): {}",
            crate::error::panic_message(&*payload)
        )))
    })
}

/// Runs `f` with the GIL released and converts its error. `f` receives a
/// poll that reports Ctrl-C (it briefly re-attaches to run signal handlers).
fn detached<T: Send>(
    py: Python<'_>,
    f: impl FnOnce(&dyn Fn() -> bool) -> crate::Result<T> + Send,
) -> PyResult<T> {
    guarded(|| {
        py.detach(|| {
            let interrupted = || Python::attach(|py| py.check_signals().is_err());
            f(&interrupted)
        })
        .map_err(to_py)
    })
}

/// Tables in memory handed over with a configuration: `(name, table)`
/// pairs, each table an object with `__arrow_c_stream__` (a pyarrow
/// `Table` or `RecordBatchReader`).
type Tables<'py> = Vec<(String, Bound<'py, PyAny>)>;

/// Imports `tables` through the Arrow C stream interface: their batches
/// reference the exporter's buffers, nothing is copied. Read while the GIL
/// is held, so that an exporter that needs Python is served; the batches
/// are then plain Arrow memory any thread may read.
fn import_tables(tables: Tables<'_>) -> PyResult<Vec<MemoryTable>> {
    tables
        .into_iter()
        .map(|(name, table)| {
            let capsule = table.call_method0("__arrow_c_stream__")?;
            let capsule = capsule.cast::<PyCapsule>()?;
            let stream = capsule.pointer_checked(Some(c"arrow_array_stream"))?;
            // SAFETY: a capsule named "arrow_array_stream" holds an
            // `ArrowArrayStream` (the C stream interface); `from_raw` moves
            // it out and leaves a released stream for the capsule to drop.
            let reader = unsafe { RecordBatchStreamReader::from_raw(stream.as_ptr().cast()) }
                .map_err(|e| invalid_err(format!("{name}: {e}")))?;
            let schema = reader.schema();
            let batches = reader
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| invalid_err(format!("{name}: {e}")))?;
            Ok(MemoryTable {
                name,
                schema,
                batches: batches.into(),
            })
        })
        .collect()
}

fn json_err(e: serde_json::Error) -> PyErr {
    invalid_err(format!("invalid configuration: {e}"))
}

/// Runs the prepare pipeline on a JSON-encoded `PrepareConfig`; returns the
/// JSON summary (manifest plus timings).
#[pyfunction]
#[pyo3(signature = (config_json, tables = Vec::new()))]
fn prepare(py: Python<'_>, config_json: &str, tables: Tables<'_>) -> PyResult<String> {
    let mut cfg: PrepareConfig = serde_json::from_str(config_json).map_err(json_err)?;
    cfg.tables = import_tables(tables)?;
    let summary = detached(py, |interrupted| run_prepare(&cfg, interrupted))?;
    serde_json::to_string(&summary).map_err(json_err)
}

/// Runs the prepare-sft pipeline on a JSON-encoded `SftConfig`; returns the
/// JSON summary (manifest plus timings).
#[pyfunction]
#[pyo3(signature = (config_json, tables = Vec::new()))]
fn prepare_sft(py: Python<'_>, config_json: &str, tables: Tables<'_>) -> PyResult<String> {
    let mut cfg: SftConfig = serde_json::from_str(config_json).map_err(json_err)?;
    cfg.tables = import_tables(tables)?;
    let summary = detached(py, |interrupted| run_prepare_sft(&cfg, interrupted))?;
    serde_json::to_string(&summary).map_err(json_err)
}

/// Merges datasets (a JSON-encoded `MergeConfig`) into one manifest over
/// their shards; returns the JSON summary (manifest plus time).
#[pyfunction]
fn merge(py: Python<'_>, config_json: &str) -> PyResult<String> {
    let cfg: crate::merge::MergeConfig = serde_json::from_str(config_json).map_err(json_err)?;
    let summary = detached(py, |interrupted| crate::merge::merge(&cfg, interrupted))?;
    serde_json::to_string(&summary).map_err(json_err)
}

/// Verifies a dataset against its manifest; returns the JSON report.
#[pyfunction]
#[pyo3(signature = (path, threads = 0))]
fn verify(py: Python<'_>, path: &str, threads: usize) -> PyResult<String> {
    let report = detached(py, |_| crate::verify::verify(Path::new(path), threads))?;
    serde_json::to_string(&report).map_err(json_err)
}

/// The text of `root/manifest.json` after `Manifest::parse` checked it
/// (format, dtype, shard paths inside the dataset, split totals).
#[pyfunction]
fn read_manifest(py: Python<'_>, root: &str) -> PyResult<String> {
    detached(py, |_| {
        let path = Path::new(root).join("manifest.json");
        let text = std::fs::read_to_string(&path).map_err(|e| CoreError::io(&path, e))?;
        crate::manifest::Manifest::parse(&text, &path)?;
        Ok(text)
    })
}

/// Checks a shard's `.idx` file against its manifest counts (see
/// `shard::check_offsets`); raises CorruptDatasetError naming the file.
#[pyfunction]
fn check_index(py: Python<'_>, path: &str, docs: u64, tokens: u64) -> PyResult<()> {
    detached(py, |_| {
        let path = Path::new(path);
        let file = std::fs::File::open(path).map_err(|e| CoreError::io(path, e))?;
        // SAFETY: read-only map of a finished shard; tokenmill never
        // rewrites a finished file in place (writes go to NAME.tmp + rename).
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| CoreError::io(path, e))?;
        crate::shard::check_offsets(&map, docs, tokens).map_err(|message| CoreError::Corrupt {
            path: path.to_path_buf(),
            message,
        })
    })
}

/// Facts about a tokenizer as JSON: resolved path, fingerprint, vocab size,
/// special tokens, BOS default, the backend `auto` picks (and why) and
/// whether long documents are split.
#[pyfunction]
fn tokenizer_info(py: Python<'_>, path: &str) -> PyResult<String> {
    let (loaded, encoder) = detached(py, |_| {
        let loaded = tokenize::load(Path::new(path))?;
        let encoder = CoreEncoder::new(&loaded, None, None, false, Backend::Auto, 0.0)?;
        Ok((loaded, encoder))
    })?;
    let info = serde_json::json!({
        "path": loaded.json_path.display().to_string(),
        "fingerprint": loaded.fingerprint,
        "vocab_size": loaded.vocab_size,
        "bos": loaded.bos,
        "eos": loaded.eos,
        "pad": loaded.pad,
        "adds_bos": loaded.adds_bos,
        "long_documents_in_pieces": encoder.splits_long_documents(),
        "backend": encoder.backend_name(),
        "reference_reason": encoder.reference_reason,
    });
    Ok(info.to_string())
}

/// Doc-mode packing plan for documents of the given lengths (little-endian
/// `uint64` bytes): `(pieces, block_starts)` as little-endian `uint64` bytes,
/// pieces as `(doc, start, len)` triples; see `rust/pack.rs`.
#[pyfunction]
fn pack_documents<'py>(
    py: Python<'py>,
    lengths: &[u8],
    block_size: u64,
) -> PyResult<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)> {
    if !lengths.len().is_multiple_of(8) {
        return Err(invalid_err("lengths must be little-endian uint64 bytes"));
    }
    let lengths: Vec<u64> = lengths
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect();
    let plan = detached(py, |_| crate::pack::pack_documents(&lengths, block_size))?;
    let mut pieces = Vec::with_capacity(plan.pieces.len() * 24);
    for p in &plan.pieces {
        for v in [p.doc, p.start, p.len] {
            pieces.extend_from_slice(&v.to_le_bytes());
        }
    }
    let starts: Vec<u8> = plan
        .block_starts
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    Ok((PyBytes::new(py, &pieces), PyBytes::new(py, &starts)))
}

/// The data core's encoder, for direct use and for tests: same ids as the
/// shards `prepare` writes.
#[pyclass(module = "tokenmill._core", frozen)]
struct Encoder {
    inner: CoreEncoder,
}

#[pymethods]
impl Encoder {
    #[new]
    #[pyo3(signature = (tokenizer, parse_special = false, add_bos = false, add_eos = false, backend = "auto", verify_fraction = 0.0))]
    fn new(
        py: Python<'_>,
        tokenizer: &str,
        parse_special: bool,
        add_bos: bool,
        add_eos: bool,
        backend: &str,
        verify_fraction: f64,
    ) -> PyResult<Self> {
        let backend: Backend =
            serde_json::from_value(serde_json::Value::from(backend)).map_err(|_| {
                invalid_err(format!(
                    "backend must be auto, fast or reference, got {backend:?}"
                ))
            })?;
        let loaded = detached(py, |_| tokenize::load(Path::new(tokenizer)))?;
        let special = |t: &Option<tokenize::SpecialToken>, name: &str| {
            t.as_ref()
                .map(|t| t.id)
                .ok_or_else(|| invalid_err(format!("tokenizer defines no {name} token")))
        };
        let bos = if add_bos {
            Some(special(&loaded.bos, "BOS")?)
        } else {
            None
        };
        let eos = if add_eos {
            Some(special(&loaded.eos, "EOS")?)
        } else {
            None
        };
        let inner = detached(py, |_| {
            CoreEncoder::new(&loaded, bos, eos, parse_special, backend, verify_fraction)
        })?;
        Ok(Encoder { inner })
    }

    /// The engine that produces the ids: ``"fast"`` or ``"tokenizers"``.
    #[getter]
    fn backend(&self) -> &'static str {
        self.inner.backend_name()
    }

    /// Ids of each text, computed on `threads` workers with the GIL released.
    #[pyo3(signature = (texts, threads = 0))]
    fn encode_batch(
        &self,
        py: Python<'_>,
        texts: Vec<String>,
        threads: usize,
    ) -> PyResult<Vec<Vec<u32>>> {
        let threads = resolve_threads(threads);
        detached(py, |_| {
            let pool = build_pool(threads, "encode")?;
            let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
            pool.install(|| self.inner.encode_many(&texts))
                .map(|batch| batch.ids)
                .map_err(|(_, e)| e)
        })
    }

    /// Ids of all texts in one flat buffer, with the GIL released: returns
    /// ``(ids, offsets)`` as bytes, little-endian ``uint32`` ids and
    /// ``uint64`` offsets (``len(texts) + 1`` of them, text ``i`` is
    /// ``ids[offsets[i]:offsets[i + 1]]``); ``numpy.frombuffer`` reads them
    /// without a copy.
    #[pyo3(signature = (texts, threads = 0))]
    fn encode_flat<'py>(
        &self,
        py: Python<'py>,
        texts: Vec<String>,
        threads: usize,
    ) -> PyResult<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)> {
        let ids = self.encode_batch(py, texts, threads)?;
        let mut flat = Vec::with_capacity(ids.iter().map(|v| v.len() * 4).sum());
        let mut offsets = Vec::with_capacity((ids.len() + 1) * 8);
        let mut n = 0u64;
        offsets.extend_from_slice(&n.to_le_bytes());
        for doc in &ids {
            doc.iter()
                .for_each(|id| flat.extend_from_slice(&id.to_le_bytes()));
            n += doc.len() as u64;
            offsets.extend_from_slice(&n.to_le_bytes());
        }
        Ok((PyBytes::new(py, &flat), PyBytes::new(py, &offsets)))
    }

    /// The byte ranges a long text is encoded in (one range for short texts).
    fn pieces(&self, text: &str) -> PyResult<Vec<(usize, usize)>> {
        guarded(|| {
            Ok(self
                .inner
                .pieces(text)
                .into_iter()
                .map(|r| (r.start, r.end))
                .collect())
        })
    }
}

/// The UTF-8 of Python strings, borrowed (no copy): the list keeps them
/// alive while the GIL is released, and a `str` never changes.
fn borrow_strs<'a>(texts: &'a [Bound<'_, PyString>]) -> PyResult<Vec<&'a str>> {
    texts.iter().map(|t| t.to_str()).collect()
}

/// Documents per task of [`minhash`].
const MINHASH_TASK_DOCS: usize = 64;

/// MinHash signatures of `texts`, `num_perm` little-endian ``uint32`` per
/// text, computed on `threads` workers straight into the returned bytes
/// object (``numpy.frombuffer`` then wraps it without a copy).
///
/// Borrowing a text's UTF-8 needs the GIL, and for a non-ASCII `str`
/// CPython encodes it then (once, cached): about a sixth of a 2-thread call
/// on the bench corpus, single-threaded. So this thread borrows the texts
/// task by task with the GIL held and sends each task to the workers (plain
/// scoped threads that never touch Python) at once; they compute while it
/// goes on, and it releases the GIL to wait for them. On the 40M bench
/// corpus, idle machine, first call on new `str` objects: 0.103 s against
/// 0.119 s when all texts were borrowed before the workers started (2
/// threads), 0.159 s against 0.181 s (1 thread). Rejected: workers taking
/// the GIL for their own tasks (slower: a Python thread state per attach).
#[pyfunction]
#[pyo3(signature = (texts, num_perm = 128, shingle = "auto", ngram = 5, seed = 1, threads = 0))]
fn minhash<'py>(
    py: Python<'py>,
    texts: Vec<Bound<'py, PyString>>,
    num_perm: usize,
    shingle: &str,
    ngram: usize,
    seed: u64,
    threads: usize,
) -> PyResult<Bound<'py, PyBytes>> {
    let shingling = Shingling::parse(shingle, ngram).map_err(to_py)?;
    let hasher = MinHasher::new(num_perm, shingling, seed).map_err(to_py)?;
    let row = num_perm * 4;
    let tasks = texts.len().div_ceil(MINHASH_TASK_DOCS);
    let workers = resolve_threads(threads).min(tasks).max(1);
    PyBytes::new_with(py, texts.len() * row, |buf| {
        std::thread::scope(|scope| {
            let (tx, rx) = crossbeam_channel::unbounded::<(&mut [u8], Vec<&str>)>();
            let handles: Vec<_> = (0..workers)
                .map(|_| {
                    let rx = rx.clone();
                    let hasher = &hasher;
                    scope.spawn(move || {
                        let mut sig = vec![0u32; num_perm];
                        for (out, strs) in rx {
                            for (out, text) in out.chunks_exact_mut(row).zip(strs) {
                                hasher.signature_into(text, &mut sig);
                                for (o, v) in out.chunks_exact_mut(4).zip(&sig) {
                                    o.copy_from_slice(&v.to_le_bytes());
                                }
                            }
                        }
                    })
                })
                .collect();
            drop(rx);
            let mut borrowed = Ok(());
            let chunks = buf.chunks_mut(row * MINHASH_TASK_DOCS);
            for (out, texts) in chunks.zip(texts.chunks(MINHASH_TASK_DOCS)) {
                match borrow_strs(texts) {
                    // The channel is unbounded, so sending never blocks with
                    // the GIL held; it fails only when every worker is gone
                    // (a panic, reported by the joins below).
                    Ok(strs) => {
                        if tx.send((out, strs)).is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        borrowed = Err(e);
                        break;
                    }
                }
            }
            drop(tx);
            detached(py, |_| {
                // Join every worker, so that the scope has none left to panic
                // on; a worker's panic goes on here, where `guarded` turns it
                // into InternalError.
                let mut panic = None;
                for h in handles {
                    if let Err(payload) = h.join() {
                        panic.get_or_insert(payload);
                    }
                }
                if let Some(payload) = panic {
                    std::panic::resume_unwind(payload);
                }
                Ok(())
            })?;
            borrowed
        })
    })
}

/// The shingles of one text and the kind used (``word`` or ``char``), for
/// checking the normalisation against a reference.
#[pyfunction]
#[pyo3(signature = (text, shingle = "auto", ngram = 5))]
fn shingles(text: &str, shingle: &str, ngram: usize) -> PyResult<(String, Vec<String>)> {
    guarded(|| {
        let shingling = Shingling::parse(shingle, ngram).map_err(to_py)?;
        let (kind, out) = crate::minhash::shingles(text, shingling);
        Ok((kind.name().to_owned(), out))
    })
}

fn roots_bytes<'py>(py: Python<'py>, roots: &[u32]) -> Bound<'py, PyBytes> {
    let mut bytes = Vec::with_capacity(roots.len() * 4);
    roots
        .iter()
        .for_each(|r| bytes.extend_from_slice(&r.to_le_bytes()));
    PyBytes::new(py, &bytes)
}

/// Near-duplicate clusters of texts in memory: ``(roots, stats_json)`` where
/// `roots` holds the little-endian ``uint32`` root (first member) of each
/// text's cluster.
#[pyfunction]
#[pyo3(signature = (texts, options_json, threads = 0))]
fn dedup_texts<'py>(
    py: Python<'py>,
    texts: Vec<Bound<'py, PyString>>,
    options_json: &str,
    threads: usize,
) -> PyResult<(Bound<'py, PyBytes>, String)> {
    let opts: MinHashOptions = serde_json::from_str(options_json).map_err(json_err)?;
    let refs = borrow_strs(&texts)?;
    let (roots, stats, (bands, rows)) = detached(py, |_| run_dedup_texts(&refs, &opts, threads))?;
    let info = serde_json::json!({"stats": stats, "bands": bands, "rows": rows});
    Ok((roots_bytes(py, &roots), info.to_string()))
}

/// Runs `dedup` over files from a JSON-encoded `DedupConfig`: ``(roots,
/// summary_json)``.
#[pyfunction]
#[pyo3(signature = (config_json, tables = Vec::new()))]
fn dedup_files<'py>(
    py: Python<'py>,
    config_json: &str,
    tables: Tables<'py>,
) -> PyResult<(Bound<'py, PyBytes>, String)> {
    let mut cfg: DedupConfig = serde_json::from_str(config_json).map_err(json_err)?;
    cfg.tables = import_tables(tables)?;
    let (summary, roots) = detached(py, |interrupted| run_dedup_files(&cfg, interrupted))?;
    let summary = serde_json::to_string(&summary).map_err(json_err)?;
    Ok((roots_bytes(py, &roots), summary))
}

/// Dedup stage 1 over one input part (a JSON-encoded `SignaturesConfig`);
/// returns the part's JSON record.
#[pyfunction]
#[pyo3(signature = (config_json, tables = Vec::new()))]
fn dedup_signatures(py: Python<'_>, config_json: &str, tables: Tables<'_>) -> PyResult<String> {
    let mut cfg: crate::dedup_stages::SignaturesConfig =
        serde_json::from_str(config_json).map_err(json_err)?;
    cfg.tables = import_tables(tables)?;
    let done = detached(py, |interrupted| {
        crate::dedup_stages::signatures(&cfg, interrupted)
    })?;
    serde_json::to_string(&done).map_err(json_err)
}

/// Dedup stage 2 for one bucket of the stages in `work`; returns its JSON record.
#[pyfunction]
fn dedup_buckets(py: Python<'_>, work: &str, bucket: usize) -> PyResult<String> {
    let done = detached(py, |_| {
        crate::dedup_stages::bucket_edges(Path::new(work), bucket)
    })?;
    serde_json::to_string(&done).map_err(json_err)
}

/// Dedup stage 3 over the stages in `work`; returns its JSON manifest.
#[pyfunction]
fn dedup_clusters(py: Python<'_>, work: &str) -> PyResult<String> {
    let m = detached(py, |_| crate::dedup_stages::clusters(Path::new(work)))?;
    serde_json::to_string(&m).map_err(json_err)
}

/// Chunk spans of each text as ``(start, end)`` character offsets.
#[pyfunction]
#[pyo3(signature = (texts, max_chars = None, max_tokens = None, tokenizer = None, overlap = 0, threads = 0))]
fn chunk_spans<'py>(
    py: Python<'py>,
    texts: Vec<Bound<'py, PyString>>,
    max_chars: Option<usize>,
    max_tokens: Option<usize>,
    tokenizer: Option<&str>,
    overlap: usize,
    threads: usize,
) -> PyResult<Vec<Vec<(usize, usize)>>> {
    let threads = resolve_threads(threads);
    let texts = borrow_strs(&texts)?;
    detached(py, |_| {
        let limit = Limit::new(max_chars, max_tokens, tokenizer)?;
        crate::chunk::chunk_char_spans(&texts, &limit, overlap, threads)
    })
}

/// Runs `chunk` over files from a JSON-encoded `ChunkConfig`; returns the
/// JSON summary.
#[pyfunction]
#[pyo3(signature = (config_json, tables = Vec::new()))]
fn chunk_files(py: Python<'_>, config_json: &str, tables: Tables<'_>) -> PyResult<String> {
    let mut cfg: ChunkConfig = serde_json::from_str(config_json).map_err(json_err)?;
    cfg.tables = import_tables(tables)?;
    let summary = detached(py, |interrupted| run_chunk_files(&cfg, interrupted))?;
    serde_json::to_string(&summary).map_err(json_err)
}

/// Streams document texts out of the same inputs `prepare` reads, in
/// batches (lists of str) within [`Budget::HELD`]'s bytes; bad lines are
/// skipped and counted in `skipped`.
#[pyclass(module = "tokenmill._core")]
struct TextBatches {
    state: Mutex<(Corpus, Batcher<String>)>,
}

#[pymethods]
impl TextBatches {
    #[new]
    #[pyo3(signature = (inputs, tables = Vec::new(), text_field = "text", txt_mode = "line", max_line_bytes = DEFAULT_MAX_LINE_BYTES as usize, batch_docs = Budget::HELD.docs))]
    fn new(
        inputs: Vec<Bound<'_, PyAny>>,
        tables: Tables<'_>,
        text_field: &str,
        txt_mode: &str,
        max_line_bytes: usize,
        batch_docs: usize,
    ) -> PyResult<Self> {
        let mode = match txt_mode {
            "line" => TxtMode::Line,
            "file" => TxtMode::File,
            other => {
                return Err(invalid_err(format!(
                    "txt_mode must be line or file, not {other:?}"
                )))
            }
        };
        let opts = ReaderOptions::new(text_field, mode, max_line_bytes).map_err(to_py)?;
        // Each input is a path, or a table spec as configurations give it.
        let specs = inputs
            .iter()
            .map(|x| match x.extract::<String>() {
                Ok(path) => Ok(InputSpec::Path(path)),
                Err(_) => Ok(InputSpec::Table {
                    table: x.get_item("table")?.extract()?,
                }),
            })
            .collect::<PyResult<Vec<_>>>()?;
        let tables = import_tables(tables)?;
        let corpus = Corpus::open(&specs, &tables, &[], opts, false).map_err(to_py)?;
        let budget = Budget {
            docs: batch_docs,
            ..Budget::HELD
        };
        Ok(TextBatches {
            state: Mutex::new((corpus, Batcher::new(budget))),
        })
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Vec<String>>> {
        detached(py, |_| {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            let (corpus, batcher) = &mut *state;
            batcher.next_batch(|| {
                let doc = corpus.next_doc()?;
                Ok(doc.map(|d| {
                    let bytes = d.text.len();
                    (d.text, bytes)
                }))
            })
        })
    }

    /// Skipped lines so far, by reason.
    #[getter]
    fn skipped(&self) -> std::collections::BTreeMap<String, u64> {
        // A panic (a bug, raised as InternalError) while the lock was held
        // must not fail every later call: the state is kept as it was.
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.0.stats().totals().skipped
    }
}

/// Panics with `message`, on the calling thread or on a worker thread of a
/// pool; for the tests of the panic boundary ([`guarded`]) only.
#[pyfunction]
#[pyo3(signature = (message, in_worker = false))]
fn _panic_for_tests(py: Python<'_>, message: &str, in_worker: bool) -> PyResult<()> {
    detached(py, |_| {
        if in_worker {
            let pool = build_pool(2, "panic")?;
            pool.install(|| rayon::join(|| panic!("{message}"), || ()));
        }
        panic!("{message}")
    })
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("__version__", crate::VERSION)?;
    m.add("DEFAULT_MAX_LINE_BYTES", DEFAULT_MAX_LINE_BYTES)?;
    m.add("TokenmillError", py.get_type::<TokenmillError>())?;
    m.add("BadLineError", py.get_type::<BadLineError>())?;
    m.add("TokenizerError", py.get_type::<TokenizerError>())?;
    m.add("CorruptDatasetError", py.get_type::<CorruptDatasetError>())?;
    m.add("NoDocumentsError", py.get_type::<NoDocumentsError>())?;
    m.add("InternalError", py.get_type::<InternalError>())?;
    let mixed = MixedErrors::get(py)?;
    for ty in [
        &mixed.os,
        &mixed.not_found,
        &mixed.permission,
        &mixed.exists,
        &mixed.invalid,
    ] {
        let ty = ty.bind(py);
        m.add(ty.name()?, ty)?;
    }
    m.add_function(wrap_pyfunction!(prepare, m)?)?;
    m.add_function(wrap_pyfunction!(prepare_sft, m)?)?;
    m.add_function(wrap_pyfunction!(merge, m)?)?;
    m.add_function(wrap_pyfunction!(verify, m)?)?;
    m.add_function(wrap_pyfunction!(read_manifest, m)?)?;
    m.add_function(wrap_pyfunction!(check_index, m)?)?;
    m.add_function(wrap_pyfunction!(tokenizer_info, m)?)?;
    m.add_function(wrap_pyfunction!(pack_documents, m)?)?;
    m.add_function(wrap_pyfunction!(minhash, m)?)?;
    m.add_function(wrap_pyfunction!(shingles, m)?)?;
    m.add_function(wrap_pyfunction!(dedup_texts, m)?)?;
    m.add_function(wrap_pyfunction!(dedup_files, m)?)?;
    m.add_function(wrap_pyfunction!(dedup_signatures, m)?)?;
    m.add_function(wrap_pyfunction!(dedup_buckets, m)?)?;
    m.add_function(wrap_pyfunction!(dedup_clusters, m)?)?;
    m.add_function(wrap_pyfunction!(chunk_spans, m)?)?;
    m.add_function(wrap_pyfunction!(chunk_files, m)?)?;
    m.add_function(wrap_pyfunction!(_panic_for_tests, m)?)?;
    m.add_class::<Encoder>()?;
    m.add_class::<TextBatches>()?;
    Ok(())
}
