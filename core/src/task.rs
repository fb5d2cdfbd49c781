//! The task table: one row per live task, claimed lock-free, released when the
//! task ends and reused forever, with the figures of finished tasks folded
//! into a row of their own, and a row for each bucket.
//!
//! A row moves through `Empty → Claiming → Ready → Retiring → (fold) → Empty`.
//! Its state word ([`RowState`]) packs the phase, the number of other tasks
//! crediting a free to it right now (in flight), and a generation that grows
//! each time the row is released, so that a block whose task has ended is
//! not credited to the row's next occupant. Generations count modulo 2^20
//! (what a block's header carries): a block freed after exactly a multiple
//! of 2^20 later tasks have used its task's row would be credited to the
//! row's occupant then.

use crate::block::Header;
use crate::callsite::HeldLanes;
use crate::figures::{Amount, ExactAllocations, OwnedCounters, SharedCounters, TaskFigures};
use crate::party::{Party, TaskBucket, TaskId, Ticket};
use crate::primitive::{atomic_array, loom_const_fn, AtomicU64, AtomicUsize, Counter, Ordering};
use crate::sampling::{self, BucketSampler, Countdown, HotCountdown};

/// Where a row is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Free for the next task.
    Empty = 0,
    /// Being claimed, or being folded: nobody else may touch it.
    Claiming = 1,
    /// Holds a live task.
    Ready = 2,
    /// Its task has ended; the last free in flight folds it.
    Retiring = 3,
}

/// A task row's state word: the phase in bits 0-1, the frees in flight in
/// bits 2-31, the generation in bits 32-63.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct RowState(u64);

impl RowState {
    const PHASE: u64 = 0b11;
    const IN_FLIGHT_ONE: u64 = 1 << 2;
    const IN_FLIGHT: u64 = ((1 << 30) - 1) << 2;

    #[inline]
    fn phase(self) -> Phase {
        match self.0 & Self::PHASE {
            0 => Phase::Empty,
            1 => Phase::Claiming,
            2 => Phase::Ready,
            _ => Phase::Retiring,
        }
    }

    /// Whether the row holds a task's figures (live, or ended and not yet
    /// folded).
    #[inline]
    fn holds_task(self) -> bool {
        matches!(self.phase(), Phase::Ready | Phase::Retiring)
    }

    #[inline]
    const fn in_flight(self) -> u64 {
        (self.0 & Self::IN_FLIGHT) >> 2
    }

    #[inline]
    const fn generation(self) -> u32 {
        (self.0 >> 32) as u32
    }

    #[inline]
    const fn with_phase(self, phase: Phase) -> Self {
        RowState(self.0 & !Self::PHASE | phase as u64)
    }

    /// One more free in flight.
    #[inline]
    const fn marked(self) -> Self {
        RowState(self.0.wrapping_add(Self::IN_FLIGHT_ONE))
    }

    /// One free in flight fewer.
    #[inline]
    const fn unmarked(self) -> Self {
        RowState(self.0.wrapping_sub(Self::IN_FLIGHT_ONE))
    }

    /// Empty, with the next generation (counted modulo what a block's header
    /// can carry).
    #[inline]
    const fn emptied(self) -> Self {
        RowState((((self.generation() + 1) % Header::GENERATIONS) as u64) << 32)
    }

    /// The ticket of row `index` in this state.
    #[inline]
    const fn ticket(self, index: usize) -> Ticket {
        Ticket {
            index: index as u32,
            generation: self.generation(),
        }
    }
}

/// A [`RowState`] that tasks change together.
struct AtomicRowState(AtomicU64);

impl AtomicRowState {
    loom_const_fn! {
        fn new() -> Self {
            Self(AtomicU64::new(0))
        }
    }

    #[inline]
    fn load(&self, order: Ordering) -> RowState {
        RowState(self.0.load(order))
    }

    #[inline]
    fn store(&self, state: RowState, order: Ordering) {
        self.0.store(state.0, order);
    }

    /// A compare-and-swap of the whole word. The loops that retry it would
    /// be as well served by a weak one; one kind keeps the type small, and
    /// on the targets with load-linked/store-conditional the strong one only
    /// adds the retry the loop does anyway.
    #[inline]
    fn compare_exchange(
        &self,
        current: RowState,
        new: RowState,
        success: Ordering,
        failure: Ordering,
    ) -> Result<RowState, RowState> {
        self.0
            .compare_exchange(current.0, new.0, success, failure)
            .map(RowState)
            .map_err(RowState)
    }

    /// Takes one free in flight away and returns the state before.
    #[inline]
    fn unmark(&self, order: Ordering) -> RowState {
        RowState(self.0.fetch_sub(RowState::IN_FLIGHT_ONE, order))
    }
}

/// What a row's owner writes: on a cache line of its own where the target
/// has such lines, so that other tasks' frees never take it away.
#[cfg_attr(any(target_arch = "x86_64", target_arch = "aarch64"), repr(align(64)))]
struct OwnerPart {
    /// Written when the row is claimed; read by others only under an
    /// in-flight mark or by reports.
    id: AtomicU64,
    owned: OwnedCounters,
    freed_of_others_bytes: Counter,
    freed_of_others: Counter,
    /// The sampling form's countdown (unused in the exact form).
    countdown: Countdown,
    /// The callsite lanes the task holds, given back as it ends.
    lanes: HeldLanes,
}

/// What other tasks write: the state word, and the frees of the owner's
/// blocks they make.
#[cfg_attr(any(target_arch = "x86_64", target_arch = "aarch64"), repr(align(64)))]
struct OthersPart {
    state: AtomicRowState,
    freed_by_others_bytes: Counter,
    freed_by_others: Counter,
}

/// One task's row. The owner writes its part with plain stores; other tasks
/// only ever add to `freed_by_others`, while holding an in-flight mark in
/// the state word.
struct TaskRow {
    owner: OwnerPart,
    others: OthersPart,
}

impl TaskRow {
    loom_const_fn! {
        fn new() -> Self {
            Self {
                owner: OwnerPart {
                    id: AtomicU64::new(0),
                    owned: OwnedCounters::new(),
                    freed_of_others_bytes: Counter::new(),
                    freed_of_others: Counter::new(),
                    countdown: Countdown::new(),
                    lanes: HeldLanes::new(),
                },
                others: OthersPart {
                    state: AtomicRowState::new(),
                    freed_by_others_bytes: Counter::new(),
                    freed_by_others: Counter::new(),
                },
            }
        }
    }

    /// The row's figures; `readers` is the table's count of reports
    /// reading hot counters.
    #[inline]
    fn load(&self, readers: &AtomicUsize) -> TaskFigures {
        let freed_by_others_bytes = self.others.freed_by_others_bytes.get();
        let freed_by_others = self.others.freed_by_others.get();
        let mut figures = self.owner.owned.load();
        figures.freed_bytes = figures.freed_bytes.wrapping_add(freed_by_others_bytes);
        figures.frees = figures.frees.wrapping_add(freed_by_others);
        let (bytes, count) = self.owner.countdown.exact(readers);
        TaskFigures {
            figures,
            freed_by_others_bytes,
            freed_by_others,
            freed_of_others_bytes: self.owner.freed_of_others_bytes.get(),
            freed_of_others: self.owner.freed_of_others.get(),
            exact_allocations: Some(ExactAllocations { bytes, count }),
        }
    }
}

/// A task's row as the task itself writes it, for an adapter that keeps it
/// beside the ticket it was handed (see [`Ledger::own_row`]): the counters
/// reached without decoding the ticket, finding the row or checking its
/// bounds on every call, and in the exact form the header of the task's
/// blocks in tasks mode, made once rather than on every allocation.
///
/// Only the task that holds the row may count on it, and only while it
/// holds it (from the claim to its end): the counters are written with
/// plain stores, so a second writer would lose counts (never memory safety).
///
/// [`Ledger::own_row`]: crate::Ledger::own_row
#[derive(Clone, Copy)]
pub struct OwnRow<'a> {
    row: &'a TaskRow,
    /// The header of a block this task allocates in tasks mode.
    header: Header,
}

impl OwnRow<'_> {
    /// The sampling form: makes `hot` stand in for the row's countdown
    /// counters, so that the task's unsampled allocations count there (see
    /// [`HotCountdown`]). Only the task that holds the row may attach, one
    /// set of counters at a time, and detach before it counts anywhere else.
    ///
    /// # Safety
    /// - `hot` stays where it is, alive, until [`detach`](Self::detach) has
    ///   taken it off, and then until
    ///   [`Ledger::hot_reads_in_progress`](crate::Ledger::hot_reads_in_progress)
    ///   has said `false`: a report may be reading it until then.
    pub unsafe fn attach(self, hot: &HotCountdown) {
        // SAFETY: forwarded from our caller.
        unsafe { self.row.owner.countdown.attach(hot) }
    }

    /// Takes `hot` off the row, if [`attach`](Self::attach) put it there,
    /// and moves its counts back to the row. Leaves `hot` with nothing to
    /// count down either way, so that its fast path declines.
    pub fn detach(self, hot: &HotCountdown) {
        self.row.owner.countdown.detach(hot);
    }

    /// The header of a block this task allocates in tasks mode.
    #[inline(always)]
    pub(crate) fn header(self) -> Header {
        self.header
    }

    /// The ticket of this task's row.
    #[inline(always)]
    pub(crate) fn ticket(self) -> Ticket {
        self.header.ticket()
    }

    /// The exact form: records an allocation by this task.
    #[inline(always)]
    pub(crate) fn record_alloc(self, amount: Amount) {
        self.row
            .owner
            .owned
            .record_alloc(amount, self.row.others.freed_by_others_bytes.get());
    }

    /// The exact form: records this task's free of its own block.
    #[inline(always)]
    pub(crate) fn record_free(self, amount: Amount) {
        self.row.owner.owned.record_free(amount);
    }
}

impl core::fmt::Debug for OwnRow<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("OwnRow")
            .field("id", &self.row.owner.id.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// The least mean interval at which the tracker's own allocations
/// ([`TaskBucket::Tracker`]) are sampled in the sampling form.
///
/// A report that resolves symbols keeps tens of thousands of blocks of its
/// own alive (the debug information it parsed, cached for the next
/// report). At the program's interval, if that is small (1 byte, for exact
/// figures in a test), each would be a sample: they would fill the table of
/// sampled blocks, and the program's own samples would then be dropped.
/// At this interval they take a few hundred entries. The tracker's figures
/// stay unbiased estimates, weighed at the interval used, and what it
/// allocated stays exact.
pub const TRACKER_SAMPLING_INTERVAL: u64 = 64 * 1024;

/// The mean interval at which `bucket` samples, where the program's is
/// `interval`.
#[inline]
fn bucket_interval(bucket: TaskBucket, interval: u64) -> u64 {
    match bucket {
        TaskBucket::Tracker => interval.max(TRACKER_SAMPLING_INTERVAL),
        _ => interval,
    }
}

/// A row that many tasks write at once: a bucket.
struct BucketRow {
    counters: SharedCounters,
    freed_of_others_bytes: Counter,
    freed_of_others: Counter,
    freed_by_others_bytes: Counter,
    freed_by_others: Counter,
    /// The sampling form's sampler (unused in the exact form).
    sampler: BucketSampler,
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
                sampler: BucketSampler::new(),
            }
        }
    }

    /// A free of one of this bucket's blocks by someone else. A bucket is not
    /// one task, so every free of its blocks but its own counts so.
    fn record_free_by_other(&self, amount: Amount) {
        self.counters.record_free(amount);
        self.freed_by_others_bytes.add_shared(amount.bytes);
        self.freed_by_others.add_shared(amount.count);
    }

    #[inline]
    fn load(&self) -> TaskFigures {
        let (bytes, count) = self.sampler.exact();
        TaskFigures {
            figures: self.counters.load(),
            freed_by_others_bytes: self.freed_by_others_bytes.get(),
            freed_by_others: self.freed_by_others.get(),
            freed_of_others_bytes: self.freed_of_others_bytes.get(),
            freed_of_others: self.freed_of_others.get(),
            exact_allocations: Some(ExactAllocations { bytes, count }),
        }
    }
}

/// A fixed-capacity table of `N` task rows plus one row per
/// [`TaskBucket`].
///
/// Lock-free: every operation completes in a bounded number of its own steps
/// except the compare-and-swap loops of a cross-task free and of a retire,
/// which retry only when another task changed the same row's state
/// meanwhile.
pub struct TaskTable<const N: usize> {
    rows: [TaskRow; N],
    /// By `TaskBucket as usize`.
    buckets: [BucketRow; 4],
    /// Reports reading a row's attached hot counters at this moment (see
    /// `Countdown::exact`).
    hot_readers: AtomicUsize,
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
                hot_readers: AtomicUsize::new(0),
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

    /// The rows in the order a search for `id` visits them: from its home
    /// to the end, then from the start.
    fn probe(id: TaskId) -> impl Iterator<Item = usize> {
        let home = Self::home(id);
        (home..N).chain(0..home)
    }

    /// The row of task `id`, if it holds one.
    pub fn find(&self, id: TaskId) -> Option<Ticket> {
        Self::probe(id).find_map(|index| {
            let row = self.rows.get(index)?;
            // Acquire pairs with the Release that published the row, so the
            // id read next is the one its claimer wrote.
            let state = row.others.state.load(Ordering::Acquire);
            (state.phase() == Phase::Ready && row.owner.id.load(Ordering::Relaxed) == id)
                .then(|| state.ticket(index))
        })
    }

    /// Claims a free row for task `id`, or returns the overflow bucket when
    /// none is free. Only task `id` itself may call this, and only when
    /// [`find`](Self::find) found no row for it. In the sampling form
    /// (`sampling` is the mean interval, else 0) the row's countdown starts
    /// from a seed made of `seed` and the task's id.
    pub fn claim(&self, id: TaskId, sampling: u64, seed: u64) -> Ticket {
        for index in Self::probe(id) {
            let Some(row) = self.rows.get(index) else {
                continue;
            };
            let state = row.others.state.load(Ordering::Relaxed);
            if state.phase() != Phase::Empty {
                continue;
            }
            // Acquire pairs with the Release that emptied the row, so its
            // zeroed counters are what this task starts from.
            if row
                .others
                .state
                .compare_exchange(
                    state,
                    state.with_phase(Phase::Claiming),
                    Ordering::Acquire,
                    Ordering::Relaxed,
                )
                .is_ok()
            {
                row.owner.id.store(id, Ordering::Relaxed);
                if sampling != 0 {
                    row.owner
                        .countdown
                        .start(seed ^ id.rotate_left(17) ^ index as u64, sampling);
                }
                row.others
                    .state
                    .store(state.with_phase(Phase::Ready), Ordering::Release);
                return state.ticket(index);
            }
        }
        Self::bucket(TaskBucket::Overflow)
    }

    /// The row `ticket` names as its task writes it, with the header of
    /// the task's blocks in tasks mode, or `None` for a bucket's ticket.
    #[inline]
    pub(crate) fn own_row(&self, ticket: Ticket, header: Header) -> Option<OwnRow<'_>> {
        self.rows
            .get(ticket.index as usize)
            .map(|row| OwnRow { row, header })
    }

    /// The row `ticket` names as its task writes it, for the sampling
    /// form's countdown alone (its header is no block's): what a model of
    /// the hot counters attaches them to. `None` for a bucket's ticket.
    #[cfg(alloc_track_loom)]
    pub fn countdown_row(&self, ticket: Ticket) -> Option<OwnRow<'_>> {
        self.own_row(ticket, Header::UNTRACKED)
    }

    /// The callsite lanes of the task holding `ticket`; `None` for a bucket.
    /// Only that task may change them, while it holds the row.
    pub(crate) fn held_lanes(&self, ticket: Ticket) -> Option<&HeldLanes> {
        self.rows
            .get(ticket.index as usize)
            .map(|row| &row.owner.lanes)
    }

    /// Who holds `ticket` now: its task, or its bucket.
    pub fn party(&self, ticket: Ticket) -> Party {
        match self.rows.get(ticket.index as usize) {
            Some(row) => Party::Task(row.owner.id.load(Ordering::Relaxed)),
            None => Party::Bucket(Self::bucket_of(ticket).unwrap_or(TaskBucket::Unknown)),
        }
    }

    /// The sampling form: counts an allocation of `size` bytes by the task
    /// holding `ticket`, and returns what the sample stands for if it is to
    /// be sampled. For a task's row, a countdown decrement (and a draw when
    /// the sample point is reached); for a bucket, see `BucketSampler`.
    ///
    /// `hot` is the calling task's hot counters, if it keeps any (see
    /// [`HotCountdown`]): used where they are attached to the row.
    #[inline]
    pub(crate) fn count_down(
        &self,
        ticket: Ticket,
        size: u64,
        interval: u64,
        hot: Option<&HotCountdown>,
    ) -> Option<Amount> {
        match self.rows.get(ticket.index as usize) {
            Some(row) if row.owner.countdown.count(size, hot) => Some(Self::sample_drawn(
                &row.owner.countdown,
                size,
                interval,
                hot,
            )),
            Some(_) => None,
            None => Self::bucket_of(ticket).and_then(|bucket| {
                self.bucket_row(bucket)
                    .sampler
                    .count(size, bucket_interval(bucket, interval))
            }),
        }
    }

    /// [`count_down`](Self::count_down)'s fast half: counts an unsampled
    /// allocation by a task's row; `false`, with nothing counted, for a
    /// bucket's ticket or an allocation that reaches the task's sample
    /// point, which `count_down` then counts.
    #[inline(always)]
    pub(crate) fn count_unsampled(
        &self,
        ticket: Ticket,
        size: u64,
        hot: Option<&HotCountdown>,
    ) -> bool {
        match self.rows.get(ticket.index as usize) {
            Some(row) => row.owner.countdown.count_unsampled(size, hot),
            None => false,
        }
    }

    /// Takes back [`count_down`](Self::count_down)'s count of an allocation
    /// of `size` bytes that the inner allocator refused; `sampled` is
    /// whether it said to sample it.
    pub(crate) fn uncount(
        &self,
        ticket: Ticket,
        size: u64,
        sampled: bool,
        hot: Option<&HotCountdown>,
    ) {
        match self.rows.get(ticket.index as usize) {
            Some(row) => row.owner.countdown.uncount(size, sampled, hot),
            None => {
                if let Some(bucket) = Self::bucket_of(ticket) {
                    self.bucket_row(bucket).sampler.uncount(size);
                }
            }
        }
    }

    /// A task's sample point was reached: its weight, and the next gap.
    #[cold]
    #[inline(never)]
    fn sample_drawn(
        countdown: &Countdown,
        size: u64,
        interval: u64,
        hot: Option<&HotCountdown>,
    ) -> Amount {
        countdown.draw(interval, hot);
        sampling::weight(size, interval)
    }

    /// Records an allocation by the task holding `ticket`.
    #[inline]
    pub fn record_alloc(&self, ticket: Ticket, amount: Amount) {
        if let Some(row) = self.rows.get(ticket.index as usize) {
            row.owner
                .owned
                .record_alloc(amount, row.others.freed_by_others_bytes.get());
        } else if let Some(bucket) = Self::bucket_of(ticket) {
            self.bucket_row(bucket).counters.record_alloc(amount);
        }
    }

    /// [`record_free`](Self::record_free)'s fast half: the free of a block
    /// by the task that allocated it, from its row; `false`, with nothing
    /// recorded, for any other free.
    #[inline(always)]
    pub(crate) fn record_own_free(&self, owner: Ticket, freer: Ticket, amount: Amount) -> bool {
        if owner != freer {
            return false;
        }
        match self.rows.get(owner.index as usize) {
            Some(row) => {
                row.owner.owned.record_free(amount);
                true
            }
            None => false,
        }
    }

    /// Records the free of a block that `owner` allocated, by the task
    /// holding `freer`. For a free that crossed tasks, returns who the owner
    /// was at that moment.
    #[inline]
    pub fn record_free(&self, owner: Ticket, freer: Ticket, amount: Amount) -> Option<Party> {
        if self.record_own_free(owner, freer, amount) {
            return None;
        }
        if owner == freer {
            if let Some(bucket) = Self::bucket_of(owner) {
                // A bucket freeing its own blocks: no task crossed.
                self.bucket_row(bucket).counters.record_free(amount);
                return None;
            }
        }
        self.record_cross_free(owner, freer, amount)
    }

    /// A free that crossed tasks (or a free of an untracked or unknown
    /// ticket): credited to the owner, and to the freer as a free of
    /// others' blocks.
    fn record_cross_free(&self, owner: Ticket, freer: Ticket, amount: Amount) -> Option<Party> {
        if owner == Ticket::UNTRACKED {
            return None;
        }
        if let Some(row) = self.rows.get(freer.index as usize) {
            row.owner.freed_of_others_bytes.add_owned(amount.bytes);
            row.owner.freed_of_others.add_owned(amount.count);
        } else if let Some(bucket) = Self::bucket_of(freer) {
            let bucket = self.bucket_row(bucket);
            bucket.freed_of_others_bytes.add_shared(amount.bytes);
            bucket.freed_of_others.add_shared(amount.count);
        }
        if self.rows.get(owner.index as usize).is_some() {
            return Some(self.record_free_by_other(owner, amount));
        }
        let bucket = Self::bucket_of(owner).unwrap_or(TaskBucket::Unknown);
        self.bucket_row(bucket).record_free_by_other(amount);
        Some(Party::Bucket(bucket))
    }

    /// Credits a free to a task row that another task holds (or held): to
    /// the row while it still belongs to the block's task, otherwise to the
    /// finished bucket into which that task's figures were (or are about to
    /// be) folded. Returns who the owner is.
    fn record_free_by_other(&self, owner: Ticket, amount: Amount) -> Party {
        let Some(row) = self.rows.get(owner.index as usize) else {
            return Party::Bucket(TaskBucket::Unknown);
        };
        let mut state = row.others.state.load(Ordering::Acquire);
        loop {
            if state.phase() != Phase::Ready || state.generation() != owner.generation {
                self.bucket_row(TaskBucket::Finished)
                    .record_free_by_other(amount);
                return Party::Bucket(TaskBucket::Finished);
            }
            // The in-flight mark keeps the row from being folded while this
            // task adds to it.
            match row.others.state.compare_exchange(
                state,
                state.marked(),
                Ordering::Acquire,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(actual) => state = actual,
            }
        }
        // Under the mark the row cannot change hands, so this is the owner.
        let id = row.owner.id.load(Ordering::Relaxed);
        row.others.freed_by_others_bytes.add_shared(amount.bytes);
        row.others.freed_by_others.add_shared(amount.count);
        // Release hands the additions above to whoever folds the row.
        let before = row.others.state.unmark(Ordering::AcqRel);
        if before.phase() == Phase::Retiring && before.in_flight() == 1 {
            self.fold(owner.index as usize, before.unmarked());
        }
        Party::Task(id)
    }

    /// Releases the row of task `id`: its figures fold into the finished
    /// bucket and the row becomes free for another task. Only task `id`
    /// itself, or someone after it stopped allocating, may call this. Returns
    /// whether the task held a row.
    pub fn retire(&self, id: TaskId) -> bool {
        let Some(ticket) = self.find(id) else {
            return false;
        };
        let Some(row) = self.rows.get(ticket.index as usize) else {
            return false;
        };
        let mut state = row.others.state.load(Ordering::Acquire);
        loop {
            if state.phase() != Phase::Ready || state.generation() != ticket.generation {
                return false;
            }
            let retiring = state.with_phase(Phase::Retiring);
            match row.others.state.compare_exchange(
                state,
                retiring,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    // With frees in flight, the last of them folds the row.
                    if retiring.in_flight() == 0 {
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
    fn fold(&self, index: usize, retiring: RowState) {
        let Some(row) = self.rows.get(index) else {
            return;
        };
        if row
            .others
            .state
            .compare_exchange(
                retiring,
                retiring.with_phase(Phase::Claiming),
                Ordering::Acquire,
                Ordering::Relaxed,
            )
            .is_err()
        {
            return;
        }
        let finished = self.bucket_row(TaskBucket::Finished);
        let by_others_bytes = row.others.freed_by_others_bytes.take();
        let by_others = row.others.freed_by_others.take();
        let mut figures = row.owner.owned.take();
        figures.freed_bytes = figures.freed_bytes.wrapping_add(by_others_bytes);
        figures.frees = figures.frees.wrapping_add(by_others);
        finished.counters.absorb(&figures);
        finished.freed_by_others_bytes.add_shared(by_others_bytes);
        finished.freed_by_others.add_shared(by_others);
        finished
            .freed_of_others_bytes
            .add_shared(row.owner.freed_of_others_bytes.take());
        finished
            .freed_of_others
            .add_shared(row.owner.freed_of_others.take());
        finished.sampler.absorb(row.owner.countdown.take());
        // Release publishes the zeroed counters to the next claimer.
        row.others
            .state
            .store(retiring.emptied(), Ordering::Release);
    }

    /// Whether a report is reading a row's attached hot counters at this
    /// moment (see [`OwnRow::attach`]).
    ///
    /// A read-modify-write (of nothing), so that it is ordered with every
    /// report's count of itself: a report that counts itself after it
    /// acquires what the caller released before (the detach).
    pub fn hot_reads_in_progress(&self) -> bool {
        self.hot_readers.fetch_add(0, Ordering::AcqRel) != 0
    }

    /// Forgets the reports counted as reading hot counters: for the child of
    /// a `fork`, in which the threads that were reading at the fork do not
    /// exist and will never count themselves out, so that a thread's exit
    /// there does not wait for them forever. Only where no report can be
    /// reading: in the child, before it starts any thread.
    pub fn forget_hot_readers(&self) {
        self.hot_readers.store(0, Ordering::Release);
    }

    /// Counts a report as reading hot counters, as one on another thread
    /// does while it reads: for the unit test of a fork's child.
    #[cfg(all(test, not(alloc_track_loom)))]
    fn count_a_reader(&self) {
        self.hot_readers.fetch_add(1, Ordering::AcqRel);
    }

    /// Calls `visit` with every row that holds a task's figures: ready rows
    /// and rows whose task is ending but not yet folded.
    pub fn for_each_row(&self, mut visit: impl FnMut(TaskRowView)) {
        for (index, row) in self.rows.iter().enumerate() {
            if row.others.state.load(Ordering::Acquire).holds_task() {
                visit(TaskRowView {
                    id: row.owner.id.load(Ordering::Relaxed),
                    row: index as u32,
                    figures: row.load(&self.hot_readers),
                });
            }
        }
    }

    /// The figures of the task holding `ticket`, if it still holds its row.
    pub fn ticket_figures(&self, ticket: Ticket) -> Option<TaskFigures> {
        let row = self.rows.get(ticket.index as usize)?;
        let state = row.others.state.load(Ordering::Acquire);
        (state.holds_task() && state.generation() == ticket.generation)
            .then(|| row.load(&self.hot_readers))
    }

    /// The figures of one bucket.
    pub fn bucket_figures(&self, which: TaskBucket) -> TaskFigures {
        self.bucket_row(which).load()
    }

    /// How many rows hold a task now.
    pub fn rows_in_use(&self) -> usize {
        self.rows
            .iter()
            .filter(|row| row.others.state.load(Ordering::Relaxed).holds_task())
            .count()
    }
}

impl<const N: usize> Default for TaskTable<N> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(all(test, not(alloc_track_loom)))]
mod tests {
    use super::TaskTable;

    /// A process forked while a report on another thread was reading hot
    /// counters: in the child that report never counts itself out, and a
    /// thread's exit would wait for it forever, until the child's handler
    /// forgets it.
    #[test]
    fn a_forked_child_forgets_the_readers_counted_at_the_fork() {
        let table = TaskTable::<1>::new();
        table.count_a_reader();
        assert!(table.hot_reads_in_progress());
        table.forget_hot_readers();
        assert!(!table.hot_reads_in_progress());
    }
}
