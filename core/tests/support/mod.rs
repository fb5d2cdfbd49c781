//! What the core's tests drive the tracker with: an inner allocator that
//! counts its calls and can be told to fail, and a context whose current task
//! is whatever the test thread last set.
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;

use alloc_track_core::raw::OwnRow;
use alloc_track_core::{
    CallsiteBucket, Context, Figures, Mode, Party, SampleFreed, Stack, TaskBucket, TaskFigures,
    Ticket, Tracker, Who,
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
    /// Blocks handed out and not yet freed.
    pub live_blocks: AtomicIsize,
    /// Their bytes.
    pub live_bytes: AtomicIsize,
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
            live_blocks: AtomicIsize::new(0),
            live_bytes: AtomicIsize::new(0),
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
        self.live_blocks.fetch_add(1, Relaxed);
        self.live_bytes.fetch_add(layout.size() as isize, Relaxed);
        // SAFETY: forwarded from our caller.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        self.zeroed_allocs.fetch_add(1, Relaxed);
        self.last_size.store(layout.size(), Relaxed);
        if self.fail.load(Relaxed) {
            return std::ptr::null_mut();
        }
        self.live_blocks.fetch_add(1, Relaxed);
        self.live_bytes.fetch_add(layout.size() as isize, Relaxed);
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
        let block = unsafe { System.realloc(ptr, layout, new_size) };
        if !block.is_null() {
            self.live_bytes
                .fetch_add(new_size as isize - layout.size() as isize, Relaxed);
        }
        block
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        self.deallocs.fetch_add(1, Relaxed);
        self.live_blocks.fetch_sub(1, Relaxed);
        self.live_bytes.fetch_sub(layout.size() as isize, Relaxed);
        // SAFETY: forwarded from our caller.
        unsafe { System.dealloc(ptr, layout) }
    }
}

thread_local! {
    static NOW: Cell<u64> = const { Cell::new(0) };
    static FREED_SAMPLES: std::cell::RefCell<Vec<SampleFreed>> = const { std::cell::RefCell::new(Vec::new()) };
    static TASK: Cell<Option<u64>> = const { Cell::new(None) };
    static TICKET: Cell<u64> = const { Cell::new(0) };
    static STACK: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
}

/// Sets this thread's clock, which the test context's `now` reads.
pub fn set_now(now: u64) {
    NOW.with(|clock| clock.set(now));
}

/// The sampled frees this thread made since the last call.
pub fn take_freed_samples() -> Vec<SampleFreed> {
    FREED_SAMPLES.with(|freed| std::mem::take(&mut *freed.borrow_mut()))
}

/// Makes `id` the current task of this thread (`None`: unknown), and
/// forgets the ticket of the task before.
pub fn set_task(id: Option<u64>) {
    TASK.with(|task| task.set(id));
    TICKET.with(|ticket| ticket.set(0));
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

/// A context that names the task the test thread set with [`set_task`],
/// and keeps its ticket (the fast path) until the next `set_task`.
pub struct TestContext;

impl Context for TestContext {
    fn ticket(&self) -> Option<Ticket> {
        Ticket::from_word(TICKET.with(Cell::get))
    }

    fn who(&self) -> Who {
        match TASK.with(Cell::get) {
            Some(id) => Who::Task(id),
            None => Who::Unknown,
        }
    }

    fn remember(&self, ticket: Ticket) {
        TICKET.with(|word| word.set(ticket.to_word()));
    }

    fn now(&self) -> u64 {
        NOW.with(Cell::get)
    }

    // The tracker under test is not the global allocator, so this may
    // allocate.
    fn sample_freed(&self, freed: SampleFreed) {
        FREED_SAMPLES.with(|all| all.borrow_mut().push(freed));
    }

    fn stack(&self) -> Option<Stack> {
        let (low, high) = thread_stack();
        // SAFETY: these are the bounds of the running thread's own stack, as
        // the thread library reports them; the stack stays mapped while the
        // thread runs.
        unsafe { Stack::new(low, high) }
    }
}

/// The flows a tally keeps: bytes and counts allocated and freed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flows {
    pub allocated_bytes: u64,
    pub allocations: u64,
    pub freed_bytes: u64,
    pub frees: u64,
}

impl Flows {
    fn of(figures: &Figures) -> Self {
        Self {
            allocated_bytes: figures.allocated_bytes,
            allocations: figures.allocations,
            freed_bytes: figures.freed_bytes,
            frees: figures.frees,
        }
    }

    fn alloc(&mut self, size: u64) {
        self.allocated_bytes += size;
        self.allocations += 1;
    }

    fn free(&mut self, size: u64) {
        self.freed_bytes += size;
        self.frees += 1;
    }
}

/// One live block as the test asked for it.
struct LiveBlock {
    size: u64,
    /// Allocated while tracking was on.
    tracked: bool,
    /// Allocated while callsites were recorded.
    walked: bool,
}

/// What the test itself asked the tracker for: the independent account
/// that the tracker's figures are checked against.
pub struct Tally {
    /// Blocks allocated while tracking was on.
    pub tracked: Flows,
    /// Those of them allocated while only tasks were recorded.
    pub unwalked: Flows,
    live: BTreeMap<usize, LiveBlock>,
}

impl Tally {
    const fn new() -> Self {
        const NONE: Flows = Flows {
            allocated_bytes: 0,
            allocations: 0,
            freed_bytes: 0,
            frees: 0,
        };
        Self {
            tracked: NONE,
            unwalked: NONE,
            live: BTreeMap::new(),
        }
    }

    fn alloc(&mut self, block: *mut u8, size: usize, mode: Mode) {
        if block.is_null() {
            return;
        }
        let live = LiveBlock {
            size: size as u64,
            tracked: mode != Mode::Off,
            walked: mode == Mode::TasksAndCallsites,
        };
        if live.tracked {
            self.tracked.alloc(live.size);
            if !live.walked {
                self.unwalked.alloc(live.size);
            }
        }
        self.live.insert(block as usize, live);
    }

    fn free(&mut self, block: *mut u8) {
        let Some(live) = self.live.remove(&(block as usize)) else {
            panic!("the test freed a block it never allocated: {block:?}");
        };
        if live.tracked {
            self.tracked.free(live.size);
            if !live.walked {
                self.unwalked.free(live.size);
            }
        }
    }

    /// How many blocks the test holds, counted or not.
    pub fn live_blocks(&self) -> usize {
        self.live.len()
    }
}

/// A tracker, and the test's own tally of what was asked of it. Every call
/// through its `GlobalAlloc` is tallied before it is checked.
pub struct Tallied<T> {
    tracker: T,
    pub tally: Mutex<Tally>,
}

impl<T> Tallied<T> {
    pub const fn new(tracker: T) -> Self {
        Self {
            tracker,
            tally: Mutex::new(Tally::new()),
        }
    }

    fn tally(&self) -> std::sync::MutexGuard<'_, Tally> {
        self.tally.lock().unwrap()
    }
}

impl<T> Deref for Tallied<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.tracker
    }
}

/// The tracker of a test: a core tracker over the counting allocator, in
/// the exact form unless `N` (room for live samples) is given.
pub type TestTrackerOf<
    const T: usize,
    const S: usize,
    const D: usize,
    const P: usize,
    const N: usize = 0,
> = Tracker<TestAlloc, TestContext, T, S, D, P, N>;

// SAFETY: forwards every call to the tracker unchanged; the tally only
// records what came back.
unsafe impl<const T: usize, const S: usize, const D: usize, const P: usize, const N: usize>
    GlobalAlloc for Tallied<TestTrackerOf<T, S, D, P, N>>
{
    #[cfg_attr(miri, track_caller)]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let mode = self.tracker.mode();
        // SAFETY: forwarded from our caller.
        let block = unsafe { self.tracker.alloc(layout) };
        self.tally().alloc(block, layout.size(), mode);
        block
    }

    #[cfg_attr(miri, track_caller)]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let mode = self.tracker.mode();
        // SAFETY: forwarded from our caller.
        let block = unsafe { self.tracker.alloc_zeroed(layout) };
        self.tally().alloc(block, layout.size(), mode);
        block
    }

    #[cfg_attr(miri, track_caller)]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let mode = self.tracker.mode();
        // SAFETY: forwarded from our caller.
        let block = unsafe { self.tracker.realloc(ptr, layout, new_size) };
        if !block.is_null() {
            let mut tally = self.tally();
            tally.free(ptr);
            tally.alloc(block, new_size, mode);
        }
        block
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        self.tally().free(ptr);
        // SAFETY: forwarded from our caller.
        unsafe { self.tracker.dealloc(ptr, layout) }
    }
}

impl<const T: usize, const S: usize, const D: usize, const P: usize>
    Tallied<TestTrackerOf<T, S, D, P>>
{
    /// The row of the current task (set with [`set_task`]), claimed if it
    /// has none, as an adapter that keeps it beside the ticket holds it;
    /// `None` when the table is full.
    pub fn own_row(&self) -> Option<OwnRow<'_>> {
        let ledger = self.tracker.ledger();
        let ticket = match TestContext.ticket() {
            Some(ticket) => ticket,
            None => {
                let ticket = ledger.task_ticket(TASK.with(Cell::get)?);
                TestContext.remember(ticket);
                ticket
            }
        };
        ledger.own_row(ticket)
    }

    /// An allocation in tasks mode by the current task through its kept
    /// row (the exact form's fast path), tallied.
    ///
    /// # Safety
    /// The duties of `GlobalAlloc::alloc`.
    pub unsafe fn alloc_on_row(&self, layout: Layout, zeroed: bool) -> *mut u8 {
        // SAFETY: forwarded from our caller.
        unsafe { self.alloc_on_row_by(layout, zeroed, || self.own_row()) }
    }

    /// [`alloc_on_row`](Self::alloc_on_row) when the row is gone by the
    /// time the inner allocator returns, so that the path counts by the
    /// ticket, tallied.
    ///
    /// # Safety
    /// The duties of `GlobalAlloc::alloc`.
    pub unsafe fn alloc_on_row_gone(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded from our caller.
        unsafe { self.alloc_on_row_by(layout, false, || None) }
    }

    /// An allocation through the kept row's path by a task that holds a
    /// row, with `row` asked for it after the inner call, tallied.
    ///
    /// # Safety
    /// The duties of `GlobalAlloc::alloc`.
    unsafe fn alloc_on_row_by<'r>(
        &self,
        layout: Layout,
        zeroed: bool,
        row: impl FnOnce() -> Option<OwnRow<'r>>,
    ) -> *mut u8 {
        assert!(self.own_row().is_some(), "a row for the task");
        let ledger = self.tracker.ledger();
        // SAFETY: forwarded from our caller; the tracker's ledger is in the
        // exact form, over the tracker's inner allocator.
        let block = unsafe { ledger.alloc_exact_on_row(self.tracker.inner(), layout, row, zeroed) };
        self.tally().alloc(block, layout.size(), Mode::Tasks);
        block
    }

    /// An allocation in callsites mode by the current task through its
    /// kept row, tallied. Never inlined: the walk starts at this frame, as
    /// at the tracker's allocator methods, so the stack is the caller's.
    ///
    /// # Safety
    /// The duties of `GlobalAlloc::alloc`.
    #[inline(never)]
    #[cfg_attr(miri, track_caller)]
    pub unsafe fn alloc_callsites_on_row(&self, layout: Layout, zeroed: bool) -> *mut u8 {
        let frame_pointer = alloc_track_core::frame_pointer();
        let row = self.own_row().expect("a row for the task");
        let ledger = self.tracker.ledger();
        // SAFETY: forwarded from our caller; the tracker's ledger is in the
        // exact form, over the tracker's inner allocator.
        let block = unsafe {
            ledger.alloc_callsites_on_row(self.tracker.inner(), layout, row, frame_pointer, zeroed)
        };
        self.tally()
            .alloc(block, layout.size(), Mode::TasksAndCallsites);
        block
    }

    /// A free by the current task through its kept row, tallied.
    ///
    /// # Safety
    /// The duties of `GlobalAlloc::dealloc`.
    pub unsafe fn dealloc_on_row(&self, ptr: *mut u8, layout: Layout) {
        let row = self.own_row();
        self.tally().free(ptr);
        // SAFETY: forwarded from our caller, as in `alloc_on_row`.
        unsafe {
            self.tracker.ledger().dealloc_exact_on_row(
                self.tracker.inner(),
                ptr,
                layout.size(),
                layout.align(),
                row,
            )
        }
    }
}

/// The tracker configuration most tests use: 8 tasks, 32 callsites, 16
/// frames.
pub type TestTracker = Tallied<TestTrackerOf<8, 32, 16, 64>>;

pub fn tracker() -> Box<TestTracker> {
    Box::new(Tallied::new(Tracker::new(TestAlloc::new(), TestContext)))
}

/// Any other configuration, tallied.
pub fn tallied<const T: usize, const S: usize, const D: usize, const P: usize>(
    tracker: TestTrackerOf<T, S, D, P>,
) -> Box<Tallied<TestTrackerOf<T, S, D, P>>> {
    Box::new(Tallied::new(tracker))
}

pub fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 8).unwrap()
}

/// Allocates through the tracker from a call site of its own (under Miri,
/// its caller's: see the walker's stub).
#[inline(never)]
#[cfg_attr(miri, track_caller)]
pub fn alloc<const T: usize, const S: usize, const D: usize, const P: usize>(
    tracker: &Tallied<TestTrackerOf<T, S, D, P>>,
    layout: Layout,
) -> *mut u8 {
    // SAFETY: test layouts have non-zero sizes.
    let block = unsafe { tracker.alloc(layout) };
    assert!(!block.is_null());
    block
}

/// Frees a block allocated through the tracker with `layout`.
pub fn free<const T: usize, const S: usize, const D: usize, const P: usize>(
    tracker: &Tallied<TestTrackerOf<T, S, D, P>>,
    block: *mut u8,
    layout: Layout,
) {
    // SAFETY: the tests free each block once, with its layout.
    unsafe { tracker.dealloc(block, layout) }
}

/// The figures of the row that task `id` holds.
pub fn task_row<const T: usize, const S: usize, const D: usize, const P: usize, const N: usize>(
    tracker: &TestTrackerOf<T, S, D, P, N>,
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
    tracker: &TestTrackerOf<T, S, D, P>,
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

/// Checks the tracker against the test's own tally, at a quiescent point:
/// the totals, the task rows and buckets, and the callsite rows and buckets
/// hold exactly what the test allocated and freed while tracking was on;
/// the inner allocator holds exactly the blocks the test holds; and every
/// free that crossed tasks was seen from both sides.
pub fn assert_consistent<
    const T: usize,
    const S: usize,
    const D: usize,
    const P: usize,
    const N: usize,
>(
    tracked: &Tallied<TestTrackerOf<T, S, D, P, N>>,
) {
    let tally = tracked.tally();
    let tracker = &tracked.tracker;
    assert_eq!(
        Flows::of(&tracker.totals().figures),
        tally.tracked,
        "totals against the test's tally"
    );
    let mut tasks = TaskFigures::default();
    tracker.for_each_task(|row| tasks.accumulate(&row.figures));
    for bucket in TaskBucket::ALL {
        tasks.accumulate(&tracker.task_bucket(bucket));
    }
    assert_eq!(
        Flows::of(&tasks.figures),
        tally.tracked,
        "task rows and buckets against the test's tally"
    );
    // Every block allocated while callsites were recorded was walked (the
    // test context always gives the stack) and found a row or the overflow
    // bucket; the others are the uncaptured bucket.
    let walked = tally.tracked;
    let walked = Flows {
        allocated_bytes: walked.allocated_bytes - tally.unwalked.allocated_bytes,
        allocations: walked.allocations - tally.unwalked.allocations,
        freed_bytes: walked.freed_bytes - tally.unwalked.freed_bytes,
        frees: walked.frees - tally.unwalked.frees,
    };
    assert_eq!(
        Flows::of(&tracker.captured_totals()),
        walked,
        "callsite rows and overflow against the test's walked blocks"
    );
    assert_eq!(
        Flows::of(&tracker.callsite_bucket(CallsiteBucket::Uncaptured)),
        tally.unwalked,
        "the uncaptured bucket against the test's unwalked blocks"
    );
    assert_eq!(
        tracker.inner().live_blocks.load(Relaxed),
        tally.live_blocks() as isize,
        "blocks held by the inner allocator against the test's"
    );
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
