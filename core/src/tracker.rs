//! The tracker: a `GlobalAlloc` that wraps another and credits every block to
//! the task and the callsite that allocated it.

use core::alloc::{GlobalAlloc, Layout};
use core::ops::Deref;

use crate::context::Context;
use crate::ledger::{Ledger, Mode};
use crate::primitive::{loom_const_fn, AtomicU8, Ordering};
use crate::walker;

/// A `GlobalAlloc` that wraps `A` and records who allocates what in its
/// [`Ledger`], whose reports it offers through `Deref`.
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
}

impl<
        A,
        C,
        const TASKS: usize,
        const SITES: usize,
        const DEPTH: usize,
        const PAIRS: usize,
        const SAMPLES: usize,
    > Deref for Tracker<A, C, TASKS, SITES, DEPTH, PAIRS, SAMPLES>
{
    type Target = Ledger<C, TASKS, SITES, DEPTH, PAIRS, SAMPLES>;

    fn deref(&self) -> &Self::Target {
        &self.ledger
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
