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
    /// A dataset failed a structural check while being read.
    Corrupt { path: PathBuf, message: String },
    /// The user interrupted the run (Ctrl-C); nothing partial looks complete.
    Interrupted,
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
                "{} already holds a dataset (manifest.json); pass --overwrite (overwrite=True) to replace it",
                path.display()
            ),
            TokenmillError::Corrupt { path, message } => {
                write!(f, "{}: {}", path.display(), message)
            }
            TokenmillError::Interrupted => f.write_str("interrupted"),
        }
    }
}

impl std::error::Error for TokenmillError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TokenmillError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
