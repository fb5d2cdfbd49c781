//! Allocation figures of one closure on the current thread, for tests:
//! [`measure`] and [`assert_no_alloc`]. Each runs the closure with the
//! thread's ticket pointed at a fresh row of the task table, which only
//! this thread writes, so the figures are exactly the closure's, however
//! many other threads (parallel tests) allocate meanwhile.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use alloc_track_core::{TaskFigures, TaskId, Ticket};

use crate::backtrace_report::{Backtrace, CallsiteKind};
use crate::context::{start_measuring, stop_measuring, Measuring, ReportScope, LEDGER};
use crate::scope::MEASURE_IDS;

/// What a closure allocated and freed on the current thread
/// ([`measure`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Usage {
    /// Bytes the closure allocated.
    pub allocated: u64,
    /// Allocations the closure made.
    pub allocations: u64,
    /// Bytes the closure freed: of its own blocks and of blocks allocated
    /// before it (or by other threads).
    pub freed: u64,
    /// Frees the closure made, likewise.
    pub frees: u64,
    /// The most bytes of the closure's own blocks live at once.
    pub peak: u64,
    /// Bytes the closure allocated that were still live when it returned
    /// (what it returns, keeps or leaks).
    pub in_use: u64,
}

static NEXT_MEASUREMENT: AtomicU64 = AtomicU64::new(1);

/// A fresh row for one measurement, claimed by the calling thread.
fn claim() -> (TaskId, Ticket) {
    let id = MEASURE_IDS | NEXT_MEASUREMENT.fetch_add(1, Relaxed);
    let ticket = LEDGER.task_ticket(id);
    assert!(
        (ticket.index() as usize) < crate::capacity::THREAD_ROWS,
        "alloc-track: no free row in the task table ({} rows) to measure with",
        crate::capacity::THREAD_ROWS
    );
    (id, ticket)
}

/// Puts the thread's ticket back even if the closure panics.
struct Restore(Option<Measuring>);

impl Drop for Restore {
    fn drop(&mut self) {
        if let Some(previous) = self.0.take() {
            stop_measuring(previous);
        }
    }
}

/// Runs `work` on a fresh row: its figures, and the first allocation's
/// return addresses when `watch`.
fn run<R>(watch: bool, work: impl FnOnce() -> R) -> (R, TaskFigures, Vec<usize>) {
    let (id, ticket) = claim();
    let mut restore = Restore(start_measuring(
        ticket.to_word(),
        if watch { id } else { 0 },
    ));
    let result = work();
    let first = restore.0.take().map(stop_measuring).unwrap_or_default();
    let figures = LEDGER.ticket_figures(ticket).unwrap_or_default();
    // The row's figures fold into the finished bucket; blocks the closure
    // kept are credited there when freed.
    LEDGER.task_exit(id);
    (result, figures, first)
}

impl Usage {
    fn of(figures: &TaskFigures) -> Self {
        let f = &figures.figures;
        let (allocated, allocations) = figures
            .exact_allocations
            .map_or((f.allocated_bytes, f.allocations), |exact| {
                (exact.bytes, exact.count)
            });
        Usage {
            allocated,
            allocations,
            freed: f.freed_bytes.saturating_sub(figures.freed_by_others_bytes)
                + figures.freed_of_others_bytes,
            frees: f.frees.saturating_sub(figures.freed_by_others) + figures.freed_of_others,
            peak: f.peak_live_bytes,
            in_use: f.live_bytes(),
        }
    }
}

/// Runs `work` and returns its result with exactly what it allocated and
/// freed on the current thread. Other threads' allocations meanwhile (tests
/// running in parallel) are not counted; threads `work` starts count as
/// themselves.
///
/// ```
/// # use std::alloc::System;
/// # use alloc_track::{AllocTrack, BacktraceMode};
/// # #[global_allocator]
/// # static GLOBAL: AllocTrack<System> = AllocTrack::new(System, BacktraceMode::None);
/// let (buffer, usage) = alloc_track::measure(|| vec![0u8; 1000]);
/// assert_eq!((usage.allocated, usage.allocations, usage.in_use), (1000, 1, 1000));
/// # drop(buffer);
/// ```
///
/// What `work` allocates is counted apart from the thread's own figures:
/// once `measure` returns, it shows in the thread report under
/// [`FINISHED_THREADS`](crate::FINISHED_THREADS), as a task that ended.
/// Scopes entered inside `work` change nothing. In the sampling form
/// `allocated` and `allocations` are exact and the other figures estimates.
/// Without `AllocTrack` as the global allocator every figure is 0.
///
/// # Panics
///
/// If the thread table has no free row; and if `work` panics.
pub fn measure<R>(work: impl FnOnce() -> R) -> (R, Usage) {
    let (result, figures, _) = run(false, work);
    (result, Usage::of(&figures))
}

/// Runs `work` and panics if it allocated on the current thread, naming the
/// first allocation's callsite (with frame pointers; its stack resolved to
/// functions and lines with the `backtrace` feature).
///
/// ```should_panic
/// # use std::alloc::System;
/// # use alloc_track::{AllocTrack, BacktraceMode};
/// # #[global_allocator]
/// # static GLOBAL: AllocTrack<System> = AllocTrack::new(System, BacktraceMode::None);
/// let numbers = [3, 1, 2];
/// alloc_track::assert_no_alloc(|| numbers.iter().sum::<i32>()); // passes
/// alloc_track::assert_no_alloc(|| numbers.to_vec()); // panics
/// ```
///
/// # Panics
///
/// If `work` allocates (after it returns, with its figures and the first
/// allocation's stack); if the thread table has no free row; if `work`
/// panics.
pub fn assert_no_alloc<R>(work: impl FnOnce() -> R) -> R {
    let (result, figures, first) = run(true, work);
    let usage = Usage::of(&figures);
    if usage.allocations > 0 {
        let stack = {
            let _scope = ReportScope::enter();
            let mut backtrace = Backtrace::new(CallsiteKind::Stack, &first);
            backtrace.resolve();
            let mut text = String::new();
            let _ = backtrace.write(&mut text, true);
            text
        };
        panic!(
            "assert_no_alloc: the closure allocated {} bytes in {} allocations; the first \
             at:\n{}",
            usage.allocated,
            usage.allocations,
            if first.is_empty() {
                "  (stack not walked: no frame pointers, or not on the thread's stack)\n".into()
            } else {
                stack
            }
        );
    }
    result
}
