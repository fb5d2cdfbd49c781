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
use crate::callsite::{self, CallsiteRowView, CallsiteTable};
use crate::context::{Context, TaskBucket, TaskId, Ticket, Who};
use crate::cross::{CrossFree, CrossTable};
use crate::figures::{Figures, TaskFigures};
use crate::primitive::{loom_const_fn, Counter, Writer};
use crate::report::{insert_ranked, CallsiteReport, Order, TaskReport};
use crate::task::{TaskRowView, TaskTable};

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
pub struct Ledger<
    C,
    const TASKS: usize = 64,
    const SITES: usize = 1024,
    const DEPTH: usize = 16,
    const PAIRS: usize = 64,
> {
    context: C,
    global_peak: bool,
    global_live_bytes: Counter,
    global_peak_bytes: Counter,
    damaged_headers: Counter,
    tasks: TaskTable<TASKS>,
    sites: CallsiteTable<SITES, DEPTH>,
    cross: CrossTable<PAIRS>,
}

impl<C, const TASKS: usize, const SITES: usize, const DEPTH: usize, const PAIRS: usize>
    Ledger<C, TASKS, SITES, DEPTH, PAIRS>
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
                tasks: TaskTable::new(),
                sites: CallsiteTable::new(),
                cross: CrossTable::new(),
            }
        }
    }

    loom_const_fn! {
        /// Keeps (or not) the exact peak of all live bytes together. Keeping
        /// it costs one read-modify-write of a counter that every thread
        /// shares on each allocation and free; without it every counter an
        /// allocation touches belongs to its own task or callsite. Fixed at
        /// construction so that the live figure it tracks is always whole.
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
        self.tasks.retire(id)
    }

    /// Calls `visit` with every task row in use.
    pub fn for_each_task(&self, visit: impl FnMut(TaskRowView)) {
        self.tasks.for_each_row(visit);
    }

    /// The figures of a task bucket.
    pub fn task_bucket(&self, which: TaskBucket) -> TaskFigures {
        self.tasks.bucket_figures(which)
    }

    /// Calls `visit` with every callsite row in use.
    pub fn for_each_callsite(&self, visit: impl FnMut(&CallsiteRowView<DEPTH>)) {
        self.sites.for_each_row(visit);
    }

    /// The figures of a callsite bucket. The uncaptured bucket is not
    /// counted as blocks come and go but derived: the flows of the totals
    /// beyond those of the callsite rows and the other buckets (exact
    /// whenever no allocation is in progress), with no peak.
    pub fn callsite_bucket(&self, which: CallsiteBucket) -> Figures {
        match which {
            CallsiteBucket::Overflow => self.sites.overflow_figures(),
            CallsiteBucket::Tracker => self.sites.tracker_figures(),
            CallsiteBucket::Uncaptured => {
                let mut captured = self.captured_totals();
                captured.accumulate(&self.sites.tracker_figures());
                let totals = self.totals().figures;
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
        }
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
        let mut sum = TaskFigures::default();
        self.tasks.for_each_row(|row| sum.accumulate(&row.figures));
        for bucket in TaskBucket::ALL {
            sum.accumulate(&self.task_bucket(bucket));
        }
        let mut figures = sum.figures;
        figures.peak_live_bytes = if self.global_peak {
            self.global_peak_bytes.get()
        } else {
            0
        };
        Totals {
            figures,
            global_peak: self.global_peak,
            damaged_headers: self.damaged_headers.get(),
        }
    }

    /// Calls `visit` with every (owner, freer) pair of tasks between which
    /// frees crossed, with what was freed.
    pub fn for_each_cross_free(&self, visit: impl FnMut(CrossFree)) {
        self.cross.for_each(visit);
    }

    /// Bytes and blocks freed across tasks whose (owner, freer) pair found no
    /// row; the pairs' figures plus these add up to the tasks'
    /// `freed_by_others` figures.
    pub fn cross_free_overflow(&self) -> (u64, u64) {
        self.cross.overflow()
    }

    /// The sum over every callsite row and the overflow bucket: what was
    /// captured. The peak is the largest of any callsite.
    pub fn captured_totals(&self) -> Figures {
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
    > Ledger<C, TASKS, SITES, DEPTH, PAIRS>
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
                let ticket = self.tasks.claim(id);
                // An overflowing task is not told the overflow bucket's
                // ticket: it tries for a row again next time.
                if (ticket.index as usize) < TASKS {
                    self.context.remember(ticket);
                }
                ticket
            }
        }
    }

    /// The callsite row of the stack above `frame_pointer`. Out of line, so
    /// that the frames buffer is not part of every call's frame.
    #[inline(never)]
    fn capture_site(&self, frame_pointer: usize) -> u32 {
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

    /// Counts a new block of `size` bytes by the task `ticket` under `mode`
    /// (read once by the caller, so that the ticket and the counting agree)
    /// and returns its header.
    #[inline(always)]
    fn record_alloc(
        &self,
        size: usize,
        frame_pointer: usize,
        mode: Mode,
        ticket: Ticket,
    ) -> Header {
        let size = size as u64;
        self.tasks.record_alloc(ticket, size);
        let site = if mode == Mode::TasksAndCallsites {
            if ticket == Self::bucket_ticket(TaskBucket::Tracker) {
                callsite::tracker::<SITES>()
            } else {
                self.capture_site(frame_pointer)
            }
        } else if ticket == Self::bucket_ticket(TaskBucket::Tracker) {
            callsite::tracker::<SITES>()
        } else {
            callsite::uncaptured::<SITES>()
        };
        if site != callsite::uncaptured::<SITES>() {
            self.sites.record_alloc(site, size);
        }
        if self.global_peak {
            let live = self.global_live_bytes.fetch_add(size).wrapping_add(size);
            self.global_peak_bytes.raise(live, Writer::Shared);
        }
        Header::new(ticket, site)
    }

    /// Counts the free of a tracked block of `size` bytes that `owner`
    /// allocated at `site`, by `freer`.
    #[inline(always)]
    fn record_free(&self, owner: Ticket, site: u32, size: usize, freer: Ticket) {
        let size = size as u64;
        if let Some(owner) = self.tasks.record_free(owner, freer, size) {
            self.cross.record(owner, self.tasks.party(freer), size);
        }
        if site != callsite::uncaptured::<SITES>() {
            self.sites.record_free(site, size);
        }
        if self.global_peak {
            self.global_live_bytes.fetch_sub(size);
        }
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
        let Some(placement) = Placement::of(layout) else {
            return null_mut();
        };
        // SAFETY: `placement.inner` has a non-zero size (it includes the
        // header), which is all `GlobalAlloc::alloc` asks.
        let base = unsafe {
            if zeroed {
                inner.alloc_zeroed(placement.inner)
            } else {
                inner.alloc(placement.inner)
            }
        };
        if base.is_null() {
            return null_mut();
        }
        let header = match mode {
            Mode::Off => Header::UNTRACKED,
            Mode::Tasks | Mode::TasksAndCallsites => {
                self.record_alloc(layout.size(), frame_pointer, mode, self.caller())
            }
        };
        // SAFETY: `base` is a live block of `placement.inner`.
        unsafe { placement.write_header(base, header) };
        // SAFETY: `user_offset + layout.size() <= placement.inner.size()`,
        // so the caller's block lies inside the inner one.
        unsafe { base.add(placement.user_offset) }
    }

    /// Frees through `inner` a block this ledger allocated, crediting it to
    /// whoever allocated it, as `GlobalAlloc::dealloc` would.
    ///
    /// # Safety
    /// - The duties of `GlobalAlloc::dealloc`, for a block this ledger
    ///   allocated through `inner`.
    #[inline(always)]
    pub unsafe fn dealloc<A: GlobalAlloc>(&self, inner: &A, ptr: *mut u8, layout: Layout) {
        // SAFETY: the block was allocated through this ledger with `layout`
        // (caller's duty), so `Placement::of` accepted the layout then.
        let placement = unsafe { Placement::of_allocated(layout) };
        // SAFETY: `ptr` came from `alloc` with this layout (caller's duty),
        // so it is `user_offset` into an inner block of `placement.inner`.
        let base = unsafe { ptr.sub(placement.user_offset) };
        // SAFETY: the block is live until the inner `dealloc` below.
        let header = unsafe { placement.read_header(base) };
        // Counted before the memory goes back, so a block that reuses it at
        // once is never live twice in the global figure. Blocks that were
        // never counted do not even ask who is freeing.
        match header.decode() {
            Some((owner, site)) if owner != Ticket::UNTRACKED => {
                self.record_free(owner, site, layout.size(), self.caller());
            }
            Some(_) => {}
            None => self.damaged_headers.add_shared(1),
        }
        // SAFETY: `base` was allocated by the inner allocator with exactly
        // `placement.inner`.
        unsafe { inner.dealloc(base, placement.inner) }
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
                    self.record_free(owner, site, layout.size(), caller);
                }
                Some(_) => {}
                None => self.damaged_headers.add_shared(1),
            }
            match mode {
                Mode::Off => Header::UNTRACKED,
                _ => self.record_alloc(new_size, frame_pointer, mode, caller),
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
}
