//! The figures kept for every row, both as live atomic counters and as the
//! plain copies that reports hand out.

use crate::primitive::{loom_const_fn, Counter, Writer};

/// What one row (a task, a callsite, or a fallback bucket) has allocated and
/// freed, copied out of the tracker.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Figures {
    /// Bytes of all allocations made (as requested by the caller; the
    /// tracker's own per-block overhead is not included).
    pub allocated_bytes: u64,
    /// Number of allocations made.
    pub allocations: u64,
    /// Bytes of this row's allocations that have been freed, by anyone.
    pub freed_bytes: u64,
    /// Number of this row's allocations that have been freed, by anyone.
    pub frees: u64,
    /// The highest value live bytes have reached.
    pub peak_live_bytes: u64,
}

impl Figures {
    /// Bytes allocated and not yet freed.
    pub const fn live_bytes(&self) -> u64 {
        self.allocated_bytes.saturating_sub(self.freed_bytes)
    }

    /// Allocations not yet freed.
    pub const fn live_allocations(&self) -> u64 {
        self.allocations.saturating_sub(self.frees)
    }

    /// Adds another row's flows (allocated and freed) to these. Peaks do not
    /// add up, so the peak becomes the larger of the two.
    pub fn accumulate(&mut self, other: &Figures) {
        self.allocated_bytes = self.allocated_bytes.wrapping_add(other.allocated_bytes);
        self.allocations = self.allocations.wrapping_add(other.allocations);
        self.freed_bytes = self.freed_bytes.wrapping_add(other.freed_bytes);
        self.frees = self.frees.wrapping_add(other.frees);
        self.peak_live_bytes = self.peak_live_bytes.max(other.peak_live_bytes);
    }
}

/// The figures of one task row: its own allocations, and the frees that
/// crossed between it and other tasks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TaskFigures {
    /// The task's allocations; `freed_*` counts frees by anyone.
    pub figures: Figures,
    /// Bytes of this task's allocations that other tasks freed (included in
    /// `figures.freed_bytes`).
    pub freed_by_others_bytes: u64,
    /// Number of this task's allocations that other tasks freed (included in
    /// `figures.frees`).
    pub freed_by_others: u64,
    /// Bytes this task freed of other tasks' allocations.
    pub freed_of_others_bytes: u64,
    /// Number of other tasks' allocations this task freed.
    pub freed_of_others: u64,
    /// In the sampling form, what the task allocated, counted exactly (the
    /// other figures are estimates); `None` in the exact form, where every
    /// figure is exact.
    pub exact_allocations: Option<ExactAllocations>,
}

/// What a task allocated, counted exactly even in the sampling form.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ExactAllocations {
    /// Bytes allocated.
    pub bytes: u64,
    /// Allocations made.
    pub count: u64,
}

impl TaskFigures {
    /// Adds another task's figures to these (see [`Figures::accumulate`]).
    pub fn accumulate(&mut self, other: &TaskFigures) {
        self.figures.accumulate(&other.figures);
        self.exact_allocations = match (self.exact_allocations, other.exact_allocations) {
            (Some(mine), Some(theirs)) => Some(ExactAllocations {
                bytes: mine.bytes.wrapping_add(theirs.bytes),
                count: mine.count.wrapping_add(theirs.count),
            }),
            (mine, None) => mine,
            (None, theirs) => theirs,
        };
        self.freed_by_others_bytes = self
            .freed_by_others_bytes
            .wrapping_add(other.freed_by_others_bytes);
        self.freed_by_others = self.freed_by_others.wrapping_add(other.freed_by_others);
        self.freed_of_others_bytes = self
            .freed_of_others_bytes
            .wrapping_add(other.freed_of_others_bytes);
        self.freed_of_others = self.freed_of_others.wrapping_add(other.freed_of_others);
    }
}

/// What one allocation or free adds to a row: its bytes and its count. One
/// block in the exact form; in the sampling form what a sample stands for,
/// in fixed-point units (see the `sampling` module).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Amount {
    pub(crate) bytes: u64,
    pub(crate) count: u64,
}

impl Amount {
    /// One block of `size` bytes.
    #[inline]
    pub const fn block(size: u64) -> Self {
        Self {
            bytes: size,
            count: 1,
        }
    }
}

/// Counters of a row that only its owner writes: plain loads and stores.
///
/// Live bytes are derived (`allocated - freed - freed_elsewhere`), and the
/// peak is raised by the owner when it allocates.
pub(crate) struct OwnedCounters {
    allocated_bytes: Counter,
    allocations: Counter,
    freed_bytes: Counter,
    frees: Counter,
    peak_live_bytes: Counter,
}

impl OwnedCounters {
    loom_const_fn! {
        pub(crate) fn new() -> Self {
            Self {
                allocated_bytes: Counter::new(),
                allocations: Counter::new(),
                freed_bytes: Counter::new(),
                frees: Counter::new(),
                peak_live_bytes: Counter::new(),
            }
        }
    }

    /// Records an allocation. `freed_elsewhere` is what other writers have
    /// freed of this row, so that the peak sees the true live figure.
    #[inline]
    pub(crate) fn record_alloc(&self, amount: Amount, freed_elsewhere: u64) {
        let allocated = self.allocated_bytes.get().wrapping_add(amount.bytes);
        self.allocated_bytes.add_owned(amount.bytes);
        self.allocations.add_owned(amount.count);
        let live = allocated
            .wrapping_sub(self.freed_bytes.get())
            .wrapping_sub(freed_elsewhere);
        self.peak_live_bytes.raise(live, Writer::Owner);
    }

    #[inline]
    pub(crate) fn record_free(&self, amount: Amount) {
        self.freed_bytes.add_owned(amount.bytes);
        self.frees.add_owned(amount.count);
    }

    pub(crate) fn load(&self) -> Figures {
        Figures {
            allocated_bytes: self.allocated_bytes.get(),
            allocations: self.allocations.get(),
            freed_bytes: self.freed_bytes.get(),
            frees: self.frees.get(),
            peak_live_bytes: self.peak_live_bytes.get(),
        }
    }

    /// Moves the figures out, leaving zeros for the next owner.
    pub(crate) fn take(&self) -> Figures {
        Figures {
            allocated_bytes: self.allocated_bytes.take(),
            allocations: self.allocations.take(),
            freed_bytes: self.freed_bytes.take(),
            frees: self.frees.take(),
            peak_live_bytes: self.peak_live_bytes.take(),
        }
    }
}

/// Counters of a row that many tasks write at once: read-modify-writes only.
///
/// Live bytes are a counter of their own, so that each allocation learns the
/// exact live figure it produced and the peak is exact under concurrency.
pub(crate) struct SharedCounters {
    allocated_bytes: Counter,
    allocations: Counter,
    live_bytes: Counter,
    frees: Counter,
    peak_live_bytes: Counter,
}

impl SharedCounters {
    loom_const_fn! {
        pub(crate) fn new() -> Self {
            Self {
                allocated_bytes: Counter::new(),
                allocations: Counter::new(),
                live_bytes: Counter::new(),
                frees: Counter::new(),
                peak_live_bytes: Counter::new(),
            }
        }
    }

    #[inline]
    pub(crate) fn record_alloc(&self, amount: Amount) {
        self.add_allocated(amount);
        self.add_live(amount.bytes);
    }

    #[inline]
    pub(crate) fn record_free(&self, amount: Amount) {
        self.sub_live(amount.bytes);
        self.add_frees(amount.count);
    }

    /// The allocated part of an allocation: bytes and count.
    #[inline(always)]
    pub(crate) fn add_allocated(&self, amount: Amount) {
        self.allocated_bytes.add_shared(amount.bytes);
        self.allocations.add_shared(amount.count);
    }

    /// The live part of an allocation, and the peak it may raise. After the
    /// allocated part, so that a report never sees a block live that it does
    /// not see allocated.
    #[inline(always)]
    pub(crate) fn add_live(&self, bytes: u64) {
        let live = self.live_bytes.fetch_add(bytes).wrapping_add(bytes);
        self.peak_live_bytes.raise(live, Writer::Shared);
    }

    /// The live part of a free.
    #[inline(always)]
    pub(crate) fn sub_live(&self, bytes: u64) {
        self.live_bytes.fetch_sub(bytes);
    }

    /// The count part of a free.
    #[inline(always)]
    pub(crate) fn add_frees(&self, count: u64) {
        self.frees.add_shared(count);
    }

    /// Adds the figures of a row that is being folded into this one. The
    /// peak becomes the highest of this row's live bytes at any moment and
    /// of every folded row's own peak: for the finished bucket, the largest
    /// peak of any one finished task, unless what they left live together
    /// was ever more.
    pub(crate) fn absorb(&self, folded: &Figures) {
        self.allocated_bytes.add_shared(folded.allocated_bytes);
        self.allocations.add_shared(folded.allocations);
        self.frees.add_shared(folded.frees);
        let live = self
            .live_bytes
            .fetch_add(folded.live_bytes())
            .wrapping_add(folded.live_bytes());
        self.peak_live_bytes
            .raise(live.max(folded.peak_live_bytes), Writer::Shared);
    }

    pub(crate) fn load(&self) -> Figures {
        self.load_with(Figures::default)
    }

    /// The figures, with the allocated bytes, allocations and frees that
    /// `elsewhere` reads (counted for this row in other places) added.
    pub(crate) fn load_with(&self, elsewhere: impl FnOnce() -> Figures) -> Figures {
        // Live is read before allocated: any allocation that lands between
        // the two reads raises allocated, never lowers freed below zero.
        let live = self.live_bytes.get();
        let extra = elsewhere();
        let allocated_bytes = self
            .allocated_bytes
            .get()
            .wrapping_add(extra.allocated_bytes);
        Figures {
            allocated_bytes,
            allocations: self.allocations.get().wrapping_add(extra.allocations),
            freed_bytes: allocated_bytes.saturating_sub(live),
            frees: self.frees.get().wrapping_add(extra.frees),
            peak_live_bytes: self.peak_live_bytes.get(),
        }
    }
}
