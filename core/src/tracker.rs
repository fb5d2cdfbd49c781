//! The tracker: a `GlobalAlloc` that wraps another and credits every block to
//! the task and the callsite that allocated it.

use core::alloc::{GlobalAlloc, Layout};

use crate::callsite::CallsiteRowView;
use crate::context::Context;
use crate::cross::CrossFree;
use crate::figures::{Figures, TaskFigures};
use crate::ledger::{CallsiteBucket, DroppedSamples, Ledger, Mode, TableMemory};
use crate::party::{TaskBucket, TaskId};
use crate::primitive::{loom_const_fn, AtomicU8, Ordering};
use crate::report::{CallsiteReport, Order, TaskReport, Totals};
use crate::task::TaskRowView;
use crate::walker;

/// A `GlobalAlloc` that wraps `A` and records who allocates what in its
/// [`Ledger`]. Its reports and figures are its own methods (the ledger's,
/// which [`ledger`](Self::ledger) reaches for what adapters need).
pub struct Tracker<
    A,
    C,
    const TASKS: usize = 64,
    const SITES: usize = 1024,
    const DEPTH: usize = 16,
    const PAIRS: usize = 64,
    const SAMPLES: usize = 0,
> {
    inner: A,
    mode: AtomicU8,
    ledger: Ledger<C, TASKS, SITES, DEPTH, PAIRS, SAMPLES>,
}

impl<
        A,
        C: Context,
        const TASKS: usize,
        const SITES: usize,
        const DEPTH: usize,
        const PAIRS: usize,
        const SAMPLES: usize,
    > Tracker<A, C, TASKS, SITES, DEPTH, PAIRS, SAMPLES>
{
    loom_const_fn! {
        /// A tracker over `inner` that asks `context` who is allocating, in
        /// [`Mode::TasksAndCallsites`] with the global peak kept.
        pub fn new(inner: A, context: C) -> Self {
            Self {
                inner,
                mode: AtomicU8::new(Mode::TasksAndCallsites as u8),
                ledger: Ledger::new(context),
            }
        }
    }

    loom_const_fn! {
        /// Starts in `mode` instead.
        pub fn with_mode(mut self, mode: Mode) -> Self {
            self.mode = AtomicU8::new(mode as u8);
            self
        }
    }

    loom_const_fn! {
        /// The sampling form: see [`Ledger::with_sampling`].
        pub fn with_sampling(mut self, interval: u64) -> Self {
            self.ledger.set_sampling_interval(interval);
            self
        }
    }

    loom_const_fn! {
        /// See [`Ledger::with_global_peak`].
        pub fn with_global_peak(mut self, enabled: bool) -> Self {
            self.ledger.set_global_peak(enabled);
            self
        }
    }

    /// The wrapped allocator.
    pub const fn inner(&self) -> &A {
        &self.inner
    }

    /// The tables and their reports.
    pub const fn ledger(&self) -> &Ledger<C, TASKS, SITES, DEPTH, PAIRS, SAMPLES> {
        &self.ledger
    }

    /// What is recorded now.
    pub fn mode(&self) -> Mode {
        Mode::from_u8(self.mode.load(Ordering::Relaxed))
    }

    /// Changes what is recorded from now on.
    pub fn set_mode(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::Relaxed);
    }

    /// The `K` task rows first in `order`, with the buckets and totals
    /// ([`Ledger::task_report`]).
    pub fn task_report<const K: usize>(&self, order: Order) -> TaskReport<K> {
        self.ledger.task_report(order)
    }

    /// The `K` callsite rows first in `order`, with the buckets and totals
    /// ([`Ledger::callsite_report`]).
    pub fn callsite_report<const K: usize>(&self, order: Order) -> CallsiteReport<K, DEPTH> {
        self.ledger.callsite_report(order)
    }

    /// The figures of all tracked blocks ([`Ledger::totals`]).
    pub fn totals(&self) -> Totals {
        self.ledger.totals()
    }

    /// The figures of task `id`, if it has a row ([`Ledger::task_figures`]).
    pub fn task_figures(&self, id: TaskId) -> Option<TaskFigures> {
        self.ledger.task_figures(id)
    }

    /// A bucket's figures ([`Ledger::task_bucket`]).
    pub fn task_bucket(&self, which: TaskBucket) -> TaskFigures {
        self.ledger.task_bucket(which)
    }

    /// A callsite bucket's figures ([`Ledger::callsite_bucket`]).
    pub fn callsite_bucket(&self, which: CallsiteBucket) -> Figures {
        self.ledger.callsite_bucket(which)
    }

    /// Visits every task row in use ([`Ledger::for_each_task`]).
    pub fn for_each_task(&self, visit: impl FnMut(TaskRowView)) {
        self.ledger.for_each_task(visit);
    }

    /// Visits every callsite row in use ([`Ledger::for_each_callsite`]).
    pub fn for_each_callsite(&self, visit: impl FnMut(&CallsiteRowView<DEPTH>)) {
        self.ledger.for_each_callsite(visit);
    }

    /// Visits every pair of tasks where one freed the other's blocks
    /// ([`Ledger::for_each_cross_free`]).
    pub fn for_each_cross_free(&self, visit: impl FnMut(CrossFree)) {
        self.ledger.for_each_cross_free(visit);
    }

    /// Ends task `id`: its figures go to the finished bucket and its row is
    /// let go ([`Ledger::task_exit`]).
    pub fn task_exit(&self, id: TaskId) -> bool {
        self.ledger.task_exit(id)
    }

    /// What the callsite table costs now ([`Ledger::callsite_memory`]).
    pub fn callsite_memory(&self) -> TableMemory {
        self.ledger.callsite_memory()
    }

    /// The samples the sampling form dropped ([`Ledger::dropped_samples`]).
    pub fn dropped_samples(&self) -> DroppedSamples {
        self.ledger.dropped_samples()
    }

    /// Frees whose header failed its check ([`Ledger::damaged_headers`]).
    pub fn damaged_headers(&self) -> u64 {
        self.ledger.damaged_headers()
    }

    /// The figures of the captured callsites together
    /// ([`Ledger::captured_totals`]).
    pub fn captured_totals(&self) -> Figures {
        self.ledger.captured_totals()
    }

    /// Bytes and frees of cross-task frees that found the pair table full
    /// ([`Ledger::cross_free_overflow`]).
    pub fn cross_free_overflow(&self) -> (u64, u64) {
        self.ledger.cross_free_overflow()
    }

    /// Task rows in use ([`Ledger::task_rows_in_use`]).
    pub fn task_rows_in_use(&self) -> usize {
        self.ledger.task_rows_in_use()
    }

    /// Callsite rows in use ([`Ledger::callsite_rows_in_use`]).
    pub fn callsite_rows_in_use(&self) -> usize {
        self.ledger.callsite_rows_in_use()
    }
}

// SAFETY: every method forwards to the ledger with the same inner allocator,
// which keeps the `GlobalAlloc` contract (see `Ledger::alloc`): the caller's
// pointer is inside an inner block laid out by `Placement::of` from the
// caller's layout, and `dealloc`/`realloc` recompute the same placement.
// Nothing on these paths allocates, takes a lock or panics, so the tracker
// never re-enters itself.
unsafe impl<
        A: GlobalAlloc,
        C: Context,
        const TASKS: usize,
        const SITES: usize,
        const DEPTH: usize,
        const PAIRS: usize,
        const SAMPLES: usize,
    > GlobalAlloc for Tracker<A, C, TASKS, SITES, DEPTH, PAIRS, SAMPLES>
{
    // Never inlined: the walk starts at this method's frame, whose return
    // address is the allocating call itself. Inlined into its caller (with
    // LTO, say), the walk would start one frame too far out and miss the
    // line that allocates.
    #[inline(never)]
    #[cfg_attr(miri, track_caller)]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // Read here, in the frame the program called, so the walk starts at
        // the program's caller and skips the tracker.
        let frame_pointer = walker::frame_pointer();
        // SAFETY: forwarded from our caller; every block goes through this
        // ledger with `self.inner`.
        unsafe {
            self.ledger
                .alloc(&self.inner, layout, self.mode(), frame_pointer, false)
        }
    }

    #[inline(never)]
    #[cfg_attr(miri, track_caller)]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let frame_pointer = walker::frame_pointer();
        // SAFETY: as in `alloc`.
        unsafe {
            self.ledger
                .alloc(&self.inner, layout, self.mode(), frame_pointer, true)
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as in `alloc`.
        unsafe { self.ledger.dealloc(&self.inner, ptr, layout) }
    }

    #[inline(never)]
    #[cfg_attr(miri, track_caller)]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let frame_pointer = walker::frame_pointer();
        // SAFETY: as in `alloc`.
        unsafe {
            self.ledger.realloc(
                &self.inner,
                ptr,
                layout,
                new_size,
                self.mode(),
                frame_pointer,
            )
        }
    }
}
