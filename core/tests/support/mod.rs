//! What the core's tests drive the tracker with: an inner allocator that
//! counts its calls and can be told to fail, and a context whose current task
//! is whatever the test thread last set.
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};

use alloc_track_core::{
    CallsiteBucket, Context, Figures, Party, Stack, Task, TaskBucket, TaskFigures, Tracker,
};

/// System, counting each kind of call and able to fail on demand.
#[derive(Default)]
pub struct TestAlloc {
    pub allocs: AtomicUsize,
    pub zeroed_allocs: AtomicUsize,
    pub reallocs: AtomicUsize,
    pub deallocs: AtomicUsize,
    /// Size asked for by the last call.
    pub last_size: AtomicUsize,
    pub fail: AtomicBool,
}

impl TestAlloc {
    pub const fn new() -> Self {
        Self {
            allocs: AtomicUsize::new(0),
            zeroed_allocs: AtomicUsize::new(0),
            reallocs: AtomicUsize::new(0),
            deallocs: AtomicUsize::new(0),
            last_size: AtomicUsize::new(0),
            fail: AtomicBool::new(false),
        }
    }
}

// SAFETY: forwards to System unchanged, or returns null, which `GlobalAlloc`
// allows for any request.
unsafe impl GlobalAlloc for TestAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.allocs.fetch_add(1, Relaxed);
        self.last_size.store(layout.size(), Relaxed);
        if self.fail.load(Relaxed) {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded from our caller.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        self.zeroed_allocs.fetch_add(1, Relaxed);
        self.last_size.store(layout.size(), Relaxed);
        if self.fail.load(Relaxed) {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded from our caller.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        self.reallocs.fetch_add(1, Relaxed);
        self.last_size.store(new_size, Relaxed);
        if self.fail.load(Relaxed) {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded from our caller.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        self.deallocs.fetch_add(1, Relaxed);
        // SAFETY: forwarded from our caller.
        unsafe { System.dealloc(ptr, layout) }
    }
}

thread_local! {
    static TASK: Cell<Option<u64>> = const { Cell::new(None) };
    static HINT: Cell<Option<u32>> = const { Cell::new(None) };
    static STACK: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
}

/// Makes `id` the current task of this thread (`None`: unknown).
pub fn set_task(id: Option<u64>) {
    TASK.with(|task| task.set(id));
    HINT.with(|hint| hint.set(None));
}

/// The current thread's stack, from the thread's attributes. Miri cannot ask
/// for them, and its walker stub reads no memory: a local stands in.
#[cfg(miri)]
fn thread_stack() -> (usize, usize) {
    let here = 0u8;
    let low = &here as *const u8 as usize;
    (low, low + 1)
}

/// The current thread's stack, from the thread's attributes.
#[cfg(not(miri))]
fn thread_stack() -> (usize, usize) {
    let cached = STACK.with(Cell::get);
    if cached.1 != 0 {
        return cached;
    }
    // SAFETY: `attr` is initialised by `pthread_getattr_np` before it is read
    // and destroyed once; the out-pointers are valid locals.
    let bounds = unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        assert_eq!(libc::pthread_getattr_np(libc::pthread_self(), &mut attr), 0);
        let mut low: *mut libc::c_void = std::ptr::null_mut();
        let mut size: libc::size_t = 0;
        assert_eq!(libc::pthread_attr_getstack(&attr, &mut low, &mut size), 0);
        libc::pthread_attr_destroy(&mut attr);
        (low as usize, low as usize + size)
    };
    STACK.with(|stack| stack.set(bounds));
    bounds
}

/// A context that names the task the test thread set with [`set_task`].
pub struct TestContext;

impl Context for TestContext {
    fn current_task(&self) -> Option<Task> {
        Some(Task {
            id: TASK.with(Cell::get)?,
            row_hint: HINT.with(Cell::get),
        })
    }

    fn remember_row(&self, row: u32) {
        HINT.with(|hint| hint.set(Some(row)));
    }

    fn stack(&self) -> Option<Stack> {
        let (low, high) = thread_stack();
        // SAFETY: these are the bounds of the running thread's own stack, as
        // the thread library reports them; the stack stays mapped while the
        // thread runs.
        unsafe { Stack::new(low, high) }
    }
}

/// The tracker configuration most tests use: 8 tasks, 32 callsites, 16
/// frames.
pub type TestTracker = Tracker<TestAlloc, TestContext, 8, 32, 16>;

pub fn tracker() -> Box<TestTracker> {
    Box::new(Tracker::new(TestAlloc::new(), TestContext))
}

pub fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 8).unwrap()
}

/// Allocates through the tracker from a call site of its own (under Miri,
/// its caller's: see the walker's stub).
#[inline(never)]
#[cfg_attr(miri, track_caller)]
pub fn alloc<const T: usize, const S: usize, const D: usize, const P: usize>(
    tracker: &Tracker<TestAlloc, TestContext, T, S, D, P>,
    layout: Layout,
) -> *mut u8 {
    // SAFETY: test layouts have non-zero sizes.
    let block = unsafe { tracker.alloc(layout) };
    assert!(!block.is_null());
    block
}

/// Frees a block allocated through the tracker with `layout`.
pub fn free<const T: usize, const S: usize, const D: usize, const P: usize>(
    tracker: &Tracker<TestAlloc, TestContext, T, S, D, P>,
    block: *mut u8,
    layout: Layout,
) {
    // SAFETY: the tests free each block once, with its layout.
    unsafe { tracker.dealloc(block, layout) }
}

/// The figures of the row that task `id` holds.
pub fn task_row<const T: usize, const S: usize, const D: usize, const P: usize>(
    tracker: &Tracker<TestAlloc, TestContext, T, S, D, P>,
    id: u64,
) -> Option<TaskFigures> {
    let mut found = None;
    tracker.for_each_task(|row| {
        if row.id == id {
            found = Some(row.figures);
        }
    });
    found
}

/// Every (owner, freer) pair with its bytes and count, sorted.
pub fn cross_frees<const T: usize, const S: usize, const D: usize, const P: usize>(
    tracker: &Tracker<TestAlloc, TestContext, T, S, D, P>,
) -> Vec<(Party, Party, u64, u64)> {
    let mut pairs = Vec::new();
    tracker
        .for_each_cross_free(|pair| pairs.push((pair.owner, pair.freer, pair.bytes, pair.frees)));
    pairs.sort();
    pairs
}

/// Figures with the given flows and peak.
pub fn figures(
    allocated_bytes: u64,
    allocations: u64,
    freed_bytes: u64,
    frees: u64,
    peak: u64,
) -> Figures {
    Figures {
        allocated_bytes,
        allocations,
        freed_bytes,
        frees,
        peak_live_bytes: peak,
    }
}

/// Checks what must hold at every quiescent point: the task rows and buckets
/// add up to the totals, the callsite rows and buckets carry the same flows,
/// and every free that crossed tasks was seen from both sides.
pub fn assert_consistent<const T: usize, const S: usize, const D: usize, const P: usize>(
    tracker: &Tracker<TestAlloc, TestContext, T, S, D, P>,
) {
    let totals = tracker.totals().figures;
    let mut tasks = TaskFigures::default();
    tracker.for_each_task(|row| tasks.accumulate(&row.figures));
    for bucket in [
        TaskBucket::Finished,
        TaskBucket::Overflow,
        TaskBucket::Unknown,
    ] {
        tasks.accumulate(&tracker.task_bucket(bucket));
    }
    let flows = |f: &Figures| (f.allocated_bytes, f.allocations, f.freed_bytes, f.frees);
    assert_eq!(
        flows(&tasks.figures),
        flows(&totals),
        "task rows against totals"
    );
    let captured = tracker.captured_totals();
    let uncaptured = tracker.callsite_bucket(CallsiteBucket::Uncaptured);
    assert_eq!(
        (
            captured.allocated_bytes + uncaptured.allocated_bytes,
            captured.allocations + uncaptured.allocations,
            captured.freed_bytes + uncaptured.freed_bytes,
            captured.frees + uncaptured.frees,
        ),
        flows(&totals),
        "callsite rows and buckets against totals"
    );
    assert!(uncaptured.allocated_bytes >= uncaptured.freed_bytes);
    assert_eq!(
        (tasks.freed_by_others_bytes, tasks.freed_by_others),
        (tasks.freed_of_others_bytes, tasks.freed_of_others),
        "frees across tasks, seen from the owner and from the freer"
    );
    let (mut bytes, mut frees) = tracker.cross_free_overflow();
    tracker.for_each_cross_free(|pair| {
        bytes += pair.bytes;
        frees += pair.frees;
    });
    assert_eq!(
        (bytes, frees),
        (tasks.freed_by_others_bytes, tasks.freed_by_others),
        "the (owner, freer) pairs against the task rows"
    );
}
