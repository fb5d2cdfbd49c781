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

use alloc_track_core::{stack_pointer, walk, Context, Stack, Task, TaskId, Who};

use crate::names;

static NEXT_THREAD_ID: AtomicU64 = AtomicU64::new(1);

struct ThreadState {
    /// This thread's id, 0 until its first allocator call.
    id: Cell<TaskId>,
    row: Cell<Option<u32>>,
    /// The bounds of this thread's stack, `(0, 0)` until looked up, `(0, 1)`
    /// if unknown.
    stack: Cell<(usize, usize)>,
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
            stack: Cell::new((0, 0)),
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
        let (id, row) = STATE.with(|state| {
            state.exited.set(true);
            (state.id.get(), state.row.get())
        });
        if id != 0 {
            names::record_exit(id, row);
            crate::LEDGER.task_exit(id);
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
        // Registering the destructor may allocate on some platforms; that
        // nested call is counted as unknown (see `who`).
        state.busy.set(true);
        let _ = EXIT.try_with(|_| ());
        state.busy.set(false);
        id
    })
}

/// Counts what this thread allocates while it lives as the tracker's own
/// ([`Who::Tracker`]), apart from the program's figures: for the reports'
/// own allocations, and anything they keep (symbol caches).
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
    fn who(&self) -> Who {
        STATE.with(|state| {
            // A call made while the context is busy (registering the exit
            // guard, unwinding) must not recurse into the work it
            // interrupted: it goes to the unknown bucket.
            if state.busy.get() || state.exited.get() {
                return Who::Unknown;
            }
            if state.reporting.get() > 0 {
                return Who::Tracker;
            }
            let id = match state.id.get() {
                0 => thread_id(),
                id => id,
            };
            Who::Task(Task {
                id,
                row_hint: state.row.get(),
            })
        })
    }

    #[inline]
    fn remember_row(&self, row: u32) {
        STATE.with(|state| {
            state.row.set(Some(row));
            names::record_row(row, state.id.get());
        });
    }

    #[inline]
    fn stack(&self) -> Option<Stack> {
        let sp = stack_pointer();
        let (low, high) = STATE.with(|state| {
            if state.stack.get() == (0, 0) {
                state.stack.set(thread_stack().unwrap_or((0, 1)));
            }
            state.stack.get()
        });
        // Off the thread's own stack (a coroutine's or green thread's stack,
        // a signal handler's alternate stack), nothing is known to be mapped
        // between here and the thread's top: capture nothing.
        if !(low..high).contains(&sp) {
            return None;
        }
        // SAFETY: from the stack pointer of this call (below every frame the
        // walker reads, which are those of its callers) to the top of this
        // thread's stack, which the stack pointer was just found inside: the
        // live, mapped part of the stack of the running thread.
        unsafe { Stack::new(sp, high) }
    }

    #[inline]
    fn capture(&self, frame_pointer: usize, out: &mut [usize]) -> usize {
        // Nested calls are not walked (the unwinder may be what allocates).
        if STATE.with(|state| state.busy.get()) {
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
#[cfg(all(feature = "backtrace", unix))]
fn unwind(threshold: usize, out: &mut [usize]) -> usize {
    let mut written = 0;
    let mut slots = out.iter_mut();
    // SAFETY: `trace_unsynchronized` is unsafe only because some platforms'
    // unwinders (Windows' dbghelp) are not thread-safe; this function is
    // compiled for Unix targets only, whose unwinder (libunwind or libgcc's)
    // is. The callback neither panics nor allocates.
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

/// Without an unwinder `Capture::Unwind` does not exist (see `lib.rs`), so
/// the flag is never set and this is never called.
#[cfg(not(all(feature = "backtrace", unix)))]
fn unwind(_threshold: usize, _out: &mut [usize]) -> usize {
    0
}

/// The bounds of the current thread's stack: its lowest address and one
/// past its highest.
#[cfg(target_os = "linux")]
pub(crate) fn thread_stack() -> Option<(usize, usize)> {
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
        found.then(|| (base as usize, (base as usize).wrapping_add(size)))
    }
}

/// The bounds of the current thread's stack: its lowest address and one
/// past its highest.
#[cfg(target_os = "macos")]
pub(crate) fn thread_stack() -> Option<(usize, usize)> {
    // SAFETY: both ask about the calling thread, which is alive.
    let (top, size) = unsafe {
        (
            libc::pthread_get_stackaddr_np(libc::pthread_self()) as usize,
            libc::pthread_get_stacksize_np(libc::pthread_self()),
        )
    };
    (top != 0).then(|| (top.wrapping_sub(size), top))
}

/// The bounds of the current thread's stack: unknown on this platform, so
/// callsites are not walked.
#[cfg(not(any(target_os = "linux", target_os = "macos")))]
pub(crate) fn thread_stack() -> Option<(usize, usize)> {
    None
}
