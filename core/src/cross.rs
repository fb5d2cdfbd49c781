//! The cross-free table: bytes and counts freed by one task of another's
//! blocks, one row per (owner, freer) pair, claimed lock-free like callsite
//! rows and kept for the life of the program.

use crate::primitive::{atomic_array, loom_const_fn, AtomicU32, AtomicU64, Counter, Ordering};
use crate::registry::{self, Key};
use crate::task::TaskId;

/// How many rows a lookup probes before the pair goes to the overflow bucket.
const MAX_PROBES: usize = 32;

/// One side of a free that crossed tasks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Party {
    /// A task the context named.
    Task(TaskId),
    /// Tasks that had ended by the time of the free (only as the owner).
    Finished,
    /// Tasks that found the task table full (only as the owner: the freer's
    /// id is always known when the context names it).
    Overflow,
    /// Allocations or frees while the context could not name the task.
    Unknown,
}

impl Party {
    const fn kind(self) -> u32 {
        match self {
            Party::Task(_) => 0,
            Party::Finished => 1,
            Party::Overflow => 2,
            Party::Unknown => 3,
        }
    }

    const fn id(self) -> TaskId {
        match self {
            Party::Task(id) => id,
            _ => 0,
        }
    }

    const fn from_parts(kind: u32, id: TaskId) -> Self {
        match kind {
            0 => Party::Task(id),
            1 => Party::Finished,
            2 => Party::Overflow,
            _ => Party::Unknown,
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
    key: Key,
    kinds: AtomicU32,
    owner: AtomicU64,
    freer: AtomicU64,
    bytes: Counter,
    frees: Counter,
}

impl PairRow {
    loom_const_fn! {
        fn new() -> Self {
            Self {
                key: Key::new(),
                kinds: AtomicU32::new(0),
                owner: AtomicU64::new(0),
                freer: AtomicU64::new(0),
                bytes: Counter::new(),
                frees: Counter::new(),
            }
        }
    }

    fn parties(&self) -> (Party, Party) {
        let kinds = self.kinds.load(Ordering::Relaxed);
        (
            Party::from_parts(kinds & 0xff, self.owner.load(Ordering::Relaxed)),
            Party::from_parts(kinds >> 8, self.freer.load(Ordering::Relaxed)),
        )
    }
}

/// A fixed-capacity table of `P` (owner, freer) pairs plus an overflow
/// bucket. Rows are registered by the protocol in `registry.rs`.
pub struct CrossTable<const P: usize> {
    rows: [PairRow; P],
    overflow_bytes: Counter,
    overflow_frees: Counter,
}

impl<const P: usize> CrossTable<P> {
    loom_const_fn! {
        /// An empty table.
        pub fn new() -> Self {
            Self {
                rows: atomic_array![PairRow::new(); P],
                overflow_bytes: Counter::new(),
                overflow_frees: Counter::new(),
            }
        }
    }

    /// Records that `freer` freed a block of `size` bytes that `owner`
    /// allocated.
    pub fn record(&self, owner: Party, freer: Party, size: u64) {
        let kinds = owner.kind() | freer.kind() << 8;
        let tag = crate::hash::mix(
            crate::hash::mix(owner.id() ^ u64::from(kinds)).wrapping_add(freer.id()),
        ) | 1;
        let publish = |row: &PairRow| {
            row.kinds.store(kinds, Ordering::Relaxed);
            row.owner.store(owner.id(), Ordering::Relaxed);
            row.freer.store(freer.id(), Ordering::Relaxed);
        };
        let found = registry::find_or_claim(
            &self.rows,
            |row| &row.key,
            tag,
            MAX_PROBES,
            publish,
            |row| row.parties() == (owner, freer),
        );
        match found.and_then(|index| self.rows.get(index)) {
            Some(row) => {
                row.bytes.add_shared(size);
                row.frees.add_shared(1);
            }
            None => {
                self.overflow_bytes.add_shared(size);
                self.overflow_frees.add_shared(1);
            }
        }
    }

    /// Calls `visit` with every published pair.
    pub fn for_each(&self, mut visit: impl FnMut(CrossFree)) {
        for row in &self.rows {
            if !row.key.is_ready() {
                continue;
            }
            let (owner, freer) = row.parties();
            visit(CrossFree {
                owner,
                freer,
                bytes: row.bytes.get(),
                frees: row.frees.get(),
            });
        }
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
