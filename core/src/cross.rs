//! The cross-free table: bytes and counts freed by one task of another's
//! blocks, one row per (owner, freer) pair, registered like callsite rows
//! (`registry.rs`) and kept for the life of the program.

use crate::figures::Amount;
use crate::party::{Party, TaskBucket, TaskId};
use crate::primitive::{atomic_array, loom_const_fn, AtomicU32, AtomicU64, Counter, Ordering};
use crate::registry::{Entry, Registry};

/// A [`Party`] in two atomics: its kind (0 for a task, 1 + the bucket's
/// number for a bucket) and a task's id.
struct PartyCell {
    kind: AtomicU32,
    id: AtomicU64,
}

impl PartyCell {
    loom_const_fn! {
        fn new() -> Self {
            Self {
                kind: AtomicU32::new(0),
                id: AtomicU64::new(0),
            }
        }
    }

    /// The kind and id words of `party`, as stored and as hashed.
    const fn words(party: Party) -> (u32, TaskId) {
        match party {
            Party::Task(id) => (0, id),
            Party::Bucket(bucket) => (1 + bucket as u32, 0),
        }
    }

    fn store(&self, party: Party) {
        let (kind, id) = Self::words(party);
        self.kind.store(kind, Ordering::Relaxed);
        self.id.store(id, Ordering::Relaxed);
    }

    fn load(&self) -> Party {
        match self.kind.load(Ordering::Relaxed) {
            0 => Party::Task(self.id.load(Ordering::Relaxed)),
            kind => Party::Bucket(
                TaskBucket::from_index(kind as usize - 1).unwrap_or(TaskBucket::Unknown),
            ),
        }
    }
}

/// A pair's figures as a report sees them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CrossFree {
    /// Whose blocks were freed.
    pub owner: Party,
    /// Who freed them.
    pub freer: Party,
    /// Bytes freed.
    pub bytes: u64,
    /// Blocks freed.
    pub frees: u64,
}

struct PairRow {
    owner: PartyCell,
    freer: PartyCell,
    bytes: Counter,
    frees: Counter,
}

impl PairRow {
    loom_const_fn! {
        fn new() -> Self {
            Self {
                owner: PartyCell::new(),
                freer: PartyCell::new(),
                bytes: Counter::new(),
                frees: Counter::new(),
            }
        }
    }

    fn parties(&self) -> (Party, Party) {
        (self.owner.load(), self.freer.load())
    }
}

/// A fixed-capacity table of `P` (owner, freer) pairs plus an overflow
/// bucket. Rows are registered by the protocol in `registry.rs`.
pub struct CrossTable<const P: usize> {
    rows: Registry<PairRow, P>,
    overflow_bytes: Counter,
    overflow_frees: Counter,
}

impl<const P: usize> CrossTable<P> {
    loom_const_fn! {
        /// An empty table.
        pub fn new() -> Self {
            Self {
                rows: Registry::new(atomic_array![Entry::new(PairRow::new()); P]),
                overflow_bytes: Counter::new(),
                overflow_frees: Counter::new(),
            }
        }
    }

    /// Records that `freer` freed a block (or what a sample stands for) that
    /// `owner` allocated.
    pub fn record(&self, owner: Party, freer: Party, amount: Amount) {
        let ((owner_kind, owner_id), (freer_kind, freer_id)) =
            (PartyCell::words(owner), PartyCell::words(freer));
        let kinds = u64::from(owner_kind) | u64::from(freer_kind) << 8;
        let tag = crate::hash::mix(crate::hash::mix(owner_id ^ kinds).wrapping_add(freer_id)) | 1;
        let publish = |row: &PairRow| {
            row.owner.store(owner);
            row.freer.store(freer);
        };
        let found = self.rows.find_or_claim(tag, publish);
        match found.and_then(|index| self.rows.payload(index)) {
            Some(row) => {
                row.bytes.add_shared(amount.bytes);
                row.frees.add_shared(amount.count);
            }
            None => {
                self.overflow_bytes.add_shared(amount.bytes);
                self.overflow_frees.add_shared(amount.count);
            }
        }
    }

    /// Calls `visit` with every published pair.
    pub fn for_each(&self, mut visit: impl FnMut(CrossFree)) {
        self.rows.for_each(|_, row| {
            let (owner, freer) = row.parties();
            visit(CrossFree {
                owner,
                freer,
                bytes: row.bytes.get(),
                frees: row.frees.get(),
            });
        });
    }

    /// Bytes and blocks of pairs that found no row.
    pub fn overflow(&self) -> (u64, u64) {
        (self.overflow_bytes.get(), self.overflow_frees.get())
    }
}

impl<const P: usize> Default for CrossTable<P> {
    fn default() -> Self {
        Self::new()
    }
}
