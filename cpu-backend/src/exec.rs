//! Where work runs: on the calling thread, or on the backend's own rayon
//! pool (never the global one). Every op splits its work into items that do
//! not depend on the thread count, so both paths give the same answer.

use std::sync::Arc;

use rayon::ThreadPool;
use rayon::prelude::*;

/// The executor of one backend.
#[derive(Clone, Debug)]
pub(crate) enum Exec {
    /// Items run in order on the calling thread.
    Seq,
    /// Items run on this pool.
    Pool(Arc<ThreadPool>),
}

impl Exec {
    /// Runs `f` on every item.
    pub(crate) fn for_each<T: Send>(&self, items: Vec<T>, f: impl Fn(T) + Sync + Send) {
        match self {
            Exec::Seq => items.into_iter().for_each(f),
            Exec::Pool(pool) => pool.install(|| items.into_par_iter().for_each(f)),
        }
    }

    /// `f` of every item, consuming the items, in item order.
    pub(crate) fn map_into<T: Send, R: Send>(
        &self,
        items: Vec<T>,
        f: impl Fn(T) -> R + Sync + Send,
    ) -> Vec<R> {
        match self {
            Exec::Seq => items.into_iter().map(f).collect(),
            Exec::Pool(pool) => pool.install(|| items.into_par_iter().map(f).collect()),
        }
    }

    /// `f` of every item, in item order.
    pub(crate) fn map<T: Sync, R: Send>(
        &self,
        items: &[T],
        f: impl Fn(&T) -> R + Sync + Send,
    ) -> Vec<R> {
        match self {
            Exec::Seq => items.iter().map(f).collect(),
            Exec::Pool(pool) => pool.install(|| items.par_iter().map(f).collect()),
        }
    }

    /// Folds the items into per-task states (`init`, `step`), then turns the
    /// states into results (`finish`) and combines them (`merge`). The
    /// number of states depends on the thread count, so `merge` must be
    /// associative and commutative on the results (integer counts are).
    pub(crate) fn fold<T, S, R>(
        &self,
        items: &[T],
        init: impl Fn() -> S + Sync + Send,
        step: impl Fn(S, &T) -> S + Sync + Send,
        finish: impl Fn(S) -> R + Sync + Send,
        merge: impl Fn(R, R) -> R + Sync + Send,
    ) -> R
    where
        T: Sync,
        S: Send,
        R: Send,
    {
        match self {
            Exec::Seq => finish(items.iter().fold(init(), step)),
            Exec::Pool(pool) => pool.install(|| {
                // A few states per thread: each can be large (a histogram),
                // and a split down to single items would allocate one each.
                let per = items.len().div_ceil(4 * pool.current_num_threads()).max(1);
                items
                    .par_iter()
                    .with_min_len(per)
                    .fold(&init, &step)
                    .map(&finish)
                    .reduce_with(&merge)
                    .unwrap_or_else(|| finish(init()))
            }),
        }
    }

    /// Whether items run on a pool.
    pub(crate) fn is_parallel(&self) -> bool {
        matches!(self, Exec::Pool(_))
    }
}

impl Exec {
    /// Runs `f` with faer's parallelism for this executor: sequential, or
    /// `threads` threads inside this pool.
    pub(crate) fn faer<R: Send>(&self, threads: usize, f: impl FnOnce(faer::Par) -> R + Send) -> R {
        match self {
            Exec::Seq => f(faer::Par::Seq),
            Exec::Pool(pool) => pool.install(|| f(faer::Par::rayon(threads.max(1)))),
        }
    }
}
