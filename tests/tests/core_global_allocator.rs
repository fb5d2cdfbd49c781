//! The core tracker as this binary's global allocator, with a minimal
//! thread-based context: exact figures for known workloads, and no call of
//! the allocator from inside the allocator.

use std::alloc::System;
use std::cell::Cell;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use alloc_track_core::{Context, Mode, Stack, TaskBucket, TaskFigures, Tracker, Who};
use alloc_track_tests::ReentryDetector;

/// Names each thread by a number handed out on its first allocation, and
/// finds its stack once. Everything it keeps is in const-initialised
/// thread-locals without destructors, so it never allocates.
struct ThreadContext;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    static ID: Cell<u64> = const { Cell::new(0) };
    static STACK: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
}

fn thread_id() -> u64 {
    ID.with(|id| {
        if id.get() == 0 {
            id.set(NEXT_ID.fetch_add(1, Relaxed));
        }
        id.get()
    })
}

/// A context that keeps no ticket: every call finds the thread's row by a
/// table search (the std adapter's context keeps one; this one tests the
/// other path).
impl Context for ThreadContext {
    fn who(&self) -> Who {
        Who::Task(thread_id())
    }

    fn stack(&self) -> Option<Stack> {
        let (mut low, mut high) = STACK.with(Cell::get);
        if high == 0 {
            (low, high) = alloc_track::thread_stack()?;
            STACK.with(|stack| stack.set((low, high)));
        }
        // SAFETY: the bounds of this thread's own stack, which stays mapped
        // while the thread runs.
        unsafe { Stack::new(low, high) }
    }
}

type Tracked = Tracker<System, ThreadContext, 16, 256, 16>;

#[global_allocator]
static GLOBAL: ReentryDetector<Tracked> = ReentryDetector::new(Tracker::new(System, ThreadContext));

fn tracker() -> &'static Tracked {
    GLOBAL.inner()
}

fn my_row() -> TaskFigures {
    let me = thread_id();
    let mut found = TaskFigures::default();
    tracker().for_each_task(|row| {
        if row.id == me {
            found = row.figures;
        }
    });
    found
}

#[test]
fn known_workloads_give_exact_figures_and_the_allocator_never_reenters() {
    let before = my_row().figures;
    let boxed = black_box(Box::new([0u8; 1000]));
    let mut numbers: Vec<u64> = Vec::with_capacity(10);
    numbers.extend(0..10);
    let after = my_row().figures;
    assert_eq!(after.allocated_bytes - before.allocated_bytes, 1080);
    assert_eq!(after.allocations - before.allocations, 2);
    assert_eq!(after.frees, before.frees);
    drop(boxed);
    drop(numbers);
    let after = my_row().figures;
    assert_eq!(after.freed_bytes - before.freed_bytes, 1080);
    assert_eq!(after.live_bytes(), before.live_bytes());

    // Growth by realloc: a Vec pushed one by one, capacities 4, 8, .., 1024
    // (u64), each a realloc counted as a free plus an allocation.
    let before = my_row().figures;
    let mut pushed = Vec::new();
    for value in 0..1000u64 {
        pushed.push(value);
    }
    let after = my_row().figures;
    assert_eq!(after.live_bytes() - before.live_bytes(), 1024 * 8);
    assert_eq!(after.allocations - before.allocations, 9);
    assert_eq!(after.frees - before.frees, 8);
    assert_eq!(
        after.allocated_bytes - before.allocated_bytes,
        (2..=10).map(|power| 8u64 << power).sum::<u64>()
    );
    drop(pushed);

    // Threads that allocate, free each other's blocks and end.
    let before_buckets = tracker().task_bucket(TaskBucket::Finished);
    let handed_over: Vec<Box<[u8; 256]>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    let me = thread_id();
                    let mine: Vec<Box<[u8; 256]>> = (0..100).map(|_| Box::new([1; 256])).collect();
                    tracker().task_exit(me);
                    mine
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    assert_eq!(handed_over.len(), 400);
    drop(handed_over);
    let finished = tracker().task_bucket(TaskBucket::Finished);
    // The boxes, and the four vectors that carried them out (100 pointers
    // each), were allocated by threads that have ended and freed here.
    assert_eq!(
        finished.freed_by_others_bytes - before_buckets.freed_by_others_bytes,
        400 * 256 + 4 * 800
    );

    // Reports and a mode change, from inside the program being tracked.
    let report = tracker().task_report::<4>(alloc_track_core::Order::LiveBytes);
    let text = format!("{report}");
    assert!(text.starts_with("tasks by live bytes"));
    tracker().set_mode(Mode::Tasks);
    let kept = black_box(vec![0u8; 10]);
    tracker().set_mode(Mode::TasksAndCallsites);
    drop(kept);

    assert_eq!(GLOBAL.reentries(), 0);
    assert_eq!(tracker().totals().damaged_headers, 0);
}
