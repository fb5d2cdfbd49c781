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
use crate::context::Context;
use crate::cross::{CrossFree, CrossTable};
use crate::figures::{Amount, Figures, TaskFigures};
use crate::memo::StackMemo;
use crate::party::{SampleFreed, TaskBucket, TaskId, Ticket, Who};
use crate::primitive::{loom_const_fn, AtomicU64, Counter, Ordering, Writer};
use crate::report::{insert_ranked, CallsiteReport, Order, TaskReport, Totals};
use crate::sampling::{self, SampleTable, SampledBlock, SampledPlacement};
use crate::task::{OwnRow, TaskRowView, TaskTable};
use crate::walker::Stack;

mod exact;
mod read;
mod sampled;

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

/// Samples the sampling form could not take: no free entry in the table of
/// live sampled blocks within a search's reach, or no memory for the block.
/// Their allocations are in their tasks' exact counts and in no estimate,
/// and their frees touch nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
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
}

/// How much memory a table takes, and how many of its rows are in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct TableMemory {
    /// Bytes of the whole table: address space, fixed at compile time.
    pub reserved: usize,
    /// Bytes of the rows in use and of everything that is not a row (the
    /// table's index): at most what the table occupies in memory.
    pub in_use: usize,
    /// Bytes each further row adds.
    pub per_row: usize,
    /// Rows in use.
    pub rows_in_use: usize,
    /// Rows that may be used ([`Ledger::set_callsite_limit`] for the
    /// callsite table).
    pub limit: usize,
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
