//! The ledger: the task and callsite tables and the accounting of every
//! allocation, free and reallocation, given the allocator to forward to.
//!
//! A [`Tracker`](crate::Tracker) is a ledger plus the allocator it wraps.
//! Adapters that keep the ledger apart from the allocator (the std adapter
//! keeps one global ledger whatever allocator the program wraps) call the
//! ledger's `alloc`, `dealloc` and `realloc` directly.

use core::alloc::{GlobalAlloc, Layout};
use core::mem::MaybeUninit;
use core::ptr::null_mut;

use heapless::Vec;

use crate::block::{Header, Placement};
use crate::callsite::{self, CallsiteRowView, CallsiteTable, LaneKey};
use crate::context::{Context, SampleFreed, TaskBucket, TaskId, Ticket, Who};
use crate::cross::{CrossFree, CrossTable};
use crate::figures::{Amount, ExactAllocations, Figures, TaskFigures};
use crate::memo::StackMemo;
use crate::primitive::{loom_const_fn, AtomicU64, Counter, Ordering, Writer};
use crate::report::{insert_ranked, CallsiteReport, Order, TaskReport};
use crate::sampling::{self, SampleTable, SampledBlock, SampledPlacement};
use crate::task::{OwnRow, TaskRowView, TaskTable};
use crate::walker::Stack;

/// What the tracker records. Switchable at any time (for a [`Tracker`](crate::Tracker),
/// with [`Tracker::set_mode`](crate::Tracker::set_mode)); blocks are freed correctly whatever the mode was
/// when they were allocated, because a block's header is written in every
/// mode and says whether the block was counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Mode {
    /// Nothing is counted; blocks allocated now are never counted, not even
    /// when freed after tracking is switched back on.
    Off = 0,
    /// Per-task figures only; the callsite table credits every block to its
    /// uncaptured bucket.
    Tasks = 1,
    /// Per-task and per-callsite figures; each allocation walks the stack.
    TasksAndCallsites = 2,
}

impl Mode {
    /// The mode stored as `value` by `mode as u8`; unknown values are `Off`.
    pub const fn from_u8(value: u8) -> Self {
        match value {
            1 => Mode::Tasks,
            2 => Mode::TasksAndCallsites,
            _ => Mode::Off,
        }
    }
}

/// The figures of all tracked blocks together.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Totals {
    /// The sum over every task row and bucket. The peak is the exact peak of
    /// all live bytes when [`global_peak`](Self::global_peak) is on, else 0.
    pub figures: Figures,
    /// Whether the ledger keeps the global peak (see
    /// [`Ledger::with_global_peak`]).
    pub global_peak: bool,
    /// Frees whose header failed its check (the heap was overwritten by the
    /// program); they were passed to the inner allocator but not counted.
    pub damaged_headers: u64,
    /// The sampling form's mean interval in bytes, `None` in the exact form:
    /// when set, the figures are estimates.
    pub sampling: Option<u64>,
    /// In the sampling form, what was allocated, counted exactly.
    pub exact_allocations: Option<ExactAllocations>,
    /// Samples that could not be taken (no free entry for the live sampled
    /// blocks, or no memory), and the bytes they stood for: what the
    /// estimates miss.
    pub dropped_samples: u64,
    /// See [`dropped_samples`](Self::dropped_samples).
    pub dropped_bytes: u64,
}

/// Samples the sampling form could not take: no free entry in the table of
/// live sampled blocks within a search's reach, or no memory for the block.
/// Their allocations are in their tasks' exact counts and in no estimate,
/// and their frees touch nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DroppedSamples {
    /// How many samples were dropped.
    pub samples: u64,
    /// The bytes they stood for (their weights): what the estimates of
    /// allocated bytes miss.
    pub bytes: u64,
}

/// The tables and counters of a tracker, and the accounting around calls to
/// an allocator.
///
/// `TASKS` task rows, `SITES` callsite rows of up to `DEPTH` frames each; all
/// of it lives inside this value, so a `static` ledger costs no heap. Every
/// block costs [`HEADER_BYTES`](crate::HEADER_BYTES) more in the allocator.
///
/// `PAIRS` rows record who freed whose blocks across tasks (see
/// [`for_each_cross_free`](Self::for_each_cross_free)).
///
/// In the sampling form ([`with_sampling`](Self::with_sampling)) blocks
/// carry no header: `SAMPLES` entries record the live sampled blocks, and
/// the figures are estimates (see the crate's docs).
pub struct Ledger<
    C,
    const TASKS: usize = 64,
    const SITES: usize = 1024,
    const DEPTH: usize = 16,
    const PAIRS: usize = 64,
    const SAMPLES: usize = 0,
> {
    context: C,
    global_peak: bool,
    global_live_bytes: Counter,
    global_peak_bytes: Counter,
    damaged_headers: Counter,
    /// The sampling form's mean interval in bytes; 0 in the exact form.
    sampling: AtomicU64,
    sampling_seed: AtomicU64,
    samples: SampleTable<SAMPLES>,
    /// Samples that found no entry in `samples`, and what they stood for.
    dropped_samples: Counter,
    dropped_bytes: Counter,
    tasks: TaskTable<TASKS>,
    sites: CallsiteTable<SITES, DEPTH>,
    cross: CrossTable<PAIRS>,
}

impl<
        C: Context,
        const TASKS: usize,
        const SITES: usize,
        const DEPTH: usize,
        const PAIRS: usize,
        const SAMPLES: usize,
    > Ledger<C, TASKS, SITES, DEPTH, PAIRS, SAMPLES>
{
    /// Row indices, buckets included, must fit a block's header.
    const CAPACITY_FITS: () = assert!(
        TASKS + 4 <= Header::MAX_TASK_INDEX as usize + 1
            && SITES + 3 <= Header::MAX_SITE as usize + 1,
        "at most 65,530 task rows and 1,048,570 callsite rows"
    );

    loom_const_fn! {
        /// An empty ledger that asks `context` who is allocating, keeping the
        /// global peak.
        pub fn new(context: C) -> Self {
            let () = Self::CAPACITY_FITS;
            Self {
                context,
                global_peak: true,
                global_live_bytes: Counter::new(),
                global_peak_bytes: Counter::new(),
                damaged_headers: Counter::new(),
                sampling: AtomicU64::new(0),
                sampling_seed: AtomicU64::new(0),
                samples: SampleTable::new(),
                dropped_samples: Counter::new(),
                dropped_bytes: Counter::new(),
                tasks: TaskTable::new(),
                sites: CallsiteTable::new(),
                cross: CrossTable::new(),
            }
        }
    }

    loom_const_fn! {
        /// The sampling form, with a mean interval of `interval` bytes
        /// between samples (512 KiB is a common choice; 1 samples every
        /// allocation): blocks carry no header, an unsampled allocation
        /// costs a countdown, and the figures are unbiased estimates, but
        /// for what each task allocated, which stays exact
        /// ([`TaskFigures::exact_allocations`]). `SAMPLES` entries hold the
        /// live sampled blocks; a sample that finds none free is dropped and
        /// counted ([`Totals::dropped_samples`]).
        pub fn with_sampling(mut self, interval: u64) -> Self {
            self.set_sampling_interval(interval);
            self
        }
    }

    loom_const_fn! {
        /// For [`Tracker::with_sampling`](crate::Tracker::with_sampling),
        /// which cannot move the ledger out of itself in a constant.
        pub(crate) fn set_sampling_interval(&mut self, interval: u64) -> () {
            self.sampling = AtomicU64::new(interval);
        }
    }

    /// Chooses the form at run time, as [`with_sampling`](Self::with_sampling)
    /// does (0: the exact form), and the seed of the tasks' sampling
    /// sequences. Only before the first allocation through this ledger: the
    /// form decides how every block is laid out.
    pub fn set_sampling(&self, interval: u64, seed: u64) {
        self.sampling.store(interval, Ordering::Relaxed);
        self.sampling_seed.store(seed, Ordering::Relaxed);
    }

    /// The sampling form's mean interval in bytes, or `None` in the exact
    /// form.
    pub fn sampling(&self) -> Option<u64> {
        match self.sampling.load(Ordering::Relaxed) {
            0 => None,
            interval => Some(interval),
        }
    }

    loom_const_fn! {
        /// Keeps (or not) the exact peak of all live bytes together. Keeping
        /// it costs one read-modify-write of a counter that every thread
        /// shares on each allocation and free; without it every counter an
        /// allocation touches belongs to its own task or callsite. Fixed at
        /// construction so that the live figure it tracks is always whole.
        /// A context whose [`GLOBAL_PEAK`](Context::GLOBAL_PEAK) is `false`
        /// overrules `true` here: its ledger keeps no global peak.
        pub fn with_global_peak(mut self, enabled: bool) -> Self {
            self.set_global_peak(enabled);
            self
        }
    }

    loom_const_fn! {
        /// For [`Tracker::with_global_peak`](crate::Tracker::with_global_peak),
        /// which cannot move the ledger out of itself in a constant.
        pub(crate) fn set_global_peak(&mut self, enabled: bool) -> () {
            self.global_peak = enabled;
        }
    }

    /// The context hook.
    pub const fn context(&self) -> &C {
        &self.context
    }

    /// The ticket of a bucket, which a context may return from
    /// [`Context::ticket`] at any time: for instance
    /// `bucket_ticket(TaskBucket::Tracker)` while a thread does the
    /// tracker's own work.
    pub const fn bucket_ticket(which: TaskBucket) -> Ticket {
        TaskTable::<TASKS>::bucket(which)
    }

    /// The `K` task rows that come first in `order`, with the buckets and
    /// totals. Allocates nothing; safe to call while other tasks allocate
    /// (each row is read at its own moment, so the figures are exact only
    /// once allocation pauses).
    pub fn task_report<const K: usize>(&self, order: Order) -> TaskReport<K> {
        let mut top = Vec::new();
        let mut rows_in_use = 0;
        self.for_each_task(|row| {
            rows_in_use += 1;
            insert_ranked(&mut top, row, |a, b| {
                order.ranks_above(&a.figures.figures, &b.figures.figures)
            });
        });
        TaskReport {
            order,
            top,
            rows_in_use,
            capacity: TASKS,
            finished: self.task_bucket(TaskBucket::Finished),
            overflow: self.task_bucket(TaskBucket::Overflow),
            unknown: self.task_bucket(TaskBucket::Unknown),
            tracker: self.task_bucket(TaskBucket::Tracker),
            totals: self.totals(),
        }
    }

    /// The `K` callsites that come first in `order`, with the buckets and
    /// totals. Allocates nothing.
    pub fn callsite_report<const K: usize>(&self, order: Order) -> CallsiteReport<K, DEPTH> {
        let mut top = Vec::new();
        let mut rows_in_use = 0;
        self.for_each_callsite(|row| {
            rows_in_use += 1;
            insert_ranked(&mut top, *row, |a, b| {
                order.ranks_above(&a.figures, &b.figures)
            });
        });
        let uncaptured = self.callsite_bucket(CallsiteBucket::Uncaptured);
        let tracker = self.callsite_bucket(CallsiteBucket::Tracker);
        let mut totals = self.captured_totals();
        totals.accumulate(&uncaptured);
        totals.accumulate(&tracker);
        CallsiteReport {
            order,
            top,
            rows_in_use,
            capacity: self.callsite_limit(),
            overflow: self.callsite_bucket(CallsiteBucket::Overflow),
            uncaptured,
            tracker,
            totals,
        }
    }

    /// Ends task `id`: its figures fold into the finished bucket and its row
    /// is free for the next task. Blocks it allocated and that are freed later
    /// are credited to the finished bucket. Call it from the task itself as
    /// it ends, or after it can no longer allocate; afterwards the context
    /// should name the task no more (a new allocation under `id` claims a new
    /// row). Returns whether the task held a row.
    pub fn task_exit(&self, id: TaskId) -> bool {
        // The task's callsite lanes go back before its row does, so that the
        // row's next task, whose key is the same, finds none of them its own.
        if let Some(ticket) = self.tasks.find(id) {
            if let Some(held) = self.tasks.held_lanes(ticket) {
                let key = lane_key::<TASKS>(ticket);
                held.release_all(|lane| self.sites.release_lane(lane, key));
            }
        }
        self.tasks.retire(id)
    }

    /// The ticket of task `id`: its row, claimed now if it has none, or the
    /// overflow bucket's when the table is full. For a context that names
    /// tasks of its own beside the running ones (a scope that a thread
    /// enters, whose ticket the context then returns from
    /// [`Context::ticket`]): the caller must be the task's one writer, as
    /// for any claim.
    pub fn task_ticket(&self, id: TaskId) -> Ticket {
        self.tasks.find(id).unwrap_or_else(|| {
            self.tasks.claim(
                id,
                self.sampling.load(Ordering::Relaxed),
                self.sampling_seed.load(Ordering::Relaxed),
            )
        })
    }

    /// The task row `ticket` names, as its task writes it, or `None` for a
    /// bucket's ticket: for a context that keeps its ticket, to keep this
    /// beside it and count on it without a lookup
    /// ([`alloc_exact_on_row`](Self::alloc_exact_on_row),
    /// [`dealloc_exact_on_row`](Self::dealloc_exact_on_row)), or attach the
    /// sampling form's hot counters to it ([`OwnRow::attach`]).
    /// It stays the task's while the ticket does.
    #[inline]
    pub fn own_row(&self, ticket: Ticket) -> Option<OwnRow<'_>> {
        self.tasks
            .own_row(ticket, Header::new(ticket, callsite::uncaptured::<SITES>()))
    }

    /// The figures of the task holding `ticket`, if it still holds its row
    /// (as reports give them).
    pub fn ticket_figures(&self, ticket: Ticket) -> Option<TaskFigures> {
        self.tasks
            .ticket_figures(ticket)
            .map(|figures| self.unscaled_task(figures))
    }

    /// The figures of task `id`, if it holds a row (as reports give them):
    /// one row's figures without a report's copies of the others.
    pub fn task_figures(&self, id: TaskId) -> Option<TaskFigures> {
        self.tasks
            .find(id)
            .and_then(|ticket| self.ticket_figures(ticket))
    }

    /// A figure as reports give it: in the sampling form the counters hold
    /// [`SAMPLE_SCALE`](crate::SAMPLE_SCALE) units, rounded here.
    fn unscaled(&self, value: u64) -> u64 {
        if self.sampling.load(Ordering::Relaxed) == 0 {
            value
        } else {
            value.saturating_add(sampling::SCALE / 2) / sampling::SCALE
        }
    }

    fn unscaled_figures(&self, figures: Figures) -> Figures {
        Figures {
            allocated_bytes: self.unscaled(figures.allocated_bytes),
            allocations: self.unscaled(figures.allocations),
            freed_bytes: self.unscaled(figures.freed_bytes),
            frees: self.unscaled(figures.frees),
            peak_live_bytes: self.unscaled(figures.peak_live_bytes),
        }
    }

    fn unscaled_task(&self, figures: TaskFigures) -> TaskFigures {
        TaskFigures {
            figures: self.unscaled_figures(figures.figures),
            freed_by_others_bytes: self.unscaled(figures.freed_by_others_bytes),
            freed_by_others: self.unscaled(figures.freed_by_others),
            freed_of_others_bytes: self.unscaled(figures.freed_of_others_bytes),
            freed_of_others: self.unscaled(figures.freed_of_others),
            exact_allocations: self.sampling().and(figures.exact_allocations),
        }
    }

    /// Calls `visit` with every task row in use.
    pub fn for_each_task(&self, mut visit: impl FnMut(TaskRowView)) {
        self.tasks.for_each_row(|row| {
            visit(TaskRowView {
                figures: self.unscaled_task(row.figures),
                ..row
            })
        });
    }

    /// The figures of a task bucket.
    pub fn task_bucket(&self, which: TaskBucket) -> TaskFigures {
        self.unscaled_task(self.tasks.bucket_figures(which))
    }

    /// Calls `visit` with every callsite row in use.
    pub fn for_each_callsite(&self, mut visit: impl FnMut(&CallsiteRowView<DEPTH>)) {
        self.sites.for_each_row(|row| {
            visit(&CallsiteRowView {
                figures: self.unscaled_figures(row.figures),
                ..*row
            })
        });
    }

    /// The figures of a callsite bucket. The uncaptured bucket is not
    /// counted as blocks come and go but derived: the flows of the totals
    /// beyond those of the callsite rows and the other buckets (exact
    /// whenever no allocation is in progress), with no peak.
    pub fn callsite_bucket(&self, which: CallsiteBucket) -> Figures {
        let raw = match which {
            CallsiteBucket::Overflow => self.sites.overflow_figures(),
            CallsiteBucket::Tracker => self.sites.tracker_figures(),
            CallsiteBucket::Uncaptured => {
                let mut captured = self.raw_captured_totals();
                captured.accumulate(&self.sites.tracker_figures());
                let totals = self.raw_totals().figures;
                Figures {
                    allocated_bytes: totals
                        .allocated_bytes
                        .saturating_sub(captured.allocated_bytes),
                    allocations: totals.allocations.saturating_sub(captured.allocations),
                    freed_bytes: totals.freed_bytes.saturating_sub(captured.freed_bytes),
                    frees: totals.frees.saturating_sub(captured.frees),
                    peak_live_bytes: 0,
                }
            }
        };
        self.unscaled_figures(raw)
    }

    /// How many task rows hold a task now, out of `TASKS`.
    pub fn task_rows_in_use(&self) -> usize {
        self.tasks.rows_in_use()
    }

    /// How many callsite rows hold a stack, out of
    /// [`callsite_limit`](Self::callsite_limit).
    pub fn callsite_rows_in_use(&self) -> usize {
        self.sites.rows_in_use()
    }

    /// How many callsite lanes tasks hold now: at most two per callsite row
    /// and four per task where the target has native 64-bit atomics, none
    /// elsewhere (ARCHITECTURE.md, "A task counts at a callsite in a lane of
    /// its own").
    pub fn callsite_lanes_held(&self) -> usize {
        self.sites.lanes_held()
    }

    /// Lets at most `rows` callsite rows be used (at most `SITES`); stacks
    /// beyond them are counted in the overflow bucket. For a program that
    /// wants to bound the memory its callsites touch below the compile-time
    /// capacity.
    pub fn set_callsite_limit(&self, rows: usize) {
        self.sites.set_limit(rows);
    }

    /// How many callsite rows may be used: `SITES` unless
    /// [`set_callsite_limit`](Self::set_callsite_limit) lowered it.
    pub fn callsite_limit(&self) -> usize {
        self.sites.limit()
    }

    /// The memory of the callsite table: all of it, and the part that rows
    /// in use (and the index, which every lookup may touch) occupy. In a
    /// `static` on a system that maps zero pages on demand, the rest costs
    /// address space only.
    pub fn callsite_memory(&self) -> TableMemory {
        let reserved = core::mem::size_of::<CallsiteTable<SITES, DEPTH>>();
        let per_row = CallsiteTable::<SITES, DEPTH>::ROW_BYTES;
        let rows = self.sites.rows_in_use();
        TableMemory {
            reserved,
            in_use: (reserved - SITES * per_row + rows * per_row).min(reserved),
            per_row,
        }
    }

    /// The figures of all tracked blocks, summed over the task rows and
    /// buckets. Exact whenever no allocation is in progress; while others
    /// allocate, each row is read at a slightly different moment.
    pub fn totals(&self) -> Totals {
        let raw = self.raw_totals();
        Totals {
            figures: self.unscaled_figures(raw.figures),
            exact_allocations: self.sampling().and(raw.exact_allocations),
            dropped_bytes: self.unscaled(raw.dropped_bytes),
            ..raw
        }
    }

    /// The samples dropped so far and the bytes they stood for, what the
    /// estimates miss ([`Totals::dropped_samples`]): two loads, where
    /// [`totals`](Self::totals) sums every row. Zero in the exact form.
    pub fn dropped_samples(&self) -> DroppedSamples {
        DroppedSamples {
            samples: self.dropped_samples.get(),
            bytes: self.unscaled(self.dropped_bytes.get()),
        }
    }

    /// Whether a report is reading some task's hot countdown counters at
    /// this moment: a thread that detached its
    /// [`HotCountdown`](crate::HotCountdown) waits until this says `false`
    /// before the counters' memory goes (see
    /// [`OwnRow::attach`](crate::OwnRow::attach)).
    pub fn hot_reads_in_progress(&self) -> bool {
        self.tasks.hot_reads_in_progress()
    }

    /// For the child of a `fork`, before it starts any thread: forgets the
    /// reports that were reading hot counters at the fork on threads the
    /// child does not have, which would otherwise make a thread's exit in
    /// the child wait for them forever.
    pub fn forget_hot_readers(&self) {
        self.tasks.forget_hot_readers();
    }

    /// Frees whose header failed its check so far
    /// ([`Totals::damaged_headers`]).
    pub fn damaged_headers(&self) -> u64 {
        self.damaged_headers.get()
    }

    /// Whether the ledger keeps the global live bytes and their peak: its
    /// setting, unless the context rules it out.
    #[inline(always)]
    fn keeps_global_peak(&self) -> bool {
        C::GLOBAL_PEAK && self.global_peak
    }

    /// [`totals`](Self::totals) in the counters' own units.
    fn raw_totals(&self) -> Totals {
        let mut sum = TaskFigures::default();
        self.tasks.for_each_row(|row| sum.accumulate(&row.figures));
        for bucket in TaskBucket::ALL {
            sum.accumulate(&self.tasks.bucket_figures(bucket));
        }
        let mut figures = sum.figures;
        figures.peak_live_bytes = if self.keeps_global_peak() {
            self.global_peak_bytes.get()
        } else {
            0
        };
        Totals {
            figures,
            global_peak: self.keeps_global_peak(),
            damaged_headers: self.damaged_headers.get(),
            sampling: self.sampling(),
            exact_allocations: sum.exact_allocations,
            dropped_samples: self.dropped_samples.get(),
            dropped_bytes: self.dropped_bytes.get(),
        }
    }

    /// Calls `visit` with every (owner, freer) pair of tasks between which
    /// frees crossed, with what was freed.
    pub fn for_each_cross_free(&self, mut visit: impl FnMut(CrossFree)) {
        self.cross.for_each(|pair| {
            visit(CrossFree {
                bytes: self.unscaled(pair.bytes),
                frees: self.unscaled(pair.frees),
                ..pair
            })
        });
    }

    /// Bytes and blocks freed across tasks whose (owner, freer) pair found no
    /// row; the pairs' figures plus these add up to the tasks'
    /// `freed_by_others` figures.
    pub fn cross_free_overflow(&self) -> (u64, u64) {
        let (bytes, frees) = self.cross.overflow();
        (self.unscaled(bytes), self.unscaled(frees))
    }

    /// The sum over every callsite row and the overflow bucket: what was
    /// captured. The peak is the largest of any callsite.
    pub fn captured_totals(&self) -> Figures {
        self.unscaled_figures(self.raw_captured_totals())
    }

    fn raw_captured_totals(&self) -> Figures {
        let mut sum = self.sites.overflow_figures();
        self.sites.for_each_row(|row| sum.accumulate(&row.figures));
        sum
    }
}

/// How much memory a table takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TableMemory {
    /// Bytes of the whole table, fixed at compile time.
    pub reserved: usize,
    /// Bytes of the rows in use and of everything that is not a row.
    pub in_use: usize,
    /// Bytes of one row.
    pub per_row: usize,
}

/// The callsite buckets that sit beside the table's rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CallsiteBucket {
    /// Stacks that found no free row.
    Overflow,
    /// Blocks allocated in [`Mode::Tasks`], or whose stack could not be
    /// walked (no stack bounds, no frame pointer).
    Uncaptured,
    /// The tracker's own blocks ([`Who::Tracker`](crate::Who::Tracker)).
    Tracker,
}

impl<
        C: Context,
        const TASKS: usize,
        const SITES: usize,
        const DEPTH: usize,
        const PAIRS: usize,
        const SAMPLES: usize,
    > Ledger<C, TASKS, SITES, DEPTH, PAIRS, SAMPLES>
{
    /// The ticket of whoever is calling: the context's own (the fast path),
    /// else found or claimed.
    #[inline(always)]
    fn caller(&self) -> Ticket {
        match self.context.ticket() {
            Some(ticket) => ticket,
            None => self.caller_by_name(),
        }
    }

    /// The caller's ticket when the context keeps none: a table search, a
    /// claim if the task has no row yet, and the ticket handed to the
    /// context to keep. Out of line: the fast path stays small.
    #[inline(never)]
    fn caller_by_name(&self) -> Ticket {
        let id = match self.context.who() {
            Who::Task(id) => id,
            Who::Tracker => return Self::bucket_ticket(TaskBucket::Tracker),
            Who::Unknown => return Self::bucket_ticket(TaskBucket::Unknown),
        };
        match self.tasks.find(id) {
            Some(ticket) => {
                self.context.remember(ticket);
                ticket
            }
            None => {
                let ticket = self.tasks.claim(
                    id,
                    self.sampling.load(Ordering::Relaxed),
                    self.sampling_seed.load(Ordering::Relaxed),
                );
                // An overflowing task is not told the overflow bucket's
                // ticket: it tries for a row again next time.
                if (ticket.index as usize) < TASKS {
                    self.context.remember(ticket);
                }
                ticket
            }
        }
    }

    /// The callsite row of the stack above `frame_pointer`: the context's
    /// memo is reached here, in the allocating path's frame (for the std
    /// context, a thread-local read inline), and used out of line.
    #[inline(always)]
    fn capture_site(&self, frame_pointer: usize) -> u32 {
        self.context.with_stack_memo(|memo| match memo {
            Some((memo, stack)) => self.site_by_memo(memo, stack, frame_pointer),
            None => self.walk_site(frame_pointer),
        })
    }

    /// [`capture_site`](Self::capture_site) with a memo. Out of line, so
    /// that the walk's frames buffer is not part of every call's frame.
    #[inline(never)]
    fn site_by_memo(&self, memo: &StackMemo, stack: Stack, frame_pointer: usize) -> u32 {
        memo.site::<DEPTH>(
            frame_pointer,
            stack,
            |frames| self.sites.find_or_claim(frames),
            // Rows are kept for the program's life, so a kept row stays
            // the stack's. The overflow bucket is not kept: the stack finds
            // a row once the limit is raised.
            |site| (site as usize) < SITES,
        )
    }

    /// [`capture_site`](Self::capture_site) without a memo: the context's
    /// capture and the table search, out of line for the reason
    /// [`site_by_memo`](Self::site_by_memo) gives.
    #[inline(never)]
    fn walk_site(&self, frame_pointer: usize) -> u32 {
        let mut buffer = [MaybeUninit::<usize>::uninit(); DEPTH];
        // SAFETY: `MaybeUninit<usize>` and `usize` have the same layout, and
        // the context's capture only writes the slots (it never reads one it
        // has not written); only the first `depth` are read below, which it
        // wrote.
        let frames = unsafe {
            &mut *(&mut buffer as *mut [MaybeUninit<usize>; DEPTH] as *mut [usize; DEPTH])
        };
        let depth = self.context.capture(frame_pointer, frames);
        self.sites.find_or_claim(frames.get(..depth).unwrap_or(&[]))
    }

    /// The callsite row of a new block by `ticket` under `mode`: walked in
    /// callsite mode, the tracker's own bucket for its own blocks.
    #[inline(always)]
    fn site_of(&self, mode: Mode, ticket: Ticket, frame_pointer: usize) -> u32 {
        if ticket == Self::bucket_ticket(TaskBucket::Tracker) {
            callsite::tracker::<SITES>()
        } else if mode == Mode::TasksAndCallsites {
            self.capture_site(frame_pointer)
        } else {
            callsite::uncaptured::<SITES>()
        }
    }

    /// Counts a new block (or what a sample stands for) by `ticket` at
    /// `site`.
    #[inline(always)]
    fn record_alloc(&self, ticket: Ticket, site: u32, amount: Amount) {
        self.tasks.record_alloc(ticket, amount);
        if site != callsite::uncaptured::<SITES>() {
            self.record_site_alloc(ticket, site, amount);
        }
        self.record_global_alloc(amount);
    }

    /// Counts a new block by `ticket` on callsite row `site`: in the task's
    /// lane there if it holds one, and a free lane taken afterwards if it
    /// holds none.
    #[inline(always)]
    fn record_site_alloc(&self, ticket: Ticket, site: u32, amount: Amount) {
        let key = lane_key::<TASKS>(ticket);
        if self.sites.record_alloc(site, amount, key) {
            self.take_lane(ticket, site, key);
        }
    }

    /// Takes a free lane of row `site` for the task holding `ticket`, which
    /// holds none there, giving back one of its others if it already holds
    /// as many as a task may. Only that task calls this.
    #[cold]
    #[inline(never)]
    fn take_lane(&self, ticket: Ticket, site: u32, key: LaneKey) {
        let Some(held) = self.tasks.held_lanes(ticket) else {
            return;
        };
        if let Some(lane) = self.sites.claim_lane(site, key) {
            match held.make_room(site, |old| self.sites.release_lane(old, key)) {
                Some(slot) => held.keep(slot, lane),
                // No room is only where there are no lanes to claim.
                None => self.sites.release_lane(lane, key),
            }
        }
    }

    /// The global part of an allocation's count: live bytes and their peak,
    /// when the ledger keeps them.
    #[inline(always)]
    fn record_global_alloc(&self, amount: Amount) {
        if self.keeps_global_peak() {
            let live = self
                .global_live_bytes
                .fetch_add(amount.bytes)
                .wrapping_add(amount.bytes);
            self.global_peak_bytes.raise(live, Writer::Shared);
        }
    }

    /// The global part of a free's count.
    #[inline(always)]
    fn record_global_free(&self, amount: Amount) {
        if self.keeps_global_peak() {
            self.global_live_bytes.fetch_sub(amount.bytes);
        }
    }

    /// Counts the free of a block (or of what a sample stands for) that
    /// `owner` allocated at `site`, by `freer`.
    #[inline(always)]
    fn record_free(&self, owner: Ticket, site: u32, amount: Amount, freer: Ticket) {
        if let Some(owner) = self.tasks.record_free(owner, freer, amount) {
            self.cross.record(owner, self.tasks.party(freer), amount);
        }
        self.record_site_free(site, amount, freer);
    }

    /// The callsite's and the global part of a free's count, by `freer`.
    #[inline(always)]
    fn record_site_free(&self, site: u32, amount: Amount, freer: Ticket) {
        if site != callsite::uncaptured::<SITES>() {
            self.sites
                .record_free(site, amount, lane_key::<TASKS>(freer));
        }
        self.record_global_free(amount);
    }

    /// The exact form's header for a new block of `size` bytes by `ticket`,
    /// counted.
    #[inline(always)]
    fn header_for(&self, size: usize, frame_pointer: usize, mode: Mode, ticket: Ticket) -> Header {
        let site = self.site_of(mode, ticket, frame_pointer);
        self.record_alloc(ticket, site, Amount::block(size as u64));
        Header::new(ticket, site)
    }

    /// Allocates through `inner` and records the block under `mode`, as
    /// `GlobalAlloc::alloc` (or `alloc_zeroed`, when `zeroed`) would.
    /// `frame_pointer` is that of the caller's `GlobalAlloc` method (see
    /// [`frame_pointer`](crate::frame_pointer)), so the walk starts at its
    /// caller.
    ///
    /// # Safety
    /// - The duties of `GlobalAlloc::alloc` for `layout`.
    /// - Every block of this ledger must be allocated, reallocated and freed
    ///   through the ledger with the same `inner`.
    #[inline(always)]
    pub unsafe fn alloc<A: GlobalAlloc>(
        &self,
        inner: &A,
        layout: Layout,
        mode: Mode,
        frame_pointer: usize,
        zeroed: bool,
    ) -> *mut u8 {
        if self.sampling.load(Ordering::Relaxed) != 0 {
            // SAFETY: forwarded from our caller.
            return unsafe { self.alloc_sampling(inner, layout, mode, frame_pointer, zeroed) };
        }
        // SAFETY: forwarded from our caller.
        unsafe { self.alloc_exact(inner, layout, mode, frame_pointer, zeroed) }
    }

    /// [`alloc`](Self::alloc) in the exact form, for an adapter that
    /// chooses its path once, when the form is fixed: with `mode` a
    /// constant, nothing of the other modes is left in the caller.
    ///
    /// Its figures are the ledger's in the exact form
    /// ([`sampling`](Self::sampling) is `None`); an adapter that meets a
    /// ledger of the other form passes [`Mode::Off`], which records nothing.
    ///
    /// # Safety
    /// - The duties of `GlobalAlloc::alloc` for `layout`.
    /// - The block is reallocated and freed only through the exact form's
    ///   paths ([`realloc_exact`](Self::realloc_exact),
    ///   [`dealloc_exact`](Self::dealloc_exact)) with the same `inner`.
    #[inline(always)]
    pub unsafe fn alloc_exact<A: GlobalAlloc>(
        &self,
        inner: &A,
        layout: Layout,
        mode: Mode,
        frame_pointer: usize,
        zeroed: bool,
    ) -> *mut u8 {
        if mode == Mode::Off {
            // SAFETY: forwarded from our caller.
            return unsafe { self.alloc_untracked(inner, layout, zeroed) };
        }
        let Some(placement) = Placement::of(layout) else {
            return null_mut();
        };
        // Written out rather than through `placed`: through its closure the
        // callsite path compiled to 32 more instructions per alloc+free.
        // SAFETY: `placement.inner` has a non-zero size (it includes the
        // header), which is all `GlobalAlloc::alloc` asks.
        let base = unsafe { inner_alloc(inner, placement.inner, zeroed) };
        if base.is_null() {
            return null_mut();
        }
        let header = self.header_for(layout.size(), frame_pointer, mode, self.caller());
        // SAFETY: `base` is a live block of `placement.inner`.
        unsafe { placement.write_header(base, header) };
        // SAFETY: `user_offset + layout.size() <= placement.inner.size()`,
        // so the caller's block lies inside the inner one.
        unsafe { base.add(placement.user_offset) }
    }

    /// [`alloc_exact`](Self::alloc_exact) while tracking is off: the block
    /// and its untracked header. The 8-byte prefix is placed here and
    /// larger alignments out of line, so that the common case keeps few
    /// values across the inner call.
    ///
    /// # Safety
    /// - As for [`alloc_exact`](Self::alloc_exact).
    #[inline(always)]
    unsafe fn alloc_untracked<A: GlobalAlloc>(
        &self,
        inner: &A,
        layout: Layout,
        zeroed: bool,
    ) -> *mut u8 {
        match Placement::prefixed(layout) {
            // SAFETY: forwarded from our caller; the placement is the
            // layout's.
            Some(placement) => unsafe { placed(inner, placement, zeroed, || Header::UNTRACKED) },
            // SAFETY: forwarded from our caller.
            None => unsafe { untracked_out_of_line(inner, layout, zeroed) },
        }
    }

    /// [`alloc_exact`](Self::alloc_exact) in tasks mode by a task that
    /// holds a row, which the context's ticket names: the counters reached
    /// and the header written without the ticket decoded or the header
    /// made. For an adapter that keeps the row beside the ticket (see
    /// [`own_row`](Self::own_row)).
    ///
    /// `row` gives that row, and is asked after the inner allocator made
    /// the block, so that nothing of it is kept across the inner call (in
    /// registers the caller would have to save). Should it give none then,
    /// the block is counted by the context's ticket, as
    /// [`alloc_exact`](Self::alloc_exact) counts it.
    ///
    /// # Safety
    /// - As for [`alloc_exact`](Self::alloc_exact).
    #[inline(always)]
    pub unsafe fn alloc_exact_on_row<'r, A: GlobalAlloc>(
        &self,
        inner: &A,
        layout: Layout,
        row: impl FnOnce() -> Option<OwnRow<'r>>,
        zeroed: bool,
    ) -> *mut u8 {
        // Only the 8-byte prefix is placed here, so that this function keeps
        // few values across the inner call; larger alignments take the
        // general path (the caller's ticket names the same row).
        let Some(placement) = Placement::prefixed(layout) else {
            // SAFETY: forwarded from our caller.
            return unsafe { self.alloc_exact_out_of_line(inner, layout, zeroed) };
        };
        // SAFETY: forwarded from our caller; the placement is the layout's.
        unsafe {
            placed(inner, placement, zeroed, || match row() {
                Some(row) => {
                    let amount = Amount::block(layout.size() as u64);
                    row.record_alloc(amount);
                    self.record_global_alloc(amount);
                    row.header()
                }
                None => self.header_by_ticket(layout.size()),
            })
        }
    }

    /// The header of a new block of `size` bytes in tasks mode, counted by
    /// the context's ticket: for [`alloc_exact_on_row`](Self::alloc_exact_on_row)
    /// when the row is gone.
    #[cold]
    #[inline(never)]
    fn header_by_ticket(&self, size: usize) -> Header {
        self.header_for(size, 0, Mode::Tasks, self.caller())
    }

    /// [`alloc_exact`](Self::alloc_exact) in callsites mode by the task that
    /// holds `row`, which the context's ticket names: the stack captured
    /// from `frame_pointer` as there, and the block counted on `row` and
    /// the callsite row without the ticket decoded or the task row looked
    /// up. For an adapter that keeps the row beside the ticket (see
    /// [`own_row`](Self::own_row)).
    ///
    /// # Safety
    /// - As for [`alloc_exact`](Self::alloc_exact).
    #[inline(always)]
    pub unsafe fn alloc_callsites_on_row<A: GlobalAlloc>(
        &self,
        inner: &A,
        layout: Layout,
        row: OwnRow<'_>,
        frame_pointer: usize,
        zeroed: bool,
    ) -> *mut u8 {
        // Larger alignments take the general path, as in
        // `alloc_exact_on_row`; the walk starts at the same frame pointer.
        let Some(placement) = Placement::prefixed(layout) else {
            // SAFETY: forwarded from our caller.
            return unsafe {
                self.alloc_callsites_out_of_line(inner, layout, frame_pointer, zeroed)
            };
        };
        // Written out rather than through `placed`, as in `alloc_exact`.
        // SAFETY: `placement.inner` has a non-zero size (it includes the
        // header), which is all `GlobalAlloc::alloc` asks.
        let base = unsafe { inner_alloc(inner, placement.inner, zeroed) };
        if base.is_null() {
            return null_mut();
        }
        let site = self.capture_site(frame_pointer);
        let amount = Amount::block(layout.size() as u64);
        let ticket = row.ticket();
        row.record_alloc(amount);
        // The uncaptured site is no row and no bucket: nothing is counted
        // there, so it needs no test of its own.
        self.record_site_alloc(ticket, site, amount);
        self.record_global_alloc(amount);
        // SAFETY: `base` is a live block of `placement.inner`, and the
        // caller's bytes lie inside it from `user_offset` (`user_offset +
        // size <= placement.inner.size()`).
        unsafe {
            placement.write_header(base, Header::new(ticket, site));
            base.add(placement.user_offset)
        }
    }

    /// [`alloc_exact`](Self::alloc_exact) in callsites mode, out of line.
    ///
    /// # Safety
    /// - As for [`alloc_exact`](Self::alloc_exact).
    #[inline(never)]
    unsafe fn alloc_callsites_out_of_line<A: GlobalAlloc>(
        &self,
        inner: &A,
        layout: Layout,
        frame_pointer: usize,
        zeroed: bool,
    ) -> *mut u8 {
        // SAFETY: forwarded from our caller.
        unsafe {
            self.alloc_exact(
                inner,
                layout,
                Mode::TasksAndCallsites,
                frame_pointer,
                zeroed,
            )
        }
    }

    /// [`alloc_exact`](Self::alloc_exact) in tasks mode, out of line.
    ///
    /// # Safety
    /// - As for [`alloc_exact`](Self::alloc_exact).
    #[inline(never)]
    unsafe fn alloc_exact_out_of_line<A: GlobalAlloc>(
        &self,
        inner: &A,
        layout: Layout,
        zeroed: bool,
    ) -> *mut u8 {
        // SAFETY: forwarded from our caller.
        unsafe { self.alloc_exact(inner, layout, Mode::Tasks, 0, zeroed) }
    }

    /// Frees through `inner` a block this ledger allocated, crediting it to
    /// whoever allocated it, as `GlobalAlloc::dealloc` would.
    ///
    /// # Safety
    /// - The duties of `GlobalAlloc::dealloc`, for a block this ledger
    ///   allocated through `inner`.
    #[inline(always)]
    pub unsafe fn dealloc<A: GlobalAlloc>(&self, inner: &A, ptr: *mut u8, layout: Layout) {
        if self.sampling.load(Ordering::Relaxed) != 0 {
            // SAFETY: forwarded from our caller.
            return unsafe { self.dealloc_sampling(inner, ptr, layout) };
        }
        // SAFETY: forwarded from our caller.
        unsafe { self.dealloc_exact(inner, ptr, layout.size(), layout.align()) }
    }

    /// [`dealloc`](Self::dealloc) in the exact form, for an adapter that
    /// knows the form, as for [`alloc_exact`](Self::alloc_exact); the
    /// layout in its parts.
    ///
    /// # Safety
    /// - As for [`dealloc`](Self::dealloc), with the layout of `size` and
    ///   `align`, for a block of the exact form's paths (see
    ///   [`alloc_exact`](Self::alloc_exact)).
    #[inline(always)]
    pub unsafe fn dealloc_exact<A: GlobalAlloc>(
        &self,
        inner: &A,
        ptr: *mut u8,
        size: usize,
        align: usize,
    ) {
        // SAFETY: forwarded from our caller.
        unsafe { self.dealloc_exact_by::<A, false>(inner, ptr, size, align, None) }
    }

    /// [`dealloc_exact`](Self::dealloc_exact) by a task that may hold
    /// `row`, which the context's ticket names: a block that task
    /// allocated in tasks mode is known by its header alone (the header
    /// the row keeps), and counted without the header decoded or the
    /// ticket read. Every other counted free is made out of line.
    ///
    /// # Safety
    /// - As for [`dealloc_exact`](Self::dealloc_exact).
    #[inline(always)]
    pub unsafe fn dealloc_exact_on_row<A: GlobalAlloc>(
        &self,
        inner: &A,
        ptr: *mut u8,
        size: usize,
        align: usize,
        row: Option<OwnRow<'_>>,
    ) {
        // SAFETY: forwarded from our caller.
        unsafe { self.dealloc_exact_by::<A, true>(inner, ptr, size, align, row) }
    }

    /// The exact form's free; with `ROW_KEPT`, for a caller that may keep
    /// its row, whose common case is then the row's own header and all
    /// else out of line.
    ///
    /// # Safety
    /// - As for [`dealloc_exact`](Self::dealloc_exact).
    #[inline(always)]
    unsafe fn dealloc_exact_by<A: GlobalAlloc, const ROW_KEPT: bool>(
        &self,
        inner: &A,
        ptr: *mut u8,
        size: usize,
        align: usize,
        row: Option<OwnRow<'_>>,
    ) {
        // SAFETY: forwarded from our caller.
        let (placement, base, header) = unsafe { exact_block(ptr, size, align) };
        // Counted before the memory goes back, so a block that reuses it at
        // once is never live twice in the global figure. Blocks that were
        // never counted do not even ask who is freeing (nor is their header
        // decoded: an untracked one is a constant). A free by the block's
        // own task is counted here: known by its header alone when the
        // task's row is at hand and the block carries no callsite, else by
        // the decoded header and the ticket. Any other, out of line, so
        // that the common path ends in a jump to the inner free.
        if header == Header::UNTRACKED {
            // SAFETY: `base` was allocated by the inner allocator with
            // exactly `placement.inner`.
            return unsafe { inner.dealloc(base, placement.inner) };
        }
        // The row first, then its header: tested the other way round, the
        // compiler selects the row by the comparison and tests it twice.
        if let Some(row) = row {
            if row.header() == header {
                let amount = Amount::block(size as u64);
                row.record_free(amount);
                self.record_global_free(amount);
                // SAFETY: as above.
                return unsafe { inner.dealloc(base, placement.inner) };
            }
        }
        if ROW_KEPT {
            // The row goes as its header alone (the untracked one for none),
            // so that the call has few enough arguments to be a jump.
            let kept = row.map_or(Header::UNTRACKED, |row| row.header());
            // SAFETY: forwarded from our caller.
            unsafe { self.dealloc_by_header(inner, ptr, size, align, kept) }
        } else {
            // SAFETY: as above.
            unsafe { self.dealloc_decoding(inner, base, placement.inner, header, size) }
        }
    }

    /// The exact form's free of a counted block whose header is not the
    /// kept row's, out of line: first the task's own block with a callsite,
    /// counted on the row and the callsite with nothing looked up again,
    /// else [`dealloc_decoding`](Self::dealloc_decoding). `kept` is the
    /// header of the freeing task's kept row, which names that row; the
    /// untracked header when it keeps none.
    ///
    /// # Safety
    /// - As for [`dealloc_exact`](Self::dealloc_exact), for a block whose
    ///   header is neither the untracked one nor `kept`.
    /// - `kept` is the header of an [`OwnRow`] the calling task holds, or
    ///   [`Header::UNTRACKED`].
    #[inline(never)]
    unsafe fn dealloc_by_header<A: GlobalAlloc>(
        &self,
        inner: &A,
        ptr: *mut u8,
        size: usize,
        align: usize,
        kept: Header,
    ) {
        // SAFETY: forwarded from our caller.
        let (placement, base, header) = unsafe { exact_block(ptr, size, align) };
        // The untracked header names no row (its index is past every row).
        if let Some(row) = self.tasks.own_row(kept.ticket(), kept) {
            if let Some(site) = header.site_if_task_of(kept) {
                let amount = Amount::block(size as u64);
                row.record_free(amount);
                self.record_site_free(site, amount, row.ticket());
                // SAFETY: `base` was allocated by the inner allocator with
                // exactly `placement.inner`.
                return unsafe { inner.dealloc(base, placement.inner) };
            }
        }
        // SAFETY: as above.
        unsafe { self.dealloc_decoding_out_of_line(inner, base, placement.inner, header, size) }
    }

    /// [`dealloc_decoding`](Self::dealloc_decoding), out of line: reached by
    /// a jump, so that [`dealloc_by_header`](Self::dealloc_by_header) keeps
    /// no registers for it.
    ///
    /// # Safety
    /// - As for [`dealloc_decoding`](Self::dealloc_decoding).
    #[inline(never)]
    unsafe fn dealloc_decoding_out_of_line<A: GlobalAlloc>(
        &self,
        inner: &A,
        base: *mut u8,
        inner_layout: Layout,
        header: Header,
        size: usize,
    ) {
        // SAFETY: forwarded from our caller.
        unsafe { self.dealloc_decoding(inner, base, inner_layout, header, size) }
    }

    /// The free of a counted block by its header, decoded: counted here if
    /// its own task frees it, else out of line; then the inner free.
    ///
    /// # Safety
    /// - `base` is a live inner block of `inner_layout`, allocated through
    ///   `inner`, whose header is `header`.
    #[inline(always)]
    unsafe fn dealloc_decoding<A: GlobalAlloc>(
        &self,
        inner: &A,
        base: *mut u8,
        inner_layout: Layout,
        header: Header,
        size: usize,
    ) {
        let decoded = header.decode();
        if self.free_own(decoded, size as u64) {
            // SAFETY: the caller's promise.
            return unsafe { inner.dealloc(base, inner_layout) };
        }
        // SAFETY: the caller's promise.
        unsafe { self.dealloc_counted(inner, base, inner_layout, decoded, size as u64) }
    }

    /// Counts the free of a block whose header says `decoded` if its own
    /// task frees it; `false`, with nothing counted, for any other free (or
    /// a damaged header).
    #[inline(always)]
    fn free_own(&self, decoded: Option<(Ticket, u32)>, size: u64) -> bool {
        let Some((owner, site)) = decoded else {
            return false;
        };
        let freer = self.caller();
        let amount = Amount::block(size);
        if !self.tasks.record_own_free(owner, freer, amount) {
            return false;
        }
        self.record_site_free(site, amount, freer);
        true
    }

    /// The free of a block whose header says `decoded` (`None`: damaged),
    /// counted, then the inner free: frees across tasks, by buckets, and
    /// damaged headers.
    ///
    /// # Safety
    /// - `base` is a live inner block of `inner_layout`, allocated through
    ///   `inner`, whose header decodes to `decoded`.
    #[inline(never)]
    unsafe fn dealloc_counted<A: GlobalAlloc>(
        &self,
        inner: &A,
        base: *mut u8,
        inner_layout: Layout,
        decoded: Option<(Ticket, u32)>,
        size: u64,
    ) {
        match decoded {
            Some((owner, site)) if owner != Ticket::UNTRACKED => {
                self.record_free(owner, site, Amount::block(size), self.caller());
            }
            Some(_) => {}
            None => self.damaged_headers.add_shared(1),
        }
        // SAFETY: the caller's promise.
        unsafe { inner.dealloc(base, inner_layout) }
    }

    /// Reallocates through `inner`'s `realloc` and records it under `mode`
    /// as the free of the old block and a new allocation, as
    /// `GlobalAlloc::realloc` would. `frame_pointer` as for
    /// [`alloc`](Self::alloc).
    ///
    /// # Safety
    /// - The duties of `GlobalAlloc::realloc`, for a block this ledger
    ///   allocated through `inner`.
    #[inline(always)]
    pub unsafe fn realloc<A: GlobalAlloc>(
        &self,
        inner: &A,
        ptr: *mut u8,
        layout: Layout,
        new_size: usize,
        mode: Mode,
        frame_pointer: usize,
    ) -> *mut u8 {
        if self.sampling.load(Ordering::Relaxed) != 0 {
            // SAFETY: forwarded from our caller.
            return unsafe {
                self.realloc_sampling(inner, ptr, layout, new_size, mode, frame_pointer)
            };
        }
        // SAFETY: forwarded from our caller.
        unsafe { self.realloc_exact(inner, ptr, layout, new_size, mode, frame_pointer) }
    }

    /// [`realloc`](Self::realloc) in the exact form, for an adapter that
    /// knows the form, as for [`alloc_exact`](Self::alloc_exact).
    ///
    /// # Safety
    /// - As for [`realloc`](Self::realloc), for a block of the exact form's
    ///   paths (see [`alloc_exact`](Self::alloc_exact)).
    #[inline(always)]
    pub unsafe fn realloc_exact<A: GlobalAlloc>(
        &self,
        inner: &A,
        ptr: *mut u8,
        layout: Layout,
        new_size: usize,
        mode: Mode,
        frame_pointer: usize,
    ) -> *mut u8 {
        let Some(new) = Placement::resized(layout, new_size) else {
            return null_mut();
        };
        // SAFETY: as in `dealloc`.
        let old = unsafe { Placement::of_allocated(layout) };
        // SAFETY: as in `dealloc`.
        let base = unsafe { ptr.sub(old.user_offset) };
        // SAFETY: the block is live; its header is read before the inner
        // `realloc`, which may shrink it away.
        let header = unsafe { old.read_header(base) };
        // The user offset depends on the alignment alone, which a realloc
        // keeps, so the inner realloc carries the caller's bytes to the same
        // offset in the new block. It may grow or shrink in place.
        // SAFETY: `base` was allocated with `old.inner`; `new.inner` has the
        // same alignment and a non-zero size that `Placement` checked.
        let new_base = unsafe { inner.realloc(base, old.inner, new.inner.size()) };
        if new_base.is_null() {
            return null_mut(); // the old block, header and figures stand
        }
        // A realloc is counted as the free of the old block (credited to
        // whoever allocated it) and a new allocation by the caller. Who the
        // caller is matters only if either is counted.
        let decoded = header.decode();
        let counted = matches!(decoded, Some((owner, _)) if owner != Ticket::UNTRACKED);
        let header = if counted || mode != Mode::Off {
            let caller = self.caller();
            match decoded {
                Some((owner, site)) if owner != Ticket::UNTRACKED => {
                    let amount = Amount::block(layout.size() as u64);
                    self.record_free(owner, site, amount, caller);
                }
                Some(_) => {}
                None => self.damaged_headers.add_shared(1),
            }
            match mode {
                Mode::Off => Header::UNTRACKED,
                _ => self.header_for(new_size, frame_pointer, mode, caller),
            }
        } else {
            if decoded.is_none() {
                self.damaged_headers.add_shared(1);
            }
            Header::UNTRACKED
        };
        // SAFETY: `new_base` is a live block of `new.inner`.
        unsafe { new.write_header(new_base, header) };
        // SAFETY: as in `alloc`.
        unsafe { new_base.add(new.user_offset) }
    }

    /// [`alloc`](Self::alloc) in the sampling form: the inner allocator's
    /// block as it is, unless a sample point falls in it. For an adapter
    /// that chooses its path once, as for [`alloc_exact`](Self::alloc_exact).
    ///
    /// Its figures are the ledger's in the sampling form
    /// ([`sampling`](Self::sampling) is `Some`).
    ///
    /// # Safety
    /// - The duties of `GlobalAlloc::alloc` for `layout`.
    /// - The block is reallocated and freed only through the sampling form's
    ///   paths ([`realloc_sampling`](Self::realloc_sampling),
    ///   [`dealloc_sampling`](Self::dealloc_sampling)) with the same
    ///   `inner`.
    #[inline(always)]
    pub unsafe fn alloc_sampling<A: GlobalAlloc>(
        &self,
        inner: &A,
        layout: Layout,
        mode: Mode,
        frame_pointer: usize,
        zeroed: bool,
    ) -> *mut u8 {
        if mode == Mode::Off {
            // SAFETY: forwarded from our caller.
            return unsafe { inner_alloc(inner, layout, zeroed) };
        }
        // The fast half: a task that keeps its ticket, far from its sample
        // point, counts down in its own row and calls the inner allocator,
        // and nothing else. Anything else (a ticket to find, a sample, a
        // bucket) is the slow half's, out of line so that this one needs
        // next to no registers.
        let size = layout.size() as u64;
        match self.context.ticket() {
            Some(ticket) if self.tasks.count_unsampled(ticket, size, self.context.hot()) => {
                // SAFETY: forwarded from our caller.
                let block = unsafe { inner_alloc(inner, layout, zeroed) };
                if block.is_null() {
                    // Not the ticket read above, which would have to be kept
                    // across the call: the same one, read again (the inner
                    // allocator does not run the tracker, so nothing has
                    // changed it).
                    self.uncount_refused_by_caller(size);
                }
                block
            }
            // SAFETY: forwarded from our caller.
            _ => unsafe { self.alloc_sampling_slow(inner, layout, mode, frame_pointer, zeroed) },
        }
    }

    /// [`alloc_sampling`](Self::alloc_sampling)'s slow half: the ticket
    /// found or claimed, the countdown counted, the sample taken.
    ///
    /// # Safety
    /// - As for [`alloc`](Self::alloc).
    #[inline(never)]
    unsafe fn alloc_sampling_slow<A: GlobalAlloc>(
        &self,
        inner: &A,
        layout: Layout,
        mode: Mode,
        frame_pointer: usize,
        zeroed: bool,
    ) -> *mut u8 {
        // Counted before the block is made, so that a sampled one is made
        // in its place at once, and an unsampled one needs nothing after
        // the inner call but a check that it was made.
        let ticket = self.caller();
        let interval = self.sampling.load(Ordering::Relaxed);
        match self
            .tasks
            .count_down(ticket, layout.size() as u64, interval, self.context.hot())
        {
            // SAFETY: forwarded from our caller.
            None => unsafe { self.alloc_unsampled(inner, layout, zeroed, ticket) },
            // SAFETY: forwarded from our caller.
            Some(amount) => unsafe {
                self.alloc_sample(
                    inner,
                    layout,
                    zeroed,
                    Drawn { ticket, amount },
                    move || self.site_of(mode, ticket, frame_pointer),
                    || {},
                )
            },
        }
    }

    /// An allocation that was counted as unsampled: the inner allocator's
    /// block, or the count taken back if it refuses.
    ///
    /// # Safety
    /// - `layout` has a non-zero size.
    #[inline(always)]
    unsafe fn alloc_unsampled<A: GlobalAlloc>(
        &self,
        inner: &A,
        layout: Layout,
        zeroed: bool,
        ticket: Ticket,
    ) -> *mut u8 {
        // SAFETY: the caller's promise.
        let block = unsafe { inner_alloc(inner, layout, zeroed) };
        if block.is_null() {
            self.uncount_refused(ticket, layout.size() as u64);
        }
        block
    }

    /// Takes back the count of an unsampled allocation the inner allocator
    /// refused.
    #[cold]
    #[inline(never)]
    fn uncount_refused(&self, ticket: Ticket, size: u64) {
        self.tasks.uncount(ticket, size, false, self.context.hot());
    }

    /// [`uncount_refused`](Self::uncount_refused) for the caller, whose
    /// ticket its context holds.
    #[cold]
    #[inline(never)]
    fn uncount_refused_by_caller(&self, size: u64) {
        if let Some(ticket) = self.context.ticket() {
            self.uncount_refused(ticket, size);
        }
    }

    /// An allocation that was counted as sampled: made in a sampled block's
    /// place and recorded, or, when that cannot be (no memory for the
    /// place, no free entry), made as asked and counted as a dropped sample.
    /// Null, with the count taken back, when the inner allocator refuses.
    /// `counted_first` runs once the block is made, before it is counted
    /// (exactly once when the result is not null, never when it is):
    /// a realloc that moves credits the old block's free there, so that
    /// the figures see the free before the allocation, as in the exact form.
    ///
    /// # Safety
    /// - `layout` has a non-zero size.
    #[cold]
    #[inline(never)]
    unsafe fn alloc_sample<A: GlobalAlloc>(
        &self,
        inner: &A,
        layout: Layout,
        zeroed: bool,
        Drawn { ticket, amount }: Drawn,
        site: impl FnOnce() -> u32,
        counted_first: impl FnOnce(),
    ) -> *mut u8 {
        if let Some(placement) = SampledPlacement::of(layout) {
            // SAFETY: `placement.inner` has a non-zero size.
            let base = unsafe { inner_alloc(inner, placement.inner, zeroed) };
            if !base.is_null() {
                // SAFETY: the caller's bytes start `user_offset` into the
                // inner block and fit in it.
                let block = unsafe { base.add(placement.user_offset) };
                // The entry first: a sample that finds none is dropped with
                // no walk, and leaves no callsite row behind.
                if let Some(claimed) = self.samples.claim(block as usize) {
                    let site = site();
                    claimed.publish(self.sample_entry(layout, ticket, amount, site));
                    counted_first();
                    self.record_alloc(ticket, site, amount);
                    return block;
                }
                // SAFETY: allocated just above with `placement.inner`.
                unsafe { inner.dealloc(base, placement.inner) };
            }
        }
        // SAFETY: the caller's promise.
        let block = unsafe { inner_alloc(inner, layout, zeroed) };
        if block.is_null() {
            self.tasks
                .uncount(ticket, layout.size() as u64, true, self.context.hot());
        } else {
            counted_first();
            self.drop_sample(amount);
        }
        block
    }

    /// Records the sampled block at `block`, in the table and in the
    /// figures of its task and callsite; `false` when the table has no room
    /// for it (nothing is recorded then).
    fn record_sample(
        &self,
        block: *mut u8,
        layout: Layout,
        ticket: Ticket,
        amount: Amount,
        site: u32,
    ) -> bool {
        let entry = self.sample_entry(layout, ticket, amount, site);
        if !self.samples.insert(block as usize, entry) {
            return false;
        }
        self.record_alloc(ticket, site, amount);
        true
    }

    /// What the table keeps of a sampled block of `layout`, taken now.
    fn sample_entry(
        &self,
        layout: Layout,
        ticket: Ticket,
        amount: Amount,
        site: u32,
    ) -> SampledBlock {
        SampledBlock {
            owner: ticket,
            site,
            size: layout.size() as u64,
            count: amount.count,
            bytes: amount.bytes,
            time: self.context.now(),
        }
    }

    /// Counts a sample that could not be taken.
    #[cold]
    fn drop_sample(&self, amount: Amount) {
        self.dropped_samples.add_shared(1);
        self.dropped_bytes.add_shared(amount.bytes);
    }

    /// [`dealloc`](Self::dealloc) in the sampling form: a sampled block is
    /// credited back to its task and callsite; any other goes straight
    /// back. For an adapter that knows the form.
    ///
    /// # Safety
    /// - As for [`dealloc`](Self::dealloc), for a block of the sampling
    ///   form's paths (see [`alloc_sampling`](Self::alloc_sampling)), or one
    ///   that `inner` itself allocated with `layout`.
    #[inline(always)]
    pub unsafe fn dealloc_sampling<A: GlobalAlloc>(&self, inner: &A, ptr: *mut u8, layout: Layout) {
        if Self::may_be_sampled(ptr, layout) {
            // SAFETY: forwarded from our caller.
            unsafe { self.dealloc_maybe_sampled(inner, ptr, layout) }
        } else {
            // SAFETY: an unsampled block is the inner allocator's own, with
            // the caller's layout.
            unsafe { inner.dealloc(ptr, layout) }
        }
    }

    /// The sampling form's cheap test of a free: whether the block at `ptr`
    /// with `layout` may be a sampled one, so that its free must look in the
    /// table ([`dealloc_maybe_sampled`](Self::dealloc_maybe_sampled)); if
    /// not, it is the inner allocator's own. What
    /// [`dealloc_sampling`](Self::dealloc_sampling) asks first, for an
    /// adapter that calls its two halves itself.
    #[inline(always)]
    pub fn may_be_sampled(ptr: *mut u8, layout: Layout) -> bool {
        sampling::may_be_sampled(ptr, layout)
    }

    /// A free of a block that may be sampled (it passed the cheap test,
    /// [`may_be_sampled`](Self::may_be_sampled)): looked up in the table of
    /// sampled blocks. Out of line: most frees never get here.
    ///
    /// # Safety
    /// - As for [`dealloc_sampling`](Self::dealloc_sampling).
    #[inline(never)]
    pub unsafe fn dealloc_maybe_sampled<A: GlobalAlloc>(
        &self,
        inner: &A,
        ptr: *mut u8,
        layout: Layout,
    ) {
        let sample = self.samples.remove(ptr as usize);
        let sampled = sample.is_some();
        if let Some(block) = sample {
            self.free_sample(block);
        }
        // SAFETY: forwarded from our caller; `sampled` says whether the
        // table held the block.
        unsafe { sampled_dealloc(inner, ptr, layout, sampled) }
    }

    /// Credits a sampled block's free to its task and callsite, and tells
    /// the context how long it lived.
    #[cold]
    #[inline(never)]
    fn free_sample(&self, block: SampledBlock) {
        let amount = Amount {
            bytes: block.bytes,
            count: block.count,
        };
        self.record_free(block.owner, block.site, amount, self.caller());
        self.context.sample_freed(SampleFreed {
            site: block.site,
            lifetime: self.context.now().saturating_sub(block.time),
            bytes: block.bytes,
            count: block.count,
        });
    }

    /// The sampling form's `realloc`, counted as the free of the old block
    /// (if it was sampled) and an allocation of the new size (which may be
    /// sampled). Through the inner `realloc`, in place where it can, unless
    /// either block sits at the mark: such a block's place is the
    /// tracker's, so it moves (allocation, copy, free). For an adapter that
    /// knows the form, as for [`alloc_sampling`](Self::alloc_sampling).
    ///
    /// # Safety
    /// - As for [`realloc`](Self::realloc), for a block of the sampling
    ///   form's paths (see [`alloc_sampling`](Self::alloc_sampling)).
    #[inline(always)]
    pub unsafe fn realloc_sampling<A: GlobalAlloc>(
        &self,
        inner: &A,
        ptr: *mut u8,
        layout: Layout,
        new_size: usize,
        mode: Mode,
        frame_pointer: usize,
    ) -> *mut u8 {
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return null_mut();
        };
        let old_sampled =
            sampling::may_be_sampled(ptr, layout) && self.samples.get(ptr as usize).is_some();
        // The new size is counted first, as in `alloc_sampling`.
        let counted = (mode != Mode::Off).then(|| {
            let ticket = self.caller();
            let interval = self.sampling.load(Ordering::Relaxed);
            (
                ticket,
                self.tasks
                    .count_down(ticket, new_size as u64, interval, self.context.hot()),
            )
        });
        let new_sampled = matches!(counted, Some((_, Some(_))));
        if (old_sampled && !sampling::sampled_in_place(layout))
            || (new_sampled && !sampling::sampled_in_place(new_layout))
        {
            // The old block's free is counted before the new block's
            // allocation, as in the exact form (a realloc is a free and an
            // allocation), and only once the new block is made: a refused
            // one leaves the old block as it was. A new sample runs this
            // between the two; an unsampled block is not counted, so it runs
            // after.
            let count_old = || {
                if old_sampled {
                    if let Some(old) = self.samples.remove(ptr as usize) {
                        self.free_sample(old);
                    }
                }
            };
            // SAFETY: `new_layout` has the size `GlobalAlloc::realloc` was
            // given, which is non-zero.
            let moved = unsafe {
                match counted {
                    Some((ticket, Some(amount))) => self.alloc_sample(
                        inner,
                        new_layout,
                        false,
                        Drawn { ticket, amount },
                        || self.site_of(mode, ticket, frame_pointer),
                        count_old,
                    ),
                    Some((ticket, None)) => self.alloc_unsampled(inner, new_layout, false, ticket),
                    None => inner.alloc(new_layout),
                }
            };
            if moved.is_null() {
                return null_mut(); // the old block stands
            }
            if !new_sampled {
                count_old();
            }
            // SAFETY: both blocks are live and distinct and hold the bytes
            // copied; then the old one is freed where it was placed, as
            // `realloc` does (`old_sampled` says whether it was a sample:
            // the block is the caller's, so no other call freed it since).
            unsafe {
                core::ptr::copy_nonoverlapping(ptr, moved, layout.size().min(new_size));
                sampled_dealloc(inner, ptr, layout, old_sampled);
            }
            return moved;
        }
        // Neither block is at the mark: an unsampled block, or a large
        // sampled one, is the inner allocator's own with the caller's
        // layout, and so is what its `realloc` makes.
        // SAFETY: the new size was checked to form a layout.
        let block = unsafe { inner.realloc(ptr, layout, new_size) };
        if block.is_null() {
            if let Some((ticket, amount)) = counted {
                self.tasks.uncount(
                    ticket,
                    new_size as u64,
                    amount.is_some(),
                    self.context.hot(),
                );
            }
            return null_mut(); // the old block stands
        }
        if old_sampled {
            if let Some(old) = self.samples.remove(ptr as usize) {
                self.free_sample(old);
            }
        }
        if let Some((ticket, Some(amount))) = counted {
            // Large (else it would have moved above): sampled where it is.
            let site = self.site_of(mode, ticket, frame_pointer);
            if !self.record_sample(block, new_layout, ticket, amount, site) {
                self.drop_sample(amount);
            }
        }
        block
    }
}

/// A block placed as `placement` says: the inner block, the header
/// `counted` gives once the block is made (it counts the block: nothing is
/// counted for a refused one), and the caller's pointer into it; null if
/// the inner allocator refuses.
///
/// # Safety
/// - `placement` is the [`Placement`] of the caller's layout, whose inner
///   layout has a non-zero size (it always has: it includes the header).
#[inline(always)]
unsafe fn placed<A: GlobalAlloc>(
    inner: &A,
    placement: Placement,
    zeroed: bool,
    counted: impl FnOnce() -> Header,
) -> *mut u8 {
    // SAFETY: a non-zero size, which is all `GlobalAlloc::alloc` asks.
    let base = unsafe { inner_alloc(inner, placement.inner, zeroed) };
    if base.is_null() {
        return null_mut();
    }
    // SAFETY: `base` is a live block of `placement.inner`, and the caller's
    // bytes lie inside it from `user_offset` (`user_offset + size <=
    // placement.inner.size()`).
    unsafe {
        placement.write_header(base, counted());
        base.add(placement.user_offset)
    }
}

/// The exact form's block that the caller's `ptr` points into: its
/// placement, the inner block's start and its header.
///
/// # Safety
/// - `ptr` came from this ledger's exact form with the layout of `size` and
///   `align` (so `Placement::of` accepted that layout then), and the block
///   is live.
#[inline(always)]
unsafe fn exact_block(ptr: *mut u8, size: usize, align: usize) -> (Placement, *mut u8, Header) {
    // SAFETY: the parts of a `Layout` that `Placement::of` accepted
    // (caller's duty).
    let placement =
        unsafe { Placement::of_allocated(Layout::from_size_align_unchecked(size, align)) };
    // SAFETY: `ptr` came from `alloc` with this layout (caller's duty), so it
    // is `user_offset` into a live inner block of `placement.inner`, whose
    // header is read.
    unsafe {
        let base = ptr.sub(placement.user_offset);
        (placement, base, placement.read_header(base))
    }
}

/// An untracked block of any layout, out of line; null for a layout that
/// has no placement.
///
/// # Safety
/// - The duties of `GlobalAlloc::alloc` for `layout`.
#[inline(never)]
unsafe fn untracked_out_of_line<A: GlobalAlloc>(
    inner: &A,
    layout: Layout,
    zeroed: bool,
) -> *mut u8 {
    match Placement::of(layout) {
        // SAFETY: forwarded from our caller; the placement is the layout's.
        Some(placement) => unsafe { placed(inner, placement, zeroed, || Header::UNTRACKED) },
        None => null_mut(),
    }
}

/// A block from the inner allocator, zeroed when asked.
///
/// # Safety
/// `layout` has a non-zero size, as `GlobalAlloc::alloc` requires.
#[inline(always)]
unsafe fn inner_alloc<A: GlobalAlloc>(inner: &A, layout: Layout, zeroed: bool) -> *mut u8 {
    // SAFETY: the caller's promise is the inner allocator's requirement.
    unsafe {
        if zeroed {
            inner.alloc_zeroed(layout)
        } else {
            inner.alloc(layout)
        }
    }
}

/// A sample drawn for an allocation: the task that makes it, and what the
/// sample stands for.
#[derive(Clone, Copy)]
struct Drawn {
    ticket: Ticket,
    amount: Amount,
}

/// Gives a block of the sampling form back to the inner allocator where it
/// was placed: a sampled block (`sampled`) as its placement says, any other
/// as the caller's layout.
///
/// # Safety
/// - `ptr` is a live block of the sampling form with `layout`, sampled
///   exactly when `sampled`, and no longer in the table of samples.
#[inline(always)]
unsafe fn sampled_dealloc<A: GlobalAlloc>(inner: &A, ptr: *mut u8, layout: Layout, sampled: bool) {
    if !sampled {
        // SAFETY: an unsampled block is the inner allocator's own, with the
        // caller's layout.
        unsafe { inner.dealloc(ptr, layout) };
    } else if let Some(placement) = SampledPlacement::of(layout) {
        // SAFETY: a sampled block was placed `user_offset` into an inner
        // block of `placement.inner` (`alloc_sample`).
        unsafe { inner.dealloc(ptr.sub(placement.user_offset), placement.inner) };
    }
}

/// The key with which `ticket` counts on callsite rows: its task's, or the
/// shared one for a bucket.
#[inline(always)]
fn lane_key<const TASKS: usize>(ticket: Ticket) -> LaneKey {
    if (ticket.index as usize) < TASKS {
        LaneKey::task(ticket.index)
    } else {
        LaneKey::SHARED
    }
}
