//! Thread counts and the rayon pools every stage runs its work in.

use rayon::prelude::*;

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

/// `f` of each of `items` on the current rayon pool, in order, each item a
/// task of its own. For a batch that ends before the next one starts:
/// rayon's default splitting cuts the batch into a few runs per thread
/// (quarters on two threads) and splits a run further only when another
/// thread steals from it, so up to a quarter of the batch could be left to
/// one thread while the others waited (3-17 ms of every 35 in `prepare`).
pub fn map_each<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync + Send) -> Vec<R> {
    items.par_iter().with_max_len(1).map(f).collect()
}
