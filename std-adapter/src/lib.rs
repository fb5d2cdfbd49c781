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
//! costs 8 bytes more in the inner allocator (16 at alignment 16).
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
mod measure;
mod names;
mod scope;
mod size;
mod snapshot;
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
pub use scope::{
    scope, scope_report, InScope, ScopeFutureExt, ScopeGuard, OVERFLOW_SCOPES, SCOPE_NAMES,
};
pub use size::{Size, SizeF64};
pub use snapshot::{CallsiteChange, Change, Snapshot, SnapshotDiff, ThreadChange};
pub use symbols::{release_symbols, BacktraceSymbol, FrameOrigin};
pub use thread_report::{
    thread_report, ThreadGroup, ThreadMetric, ThreadReport, FINISHED_THREADS, MEASUREMENTS,
    OVERFLOW_THREADS, REPORTS, UNKNOWN_THREAD,
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
/// full), bit 2 unwinding, bit 3 paused. `UNSET` until the first allocator
/// call, which stores the wrapper's configuration.
static CONFIG: AtomicU8 = AtomicU8::new(UNSET);
const UNSET: u8 = 0xff;
const UNWIND_BIT: u8 = 0b100;
const PAUSED_BIT: u8 = 0b1000;

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

/// The sampling form's mean interval in bytes, or `None` when every
/// allocation is recorded exactly.
pub fn sampling_interval() -> Option<u64> {
    LEDGER.sampling()
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
        (config != UNSET).then(|| config & !0b11 | encode(mode, Capture::FramePointers))
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
        (config != UNSET).then_some(config)
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
/// later, counts into the same tables under the first one's settings. To
/// change what is recorded at run time, call [`set_backtrace_mode`] or
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
            UNSET => {
                LEDGER.set_callsite_limit(self.callsite_limit);
                if self.sampling != 0 {
                    LEDGER.set_sampling(self.sampling, context::clock_nanos());
                }
                CONFIG.store(self.config, Relaxed);
                self.config
            }
            config => config,
        }
    }

    #[inline]
    fn mode(config: u8) -> Mode {
        if config & PAUSED_BIT != 0 {
            return Mode::Off;
        }
        match config & 0b11 {
            2 | 3 => Mode::TasksAndCallsites,
            _ => Mode::Tasks,
        }
    }
}

// SAFETY: every call is forwarded to the process's ledger with `self.inner`,
// which keeps the `GlobalAlloc` contract (`Ledger::alloc` and friends): the
// same inner allocator serves every block, since a program has one global
// allocator. The context guards the two things it does that may allocate
// (see `context.rs`), so nothing recurses.
unsafe impl<T: GlobalAlloc> GlobalAlloc for AllocTrack<T> {
    // Never inlined, so that the walk starts at this frame, whose return
    // address is the allocating call (see the core's `Tracker::alloc`).
    #[inline(never)]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let config = self.config();
        let frame = frame_of(config, frame_pointer());
        // SAFETY: forwarded from our caller; see the impl's comment.
        unsafe { LEDGER.alloc(&self.inner, layout, Self::mode(config), frame, false) }
    }

    #[inline(never)]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let config = self.config();
        let frame = frame_of(config, frame_pointer());
        // SAFETY: as in `alloc`.
        unsafe { LEDGER.alloc(&self.inner, layout, Self::mode(config), frame, true) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as in `alloc`.
        unsafe { LEDGER.dealloc(&self.inner, ptr, layout) }
    }

    #[inline(never)]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let config = self.config();
        let frame = frame_of(config, frame_pointer());
        // SAFETY: as in `alloc`.
        unsafe {
            LEDGER.realloc(
                &self.inner,
                ptr,
                layout,
                new_size,
                Self::mode(config),
                frame,
            )
        }
    }
}

/// Where the callsite capture starts: the frame pointer of the allocator
/// method for a walk, or that method's stack pointer for the unwinder, which
/// skips every frame at or below it (the tracker's own).
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
