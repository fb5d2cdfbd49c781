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

mod allocator;
mod backtrace_report;
mod capacity;
mod config;
mod context;
mod exit_check;
#[cfg(feature = "export")]
pub mod export;
mod global;
#[cfg(feature = "http")]
pub mod http;
mod lifetimes;
#[cfg(target_os = "linux")]
mod loaded;
mod measure;
mod names;
mod own_heap;
mod release;
mod scope;
mod size;
mod snapshot;
mod symbol;
#[cfg(all(feature = "backtrace", target_os = "linux"))]
mod symbolizer;
mod symbols;
mod thread_report;

pub use alloc_track_core::{DroppedSamples, Figures, Order};
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

pub use allocator::AllocTrack;
pub use capacity::{CALLSITE_DEPTH, CALLSITE_ROWS, CROSS_FREE_ROWS, SAMPLED_BLOCKS, THREAD_ROWS};
pub use config::{backtrace_mode, set_backtrace_mode, set_tracking};
pub use config::{BacktraceMode, Capture};
pub use context::thread_stack;
pub use global::{
    callsite_memory, damaged_headers, dropped_samples, sampling_interval, table_bytes,
    CallsiteMemory,
};

/// The README's Rust examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
