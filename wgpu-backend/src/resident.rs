//! Matrices kept in device memory across [`prunus_core::Dense`] calls.
//!
//! A caller that will name a matrix in many calls retains it
//! ([`prunus_core::Dense::retain`]): its f32 copy is uploaded once and kept
//! under the matrix's [`Matrix::id`], and every later call that names a
//! matrix with that id binds the copy instead of uploading the matrix again.
//! Ids change whenever a matrix is mutated, so a copy is never stale; a
//! copy is exactly what an upload of the matrix would be, so results do not
//! depend on what is kept. The kept bytes stay within a budget: a matrix
//! that would exceed it is not kept (and is uploaded per call, as before).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use prunus_core::Matrix;

use crate::context::{Buf, lock};

/// The default budget of kept matrices, in bytes of device memory.
pub const DEFAULT_BUDGET: u64 = 2 << 30;

/// The kept matrices of one device (shared by every clone of a backend).
pub(crate) struct Residents {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    kept: HashMap<u64, Kept>,
    bytes: u64,
    budget: u64,
}

struct Kept {
    buf: Arc<Buf>,
    bytes: u64,
    /// How many retains name this copy (clones of a matrix share an id).
    holds: usize,
}

impl Residents {
    /// No kept matrices, the [`DEFAULT_BUDGET`].
    pub(crate) fn new() -> Self {
        Residents {
            state: Mutex::new(State {
                budget: DEFAULT_BUDGET,
                ..State::default()
            }),
        }
    }

    /// Sets the budget; kept matrices stay until released.
    pub(crate) fn set_budget(&self, bytes: u64) {
        lock(&self.state).budget = bytes;
    }

    /// The bytes kept now.
    pub(crate) fn bytes(&self) -> u64 {
        lock(&self.state).bytes
    }

    /// The copy kept of `m`, if any.
    pub(crate) fn get(&self, m: &Matrix) -> Option<Arc<Buf>> {
        if m.id() == 0 {
            return None;
        }
        lock(&self.state)
            .kept
            .get(&m.id())
            .map(|k| Arc::clone(&k.buf))
    }

    /// Whether a copy of `m` is kept.
    pub(crate) fn holds(&self, m: &Matrix) -> bool {
        m.id() != 0 && lock(&self.state).kept.contains_key(&m.id())
    }

    /// Counts one more retain of `m` if a copy is kept: `true` then.
    pub(crate) fn hold_again(&self, m: &Matrix) -> bool {
        if m.id() == 0 {
            return false;
        }
        match lock(&self.state).kept.get_mut(&m.id()) {
            Some(k) => {
                k.holds += 1;
                true
            }
            None => false,
        }
    }

    /// Whether `bytes` more fit the budget (a matrix without identity never
    /// fits).
    pub(crate) fn fits(&self, m: &Matrix, bytes: u64) -> bool {
        let s = lock(&self.state);
        m.id() != 0 && s.bytes.saturating_add(bytes) <= s.budget
    }

    /// Keeps `buf` as the copy of `m` (`bytes` of it count against the
    /// budget): `false`, and nothing kept, where that would exceed it.
    pub(crate) fn keep(&self, m: &Matrix, buf: Buf, bytes: u64) -> bool {
        let mut s = lock(&self.state);
        if m.id() == 0 || s.bytes.saturating_add(bytes) > s.budget {
            return false;
        }
        if let Some(k) = s.kept.get_mut(&m.id()) {
            k.holds += 1;
            return true;
        }
        s.bytes += bytes;
        s.kept.insert(
            m.id(),
            Kept {
                buf: Arc::new(buf),
                bytes,
                holds: 1,
            },
        );
        true
    }

    /// Undoes one retain of `m`; the copy goes when none is left.
    pub(crate) fn release(&self, m: &Matrix) {
        let mut s = lock(&self.state);
        let gone = match s.kept.get_mut(&m.id()) {
            Some(k) if k.holds > 1 => {
                k.holds -= 1;
                None
            }
            Some(_) => s.kept.remove(&m.id()),
            None => None,
        };
        if let Some(k) = gone {
            s.bytes -= k.bytes;
        }
    }
}
