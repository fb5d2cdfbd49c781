//! The thread context: names the running thread, finds its stack once, keeps
//! its ticket, guards the allocator against re-entry, and ends the thread's
//! task when the thread exits.
//!
//! All per-thread state lives in a const-initialised thread-local without a
//! destructor, which can be reached at any moment of a thread's life (even
//! while other thread-locals are being destroyed) without allocating. The one
//! thread-local with a destructor, the exit guard, is only registered, never
//! needed for accounting.
//!
//! The fast path is one word: the ticket where this thread's allocations
//! count now. It is the thread's row once claimed; the tracker bucket's
//! during a report; the unknown bucket's while the context does something
//! that may allocate, and after the thread's task has ended; zero before the
//! first claim, which sends the tracker to `who`.
//!
//! Re-entry: the context does two things that may allocate, registering the
//! exit guard (on some platforms) and unwinding. Around them the word holds
//! the unknown bucket's ticket, so an allocator call that arrives meanwhile
//! is counted there, uncaptured, without touching the table search or the
//! unwinder it interrupted. Everything else on the allocation path
//! allocates nothing, so no per-call guard is needed.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use alloc_track_core::raw::{HotCountdown, OwnRow};
use alloc_track_core::{
    stack_pointer, walk, CallsiteBucket, Context, ExactAllocations, Figures, Ledger, MemoRecord,
    SampleFreed, Stack, StackMemo, TaskBucket, TaskFigures, TaskId, Ticket, Who,
};

use crate::capacity::{
    CALLSITE_DEPTH, CALLSITE_ROWS, CROSS_FREE_ROWS, SAMPLED_BLOCKS, THREAD_ROWS,
};
use crate::names;
use crate::own_heap;

/// The ledger of this adapter: its tables over the threads' context, with
/// the capacities of `capacity.rs`. It lives beside the context, which it
/// asks who is allocating and which claims its rows.
pub(crate) type StdLedger = Ledger<
    ThreadContext,
    THREAD_ROWS,
    CALLSITE_ROWS,
    CALLSITE_DEPTH,
    CROSS_FREE_ROWS,
    SAMPLED_BLOCKS,
>;

/// The one ledger of the process, whatever allocator `AllocTrack` wraps.
pub(crate) static LEDGER: StdLedger = Ledger::new(ThreadContext).with_global_peak(false);

/// A report that allocated at least this much gives its memory back when
/// it ends.
pub(crate) const AFTER_BYTES: u64 = 1 << 20;

/// What the tracker's own work has allocated so far, in bytes: how a
/// report tells whether it allocated enough to give memory back.
pub(crate) fn tracker_allocated() -> u64 {
    let figures = tracker_figures();
    figures
        .exact_allocations
        .map_or(figures.figures.allocated_bytes, |exact| exact.bytes)
}

/// The tracker's own figures as a task's: its bucket's in the ledger, and in
/// the sampling form the blocks of its own heap, which the ledger does not
/// see there (the exact form counts them by their headers, as any block).
/// Exact, with no sampled part, when every block of the tracker's was its
/// heap's.
pub(crate) fn tracker_figures() -> TaskFigures {
    let mut figures = LEDGER.task_bucket(TaskBucket::Tracker);
    if LEDGER.sampling().is_some() {
        let heap = heap_figures();
        match figures.exact_allocations {
            Some(sampled) if sampled.count > 0 => {
                figures.figures.accumulate(&heap);
                figures.exact_allocations = Some(ExactAllocations {
                    bytes: sampled.bytes + heap.allocated_bytes,
                    count: sampled.count + heap.allocations,
                });
            }
            _ => {
                figures.figures = heap;
                figures.exact_allocations = None;
            }
        }
    }
    figures
}

/// [`tracker_figures`] as a callsite's: the tracker's callsite bucket, with
/// its heap's blocks in the sampling form.
pub(crate) fn tracker_callsite_figures() -> Figures {
    let mut figures = LEDGER.callsite_bucket(CallsiteBucket::Tracker);
    if LEDGER.sampling().is_some() {
        figures.accumulate(&heap_figures());
    }
    figures
}

fn heap_figures() -> Figures {
    let heap = own_heap::figures();
    Figures {
        allocated_bytes: heap.allocated_bytes,
        allocations: heap.allocations,
        freed_bytes: heap.freed_bytes,
        frees: heap.frees,
        peak_live_bytes: heap.peak_bytes,
    }
}

/// Whether this thread's allocations are the tracker's own now: in a report,
/// or on one of the tracker's threads. They are made in its own heap.
#[inline]
pub(crate) fn in_trackers_scope() -> bool {
    STATE
        .try_with(|state| state.ticket.get() == TRACKER_WORD)
        .unwrap_or(false)
}

static NEXT_THREAD_ID: AtomicU64 = AtomicU64::new(1);

/// The tracker bucket's ticket, as the thread-local word holds it.
const TRACKER_WORD: u64 = StdLedger::bucket_ticket(TaskBucket::Tracker).to_word();
/// The unknown bucket's ticket, likewise.
const UNKNOWN_WORD: u64 = StdLedger::bucket_ticket(TaskBucket::Unknown).to_word();

struct ThreadState {
    /// Where this thread's allocations count now (see the module's docs).
    /// Set only through [`ThreadState::set_ticket`], which keeps `row`
    /// beside it.
    ticket: Cell<u64>,
    /// The task row `ticket` names, if it names one: what the fast paths
    /// count on (see [`own_row`]).
    row: Cell<Option<OwnRow<'static>>>,
    /// The row [`HOT`] is attached to, in the sampling form: `row` while
    /// the thread may attach (see [`ThreadState::may_attach`]).
    hot_row: Cell<Option<OwnRow<'static>>>,
    /// Whether the exit guard is registered, so that [`HOT`] will be
    /// detached, and its readers waited for, before the thread's memory
    /// goes.
    guarded: Cell<bool>,
    /// Whether the exit guard has run: nothing is attached from then on.
    exited: Cell<bool>,
    /// This thread's id, 0 until its first allocator call.
    id: Cell<TaskId>,
    /// The bounds of this thread's stack, `(0, 0)` until looked up, `(0, 1)`
    /// if unknown.
    stack: Cell<(usize, usize)>,
    /// Report scopes in progress on this thread, and the word they replaced.
    reporting: Cell<u32>,
    before_reporting: Cell<u64>,
    /// What the tracker had allocated when the outermost report scope began
    /// (see [`ReportScope`]).
    reporting_from: Cell<u64>,
    /// The word of this thread's own row, once claimed (what the exit
    /// guard names), whatever scope the thread is in.
    own: Cell<u64>,
    /// Measurements in progress on this thread (`measure`,
    /// `assert_no_alloc`): scopes entered meanwhile change nothing.
    measuring: Cell<u32>,
    /// While `assert_no_alloc` watches: the id of its row, which `who`
    /// names, and the return addresses of the first allocation.
    watch: Cell<TaskId>,
    first: [Cell<usize>; FIRST_DEPTH],
    first_len: Cell<usize>,
    /// The last two stacks this thread walked and their callsite rows.
    memo: StackMemo<[MemoRecord; 2 * CALLSITE_DEPTH]>,
    /// What a module above this one asked to do when the thread exits,
    /// before its row is let go (see [`at_thread_exit`]).
    at_exit: Cell<Option<fn()>>,
}

/// Return addresses kept of the first allocation `assert_no_alloc` sees.
pub(crate) const FIRST_DEPTH: usize = 32;

thread_local! {
    static STATE: ThreadState = const {
        ThreadState {
            ticket: Cell::new(0),
            row: Cell::new(None),
            hot_row: Cell::new(None),
            guarded: Cell::new(false),
            at_exit: Cell::new(None),
            exited: Cell::new(false),
            id: Cell::new(0),
            stack: Cell::new((0, 0)),
            reporting: Cell::new(0),
            before_reporting: Cell::new(0),
            reporting_from: Cell::new(0),
            own: Cell::new(0),
            measuring: Cell::new(0),
            watch: Cell::new(0),
            first: [const { Cell::new(0) }; FIRST_DEPTH],
            first_len: Cell::new(0),
            memo: StackMemo::new(),
        }
    };
    static EXIT: ExitGuard = const { ExitGuard };
    /// The sampling form's countdown counters of the row this thread counts
    /// on, while attached to it: reached at a fixed offset from the thread
    /// pointer, so that an unsampled allocation makes no load whose address
    /// waits on another (see [`HotCountdown`]). Without a destructor, so
    /// alive until the thread's memory goes, after the exit guard.
    static HOT: HotCountdown = const { HotCountdown::new() };
}

impl ThreadState {
    /// Makes `word` the ticket this thread's allocations count under, with
    /// the row it names beside it: the one place the word changes, so that
    /// the two never disagree.
    #[inline]
    fn set_ticket(&self, word: u64) {
        self.ticket.set(word);
        let row = Ticket::from_word(word).and_then(|ticket| LEDGER.own_row(ticket));
        self.row.set(row);
        self.attach_hot(row);
    }

    /// Moves [`HOT`] to `row`: detached from the row it was attached to (its
    /// counts moved back there), and attached to `row` if the thread may
    /// attach. In the exact form nothing is ever attached.
    #[inline]
    fn attach_hot(&self, row: Option<OwnRow<'static>>) {
        if let Some(previous) = self.hot_row.take() {
            HOT.with(|hot| previous.detach(hot));
        }
        if let Some(row) = row {
            if self.may_attach() {
                // SAFETY: `HOT` is this thread's, without a destructor, so it
                // stays where it is until the thread's memory goes; before
                // that the exit guard detaches it, stops any further attach
                // (`exited`) and waits until no report reads it (`may_attach`
                // requires the guard to be registered).
                HOT.with(|hot| unsafe { row.attach(hot) });
                self.hot_row.set(Some(row));
            }
        }
    }

    /// Whether [`HOT`] may be attached: in the sampling form, once the exit
    /// guard is registered, and until it runs.
    #[inline]
    fn may_attach(&self) -> bool {
        self.guarded.get() && !self.exited.get() && LEDGER.sampling().is_some()
    }

    /// [`set_ticket`](Self::set_ticket), returning the word it replaced.
    #[inline]
    fn replace_ticket(&self, word: u64) -> u64 {
        let before = self.ticket.get();
        self.set_ticket(word);
        before
    }

    /// The bounds of this thread's stack from the stack pointer up, if the
    /// stack pointer is inside it (see [`Context::stack`]).
    #[inline]
    fn stack(&self) -> Option<Stack> {
        let sp = stack_pointer();
        if self.stack.get() == (0, 0) {
            self.stack.set(thread_stack().unwrap_or((0, 1)));
        }
        let (low, high) = self.stack.get();
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
}

/// Has `work` done when this thread exits, before its row is let go: what
/// the modules above the context keep per thread (the scopes' rows it
/// holds) goes back where other threads find it. One piece of work per
/// thread; the last one asked for is done.
pub(crate) fn at_thread_exit(work: fn()) {
    let _ = STATE.try_with(|state| state.at_exit.set(Some(work)));
}

/// Ends the thread's task when the thread's thread-locals are destroyed.
struct ExitGuard;

impl Drop for ExitGuard {
    fn drop(&mut self) {
        let (id, ticket) = STATE.with(|state| {
            // Nothing is attached to `HOT` from now on, and it is detached
            // here: from now on, whatever this thread frees or allocates
            // (other thread-locals' destructors) counts as unknown.
            state.exited.set(true);
            state.set_ticket(UNKNOWN_WORD);
            state.before_reporting.set(UNKNOWN_WORD);
            (state.id.get(), Ticket::from_word(state.own.get()))
        });
        // A report that found `HOT` attached before the detach may still be
        // reading it; its memory goes with the thread's, after this guard.
        while LEDGER.hot_reads_in_progress() {
            std::thread::yield_now();
        }
        // What was asked for this thread's exit (the scopes' rows it held
        // wait for the next thread that enters those scopes).
        if let Some(work) = STATE.with(|state| state.at_exit.take()) {
            work();
        }
        if id != 0 {
            names::record_exit(id, ticket.map(Ticket::index));
            LEDGER.task_exit(id);
        }
    }
}

/// Runs `work`, which may allocate, with this thread's allocations counted
/// as unknown meanwhile.
fn busy<R>(state: &ThreadState, work: impl FnOnce() -> R) -> R {
    let before = state.replace_ticket(UNKNOWN_WORD);
    let result = work();
    state.set_ticket(before);
    result
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
        // nested call is counted as unknown.
        busy(state, || {
            state.guarded.set(EXIT.try_with(|_| ()).is_ok());
            forget_readers_after_fork();
        });
        id
    })
}

/// Registers, once per process, a handler that a forked child runs before
/// it returns from `fork`: it forgets the reports that were reading hot
/// counters on the parent's other threads, which the child does not have
/// and which would never count themselves out (`Ledger::forget_hot_readers`),
/// so that a thread's exit in the child does not wait for them forever.
/// Registering may allocate: it runs inside [`busy`].
#[cfg(unix)]
fn forget_readers_after_fork() {
    use std::sync::atomic::AtomicBool;
    static REGISTERED: AtomicBool = AtomicBool::new(false);
    extern "C" fn in_the_child() {
        LEDGER.forget_hot_readers();
    }
    if !REGISTERED.swap(true, Relaxed) {
        // SAFETY: registers a handler that only stores to an atomic, which is
        // async-signal-safe as a forked child's handlers must be.
        unsafe { libc::pthread_atfork(None, None, Some(in_the_child)) };
    }
}

#[cfg(not(unix))]
fn forget_readers_after_fork() {}

/// Counts what this thread allocates while it lives as the tracker's own
/// ([`Who::Tracker`]), apart from the program's figures: for the reports'
/// own allocations, and anything they keep (symbol caches). When the
/// outermost scope ends after the tracker allocated a megabyte or more
/// meanwhile, the allocator's free memory goes back to the system
/// ([`release_memory`](crate::release_memory)).
pub(crate) struct ReportScope(());

impl ReportScope {
    pub(crate) fn enter() -> Self {
        let outermost = STATE.with(|state| {
            let depth = state.reporting.get();
            if depth == 0 {
                state
                    .before_reporting
                    .set(state.replace_ticket(TRACKER_WORD));
            }
            state.reporting.set(depth + 1);
            depth == 0
        });
        if outermost {
            let allocated = tracker_allocated();
            STATE.with(|state| state.reporting_from.set(allocated));
        }
        ReportScope(())
    }
}

impl Drop for ReportScope {
    fn drop(&mut self) {
        let from = STATE.with(|state| {
            let depth = state.reporting.get() - 1;
            state.reporting.set(depth);
            (depth == 0).then(|| state.reporting_from.get())
        });
        // Trimmed while still counted as the tracker's, then the thread's
        // own ticket back.
        if let Some(from) = from {
            if tracker_allocated().wrapping_sub(from) >= AFTER_BYTES {
                crate::release_memory();
            }
            STATE.with(|state| state.set_ticket(state.before_reporting.get()));
        }
    }
}

/// Makes `word` the ticket this thread's allocations count under, unless a
/// report or a measurement is in progress on the thread (whose attribution
/// wins): returns the word it replaced, to give [`leave_ticket`].
pub(crate) fn enter_ticket(word: u64) -> Option<u64> {
    STATE
        .try_with(|state| {
            (state.reporting.get() == 0 && state.measuring.get() == 0)
                .then(|| state.replace_ticket(word))
        })
        .ok()
        .flatten()
}

/// Gives back the word [`enter_ticket`] replaced.
pub(crate) fn leave_ticket(previous: u64) {
    let _ = STATE.try_with(|state| state.set_ticket(previous));
}

/// What a measurement replaced, to put back when it ends.
pub(crate) struct Measuring {
    ticket: u64,
    watch: TaskId,
}

/// Starts a measurement: this thread's allocations count under `word`; or,
/// with `watch` (a task id whose row is claimed), under that row from the
/// first allocation on, whose return addresses are kept. `None` during a
/// report, whose attribution wins.
pub(crate) fn start_measuring(word: u64, watch: TaskId) -> Option<Measuring> {
    STATE.with(|state| {
        if state.reporting.get() > 0 {
            return None;
        }
        state.measuring.set(state.measuring.get() + 1);
        let previous = Measuring {
            ticket: state.replace_ticket(if watch == 0 { word } else { 0 }),
            watch: state.watch.replace(watch),
        };
        state.first_len.set(0);
        Some(previous)
    })
}

/// Ends a measurement: puts back what it replaced, and returns the return
/// addresses of the first allocation it watched (empty if none, or if the
/// stack could not be walked).
pub(crate) fn stop_measuring(previous: Measuring) -> Vec<usize> {
    let first: Vec<usize> = STATE.with(|state| {
        state.set_ticket(previous.ticket);
        state.watch.set(previous.watch);
        state.measuring.set(state.measuring.get().saturating_sub(1));
        state
            .first
            .iter()
            .take(state.first_len.get())
            .map(Cell::get)
            .collect()
    });
    first
}

/// The row this thread's allocations count on now, if they count on a
/// task's row (not a bucket's, and not before the thread's first claim):
/// the exact form's fast paths (allocations in threads-only mode, and
/// frees) read it instead of the ticket. The sampling form's count on
/// [`HOT`], attached to it.
#[inline(always)]
pub(crate) fn own_row() -> Option<OwnRow<'static>> {
    STATE.with(|state| state.row.get())
}

/// The sampling form's fast path: counts an allocation of `size` bytes on
/// this thread's hot counters if they are attached and no sample point falls
/// in it; `false`, with nothing counted, otherwise.
#[inline(always)]
pub(crate) fn count_unsampled(size: u64) -> bool {
    HOT.with(|hot| hot.count_unsampled(size))
}

/// The context of the std adapter's ledger.
pub(crate) struct ThreadContext;

impl Context for ThreadContext {
    // The ledger is built without the global peak (see `LEDGER`).
    const GLOBAL_PEAK: bool = false;

    #[inline]
    fn ticket(&self) -> Option<Ticket> {
        Ticket::from_word(STATE.with(|state| state.ticket.get()))
    }

    /// The tracker's own blocks, which its heap made (see `own_heap`).
    #[inline]
    unsafe fn free_elsewhere(&self, base: *mut u8, layout: std::alloc::Layout) -> bool {
        if !own_heap::contains(base) {
            return false;
        }
        // SAFETY: a live block of the heap, made for `layout` (the caller's
        // promise), freed here once.
        unsafe { own_heap::free(base, layout) };
        true
    }

    /// Only reached while the word is zero: before the thread's first
    /// claim, or at the first allocation `assert_no_alloc` watches, whose
    /// stack is kept here. A thread of the tracker's own (by its name, see
    /// `names::TRACKER_THREAD_PREFIX`) enters the tracker's scope here for
    /// the rest of its life.
    #[inline(never)]
    fn who(&self) -> Who {
        let watch = STATE.with(|state| state.watch.get());
        if watch == 0 {
            if STATE.with(|state| state.own.get() == 0) && names::is_trackers_thread() {
                std::mem::forget(ReportScope::enter());
                return Who::Tracker;
            }
            return Who::Task(thread_id());
        }
        let mut frames = [0usize; FIRST_DEPTH];
        // Read here, in this frame: inside a closure the register may not
        // hold a frame record.
        let fp = alloc_track_core::frame_pointer();
        let depth = match self.stack() {
            Some(stack) => walk(fp, stack, &mut frames),
            None => 0,
        };
        STATE.with(|state| {
            for (slot, &address) in state.first.iter().zip(&frames[..depth]) {
                slot.set(address);
            }
            state.first_len.set(depth);
        });
        Who::Task(watch)
    }

    #[inline]
    fn remember(&self, ticket: Ticket) {
        STATE.with(|state| {
            state.set_ticket(ticket.to_word());
            if state.watch.get() == 0 {
                state.own.set(ticket.to_word());
                if (ticket.index() as usize) < THREAD_ROWS {
                    names::record_row(ticket.index(), state.id.get());
                }
            }
        });
    }

    #[inline]
    fn hot(&self) -> Option<&HotCountdown> {
        let hot = HOT.with(std::ptr::from_ref);
        // SAFETY: the running thread's own thread-local, which has no
        // destructor and so lives until the thread's memory goes: past any
        // call of the ledger on this thread, which is all that holds the
        // reference.
        Some(unsafe { &*hot })
    }

    fn now(&self) -> u64 {
        clock_nanos()
    }

    fn sample_freed(&self, freed: SampleFreed) {
        crate::lifetimes::record(freed.site, freed.lifetime, freed.bytes, freed.count);
    }

    #[inline]
    fn stack(&self) -> Option<Stack> {
        STATE.with(ThreadState::stack)
    }

    #[inline]
    fn capture(&self, frame_pointer: usize, out: &mut [usize]) -> usize {
        if crate::config::capture_unwinds() {
            // The unwinder may allocate: such calls count as unknown and are
            // not walked.
            return STATE.with(|state| busy(state, || unwind(frame_pointer, out)));
        }
        self.stack()
            .map_or(0, |stack| walk(frame_pointer, stack, out))
    }

    #[inline]
    fn with_stack_memo<R>(&self, visit: impl FnOnce(Option<(&StackMemo, Stack)>) -> R) -> R {
        if crate::config::capture_unwinds() {
            return visit(None);
        }
        STATE.with(|state| {
            let memo: &StackMemo = &state.memo;
            visit(state.stack().map(|stack| (memo, stack)))
        })
    }
}

/// Captures return addresses with the platform unwinder, skipping the frames
/// below `threshold` (an address in the frame of the tracker's function that
/// the program's allocating call reached), which are the tracker's own.
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

/// A monotonic clock in nanoseconds (from an arbitrary start), read without
/// allocating or locking: for the sampling form's lifetimes.
#[cfg(unix)]
pub(crate) fn clock_nanos() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec for the call to fill.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) } != 0 {
        return 0;
    }
    (now.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(now.tv_nsec as u64)
}

/// No clock without Unix: lifetimes are not kept.
#[cfg(not(unix))]
pub(crate) fn clock_nanos() -> u64 {
    0
}

/// The bounds of the calling thread's stack as the thread library reports
/// them: its lowest address and one past its highest. For contexts of the
/// core's own trackers, which need the bounds to walk callsites.
#[cfg(target_os = "linux")]
pub fn thread_stack() -> Option<(usize, usize)> {
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

/// The bounds of the calling thread's stack as the thread library reports
/// them: its lowest address and one past its highest.
#[cfg(target_os = "macos")]
pub fn thread_stack() -> Option<(usize, usize)> {
    // SAFETY: both ask about the calling thread, which is alive.
    let (top, size) = unsafe {
        (
            libc::pthread_get_stackaddr_np(libc::pthread_self()) as usize,
            libc::pthread_get_stacksize_np(libc::pthread_self()),
        )
    };
    (top != 0).then(|| (top.wrapping_sub(size), top))
}

/// The bounds of the calling thread's stack: unknown on this platform, so
/// callsites are not walked.
#[cfg(not(any(target_os = "linux", target_os = "macos")))]
pub fn thread_stack() -> Option<(usize, usize)> {
    None
}
