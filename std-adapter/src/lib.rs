//! Track heap allocations by thread and by backtrace, live, inside the
//! running program: wrap the global allocator and ask for a report at any
//! time.
//!
//! A drop-in for the `alloc-track` 0.3 API (`AllocTrack`, `BacktraceMode`,
//! [`thread_report`], [`backtrace_report`]) built on `alloc-track-core`'s
//! fixed-capacity, lock-free tables: no map of live pointers, no lock and no
//! allocation on the allocation path, callsites by frame-pointer walk (tens
//! of nanoseconds) and resolved to symbols only when a report asks, threads
//! without limit.
//!
//! # Quick start
//!
//! ```
//! use std::alloc::System;
//! use alloc_track::{AllocTrack, BacktraceMode};
//!
//! #[global_allocator]
//! static GLOBAL: AllocTrack<System> = AllocTrack::new(System, BacktraceMode::Short);
//!
//! let kept = vec![0u8; 4096];
//! let report = alloc_track::thread_report();
//! let main = &report.0["main"];
//! assert!(main.current_used >= 4096);
//! println!("{report}");
//!
//! // Callsites holding more than 1 KiB, with function, file and line.
//! let backtraces = alloc_track::backtrace_report(|_, metric| metric.in_use() > 1024);
//! println!("{backtraces}");
//! # drop(kept);
//! ```
//!
//! Build with `-C force-frame-pointers=yes` (in `.cargo/config.toml`:
//! `[build] rustflags = ["-C", "force-frame-pointers=yes"]`) so callsites can
//! be walked. Without frame pointers, either accept shorter stacks or opt in
//! to unwinding with [`AllocTrack::with_capture`]`(`[`Capture::Unwind`]`)`,
//! which costs microseconds per allocation.
//!
//! # What it records
//!
//! Per thread: bytes and counts allocated and freed, live and peak live
//! bytes, and who freed the thread's blocks (frees are always credited to
//! the allocating thread). A thread's figures are folded into
//! `(finished threads)` when it exits and its row is reused, so programs may
//! start threads without limit. Per callsite: the same figures, for the
//! stack of return addresses the allocation came from.
//!
//! For production, [`AllocTrack::with_sampling`] records a sample of the
//! allocations (one per 512 KiB allocated, say): no header on unsampled
//! blocks, unbiased estimates in the same report fields (each metric's
//! `sampling_interval` says so), exact allocated bytes and counts per
//! thread, and how long sampled blocks lived per callsite.
//!
//! Table capacities are fixed: [`THREAD_ROWS`] threads alive at once,
//! [`CALLSITE_ROWS`] callsites of up to [`CALLSITE_DEPTH`] frames. Beyond
//! them, allocations are counted in overflow rows, never dropped. Every block
//! costs 8 bytes more in the inner allocator (16 at alignment 16). With
//! callsites on, each thread keeps the last two stacks it walked and their
//! rows (`alloc_track_core::StackMemo`, in a thread-local): an allocation
//! from one of them checks the stack's frame records instead of walking it
//! again, with the same result.
//!
//! # Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `backtrace` | yes | symbols in backtrace reports; [`Capture::Unwind`] |
//! | `serde` | no | `Serialize` and `to_json` (a `serde_json::Result`) for the reports; snapshot files |
//! | `http` | no | an HTTP debug endpoint at Go's `/debug/pprof/` paths ([`http::serve`]) |
//! | `export` | no | pprof heap profiles, folded stacks and flamegraph SVGs of snapshots ([`export`]) |

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};

use alloc_track_core::{frame_pointer, Ledger, Mode};

mod backtrace_report;
mod context;
mod exit_check;
#[cfg(feature = "export")]
pub mod export;
#[cfg(feature = "http")]
pub mod http;
mod lifetimes;
#[cfg(target_os = "linux")]
mod loaded;
mod measure;
mod names;
mod release;
mod scope;
mod size;
mod snapshot;
mod symbol;
#[cfg(all(feature = "backtrace", target_os = "linux"))]
mod symbolizer;
mod symbols;
mod thread_report;

pub use alloc_track_core::Order;
pub use backtrace_report::{
    backtrace_report, backtrace_report_with, Backtrace, BacktraceFrame, BacktraceMetric,
    BacktraceOptions, BacktraceReport, CallsiteKind, HashedBacktrace, SHOWN_ENTRIES,
};
pub use exit_check::{leak_check_at_exit, LEAK_EXIT_CODE};
pub use lifetimes::{LifetimeRange, LifetimeSummary, LIFETIME_ROWS, SHORT_LIVED_NANOS};
pub use measure::{assert_no_alloc, measure, Usage};
pub use release::release_memory;
pub use scope::{scope, InScope, ScopeFutureExt, ScopeGuard, OVERFLOW_SCOPES, SCOPE_NAMES};
pub use size::{Size, SizeF64};
pub use snapshot::{CallsiteChange, Change, Snapshot, SnapshotDiff, ThreadChange};
pub use symbol::{BacktraceSymbol, FrameOrigin};
pub use symbols::release_symbols;
pub use thread_report::{
    scope_report, thread_report, ThreadGroup, ThreadMetric, ThreadReport, FINISHED_THREADS,
    MEASUREMENTS, OVERFLOW_THREADS, REPORTS, UNKNOWN_THREAD,
};

pub use context::thread_stack;
use context::ThreadContext;

/// Thread rows: threads (and reporting threads' report rows) alive at once.
pub const THREAD_ROWS: usize = 1024;
/// Callsite rows: distinct allocation stacks over the program's life. Rows
/// are used in order and the table lives in a `static`, so the memory that
/// unused rows take is address space only (see [`callsite_memory`]); lower
/// the limit with [`AllocTrack::with_callsite_limit`].
pub const CALLSITE_ROWS: usize = 65_536;
/// Return addresses kept per callsite.
pub const CALLSITE_DEPTH: usize = 16;
/// Rows for (allocating thread, freeing thread) pairs of cross-thread frees.
pub const CROSS_FREE_ROWS: usize = 1024;
/// Live sampled blocks the sampling form can record at once
/// ([`AllocTrack::with_sampling`]); a sample beyond them is dropped and
/// counted.
pub const SAMPLED_BLOCKS: usize = 65_536;

pub(crate) type StdLedger = Ledger<
    ThreadContext,
    THREAD_ROWS,
    CALLSITE_ROWS,
    CALLSITE_DEPTH,
    CROSS_FREE_ROWS,
    SAMPLED_BLOCKS,
>;

/// The one ledger of the process, whatever allocator `AllocTrack` wraps.
static LEDGER: StdLedger = Ledger::new(ThreadContext).with_global_peak(false);

/// What callsite information to keep, and how reports show it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum BacktraceMode {
    /// Per-thread figures only.
    #[default]
    None,
    /// Per-callsite figures too; reports hide the allocator's, the tracker's
    /// and the runtime's frames.
    Short,
    /// Per-callsite figures too; reports show every frame.
    Full,
}

/// How callsites are captured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Capture {
    /// Walk the frame-pointer chain: tens of nanoseconds. Needs
    /// `-C force-frame-pointers=yes`. Code built without frame pointers gives
    /// shorter stacks (the walk stops where the chain breaks), never a fault.
    #[default]
    FramePointers,
    /// Unwind with the platform unwinder (the `backtrace` crate): works
    /// without frame pointers, at microseconds per allocation. Exists only
    /// on Unix targets with the `backtrace` feature, where the unwinder may
    /// be called from any thread at once; elsewhere, naming it is a compile
    /// error rather than a capture that silently records nothing.
    #[cfg(all(feature = "backtrace", unix))]
    Unwind,
}

/// Encodes what is tracked: bits 0-1 the backtrace mode (1 none, 2 short, 3
/// full), bit 2 unwinding, bit 3 paused, and bits 4-7 the allocation path
/// those and the form choose (see [`route`]), so that an allocation reads
/// one word and takes one branch to its path. `UNSET` until the first
/// allocator call, which stores the wrapper's configuration.
static CONFIG: AtomicU8 = AtomicU8::new(UNSET);

// The size from which every sampling allocation goes out of line, where a
// refusal is seen (see `alloc_inline`): the core's countdown piece.
const _: () = assert!(
    alloc_track_core::COUNTDOWN_PIECE == 64 * 1024,
    "`with_sampling`'s docs give the size as 64 KiB"
);
const UNSET: u8 = 0;
const UNWIND_BIT: u8 = 0b100;
const PAUSED_BIT: u8 = 0b1000;
const ROUTE: u8 = 0xf0;

/// The allocation paths, one per form and mode, in bits 4-7 of the
/// configuration: chosen when the configuration changes rather than on
/// every allocation.
mod route {
    pub(crate) const EXACT_OFF: u8 = 1 << 4;
    pub(crate) const EXACT_TASKS: u8 = 2 << 4;
    pub(crate) const EXACT_CALLSITES: u8 = 3 << 4;
    pub(crate) const EXACT_UNWIND: u8 = 4 << 4;
    /// The sampling form's paths have this bit, which frees test.
    pub(crate) const SAMPLED: u8 = 8 << 4;
    pub(crate) const SAMPLED_OFF: u8 = SAMPLED | EXACT_OFF;
    pub(crate) const SAMPLED_TASKS: u8 = SAMPLED | EXACT_TASKS;
    pub(crate) const SAMPLED_CALLSITES: u8 = SAMPLED | EXACT_CALLSITES;
    pub(crate) const SAMPLED_UNWIND: u8 = SAMPLED | EXACT_UNWIND;

    /// Whether `config` names a path of the sampling form.
    #[inline(always)]
    pub(crate) const fn sampled(config: u8) -> bool {
        config & SAMPLED != 0
    }

    /// Whether `config` names a path of the sampling form that records,
    /// whose unsampled allocations only count down: the route is the high
    /// nibble, and those paths are the highest, so one comparison of the
    /// whole word tells.
    #[inline(always)]
    pub(crate) const fn counts_down(config: u8) -> bool {
        config >= SAMPLED_TASKS
    }

    const _: () = assert!(
        SAMPLED_TASKS < SAMPLED_CALLSITES
            && SAMPLED_CALLSITES < SAMPLED_UNWIND
            && SAMPLED_UNWIND < super::ROUTE
            && SAMPLED_OFF | !super::ROUTE < SAMPLED_TASKS
            && EXACT_UNWIND < SAMPLED_OFF
            && SAMPLED_TASKS & !super::ROUTE == 0,
        "the paths that count down are the highest routes"
    );
}

const fn encode(mode: BacktraceMode, capture: Capture) -> u8 {
    let mode = match mode {
        BacktraceMode::None => 1,
        BacktraceMode::Short => 2,
        BacktraceMode::Full => 3,
    };
    match capture {
        Capture::FramePointers => mode,
        #[cfg(all(feature = "backtrace", unix))]
        Capture::Unwind => mode | UNWIND_BIT,
    }
}

/// What `config` records: nothing while paused, else threads only or
/// callsites too, as its backtrace mode says.
const fn mode_of(config: u8) -> Mode {
    if config & PAUSED_BIT != 0 {
        return Mode::Off;
    }
    match config & 0b11 {
        2 | 3 => Mode::TasksAndCallsites,
        _ => Mode::Tasks,
    }
}

/// `config` with the path its mode and the form (the sampling form when
/// `sampled`) choose.
fn routed(config: u8, sampled: bool) -> u8 {
    let unwinds = config & UNWIND_BIT != 0;
    let route = match (sampled, mode_of(config)) {
        (false, Mode::Off) => route::EXACT_OFF,
        (false, Mode::Tasks) => route::EXACT_TASKS,
        (false, Mode::TasksAndCallsites) if unwinds => route::EXACT_UNWIND,
        (false, Mode::TasksAndCallsites) => route::EXACT_CALLSITES,
        (true, Mode::Off) => route::SAMPLED_OFF,
        (true, Mode::Tasks) => route::SAMPLED_TASKS,
        (true, Mode::TasksAndCallsites) if unwinds => route::SAMPLED_UNWIND,
        (true, Mode::TasksAndCallsites) => route::SAMPLED_CALLSITES,
    };
    config & !ROUTE | route
}

/// The sampling form's mean interval in bytes, or `None` when every
/// allocation is recorded exactly.
pub fn sampling_interval() -> Option<u64> {
    LEDGER.sampling()
}

/// Samples the sampling form could not take, and the bytes they stood for:
/// what its estimates miss. A sample is dropped when the table of
/// [`SAMPLED_BLOCKS`] live sampled blocks has no free entry within a
/// search's reach, or when there is no memory for the block's sampled
/// place; the allocation is still made, and counted in its thread's exact
/// allocated bytes and allocations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct DroppedSamples {
    /// How many samples were dropped.
    pub samples: u64,
    /// The bytes they stood for (their weights), missing from the estimates
    /// of allocated and live bytes.
    pub bytes: u64,
}

/// The samples dropped since the program started, in the sampling form;
/// `None` in the exact form. Each report of the sampling form carries the
/// figure as of when it was taken, and its text says it when any was
/// dropped.
pub fn dropped_samples() -> Option<DroppedSamples> {
    sampling_interval().map(|_| dropped_so_far())
}

/// The samples dropped so far (zero in the exact form, and before the first
/// allocation has set the form): what a report reads when it starts.
pub(crate) fn dropped_so_far() -> DroppedSamples {
    let dropped = LEDGER.dropped_samples();
    DroppedSamples {
        samples: dropped.samples,
        bytes: dropped.bytes,
    }
}

/// Frees since the program started whose block's header failed its check:
/// the program wrote over the bytes just before a block it was given (a
/// heap overflow of the block before it, or a write through a dangling
/// pointer). Each such block was handed back to the inner allocator and
/// left out of every figure. Zero in a program that does not corrupt its
/// heap, and in the sampling form, whose blocks carry no header.
pub fn damaged_headers() -> u64 {
    LEDGER.damaged_headers()
}

/// The backtrace mode in force: the one the global allocator was made with,
/// or the last one [`set_backtrace_mode`] set; `None` before the allocator's
/// first call.
pub fn backtrace_mode() -> BacktraceMode {
    match CONFIG.load(Relaxed) & 0b11 {
        2 => BacktraceMode::Short,
        3 => BacktraceMode::Full,
        _ => BacktraceMode::None,
    }
}

/// The memory of the callsite table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CallsiteMemory {
    /// Bytes of the whole table: address space, fixed at compile time.
    pub reserved: usize,
    /// Bytes of the rows in use and of the table's index: at most what the
    /// table occupies in memory.
    pub in_use: usize,
    /// Bytes each further callsite adds.
    pub per_row: usize,
    /// Rows holding a callsite.
    pub rows_in_use: usize,
    /// Rows that may hold one ([`AllocTrack::with_callsite_limit`]).
    pub limit: usize,
}

/// The bytes of every table the tracker keeps: thread rows, callsite rows
/// and their index, cross-free pairs, thread names. All of it is zeroed
/// static memory, fixed at compile time, which the system maps as rows are
/// used.
pub fn table_bytes() -> usize {
    std::mem::size_of::<StdLedger>() + names::TABLE_BYTES
}

/// What the callsite table costs now.
pub fn callsite_memory() -> CallsiteMemory {
    let memory = LEDGER.callsite_memory();
    CallsiteMemory {
        reserved: memory.reserved,
        in_use: memory.in_use,
        per_row: memory.per_row,
        rows_in_use: LEDGER.callsite_rows_in_use(),
        limit: LEDGER.callsite_limit(),
    }
}

/// Changes what is recorded from now on, whatever `AllocTrack::new` said:
/// `None` for threads only, `Short` or `Full` for callsites too. Takes
/// effect once the allocator has been called (any program has by `main`).
pub fn set_backtrace_mode(mode: BacktraceMode) {
    let _ = CONFIG.fetch_update(Relaxed, Relaxed, |config| {
        (config != UNSET).then(|| {
            routed(
                config & !0b11 | encode(mode, Capture::FramePointers),
                route::sampled(config),
            )
        })
    });
}

/// Pauses (or resumes) recording. Blocks allocated while paused are never
/// counted; blocks allocated before are still credited when freed.
pub fn set_tracking(enabled: bool) {
    let _ = CONFIG.fetch_update(Relaxed, Relaxed, |config| {
        let config = if enabled {
            config & !PAUSED_BIT
        } else {
            config | PAUSED_BIT
        };
        (config != UNSET).then(|| routed(config, route::sampled(config)))
    });
}

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
/// what is recorded at run time, call [`set_backtrace_mode`] or
/// [`set_tracking`]; [`backtrace_mode`] tells what is in force.
pub struct AllocTrack<T: GlobalAlloc> {
    inner: T,
    config: u8,
    callsite_limit: usize,
    sampling: u64,
}

impl<T: GlobalAlloc> AllocTrack<T> {
    /// Wraps `inner`, recording callsites as `backtrace` says. See the
    /// type's docs: one configuration per process.
    pub const fn new(inner: T, backtrace: BacktraceMode) -> Self {
        Self {
            inner,
            config: encode(backtrace, Capture::FramePointers),
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
    /// The tracker's own allocations ([`REPORTS`]: a report's work and the
    /// symbol caches it keeps) are sampled at an interval of at least
    /// [`TRACKER_SAMPLING_INTERVAL`](alloc_track_core::TRACKER_SAMPLING_INTERVAL)
    /// bytes, so that at a small interval (1 byte, where every allocation
    /// of the program is a sample) resolving symbols does not fill the
    /// table of [`SAMPLED_BLOCKS`] and drop the program's samples.
    pub const fn with_sampling(mut self, interval: u64) -> Self {
        self.sampling = interval;
        self
    }

    /// Uses at most `rows` callsite rows (at most [`CALLSITE_ROWS`]);
    /// further stacks are counted together as `(callsite table full)`. Each
    /// row in use costs about [`callsite_memory`]`().per_row` bytes.
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
        self.config = match capture {
            Capture::FramePointers => self.config & !UNWIND_BIT,
            #[cfg(all(feature = "backtrace", unix))]
            Capture::Unwind => self.config | UNWIND_BIT,
        };
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
    fn config(&self) -> u8 {
        match CONFIG.load(Relaxed) {
            UNSET => self.configure(),
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
    fn configure(&self) -> u8 {
        let config = routed(self.config, self.samples());
        if let Err(current) = CONFIG.compare_exchange(UNSET, config, Relaxed, Relaxed) {
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
    fn same_form(&self, config: u8) -> bool {
        route::sampled(config) == self.samples()
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
    /// [`COUNTDOWN_PIECE`](alloc_track_core::COUNTDOWN_PIECE) (64 KiB) or
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
        let config = CONFIG.load(Relaxed);
        if self.samples() {
            // An allocation of 64 KiB or more never fits in the countdown,
            // so it goes on, out of line.
            if route::counts_down(config) && context::count_unsampled(layout.size() as u64) {
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
        } else if config & ROUTE == route::EXACT_TASKS {
            if context::own_row().is_some() {
                // SAFETY: forwarded from our caller; the route says the
                // exact form, in tasks mode, and this wrapper is of it.
                return unsafe { self.exact_on_row::<ZEROED>(layout) };
            }
        } else if config & ROUTE == route::EXACT_OFF {
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
        config: u8,
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
        config: u8,
        layout: Layout,
        frame: usize,
    ) -> *mut u8 {
        const OFF: u8 = Mode::Off as u8;
        const TASKS: u8 = Mode::Tasks as u8;
        const CALLSITES: u8 = Mode::TasksAndCallsites as u8;
        if config == UNSET {
            // Before the word is set, the wrapper's own configuration says
            // where the capture starts.
            // SAFETY: forwarded from our caller.
            return unsafe {
                self.first_alloc::<ZEROED, SAMPLES>(layout, frame_of(self.config, frame))
            };
        }
        if route::sampled(config) != SAMPLES {
            // A word of the other form: a block as this wrapper's form
            // makes it while paused, counted nowhere (see the type's docs).
            // SAFETY: forwarded from our caller.
            return unsafe { self.form_path::<ZEROED, SAMPLES, OFF>(layout, 0) };
        }
        // SAFETY: forwarded from our caller; the word is of this wrapper's
        // form, whose path every arm takes.
        unsafe {
            match config & ROUTE {
                route::SAMPLED_TASKS | route::EXACT_TASKS => {
                    self.form_path::<ZEROED, SAMPLES, TASKS>(layout, frame)
                }
                route::SAMPLED_CALLSITES | route::EXACT_CALLSITES => {
                    self.form_path::<ZEROED, SAMPLES, CALLSITES>(layout, frame)
                }
                route::SAMPLED_UNWIND | route::EXACT_UNWIND => self
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
        // SAFETY: forwarded from our caller.
        unsafe { LEDGER.alloc_exact(&self.inner, layout, Mode::from_u8(MODE), frame, ZEROED) }
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
        // SAFETY: forwarded from our caller.
        unsafe { LEDGER.dealloc_exact_on_row(&self.inner, ptr, layout.size(), layout.align(), row) }
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
        if route::sampled(config) != SAMPLES {
            // SAFETY: forwarded from our caller.
            return unsafe { self.form_path::<ZEROED, SAMPLES, { Mode::Off as u8 }>(layout, 0) };
        }
        let mode = mode_of(config);
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
        let frame = frame_of(config, frame_pointer());
        // A word of the other form: nothing is counted (see the type's docs).
        let mode = if self.same_form(config) {
            mode_of(config)
        } else {
            Mode::Off
        };
        // SAFETY: as in `alloc`; the block is of this wrapper's form, and
        // goes to that form's path.
        unsafe {
            if self.samples() {
                LEDGER.realloc_sampling(&self.inner, ptr, layout, new_size, mode, frame)
            } else {
                LEDGER.realloc_exact(&self.inner, ptr, layout, new_size, mode, frame)
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
    // SAFETY: forwarded from our caller.
    unsafe { LEDGER.dealloc_maybe_sampled(inner, ptr, layout) }
}

/// Where the callsite capture starts: the frame pointer of the tracker's
/// out-of-line function that the allocating call reached (`alloc_routed` or
/// `realloc`) for a walk, or its stack pointer for the unwinder, which skips
/// every frame at or below it (the tracker's own).
#[inline(always)]
fn frame_of(config: u8, frame_pointer: usize) -> usize {
    if config & UNWIND_BIT != 0 {
        alloc_track_core::stack_pointer()
    } else {
        frame_pointer
    }
}

/// Whether callsites are captured by unwinding, for the context.
#[inline]
pub(crate) fn capture_unwinds() -> bool {
    CONFIG.load(Relaxed) & UNWIND_BIT != 0
}

/// The README's Rust examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
