//! The one error type of the data core. The bindings map each variant to a
//! fitting Python exception in one place (`py.rs`).

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// Everything that can go wrong in the data core.
#[derive(Debug)]
pub enum TokenmillError {
    /// An I/O failure on a named path.
    Io { path: PathBuf, source: io::Error },
    /// A bad input line under `--strict`: names file, line and reason.
    BadLine {
        path: PathBuf,
        line: u64,
        reason: &'static str,
        detail: String,
    },
    /// The tokenizer could not be loaded or failed on a document.
    Tokenizer { path: PathBuf, message: String },
    /// An invalid argument or an inconsistent request (uint16 with a large vocab, ...).
    Invalid(String),
    /// The output directory already holds a dataset and overwriting was not asked for.
    OutputExists(PathBuf),
    /// A split directory of the output holds files tokenmill did not write
    /// (their names, the first few), and overwriting was not asked for.
    ForeignFiles { dir: PathBuf, names: Vec<String> },
    /// A dataset failed a structural check while being read.
    Corrupt { path: PathBuf, message: String },
    /// The user interrupted the run (Ctrl-C); nothing partial looks complete.
    Interrupted,
    /// A run kept no document and `allow_empty` was not given: nothing was
    /// finished. Names the commonest reason lines gave none, what to change
    /// for it, and the first bad line quoted.
    NoDocuments {
        lines: u64,
        /// The commonest reason: its name, its count and what to change
        /// for it ("" when nothing general can be said).
        reason: Option<(String, u64, &'static str)>,
        example: Option<String>,
    },
}

/// Result alias used across the crate.
pub type Result<T> = std::result::Result<T, TokenmillError>;

impl TokenmillError {
    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: &Path, source: io::Error) -> Self {
        TokenmillError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

impl fmt::Display for TokenmillError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenmillError::Io { path, source } => write!(f, "{}: {}", path.display(), source),
            TokenmillError::BadLine {
                path,
                line,
                reason,
                detail,
            } => {
                write!(f, "{}:{}: {}", path.display(), line, reason)?;
                if !detail.is_empty() {
                    write!(f, " ({detail})")?;
                }
                Ok(())
            }
            TokenmillError::Tokenizer { path, message } => {
                write!(f, "tokenizer {}: {}", path.display(), message)
            }
            TokenmillError::Invalid(message) => f.write_str(message),
            TokenmillError::OutputExists(path) => write!(
                f,
                "{} already holds a dataset (manifest.json); pass overwrite=True to replace it",
                path.display()
            ),
            TokenmillError::ForeignFiles { dir, names } => write!(
                f,
                "{} holds files tokenmill did not write ({}); move them or choose another \
                 output directory (overwrite=True keeps them and replaces only tokenmill's \
                 own NNNNN.bin/.idx/.mask files)",
                dir.display(),
                names.join(", ")
            ),
            TokenmillError::Corrupt { path, message } => {
                write!(f, "{}: {}", path.display(), message)
            }
            TokenmillError::Interrupted => f.write_str("interrupted"),
            TokenmillError::NoDocuments {
                lines,
                reason,
                example,
            } => {
                if *lines == 0 {
                    f.write_str("no documents kept: the inputs hold no lines")?;
                } else {
                    write!(f, "no documents kept from {}", counted(*lines, "line"))?;
                }
                match reason {
                    Some((name, n, "")) => write!(f, " ({n} {name})")?,
                    Some((name, n, hint)) => write!(f, " ({n} {name}): {hint}")?,
                    None => {}
                }
                f.write_str("; pass allow_empty=True to accept an empty result")?;
                if let Some(e) = example {
                    write!(f, "\n  e.g. {e}")?;
                }
                Ok(())
            }
        }
    }
}

/// The message a caught panic carried (`panic!("...")` with or without
/// arguments), or "no message".
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into())
}

/// `n` and `noun`, plural unless `n` is 1: "1 line", "2 lines".
fn counted(n: u64, noun: &str) -> String {
    format!("{n} {noun}{}", if n == 1 { "" } else { "s" })
}

impl std::error::Error for TokenmillError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TokenmillError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
