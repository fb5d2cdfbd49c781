//! The claim-and-publish protocol of the tables whose rows are keyed by a
//! 64-bit hash and kept for the program's life (callsites, cross-free
//! pairs).
//!
//! Rows are handed out densely, in the order they are first needed, by a
//! counter; an index of twice as many slots as rows maps each hash to its
//! row by open addressing. So every row can be used before the table counts
//! as full, a lookup meets an empty slot within a few probes (the index is
//! never more than half full), and the memory a table touches grows with
//! the rows in use: in a `static`, the untouched rows cost no resident
//! memory on a system that maps zero pages on demand.
//!
//! A row moves `unused → claimed → published`. The task that claims it (by
//! the counter) writes its hash and payload, then publishes it by swapping
//! an empty index slot to the row's number with Release; a lookup reads
//! the row only after an Acquire load of its slot, and a report only after
//! an Acquire load of the row's `ready` flag, which the claimer sets after
//! the swap. Two tasks meeting the same new key both claim a row; the one
//! whose swap lands second finds the other's row in that slot and uses it,
//! and hands its own back on a stack of spare rows, which the next claim
//! takes first, so no row is lost to the race. No task waits for another.
//!
//! A key is its 64-bit hash: two keys with the same hash share a row. For
//! `n` keys that happens with a probability of about `n² / 2⁶⁵` (below one
//! in a billion for a hundred thousand callsites).

use crate::primitive::{atomic_array, loom_const_fn, AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// An index slot: the low 32 bits of the key's hash above the row number
/// plus one, or zero while empty. The hash bits let a lookup skip rows of
/// other keys without reading them.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Slot(u64);

impl Slot {
    const EMPTY: Slot = Slot(0);

    const fn new(tag: u64, row: usize) -> Self {
        Slot(tag << 32 | (row as u64 + 1))
    }

    /// Whether this slot may hold `tag`'s row.
    const fn may_hold(self, tag: u64) -> bool {
        self.0 >> 32 == tag & 0xffff_ffff
    }

    const fn row(self) -> usize {
        ((self.0 & 0xffff_ffff) as usize).wrapping_sub(1)
    }
}

/// The top of the stack of spare rows: the row number plus one (zero when
/// empty) and, above it, a version that every change bumps, so that a task
/// whose view of the stack is stale fails its swap rather than succeeding
/// on a top that left and came back (ABA).
#[derive(Clone, Copy, PartialEq, Eq)]
struct SpareTop(u64);

impl SpareTop {
    const fn row(self) -> Option<usize> {
        match self.0 & 0xffff_ffff {
            0 => None,
            row => Some(row as usize - 1),
        }
    }

    /// The next version of the top, holding `row` (or nothing).
    const fn next(self, row: Option<usize>) -> Self {
        let version = (self.0 >> 32).wrapping_add(1);
        let row = match row {
            Some(row) => row as u64 + 1,
            None => 0,
        };
        SpareTop(version << 32 | row)
    }
}

/// A row: its key's hash, whether it is published, and the table's payload.
pub(crate) struct Entry<R> {
    tag: AtomicU64,
    ready: AtomicU32,
    /// While the row is spare: the spare row below it, plus one.
    next_spare: AtomicU32,
    /// What the table keeps for the key.
    pub(crate) payload: R,
}

/// `N` rows of `R` keyed by 64-bit hashes, and the index that finds them.
pub(crate) struct Registry<R, const N: usize> {
    /// `2 * N` slots, as pairs so that the length needs no arithmetic on `N`.
    index: [[AtomicU64; 2]; N],
    rows: [Entry<R>; N],
    /// Rows handed out so far (may pass `N` by the number of tasks that
    /// raced for the last ones; only the first `N` exist).
    claimed: AtomicUsize,
    /// The most rows that may be claimed, at most `N`.
    limit: AtomicUsize,
    /// Rows claimed for a key that another task published first, for the
    /// next claim (see [`SpareTop`]).
    spare: AtomicU64,
}

impl<R, const N: usize> Registry<R, N> {
    /// Row numbers, plus one, must fit the slot's 32 bits.
    const FITS: () = assert!(
        N < u32::MAX as usize,
        "a registry holds fewer than 2^32 rows"
    );

    loom_const_fn! {
        /// An empty registry over `rows`, each made by [`Entry::new`]:
        /// `atomic_array![Entry::new(Payload::new()); N]`.
        pub(crate) fn new(rows: [Entry<R>; N]) -> Self {
            let () = Self::FITS;
            Self {
                index: atomic_array![[AtomicU64::new(0), AtomicU64::new(0)]; N],
                rows,
                claimed: AtomicUsize::new(0),
                limit: AtomicUsize::new(N),
                spare: AtomicU64::new(0),
            }
        }
    }

    fn slot(&self, position: usize) -> Option<&AtomicU64> {
        self.index.get(position / 2)?.get(position % 2)
    }

    /// Sets how many rows may be used, at most `N`. Rows already in use
    /// stay; beyond the limit new keys are not given a row.
    pub(crate) fn set_limit(&self, rows: usize) {
        self.limit.store(rows.min(N), Ordering::Relaxed);
    }

    /// How many rows may be used.
    pub(crate) fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// A row to fill: a spare one, else a fresh one; `None` when the limit
    /// is reached.
    fn claim_row(&self) -> Option<usize> {
        let mut top = SpareTop(self.spare.load(Ordering::Acquire));
        while let Some(row) = top.row() {
            // A stale `next` (the row was taken and given back meanwhile)
            // comes with a changed version, and the swap fails.
            let next = self.rows.get(row)?.next_spare.load(Ordering::Relaxed) as usize;
            let below = next.checked_sub(1);
            match self.spare.compare_exchange_weak(
                top.0,
                top.next(below).0,
                Ordering::Acquire,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(row),
                Err(actual) => top = SpareTop(actual),
            }
        }
        let limit = self.limit.load(Ordering::Relaxed);
        // Checked first, so that a full table stops counting claims.
        if self.claimed.load(Ordering::Relaxed) >= limit {
            return None;
        }
        let row = self.claimed.fetch_add(1, Ordering::Relaxed);
        (row < limit).then_some(row)
    }

    /// Gives back a claimed row that was never published.
    fn give_back(&self, row: usize) {
        let Some(entry) = self.rows.get(row) else {
            return;
        };
        let mut top = SpareTop(self.spare.load(Ordering::Relaxed));
        loop {
            let below = top.row().map_or(0, |below| below as u32 + 1);
            entry.next_spare.store(below, Ordering::Relaxed);
            // Release hands `next_spare` to whoever takes the row.
            match self.spare.compare_exchange_weak(
                top.0,
                top.next(Some(row)).0,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(actual) => top = SpareTop(actual),
            }
        }
    }

    /// The row of the key whose hash is `tag`, claiming one if the key is
    /// new; `publish` writes a new row's payload before it is published.
    /// `None` when the key is new and no row is left.
    ///
    /// Bounded: at most `2 * N` probes, and as the index is never more than
    /// half full, a few on average. Lock-free: the spare-row stack's swaps
    /// retry only when another task changed the stack meanwhile.
    pub(crate) fn find_or_claim(&self, tag: u64, publish: impl FnOnce(&R)) -> Option<usize> {
        let slots = 2 * N;
        let mut position = crate::hash::reduce(tag, slots);
        let mut publish = Some(publish);
        // The row this call claimed, once it has.
        let mut mine: Option<usize> = None;
        for _ in 0..slots {
            let slot = self.slot(position)?;
            let mut found = Slot(slot.load(Ordering::Acquire));
            loop {
                if found == Slot::EMPTY {
                    let row = match mine {
                        Some(row) => row,
                        None => {
                            let row = self.claim_row()?;
                            let entry = self.rows.get(row)?;
                            entry.tag.store(tag, Ordering::Relaxed);
                            if let Some(publish) = publish.take() {
                                publish(&entry.payload);
                            }
                            mine = Some(row);
                            row
                        }
                    };
                    // Release publishes the tag and payload written above.
                    match slot.compare_exchange(
                        0,
                        Slot::new(tag, row).0,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    ) {
                        Ok(_) => {
                            if let Some(entry) = self.rows.get(row) {
                                entry.ready.store(1, Ordering::Release);
                            }
                            return Some(row);
                        }
                        // Taken meanwhile: look at what took it.
                        Err(actual) => found = Slot(actual),
                    }
                    continue;
                }
                if found.may_hold(tag) {
                    let row = found.row();
                    // The Acquire load of the slot made the row's tag visible.
                    if self
                        .rows
                        .get(row)
                        .is_some_and(|entry| entry.tag.load(Ordering::Relaxed) == tag)
                    {
                        if let Some(mine) = mine {
                            self.give_back(mine);
                        }
                        return Some(row);
                    }
                }
                break;
            }
            position += 1;
            if position == slots {
                position = 0;
            }
        }
        None
    }

    /// The payload of row `row`, to count in. Only for a row that
    /// `find_or_claim` returned.
    pub(crate) fn payload(&self, row: usize) -> Option<&R> {
        self.rows.get(row).map(|entry| &entry.payload)
    }

    /// Calls `visit` with every published row's number and payload.
    pub(crate) fn for_each(&self, mut visit: impl FnMut(usize, &R)) {
        let claimed = self.claimed.load(Ordering::Relaxed).min(N);
        for (row, entry) in self.rows.iter().enumerate().take(claimed) {
            // Acquire pairs with the Release that set `ready` after the
            // payload was written.
            if entry.ready.load(Ordering::Acquire) != 0 {
                visit(row, &entry.payload);
            }
        }
    }

    /// How many rows are published.
    pub(crate) fn rows_in_use(&self) -> usize {
        let mut rows = 0;
        self.for_each(|_, _| rows += 1);
        rows
    }
}

impl<R> Entry<R> {
    loom_const_fn! {
        /// An unused row holding `payload`.
        pub(crate) fn new(payload: R) -> Self {
            Self {
                tag: AtomicU64::new(0),
                ready: AtomicU32::new(0),
                next_spare: AtomicU32::new(0),
                payload,
            }
        }
    }
}
