//! The claim-and-publish protocol of the tables whose rows are keyed by a
//! 64-bit hash and kept for the program's life (callsites, cross-free
//! pairs).
//!
//! A row moves `EMPTY → CLAIMING → READY`: the first task to swap the row's
//! tag from zero to its hash owns the row and writes the payload, then
//! publishes it with a Release store of `ready`; readers look at the payload
//! only after an Acquire load of `ready` sees it set. A task that finds its
//! own hash on a row still being written uses that row without waiting: the
//! hash is 64 bits, so the row is its key.

use crate::primitive::{loom_const_fn, AtomicU32, AtomicU64, Ordering};

/// The key half of a row.
pub(crate) struct Key {
    /// The key's hash, or zero while the row is empty.
    tag: AtomicU64,
    /// Non-zero once the payload is written.
    ready: AtomicU32,
}

impl Key {
    loom_const_fn! {
        pub(crate) fn new() -> Self {
            Self {
                tag: AtomicU64::new(0),
                ready: AtomicU32::new(0),
            }
        }
    }

    /// Whether the payload may be read (Acquire: it pairs with the
    /// claimer's Release).
    pub(crate) fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) != 0
    }
}

/// The index of the row for `tag` (never zero), probing at most `probes`
/// rows from the tag's home: a row already holding the key (`matches` says
/// so of a published row), or an empty row claimed for it, whose payload
/// `publish` writes before the row is published. `None` when no row is free
/// within reach.
pub(crate) fn find_or_claim<R>(
    rows: &[R],
    key: impl Fn(&R) -> &Key,
    tag: u64,
    probes: usize,
    publish: impl FnOnce(&R),
    matches: impl Fn(&R) -> bool,
) -> Option<usize> {
    let home = crate::hash::reduce(tag, rows.len());
    // From home to the end, then from the start back to home.
    let (wrapped, first) = rows.split_at(home.min(rows.len()));
    for (index, row) in (home..).zip(first).chain((0..).zip(wrapped)).take(probes) {
        let row_key = key(row);
        let mut found = row_key.tag.load(Ordering::Relaxed);
        if found == 0 {
            match row_key
                .tag
                .compare_exchange(0, tag, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => {
                    publish(row);
                    // Release publishes what `publish` wrote.
                    row_key.ready.store(1, Ordering::Release);
                    return Some(index);
                }
                Err(actual) => found = actual,
            }
        }
        if found == tag && (!row_key.is_ready() || matches(row)) {
            return Some(index);
        }
    }
    None
}
