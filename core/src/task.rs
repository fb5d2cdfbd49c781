//! The task table: one row per live task, claimed lock-free, released when the
//! task ends and reused forever, with the figures of finished tasks folded
//! into a row of their own.
//!
//! A row moves through `EMPTY → CLAIMING → READY → RETIRING → (fold) → EMPTY`.
//! Its state word packs the phase, the number of other tasks crediting a free
//! to it right now (in flight), and a generation that grows each time the row
//! is released, so that a block whose task has ended is never credited to the
//! row's next occupant.

use crate::context::{Party, TaskBucket, TaskId};
use crate::figures::{OwnedCounters, SharedCounters, TaskFigures};
use crate::primitive::{atomic_array, loom_const_fn, AtomicU64, Counter, Ordering};

/// Where a block's allocation is credited: a row and the generation of the
/// row at the time, copied into the block's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticket {
    pub(crate) index: u32,
    pub(crate) generation: u32,
}

impl Ticket {
    /// The ticket of a block that was allocated while tracking was off.
    pub(crate) const UNTRACKED: Ticket = Ticket {
        index: u32::MAX,
        generation: u32::MAX,
    };
}

const PHASE_MASK: u64 = 0b11;
const EMPTY: u64 = 0;
const CLAIMING: u64 = 1;
const READY: u64 = 2;
const RETIRING: u64 = 3;
const IN_FLIGHT_ONE: u64 = 1 << 2;
const IN_FLIGHT_MASK: u64 = ((1 << 30) - 1) << 2;
const GENERATION_SHIFT: u32 = 32;

const fn phase(state: u64) -> u64 {
    state & PHASE_MASK
}

const fn in_flight(state: u64) -> u64 {
    (state & IN_FLIGHT_MASK) >> 2
}

const fn generation(state: u64) -> u32 {
    (state >> GENERATION_SHIFT) as u32
}

const fn with_phase(state: u64, new_phase: u64) -> u64 {
    (state & !PHASE_MASK) | new_phase
}

/// One task's row. The owner writes `owned` and the `freed_of_others`
/// counters with plain stores; other tasks only ever add to
/// `freed_by_others`, while holding an in-flight mark in `state`.
#[cfg_attr(
    any(target_arch = "x86_64", target_arch = "aarch64"),
    repr(align(64)) // keeps one task's hot counters off its neighbours' cache lines
)]
struct TaskRow {
    state: AtomicU64,
    id: AtomicU64,
    owned: OwnedCounters,
    freed_of_others_bytes: Counter,
    freed_of_others: Counter,
    freed_by_others_bytes: Counter,
    freed_by_others: Counter,
}

impl TaskRow {
    loom_const_fn! {
        fn new() -> Self {
            Self {
                state: AtomicU64::new(0),
                id: AtomicU64::new(0),
                owned: OwnedCounters::new(),
                freed_of_others_bytes: Counter::new(),
                freed_of_others: Counter::new(),
                freed_by_others_bytes: Counter::new(),
                freed_by_others: Counter::new(),
            }
        }
    }

    fn load(&self) -> TaskFigures {
        let freed_by_others_bytes = self.freed_by_others_bytes.get();
        let freed_by_others = self.freed_by_others.get();
        let mut figures = self.owned.load();
        figures.freed_bytes = figures.freed_bytes.wrapping_add(freed_by_others_bytes);
        figures.frees = figures.frees.wrapping_add(freed_by_others);
        TaskFigures {
            figures,
            freed_by_others_bytes,
            freed_by_others,
            freed_of_others_bytes: self.freed_of_others_bytes.get(),
            freed_of_others: self.freed_of_others.get(),
        }
    }
}

/// A row that many tasks write at once: a fallback bucket.
struct BucketRow {
    counters: SharedCounters,
    freed_of_others_bytes: Counter,
    freed_of_others: Counter,
    freed_by_others_bytes: Counter,
    freed_by_others: Counter,
}

impl BucketRow {
    loom_const_fn! {
        fn new() -> Self {
            Self {
                counters: SharedCounters::new(),
                freed_of_others_bytes: Counter::new(),
                freed_of_others: Counter::new(),
                freed_by_others_bytes: Counter::new(),
                freed_by_others: Counter::new(),
            }
        }
    }

    /// A free of one of this bucket's blocks. A bucket is not one task, so
    /// every free of its blocks counts as a free by another task.
    fn record_free(&self, size: u64) {
        self.counters.record_free(size);
        self.freed_by_others_bytes.add_shared(size);
        self.freed_by_others.add_shared(1);
    }

    fn load(&self) -> TaskFigures {
        TaskFigures {
            figures: self.counters.load(),
            freed_by_others_bytes: self.freed_by_others_bytes.get(),
            freed_by_others: self.freed_by_others.get(),
            freed_of_others_bytes: self.freed_of_others_bytes.get(),
            freed_of_others: self.freed_of_others.get(),
        }
    }
}

/// A fixed-capacity table of `N` task rows plus one row per
/// [`TaskBucket`].
///
/// Lock-free: every operation completes in a bounded number of its own steps
/// except the compare-and-swap loops of a cross-task free, which retry only
/// when another task changed the same row's state meanwhile.
pub struct TaskTable<const N: usize> {
    rows: [TaskRow; N],
    /// By `TaskBucket as usize`.
    buckets: [BucketRow; 4],
}

/// A task row as a report sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskRowView {
    /// The task's id, as the context named it.
    pub id: TaskId,
    /// The row's index in the table.
    pub row: u32,
    /// What the task has allocated and freed.
    pub figures: TaskFigures,
}

impl<const N: usize> TaskTable<N> {
    loom_const_fn! {
        /// An empty table.
        pub fn new() -> Self {
            Self {
                rows: atomic_array![TaskRow::new(); N],
                buckets: atomic_array![BucketRow::new(); 4],
            }
        }
    }

    /// The ticket of a bucket.
    pub const fn bucket(which: TaskBucket) -> Ticket {
        Ticket {
            // Capacities are far below `u32::MAX`; see `Ledger::new`.
            index: (N as u32).wrapping_add(which as u32),
            generation: 0,
        }
    }

    /// The bucket a ticket names, if it names one.
    const fn bucket_of(ticket: Ticket) -> Option<TaskBucket> {
        TaskBucket::from_index((ticket.index as usize).wrapping_sub(N))
    }

    fn bucket_row(&self, which: TaskBucket) -> &BucketRow {
        let [finished, overflow, unknown, tracker] = &self.buckets;
        match which {
            TaskBucket::Finished => finished,
            TaskBucket::Overflow => overflow,
            TaskBucket::Unknown => unknown,
            TaskBucket::Tracker => tracker,
        }
    }

    fn home(id: TaskId) -> usize {
        crate::hash::reduce(crate::hash::mix(id), N)
    }

    /// The row of task `id` if it holds one, trying `hint` first.
    #[inline]
    pub fn find(&self, id: TaskId, hint: Option<u32>) -> Option<Ticket> {
        if let Some(ticket) = hint.and_then(|row| self.ticket_if_owned(row as usize, id)) {
            return Some(ticket);
        }
        let home = Self::home(id);
        (home..N)
            .chain(0..home)
            .find_map(|row| self.ticket_if_owned(row, id))
    }

    #[inline]
    fn ticket_if_owned(&self, index: usize, id: TaskId) -> Option<Ticket> {
        let row = self.rows.get(index)?;
        // Acquire pairs with the Release that published the row, so the id
        // read next is the one its claimer wrote.
        let state = row.state.load(Ordering::Acquire);
        (phase(state) == READY && row.id.load(Ordering::Relaxed) == id).then_some(Ticket {
            index: index as u32,
            generation: generation(state),
        })
    }

    /// Claims a free row for task `id`, or returns the overflow bucket when
    /// none is free. Only task `id` itself may call this, and only when
    /// [`find`](Self::find) found no row for it.
    pub fn claim(&self, id: TaskId) -> Ticket {
        let home = Self::home(id);
        for index in (home..N).chain(0..home) {
            let Some(row) = self.rows.get(index) else {
                continue;
            };
            let state = row.state.load(Ordering::Relaxed);
            if phase(state) != EMPTY {
                continue;
            }
            // Acquire pairs with the Release that emptied the row, so its
            // zeroed counters are what this task starts from.
            if row
                .state
                .compare_exchange(
                    state,
                    with_phase(state, CLAIMING),
                    Ordering::Acquire,
                    Ordering::Relaxed,
                )
                .is_ok()
            {
                row.id.store(id, Ordering::Relaxed);
                row.state.store(with_phase(state, READY), Ordering::Release);
                return Ticket {
                    index: index as u32,
                    generation: generation(state),
                };
            }
        }
        Self::bucket(TaskBucket::Overflow)
    }

    /// Records an allocation of `size` bytes by the task holding `ticket`.
    #[inline]
    pub fn record_alloc(&self, ticket: Ticket, size: u64) {
        if let Some(row) = self.rows.get(ticket.index as usize) {
            row.owned
                .record_alloc(size, row.freed_by_others_bytes.get());
        } else if let Some(bucket) = Self::bucket_of(ticket) {
            self.bucket_row(bucket).counters.record_alloc(size);
        }
    }

    /// Records the free of a block of `size` bytes that `owner` allocated,
    /// by the task holding `freer`. For a free that crossed tasks, returns
    /// who the owner was at that moment.
    #[inline]
    pub fn record_free(&self, owner: Ticket, freer: Ticket, size: u64) -> Option<Party> {
        if owner == Ticket::UNTRACKED {
            return None;
        }
        if owner == freer {
            if let Some(row) = self.rows.get(owner.index as usize) {
                row.owned.record_free(size);
                return None;
            }
            if let Some(bucket) = Self::bucket_of(owner) {
                // A bucket freeing its own blocks: no task crossed.
                self.bucket_row(bucket).counters.record_free(size);
                return None;
            }
        }
        if let Some(row) = self.rows.get(freer.index as usize) {
            row.freed_of_others_bytes.add_owned(size);
            row.freed_of_others.add_owned(1);
        } else if let Some(bucket) = Self::bucket_of(freer) {
            let bucket = self.bucket_row(bucket);
            bucket.freed_of_others_bytes.add_shared(size);
            bucket.freed_of_others.add_shared(1);
        }
        if self.rows.get(owner.index as usize).is_some() {
            return Some(self.record_free_by_other(owner, size));
        }
        let bucket = Self::bucket_of(owner).unwrap_or(TaskBucket::Unknown);
        self.bucket_row(bucket).record_free(size);
        Some(Party::Bucket(bucket))
    }

    /// Credits a free to a task row that another task holds (or held): to
    /// the row while it still belongs to the block's task, otherwise to the
    /// finished bucket into which that task's figures were (or are about to
    /// be) folded. Returns who the owner is.
    fn record_free_by_other(&self, owner: Ticket, size: u64) -> Party {
        let Some(row) = self.rows.get(owner.index as usize) else {
            return Party::Bucket(TaskBucket::Unknown);
        };
        let mut state = row.state.load(Ordering::Acquire);
        loop {
            if phase(state) != READY || generation(state) != owner.generation {
                self.bucket_row(TaskBucket::Finished).record_free(size);
                return Party::Bucket(TaskBucket::Finished);
            }
            // The in-flight mark keeps the row from being folded while this
            // task adds to it.
            match row.state.compare_exchange_weak(
                state,
                state.wrapping_add(IN_FLIGHT_ONE),
                Ordering::Acquire,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(actual) => state = actual,
            }
        }
        // Under the mark the row cannot change hands, so this is the owner.
        let id = row.id.load(Ordering::Relaxed);
        row.freed_by_others_bytes.add_shared(size);
        row.freed_by_others.add_shared(1);
        // Release hands the additions above to whoever folds the row.
        let before = row.state.fetch_sub(IN_FLIGHT_ONE, Ordering::AcqRel);
        if phase(before) == RETIRING && in_flight(before) == 1 {
            self.fold(owner.index as usize, before.wrapping_sub(IN_FLIGHT_ONE));
        }
        Party::Task(id)
    }

    /// Releases the row of task `id`: its figures fold into the finished
    /// bucket and the row becomes free for another task. Only task `id`
    /// itself, or someone after it stopped allocating, may call this. Returns
    /// whether the task held a row.
    pub fn retire(&self, id: TaskId) -> bool {
        let Some(ticket) = self.find(id, None) else {
            return false;
        };
        let Some(row) = self.rows.get(ticket.index as usize) else {
            return false;
        };
        let mut state = row.state.load(Ordering::Acquire);
        loop {
            if phase(state) != READY || generation(state) != ticket.generation {
                return false;
            }
            let retiring = with_phase(state, RETIRING);
            match row.state.compare_exchange_weak(
                state,
                retiring,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    // With frees in flight, the last of them folds the row.
                    if in_flight(retiring) == 0 {
                        self.fold(ticket.index as usize, retiring);
                    }
                    return true;
                }
                Err(actual) => state = actual,
            }
        }
    }

    /// Moves a retiring row's figures into the finished bucket and empties
    /// the row, with the next generation. `retiring` is the state in which
    /// no free is in flight; exactly one caller sees it.
    fn fold(&self, index: usize, retiring: u64) {
        let Some(row) = self.rows.get(index) else {
            return;
        };
        if row
            .state
            .compare_exchange(
                retiring,
                with_phase(retiring, CLAIMING),
                Ordering::Acquire,
                Ordering::Relaxed,
            )
            .is_err()
        {
            return;
        }
        let finished = self.bucket_row(TaskBucket::Finished);
        let by_others_bytes = row.freed_by_others_bytes.take();
        let by_others = row.freed_by_others.take();
        let mut figures = row.owned.take();
        figures.freed_bytes = figures.freed_bytes.wrapping_add(by_others_bytes);
        figures.frees = figures.frees.wrapping_add(by_others);
        finished.counters.absorb(&figures);
        finished.freed_by_others_bytes.add_shared(by_others_bytes);
        finished.freed_by_others.add_shared(by_others);
        finished
            .freed_of_others_bytes
            .add_shared(row.freed_of_others_bytes.take());
        finished
            .freed_of_others
            .add_shared(row.freed_of_others.take());
        let next_generation = u64::from(generation(retiring).wrapping_add(1));
        // Release publishes the zeroed counters to the next claimer.
        row.state.store(
            next_generation << GENERATION_SHIFT | EMPTY,
            Ordering::Release,
        );
    }

    /// Calls `visit` with every row that holds a task's figures: ready rows
    /// and rows whose task is ending but not yet folded.
    pub fn for_each_row(&self, mut visit: impl FnMut(TaskRowView)) {
        for (index, row) in self.rows.iter().enumerate() {
            let state = row.state.load(Ordering::Acquire);
            if matches!(phase(state), READY | RETIRING) {
                visit(TaskRowView {
                    id: row.id.load(Ordering::Relaxed),
                    row: index as u32,
                    figures: row.load(),
                });
            }
        }
    }

    /// The figures of one bucket.
    pub fn bucket_figures(&self, which: TaskBucket) -> TaskFigures {
        self.bucket_row(which).load()
    }

    /// How many rows hold a task now.
    pub fn rows_in_use(&self) -> usize {
        self.rows
            .iter()
            .filter(|row| matches!(phase(row.state.load(Ordering::Relaxed)), READY | RETIRING))
            .count()
    }
}

impl<const N: usize> Default for TaskTable<N> {
    fn default() -> Self {
        Self::new()
    }
}
