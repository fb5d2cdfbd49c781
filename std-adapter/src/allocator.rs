//! The global allocator: `AllocTrack` and its paths into the ledger.

use std::alloc::{GlobalAlloc, Layout};

use alloc_track_core::{frame_pointer, Mode};

use crate::capacity::CALLSITE_ROWS;
use crate::config::{BacktraceMode, Capture, Config, Route, CONFIG};
use crate::context;
use crate::context::{StdLedger, LEDGER};
use crate::own_heap;

/// A global allocator that wraps `T` and records every allocation by thread
/// and, with [`BacktraceMode::Short`] or [`Full`](BacktraceMode::Full), by
/// callsite.
///
/// # One configuration per process
///
/// The reports are free functions, so there is one set of tables per
/// process, and one configuration: the first `AllocTrack` whose allocator
/// methods run sets it (in a program, the `#[global_allocator]`, before
/// `main`). Another `AllocTrack` value with other settings, called directly
/// later, counts into the same tables under the first one's settings; one
/// of the other form (exact or [sampling](Self::with_sampling)) counts
/// nothing at all, its blocks being its inner allocator's own (the sampling
/// form's) or carrying the untracked header (the exact form's). To change
/// what is recorded at run time, call [`set_backtrace_mode`](crate::set_backtrace_mode) or
/// [`set_tracking`](crate::set_tracking); [`backtrace_mode`](crate::backtrace_mode) tells what is in force.
pub struct AllocTrack<T: GlobalAlloc> {
    inner: T,
    config: Config,
    callsite_limit: usize,
    sampling: u64,
}

impl<T: GlobalAlloc> AllocTrack<T> {
    /// Wraps `inner`, recording callsites as `backtrace` says. See the
    /// type's docs: one configuration per process.
    pub const fn new(inner: T, backtrace: BacktraceMode) -> Self {
        Self {
            inner,
            config: Config::new(backtrace, Capture::FramePointers),
            callsite_limit: CALLSITE_ROWS,
            sampling: 0,
        }
    }

    /// The sampling form, for production: every `interval` bytes allocated
    /// on average (512 KiB is Go's and jemalloc's default), one allocation
    /// is sampled, in proportion to its size; only sampled blocks are
    /// recorded (the others carry no header and cost a countdown), and the
    /// reports give unbiased estimates, saying so and with which interval.
    /// What each thread allocated (bytes and count) stays exact; what was
    /// freed and what is live are estimated. Fixed for the process, like
    /// the rest of the configuration.
    ///
    /// An unsampled allocation under 64 KiB is counted, then handed to the
    /// inner allocator by a jump, whose answer goes straight back to the
    /// caller: if the inner allocator refuses it, it stays counted in the
    /// thread's exact figures (unless it ended one of the countdown's
    /// pieces of 64 KiB, which goes out of line). Allocators refuse blocks
    /// that small only when the system is out of memory; a refusal of 64
    /// KiB or more (as `try_reserve` of a large buffer meets) is taken
    /// back.
    ///
    /// The tracker's own allocations ([`REPORTS`](crate::REPORTS): a report's work, the
    /// symbols it keeps, the endpoint's threads) are never sampled: on Unix
    /// they are made in the tracker's own heap, which a free tells by its
    /// address, and counted exactly; they take no room in the table of
    /// [`SAMPLED_BLOCKS`](crate::SAMPLED_BLOCKS). The few the heap cannot
    /// serve (elsewhere than Unix, or while every part of it is busy) come
    /// from the inner allocator and are sampled at an interval of at least
    /// [`TRACKER_SAMPLING_INTERVAL`](alloc_track_core::raw::TRACKER_SAMPLING_INTERVAL)
    /// bytes; the tracker's row is then an estimate, and says so.
    ///
    /// # Panics
    /// If `interval` is 0, which would silently be the exact form: leave
    /// `with_sampling` out for that. In a `static`, the panic is an error at
    /// compile time:
    ///
    /// ```compile_fail
    /// use std::alloc::System;
    /// use alloc_track::{AllocTrack, BacktraceMode};
    /// static GLOBAL: AllocTrack<System> =
    ///     AllocTrack::new(System, BacktraceMode::Short).with_sampling(0);
    /// ```
    pub const fn with_sampling(mut self, interval: u64) -> Self {
        assert!(
            interval > 0,
            "with_sampling(0): a sampling interval is at least 1 byte; without with_sampling, \
             every allocation is recorded exactly"
        );
        self.sampling = interval;
        self
    }

    /// Uses at most `rows` callsite rows (at most [`CALLSITE_ROWS`]);
    /// further stacks are counted together as `(callsite table full)`. Each
    /// row in use costs about [`callsite_memory`](crate::callsite_memory)`().per_row` bytes.
    pub const fn with_callsite_limit(mut self, rows: usize) -> Self {
        self.callsite_limit = if rows < CALLSITE_ROWS {
            rows
        } else {
            CALLSITE_ROWS
        };
        self
    }

    /// Captures callsites as `capture` says.
    pub const fn with_capture(mut self, capture: Capture) -> Self {
        self.config = self.config.with_capture(capture);
        self
    }

    /// The wrapped allocator.
    pub const fn inner(&self) -> &T {
        &self.inner
    }

    /// The configuration in force: set by the first allocator call from
    /// this wrapper's own, then only by `set_backtrace_mode` and
    /// `set_tracking`.
    #[inline]
    fn config(&self) -> Config {
        match CONFIG.load() {
            Config::UNSET => self.configure(),
            config => config,
        }
    }

    /// Sets the process's configuration from this wrapper's, at the first
    /// allocator call, unless another wrapper's call set it first: returns
    /// the configuration in force. The ledger's settings follow the word,
    /// so that they are only ever the winner's; a path that meets the word
    /// before them (another thread, in that instant) is safe without them
    /// (the sampling form samples everything until its interval is set).
    #[cold]
    #[inline(never)]
    fn configure(&self) -> Config {
        let config = self.config.routed(self.samples());
        if let Err(current) = CONFIG.set_first(config) {
            return current;
        }
        LEDGER.set_callsite_limit(self.callsite_limit);
        if self.samples() {
            LEDGER.set_sampling(self.sampling, context::clock_nanos());
        }
        config
    }

    /// Whether this wrapper is of the sampling form: a constant where the
    /// wrapper is (the global allocator's is a `static` without interior
    /// mutability), so that each allocator method is compiled for its form
    /// alone. The free needs nothing else to know the form: every block
    /// this wrapper frees, it allocated in that form.
    #[inline(always)]
    const fn samples(&self) -> bool {
        self.sampling != 0
    }

    /// Whether the configuration word `config` is of this wrapper's form.
    /// When it is not, this wrapper counts nothing (see the type's docs).
    #[inline(always)]
    fn same_form(&self, config: Config) -> bool {
        config.sampled() == self.samples()
    }

    /// The body of `alloc` (`alloc_zeroed` when `ZEROED`), inlined into
    /// the caller (`__rust_alloc` in a program): the sampling form's
    /// unsampled allocation that fits in the thread's countdown, which is
    /// most of them, counted on the thread's hot counters (see
    /// `context::count_unsampled`), then a jump to the inner allocator,
    /// whose answer goes straight back to the caller. No frame of the
    /// tracker's own, no ticket decoded, no row read.
    ///
    /// So a refusal of such an allocation is not seen, and stays counted:
    /// waiting for the answer would cost a frame, the saved size, a test
    /// and a return, some 0.35 ns on a 7.9 ns replacement of a 64-byte
    /// block with glibc (ARCHITECTURE). An allocator refuses a few
    /// kilobytes only when the system is out of memory, where the
    /// program's next infallible allocation ends it. One that a program
    /// meets and goes on from (`try_reserve` of a large buffer) is large,
    /// and an allocation of
    /// [`COUNTDOWN_PIECE`](alloc_track_core::raw::COUNTDOWN_PIECE) (64 KiB) or
    /// more never fits in the countdown: it goes out of line with no test
    /// of its size here, and a refusal there is taken back. The exact form's
    /// threads-only and paused allocations jump to their paths from here;
    /// everything else, which may walk the stack or must see the inner
    /// allocator's answer, goes to [`alloc_routed`](Self::alloc_routed),
    /// out of line, whose frame is where the walk starts.
    ///
    /// # Safety
    /// The duties of `GlobalAlloc::alloc` (`alloc_zeroed` when `ZEROED`).
    #[inline(always)]
    unsafe fn alloc_inline<const ZEROED: bool>(&self, layout: Layout) -> *mut u8 {
        let config = CONFIG.load();
        if self.samples() {
            // An allocation of 64 KiB or more never fits in the countdown,
            // so it goes on, out of line.
            if config.counts_down() && context::count_unsampled(layout.size() as u64) {
                // SAFETY: forwarded from our caller; an unsampled block is
                // the inner allocator's own, as the sampling form's free
                // expects. Called last, so that the call is a jump: a
                // refusal stays counted (see above).
                return unsafe {
                    if ZEROED {
                        self.inner.alloc_zeroed(layout)
                    } else {
                        self.inner.alloc(layout)
                    }
                };
            }
        } else if config.route() == Route::EXACT_TASKS {
            if context::own_row().is_some() {
                // SAFETY: forwarded from our caller; the route says the
                // exact form, in tasks mode, and this wrapper is of it.
                return unsafe { self.exact_on_row::<ZEROED>(layout) };
            }
        } else if config.route() == Route::EXACT_OFF {
            // Paused, where a jump through the table of paths would cost
            // half as much again as the rest of the way in. Nothing is
            // walked while paused, so no frame is passed.
            // SAFETY: forwarded from our caller; this wrapper is of the
            // exact form.
            return unsafe { self.exact::<ZEROED, { Mode::Off as u8 }>(layout, 0) };
        }
        // SAFETY: forwarded from our caller; `config` is the word just read,
        // and the form passed is this wrapper's.
        unsafe {
            if self.samples() {
                self.alloc_routed::<ZEROED, true>(layout, config)
            } else {
                self.alloc_routed::<ZEROED, false>(layout, config)
            }
        }
    }

    /// Every allocation that [`alloc_inline`](Self::alloc_inline) does not
    /// make or hand on itself: by the path the configuration word `config`
    /// chose, through [`alloc_by`](Self::alloc_by). Never inlined, so that
    /// the walk starts at this frame, whose return address is the
    /// allocating call: reached by a jump from `__rust_alloc`, its frame
    /// record is where that function's was (see the core's
    /// `Tracker::alloc`). `SAMPLES` is this wrapper's form
    /// ([`samples`](Self::samples)), a constant here, so that each path out
    /// of line is compiled for its form alone.
    ///
    /// # Safety
    /// The duties of `GlobalAlloc::alloc` (`alloc_zeroed` when `ZEROED`),
    /// and `SAMPLES` is `self.samples()`.
    #[inline(never)]
    unsafe fn alloc_routed<const ZEROED: bool, const SAMPLES: bool>(
        &self,
        layout: Layout,
        config: Config,
    ) -> *mut u8 {
        // SAFETY: forwarded from our caller.
        unsafe { self.alloc_by::<ZEROED, SAMPLES>(config, layout, frame_pointer()) }
    }

    /// The exact form's allocation in tasks mode by a thread that keeps its
    /// row (see `alloc_inline`): a function of its own, reached by a jump.
    /// The row is read again after the inner call, where nothing has
    /// changed it (the inner allocator does not run the tracker), rather
    /// than kept in saved registers.
    ///
    /// # Safety
    /// As for [`alloc_inline`](Self::alloc_inline), in the exact form.
    #[inline(never)]
    unsafe fn exact_on_row<const ZEROED: bool>(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded from our caller.
        unsafe { LEDGER.alloc_exact_on_row(&self.inner, layout, context::own_row, ZEROED) }
    }

    /// An allocation by the path `config` chose. Each path is a function of
    /// its own, called last (so that the call is a jump), in which the
    /// mode is a constant: none carries the registers and checks of
    /// another. `frame` is the frame pointer of `alloc_routed`, read
    /// there, and so is the stack pointer for the unwinder, which is read
    /// here.
    ///
    /// # Safety
    /// The duties of `GlobalAlloc::alloc` (`alloc_zeroed` when `ZEROED`).
    #[inline(always)]
    unsafe fn alloc_by<const ZEROED: bool, const SAMPLES: bool>(
        &self,
        config: Config,
        layout: Layout,
        frame: usize,
    ) -> *mut u8 {
        const OFF: u8 = Mode::Off as u8;
        const TASKS: u8 = Mode::Tasks as u8;
        const CALLSITES: u8 = Mode::TasksAndCallsites as u8;
        if config == Config::UNSET {
            // Before the word is set, the wrapper's own configuration says
            // where the capture starts.
            // SAFETY: forwarded from our caller.
            return unsafe {
                self.first_alloc::<ZEROED, SAMPLES>(layout, self.config.frame(frame))
            };
        }
        if config.sampled() != SAMPLES {
            // A word of the other form: a block as this wrapper's form
            // makes it while paused, counted nowhere (see the type's docs).
            // SAFETY: forwarded from our caller.
            return unsafe { self.form_path::<ZEROED, SAMPLES, OFF>(layout, 0) };
        }
        // SAFETY: forwarded from our caller; the word is of this wrapper's
        // form, whose path every arm takes.
        unsafe {
            match config.route() {
                Route::SAMPLED_TASKS | Route::EXACT_TASKS => {
                    self.form_path::<ZEROED, SAMPLES, TASKS>(layout, frame)
                }
                Route::SAMPLED_CALLSITES | Route::EXACT_CALLSITES => {
                    self.form_path::<ZEROED, SAMPLES, CALLSITES>(layout, frame)
                }
                Route::SAMPLED_UNWIND | Route::EXACT_UNWIND => self
                    .form_path::<ZEROED, SAMPLES, CALLSITES>(
                        layout,
                        alloc_track_core::stack_pointer(),
                    ),
                // Paused.
                _ => self.form_path::<ZEROED, SAMPLES, OFF>(layout, frame),
            }
        }
    }

    /// The path of the form `SAMPLES` (this wrapper's) for `MODE`.
    ///
    /// # Safety
    /// As for [`alloc_routed`](Self::alloc_routed).
    #[inline(always)]
    unsafe fn form_path<const ZEROED: bool, const SAMPLES: bool, const MODE: u8>(
        &self,
        layout: Layout,
        frame: usize,
    ) -> *mut u8 {
        // SAFETY: forwarded from our caller, to the path of this wrapper's
        // form, which its free expects.
        unsafe {
            if SAMPLES {
                self.sampled::<ZEROED, MODE>(layout, frame)
            } else {
                self.exact::<ZEROED, MODE>(layout, frame)
            }
        }
    }

    /// The exact form's path for `MODE`: with callsites, through the row
    /// the thread keeps when it keeps one.
    ///
    /// # Safety
    /// As for [`alloc_by`](Self::alloc_by), in the exact form.
    #[inline(never)]
    unsafe fn exact<const ZEROED: bool, const MODE: u8>(
        &self,
        layout: Layout,
        frame: usize,
    ) -> *mut u8 {
        const CALLSITES: u8 = Mode::TasksAndCallsites as u8;
        if MODE == CALLSITES {
            if let Some(row) = context::own_row() {
                // SAFETY: forwarded from our caller; the row is the one the
                // context's ticket names.
                return unsafe {
                    LEDGER.alloc_callsites_on_row(&self.inner, layout, row, frame, ZEROED)
                };
            }
        }
        if MODE == Mode::Off as u8 {
            // Paused: the untracked header, which frees never decode, so
            // the block is the inner allocator's even in the tracker's
            // scope.
            // SAFETY: forwarded from our caller.
            return unsafe { LEDGER.alloc_exact(&self.inner, layout, Mode::Off, frame, ZEROED) };
        }
        // SAFETY: forwarded from our caller; the tracker's own blocks are
        // made in its heap, with the tracker's header, and their frees give
        // them back there (see `dealloc_exact`).
        unsafe {
            LEDGER.alloc_exact(
                &OwnOr(&self.inner),
                layout,
                Mode::from_u8(MODE),
                frame,
                ZEROED,
            )
        }
    }

    /// The sampling form's path for `MODE`.
    ///
    /// # Safety
    /// As for [`alloc_by`](Self::alloc_by), in the sampling form.
    #[inline(never)]
    unsafe fn sampled<const ZEROED: bool, const MODE: u8>(
        &self,
        layout: Layout,
        frame: usize,
    ) -> *mut u8 {
        // The tracker's own block, from its heap, where its free tells it by
        // its address: counted there, exactly, not sampled.
        if let Some(block) = trackers_block(layout, ZEROED) {
            return block;
        }
        // SAFETY: forwarded from our caller.
        unsafe { LEDGER.alloc_sampling(&self.inner, layout, Mode::from_u8(MODE), frame, ZEROED) }
    }

    /// The exact form's free (see `dealloc`), with the thread's kept row:
    /// a free of the thread's own block in threads-only mode is counted
    /// inline, everything rarer out of line in the ledger.
    ///
    /// # Safety
    /// As for `GlobalAlloc::dealloc`, in the exact form.
    #[inline(always)]
    unsafe fn dealloc_exact(&self, ptr: *mut u8, layout: Layout) {
        let row = context::own_row();
        // SAFETY: forwarded from our caller. A block of the tracker's heap
        // carries the tracker's header, never a task's nor the untracked
        // one (see `exact` and `realloc`), so its free decodes the header,
        // and the context gives it back to the heap there
        // (`Context::free_elsewhere`).
        unsafe { LEDGER.dealloc_exact_on_row(&self.inner, ptr, layout.size(), layout.align(), row) }
    }

    /// The exact form's realloc, while paused, of a block of the tracker's
    /// heap: a block of the inner allocator's (with the untracked header),
    /// the bytes copied, the old block freed (and counted) as any.
    ///
    /// # Safety
    /// As for `GlobalAlloc::realloc` of the exact form's block `ptr`.
    #[cold]
    #[inline(never)]
    unsafe fn move_out_paused(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's promise: `new_size` with `layout`'s alignment
        // is a valid layout.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: a non-zero size, as the caller promises.
        let block = unsafe { LEDGER.alloc_exact(&self.inner, new_layout, Mode::Off, 0, false) };
        if !block.is_null() {
            // SAFETY: both blocks hold the bytes copied, and are apart; the
            // old block is freed once, by the exact form's free.
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, block, layout.size().min(new_size));
                self.dealloc_exact(ptr, layout);
            }
        }
        block
    }

    /// The sampling form's realloc of a block of the tracker's heap (see
    /// [`move_own`]): a new block, if it moves, by this wrapper's own paths.
    ///
    /// # Safety
    /// As for `GlobalAlloc::realloc` of the heap's block `ptr`.
    #[cold]
    #[inline(never)]
    unsafe fn realloc_own(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded from our caller.
        unsafe { move_own(self, ptr, layout, new_size) }
    }

    /// The first allocation of the process (or of this wrapper, if another
    /// wrapper's call set the configuration meanwhile): the configuration
    /// set, then the allocation through the ledger's entry for the form
    /// `SAMPLES` (this wrapper's), in the mode the configuration says.
    /// `frame` is where the capture starts, as the wrapper's configuration
    /// says.
    ///
    /// # Safety
    /// As for [`alloc_routed`](Self::alloc_routed).
    #[cold]
    #[inline(never)]
    unsafe fn first_alloc<const ZEROED: bool, const SAMPLES: bool>(
        &self,
        layout: Layout,
        frame: usize,
    ) -> *mut u8 {
        let config = self.configure();
        if config.sampled() != SAMPLES {
            // SAFETY: forwarded from our caller.
            return unsafe { self.form_path::<ZEROED, SAMPLES, { Mode::Off as u8 }>(layout, 0) };
        }
        let mode = config.mode();
        // SAFETY: forwarded from our caller, to the path of this wrapper's
        // form.
        unsafe {
            if SAMPLES {
                LEDGER.alloc_sampling(&self.inner, layout, mode, frame, ZEROED)
            } else {
                LEDGER.alloc_exact(&self.inner, layout, mode, frame, ZEROED)
            }
        }
    }
}

// SAFETY: every call is forwarded to the process's ledger with `self.inner`,
// which keeps the `GlobalAlloc` contract (`Ledger::alloc` and friends): the
// same inner allocator serves every block, since a program has one global
// allocator. The context guards the two things it does that may allocate
// (see `context.rs`), so nothing recurses.
unsafe impl<T: GlobalAlloc> GlobalAlloc for AllocTrack<T> {
    // Inlined, so that an unsampled allocation makes no frame of its own;
    // whatever may walk the stack is out of line (`alloc_routed`).
    #[inline(always)]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded from our caller; see the impl's comment.
        unsafe { self.alloc_inline::<false>(layout) }
    }

    #[inline(always)]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        unsafe { self.alloc_inline::<true>(layout) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // The form is this wrapper's, a constant, rather than the
        // configuration word's or the ledger's: the sampling form's free,
        // which mostly goes straight to the inner allocator, reads no shared
        // word, shares nothing with the exact form's and needs no registers
        // saved.
        if self.samples() {
            // SAFETY: as in `alloc`; this wrapper allocated the block in the
            // sampling form, through its paths or as the inner allocator's.
            unsafe {
                if StdLedger::may_be_sampled(ptr, layout) {
                    free_maybe_sampled(ptr, layout.size(), layout.align(), &self.inner);
                } else if own_heap::contains(ptr) {
                    free_own(ptr, layout.size(), layout.align());
                } else {
                    self.inner.dealloc(ptr, layout);
                }
            }
        } else {
            // SAFETY: as in `alloc`; this wrapper allocated the block in the
            // exact form.
            unsafe { self.dealloc_exact(ptr, layout) }
        }
    }

    #[inline(never)]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let config = self.config();
        let frame = config.frame(frame_pointer());
        // A word of the other form: nothing is counted (see the type's docs).
        let mode = if self.same_form(config) {
            config.mode()
        } else {
            Mode::Off
        };
        // SAFETY: as in `alloc`; the block is of this wrapper's form, and
        // goes to that form's path; in the sampling form, a block of the
        // tracker's heap is none of the ledger's.
        unsafe {
            if self.samples() {
                if own_heap::contains(ptr) {
                    return self.realloc_own(ptr, layout, new_size);
                }
                LEDGER.realloc_sampling(&self.inner, ptr, layout, new_size, mode, frame)
            } else if mode == Mode::Off && own_heap::contains(ptr) {
                // Paused, the block would get the untracked header, which
                // a block of the heap never carries: it moves out.
                self.move_out_paused(ptr, layout, new_size)
            } else {
                LEDGER.realloc_exact(&OwnOr(&self.inner), ptr, layout, new_size, mode, frame)
            }
        }
    }
}

/// The sampling form's free of a block that may be sampled (see
/// `dealloc`), out of line: its parameters come in the registers the free
/// received them in, so that the free moves nothing before its test.
///
/// # Safety
/// As for `GlobalAlloc::dealloc` of the sampling form's block `ptr`, with
/// the layout of `size` and `align`.
#[inline(never)]
unsafe fn free_maybe_sampled<T: GlobalAlloc>(ptr: *mut u8, size: usize, align: usize, inner: &T) {
    // SAFETY: our caller's layout, which was valid.
    let layout = unsafe { Layout::from_size_align_unchecked(size, align) };
    if own_heap::contains(ptr) {
        // SAFETY: a block of the tracker's heap, which made it for `layout`.
        return unsafe { own_heap::free(ptr, layout) };
    }
    // SAFETY: forwarded from our caller.
    unsafe { LEDGER.dealloc_maybe_sampled(inner, ptr, layout) }
}

/// The sampling form's free of a block of the tracker's heap, out of line
/// as [`free_maybe_sampled`] is.
///
/// # Safety
/// As for `GlobalAlloc::dealloc` of the heap's block `ptr`, with the layout
/// of `size` and `align`.
#[inline(never)]
unsafe fn free_own(ptr: *mut u8, size: usize, align: usize) {
    // SAFETY: our caller's layout, which was valid; the heap made the block
    // for it.
    unsafe { own_heap::free(ptr, Layout::from_size_align_unchecked(size, align)) }
}

/// The inner allocator as the exact form's allocations and reallocs see
/// it: the tracker's own blocks are made in its heap (while the thread is
/// in the tracker's scope) and given back there (told by their address),
/// everything else is `T`'s. Frees do not need it: the context takes the
/// heap's blocks back (`Context::free_elsewhere`).
struct OwnOr<'a, T>(&'a T);

// SAFETY: each block goes back to the allocator that made it: the heap's,
// told by `own_heap::contains`, to the heap; any other to `T`, which made
// it. A block moved by `realloc` is made anew where the caller's scope says
// and its bytes copied.
unsafe impl<T: GlobalAlloc> GlobalAlloc for OwnOr<'_, T> {
    #[inline(always)]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded from our caller.
        trackers_block(layout, false).unwrap_or_else(|| unsafe { self.0.alloc(layout) })
    }

    #[inline(always)]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded from our caller.
        trackers_block(layout, true).unwrap_or_else(|| unsafe { self.0.alloc_zeroed(layout) })
    }

    #[inline(always)]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if own_heap::contains(ptr) {
            // SAFETY: out of line; a block of the heap, made for `layout`.
            return unsafe { free_own(ptr, layout.size(), layout.align()) };
        }
        // SAFETY: forwarded from our caller: `T` made the block.
        unsafe { self.0.dealloc(ptr, layout) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !own_heap::contains(ptr) {
            // SAFETY: forwarded from our caller: `T` made the block.
            return unsafe { self.0.realloc(ptr, layout, new_size) };
        }
        // SAFETY: forwarded from our caller.
        unsafe { move_own(self, ptr, layout, new_size) }
    }
}

/// A block of the tracker's heap for `layout` (zeroed if `zeroed`), if this
/// thread is in the tracker's scope and the heap can serve it.
#[inline(always)]
fn trackers_block(layout: Layout, zeroed: bool) -> Option<*mut u8> {
    if context::in_trackers_scope() {
        own_heap::alloc(layout, zeroed)
    } else {
        None
    }
}

/// A realloc of `ptr`, a block of the tracker's heap made for `layout`: in
/// place when the caller is in the tracker's scope and the block's class
/// (or span) holds `new_size`, counted as a free and an allocation; else a
/// block from `to` (the heap's again in the tracker's scope, the program's
/// otherwise), the bytes copied, the old block freed.
///
/// # Safety
/// As for `GlobalAlloc::realloc` of the heap's block `ptr`.
#[inline(never)]
unsafe fn move_own<A: GlobalAlloc>(
    to: &A,
    ptr: *mut u8,
    layout: Layout,
    new_size: usize,
) -> *mut u8 {
    if own_heap::fits_in_place(layout, new_size) && context::in_trackers_scope() {
        own_heap::count_in_place(layout.size(), new_size);
        return ptr;
    }
    // SAFETY: the caller's promise: `new_size` with `layout`'s alignment is
    // a valid layout.
    let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
    // SAFETY: a non-zero size, as the caller promises.
    let block = unsafe { to.alloc(new_layout) };
    if !block.is_null() {
        // SAFETY: both blocks hold the bytes copied, and are apart.
        unsafe { std::ptr::copy_nonoverlapping(ptr, block, layout.size().min(new_size)) };
        // SAFETY: the heap's block, made for `layout`, freed once.
        unsafe { own_heap::free(ptr, layout) };
    }
    block
}
