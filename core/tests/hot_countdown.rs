//! The sampling form's hot counters (`HotCountdown`): a context that keeps a
//! task's countdown counters in a thread-local, attached to its row while it
//! counts there, takes the very samples and gives the very figures a context
//! without them does, and another thread reads the attached counters while
//! they count.
#![cfg(not(alloc_track_loom))] // `const` constructors, which loom builds lack

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use alloc_track_core::raw::HotCountdown;
use alloc_track_core::{Context, Ticket, Tracker, Who};

/// Samples often, so that many counts reach a sample point and draw anew.
const INTERVAL: u64 = 4096;
const SEED: u64 = 0x5eed;

/// Allocations per run: fewer under Miri, which interprets them.
const ALLOCATIONS: usize = if cfg!(miri) { 300 } else { 20_000 };

thread_local! {
    static HOT: HotCountdown = const { HotCountdown::new() };
    static TICKET: Cell<u64> = const { Cell::new(0) };
    static TASK: Cell<u64> = const { Cell::new(0) };
}

/// Names the thread's task (`TASK`) and keeps its ticket; with `HOT_KEPT`,
/// gives the thread's hot counters to the ledger.
struct ThreadContext<const HOT_KEPT: bool>;

impl<const HOT_KEPT: bool> Context for ThreadContext<HOT_KEPT> {
    fn ticket(&self) -> Option<Ticket> {
        Ticket::from_word(TICKET.with(Cell::get))
    }

    fn who(&self) -> Who {
        Who::Task(TASK.with(Cell::get))
    }

    fn remember(&self, ticket: Ticket) {
        TICKET.with(|word| word.set(ticket.to_word()));
    }

    fn hot(&self) -> Option<&HotCountdown> {
        if !HOT_KEPT {
            return None;
        }
        let hot = HOT.with(std::ptr::from_ref);
        // SAFETY: the running thread's own thread-local, without a
        // destructor: alive past this call of the ledger's.
        Some(unsafe { &*hot })
    }
}

type Sampled<const HOT_KEPT: bool> = Tracker<System, ThreadContext<HOT_KEPT>, 4, 8, 8, 4, 64>;

static WITH_HOT: Sampled<true> = Tracker::new(System, ThreadContext).with_sampling(INTERVAL);
static WITHOUT_HOT: Sampled<false> = Tracker::new(System, ThreadContext).with_sampling(INTERVAL);

/// The sizes of the workload: a fixed sequence, mostly small, some large.
fn sizes() -> impl Iterator<Item = usize> {
    let mut state = 0x1234_5678_u64;
    (0..ALLOCATIONS).map(move |_| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        match state % 16 {
            0 => 2000 + (state >> 8) as usize % 3000,
            _ => 8 + (state >> 8) as usize % 120,
        }
    })
}

/// Allocates and frees the workload through `tracker`, as the std adapter
/// does: with the hot counters attached, an allocation that they count is
/// the inner allocator's own; any other goes to the tracker. Returns the
/// bytes allocated.
fn run<const HOT_KEPT: bool>(tracker: &'static Sampled<HOT_KEPT>, task: u64) -> (u64, Ticket) {
    TASK.with(|id| id.set(task));
    TICKET.with(|word| word.set(0));
    let first = Layout::from_size_align(16, 8).unwrap();
    // SAFETY: a layout of non-zero size, freed below with it.
    let block = unsafe { tracker.alloc(first) };
    // SAFETY: allocated just above with `first`.
    unsafe { tracker.dealloc(block, first) };
    let ticket = Ticket::from_word(TICKET.with(Cell::get)).expect("a claimed row");
    let row = tracker.ledger().own_row(ticket).expect("a task's row");
    if HOT_KEPT {
        // SAFETY: `HOT` is this thread's and lives until the thread's end,
        // after the detach and the wait for readers below.
        HOT.with(|hot| unsafe { row.attach(hot) });
    }
    let mut allocated = 16;
    for size in sizes() {
        let layout = Layout::from_size_align(size, 8).unwrap();
        let counted = HOT_KEPT && HOT.with(|hot| hot.count_unsampled(size as u64));
        // SAFETY: layouts of non-zero size; a block counted on the hot
        // counters is the inner allocator's own, as the sampling form's
        // free expects; each block is freed once with its layout.
        unsafe {
            let block = if counted {
                System.alloc(layout)
            } else {
                tracker.alloc(layout)
            };
            assert!(!block.is_null());
            black_box(block);
            tracker.dealloc(block, layout);
        }
        allocated += size as u64;
    }
    if HOT_KEPT {
        HOT.with(|hot| row.detach(hot));
        while tracker.ledger().hot_reads_in_progress() {
            std::thread::yield_now();
        }
    }
    (allocated, ticket)
}

#[test]
fn hot_counters_take_the_same_samples_and_give_the_same_figures() {
    WITH_HOT.ledger().set_sampling(INTERVAL, SEED);
    WITHOUT_HOT.ledger().set_sampling(INTERVAL, SEED);
    let hot = std::thread::spawn(|| {
        let (allocated, ticket) = run(&WITH_HOT, 1);
        (allocated, WITH_HOT.ledger().ticket_figures(ticket).unwrap())
    });
    let plain = std::thread::spawn(|| {
        let (allocated, ticket) = run(&WITHOUT_HOT, 1);
        (
            allocated,
            WITHOUT_HOT.ledger().ticket_figures(ticket).unwrap(),
        )
    });
    let (hot_allocated, hot_figures) = hot.join().unwrap();
    let (plain_allocated, plain_figures) = plain.join().unwrap();
    assert_eq!(hot_allocated, plain_allocated);
    let exact = hot_figures.exact_allocations.unwrap();
    assert_eq!(exact.bytes, hot_allocated);
    assert_eq!(exact.count, ALLOCATIONS as u64 + 1);
    // The same sample points, so the same estimates, to the last unit.
    assert_eq!(hot_figures, plain_figures);
    assert_eq!(WITH_HOT.totals().figures, WITHOUT_HOT.totals().figures);
    assert!(
        WITH_HOT.totals().figures.allocations > 0,
        "some were sampled"
    );
}

/// The allocations of task `id` as a report reads them, if it holds a row.
fn count_of<const HOT_KEPT: bool>(tracker: &Sampled<HOT_KEPT>, id: u64) -> Option<u64> {
    let mut count = None;
    tracker.for_each_task(|row| {
        if row.id == id {
            count = row.figures.exact_allocations.map(|exact| exact.count);
        }
    });
    count
}

#[test]
fn another_thread_reads_attached_counters_while_they_count() {
    static TRACKER: Sampled<true> = Tracker::new(System, ThreadContext).with_sampling(1 << 40);
    static DONE: AtomicBool = AtomicBool::new(false);
    TRACKER.ledger().set_sampling(1 << 40, SEED);
    let ticket = std::thread::spawn(|| {
        let (_, ticket) = run(&TRACKER, 2);
        ticket
    });
    let reader = std::thread::spawn(|| {
        let mut last = 0;
        let mut reads = 0;
        while !DONE.load(Relaxed) || reads == 0 {
            if let Some(count) = count_of(&TRACKER, 2) {
                assert!(count >= last, "a count went back: {count} after {last}");
                last = count;
            }
            reads += 1;
        }
        last
    });
    let ticket = ticket.join().unwrap();
    DONE.store(true, Relaxed);
    let last = reader.join().unwrap();
    let exact = TRACKER
        .ledger()
        .ticket_figures(ticket)
        .unwrap()
        .exact_allocations
        .unwrap();
    assert_eq!(exact.count, ALLOCATIONS as u64 + 1);
    assert!(last <= exact.count);
}
