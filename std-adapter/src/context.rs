//! The thread context: names the running thread, finds its stack once, keeps
//! its row hint, guards the allocator against re-entry, and ends the thread's
//! task when the thread exits.
//!
//! All per-thread state lives in const-initialised thread-locals without
//! destructors, which can be reached at any moment of a thread's life (even
//! while other thread-locals are being destroyed) without allocating. The one
//! thread-local with a destructor, the exit guard, is only registered, never
//! needed for accounting.
//!
//! Re-entry: the context does two things that may allocate, registering the
//! exit guard (on some platforms) and unwinding. It marks itself busy around
//! them; an allocator call that arrives meanwhile is counted in the unknown
//! bucket, uncaptured, without touching the table search or the unwinder it
//! interrupted. Everything else on the allocation path allocates nothing, so
//! no per-call guard is needed.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use alloc_track_core::{stack_pointer, walk, Context, Stack, Task, TaskId};

use crate::names;

/// Set in the id of the rows that hold what reports allocate, so that a
/// report's own allocations never land in the figures of the thread that
/// asked for it.
pub(crate) const REPORT_BIT: TaskId = 1 << 63;

static NEXT_THREAD_ID: AtomicU64 = AtomicU64::new(1);

struct ThreadState {
    /// This thread's id, 0 until its first allocator call.
    id: Cell<TaskId>,
    row: Cell<Option<u32>>,
    report_row: Cell<Option<u32>>,
    /// The top of this thread's stack, 0 until looked up, 1 if unknown.
    stack_top: Cell<usize>,
    /// Set while the context does something that may allocate.
    busy: Cell<bool>,
    /// Report scopes in progress on this thread.
    reporting: Cell<u32>,
    /// Set once the thread's task has ended.
    exited: Cell<bool>,
}

thread_local! {
    static STATE: ThreadState = const {
        ThreadState {
            id: Cell::new(0),
            row: Cell::new(None),
            report_row: Cell::new(None),
            stack_top: Cell::new(0),
            busy: Cell::new(false),
            reporting: Cell::new(0),
            exited: Cell::new(false),
        }
    };
    static EXIT: ExitGuard = const { ExitGuard };
}

/// Ends the thread's task when the thread's thread-locals are destroyed.
struct ExitGuard;

impl Drop for ExitGuard {
    fn drop(&mut self) {
        let id = STATE.with(|state| {
            state.exited.set(true);
            state.id.get()
        });
        if id != 0 {
            names::record_exit(id);
            crate::LEDGER.task_exit(id);
            crate::LEDGER.task_exit(id | REPORT_BIT);
        }
    }
}

/// This thread's id, handed out on first use (and the exit guard registered
/// then). Never 0, never reused.
pub(crate) fn thread_id() -> TaskId {
    STATE.with(|state| {
        let id = state.id.get();
        if id != 0 {
            return id;
        }
        let id = NEXT_THREAD_ID.fetch_add(1, Relaxed);
        state.id.set(id);
        names::record_start(id);
        // Registering the destructor may allocate on some platforms; that
        // nested call is counted as unknown (see `current_task`).
        state.busy.set(true);
        let _ = EXIT.try_with(|_| ());
        state.busy.set(false);
        id
    })
}

/// Counts what this thread allocates while it lives in rows of its own, apart
/// from the thread's figures: for the reports' own allocations.
pub(crate) struct ReportScope(());

impl ReportScope {
    pub(crate) fn enter() -> Self {
        STATE.with(|state| state.reporting.set(state.reporting.get() + 1));
        ReportScope(())
    }
}

impl Drop for ReportScope {
    fn drop(&mut self) {
        STATE.with(|state| state.reporting.set(state.reporting.get() - 1));
    }
}

/// The context of the std adapter's ledger.
pub(crate) struct ThreadContext {
    /// Capture callsites by unwinding rather than by frame pointers.
    pub(crate) unwind: AtomicBool,
}

impl Context for ThreadContext {
    #[inline]
    fn current_task(&self) -> Option<Task> {
        STATE.with(|state| {
            // A call made while the context is busy (registering the exit
            // guard, unwinding) must not recurse into the work it
            // interrupted: it goes to the unknown bucket.
            if state.busy.get() || state.exited.get() {
                return None;
            }
            let id = match state.id.get() {
                0 => thread_id(),
                id => id,
            };
            Some(if state.reporting.get() > 0 {
                Task {
                    id: id | REPORT_BIT,
                    row_hint: state.report_row.get(),
                }
            } else {
                Task {
                    id,
                    row_hint: state.row.get(),
                }
            })
        })
    }

    #[inline]
    fn remember_row(&self, row: u32) {
        STATE.with(|state| {
            if state.reporting.get() > 0 {
                state.report_row.set(Some(row));
            } else {
                state.row.set(Some(row));
            }
        });
    }

    #[inline]
    fn stack(&self) -> Option<Stack> {
        let low = stack_pointer();
        let top = STATE.with(|state| {
            if state.stack_top.get() == 0 {
                state.stack_top.set(stack_top().unwrap_or(1));
            }
            state.stack_top.get()
        });
        // SAFETY: from the stack pointer of this call (below every frame the
        // walker reads, which are those of its callers) to the top of this
        // thread's stack as the thread library reports it: the live, mapped
        // part of the stack of the running thread.
        unsafe { Stack::new(low, top) }
    }

    #[inline]
    fn capture(&self, frame_pointer: usize, out: &mut [usize]) -> usize {
        // Nested calls are not walked (the unwinder may be what allocates),
        // and a report's own allocations are kept out of the callsite table,
        // in the uncaptured bucket.
        let (busy, reporting) = STATE.with(|state| (state.busy.get(), state.reporting.get()));
        if busy || reporting > 0 {
            return 0;
        }
        if self.unwind.load(Relaxed) {
            STATE.with(|state| state.busy.set(true));
            let written = unwind(frame_pointer, out);
            STATE.with(|state| state.busy.set(false));
            return written;
        }
        self.stack()
            .map_or(0, |stack| walk(frame_pointer, stack, out))
    }
}

/// Captures return addresses with the platform unwinder, skipping the frames
/// below `threshold` (an address in the frame of the allocator method the
/// program called), which are the tracker's own.
#[cfg(feature = "backtrace")]
fn unwind(threshold: usize, out: &mut [usize]) -> usize {
    let mut written = 0;
    let mut slots = out.iter_mut();
    // SAFETY: `trace_unsynchronized` is unsafe only because some platforms'
    // unwinders (Windows' dbghelp) are not thread-safe; this capture is
    // offered for Unix targets, whose unwinder is. The callback neither
    // panics nor allocates.
    unsafe {
        backtrace::trace_unsynchronized(|frame| {
            if (frame.sp() as usize) <= threshold {
                return true;
            }
            match slots.next() {
                Some(slot) => {
                    *slot = frame.ip() as usize;
                    written += 1;
                    true
                }
                None => false,
            }
        });
    }
    written
}

#[cfg(not(feature = "backtrace"))]
fn unwind(_threshold: usize, _out: &mut [usize]) -> usize {
    0
}

/// The top (highest address) of the current thread's stack.
#[cfg(target_os = "linux")]
fn stack_top() -> Option<usize> {
    // SAFETY: `attr` is initialised by `pthread_getattr_np` before it is read
    // and destroyed exactly once; the out-pointers are locals. For the main
    // thread glibc reads /proc/self/maps with its own malloc, not through the
    // Rust global allocator, so nothing here re-enters the tracker.
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
            return None;
        }
        let mut base: *mut libc::c_void = std::ptr::null_mut();
        let mut size: libc::size_t = 0;
        let found = libc::pthread_attr_getstack(&attr, &mut base, &mut size) == 0;
        libc::pthread_attr_destroy(&mut attr);
        found.then(|| (base as usize).wrapping_add(size))
    }
}

#[cfg(target_os = "macos")]
fn stack_top() -> Option<usize> {
    // SAFETY: asks about the calling thread, which is alive.
    let top = unsafe { libc::pthread_get_stackaddr_np(libc::pthread_self()) } as usize;
    (top != 0).then_some(top)
}

#[cfg(not(any(target_os = "linux", target_os = "macos")))]
fn stack_top() -> Option<usize> {
    None
}
