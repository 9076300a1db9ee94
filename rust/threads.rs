//! Thread counts and the rayon pools every stage runs its work in.

use crate::error::{Result, TokenmillError};

/// Resolves a thread count: explicit, else `TOKENMILL_THREADS`, else all cores.
pub fn resolve_threads(requested: usize) -> usize {
    if requested > 0 {
        return requested;
    }
    std::env::var("TOKENMILL_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n: &usize| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// A rayon pool of `threads` workers named `tokenmill-{name}{i}`.
pub fn build_pool(threads: usize, name: &'static str) -> Result<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(move |i| format!("tokenmill-{name}{i}"))
        .build()
        .map_err(|e| TokenmillError::Invalid(format!("cannot start {threads} threads: {e}")))
}
