//! Exact figures for known workloads, driving the tracker directly (it is not
//! this binary's global allocator) over a counting allocator.
#![cfg(not(alloc_track_loom))] // these use `const` constructors, which loom builds lack

mod support;

use std::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;
use std::sync::atomic::Ordering::Relaxed;

use alloc_track_core::{
    CallsiteBucket, Context, Mode, Party, TaskBucket, Tracker, Who, HEADER_BYTES,
};
use support::*;

#[test]
fn one_task_exact_figures() {
    let tracker = tracker();
    set_task(Some(7));
    let a = alloc(&tracker, layout(100));
    let b = alloc(&tracker, layout(28));
    free(&tracker, a, layout(100));
    let c = alloc(&tracker, layout(50));

    let row = task_row(&tracker, 7).unwrap();
    assert_eq!(row.figures, figures(178, 3, 100, 1, 128));
    assert_eq!(row.figures.live_bytes(), 78);
    assert_eq!(row.figures.live_allocations(), 2);
    assert_eq!(
        (row.freed_by_others_bytes, row.freed_of_others_bytes),
        (0, 0)
    );
    let totals = tracker.totals();
    assert!(totals.global_peak);
    assert_eq!(totals.figures, figures(178, 3, 100, 1, 128));
    assert_eq!(tracker.task_rows_in_use(), 1);
    assert_consistent(&tracker);

    free(&tracker, b, layout(28));
    free(&tracker, c, layout(50));
    assert_eq!(tracker.totals().figures.live_bytes(), 0);
    assert_eq!(tracker.inner().allocs.load(Relaxed), 3);
    assert_eq!(tracker.inner().deallocs.load(Relaxed), 3);
    assert_consistent(&tracker);
}

#[test]
fn frees_are_credited_to_the_allocating_task() {
    let tracker = tracker();
    set_task(Some(1));
    let blocks: Vec<_> = (0..4)
        .map(|_| alloc(&tracker, layout(64)) as usize)
        .collect();
    free(&tracker, blocks[0] as *mut u8, layout(64));

    // Another thread, another task, frees two of them.
    std::thread::scope(|scope| {
        scope.spawn(|| {
            set_task(Some(2));
            free(&tracker, blocks[1] as *mut u8, layout(64));
            free(&tracker, blocks[2] as *mut u8, layout(64));
            let own = alloc(&tracker, layout(10));
            free(&tracker, own, layout(10));
        });
    });

    let owner = task_row(&tracker, 1).unwrap();
    assert_eq!(owner.figures, figures(256, 4, 192, 3, 256));
    assert_eq!(
        (owner.freed_by_others_bytes, owner.freed_by_others),
        (128, 2)
    );
    assert_eq!((owner.freed_of_others_bytes, owner.freed_of_others), (0, 0));
    let freer = task_row(&tracker, 2).unwrap();
    assert_eq!(freer.figures, figures(10, 1, 10, 1, 10));
    assert_eq!(
        (freer.freed_of_others_bytes, freer.freed_of_others),
        (128, 2)
    );
    assert_eq!(freer.freed_by_others, 0);
    assert_eq!(
        cross_frees(&tracker),
        [(Party::Task(1), Party::Task(2), 128, 2)]
    );
    assert_consistent(&tracker);
    free(&tracker, blocks[3] as *mut u8, layout(64));
    assert_consistent(&tracker);
}

#[test]
fn a_new_threads_first_call_may_be_a_free() {
    let tracker = tracker();
    set_task(Some(1));
    let block = alloc(&tracker, layout(40)) as usize;
    std::thread::scope(|scope| {
        scope.spawn(|| {
            set_task(Some(2));
            free(&tracker, block as *mut u8, layout(40));
        });
    });
    assert_eq!(task_row(&tracker, 1).unwrap().freed_by_others_bytes, 40);
    let freer = task_row(&tracker, 2).unwrap();
    assert_eq!(freer.figures, figures(0, 0, 0, 0, 0));
    assert_eq!(freer.freed_of_others_bytes, 40);
    assert_consistent(&tracker);
}

#[test]
fn realloc_goes_to_the_inner_realloc_and_counts_as_free_and_alloc() {
    let tracker = tracker();
    set_task(Some(3));
    let small = layout(16);
    let block = alloc(&tracker, small);
    // SAFETY: the block has 16 writable bytes.
    unsafe { block.copy_from_nonoverlapping([7u8; 16].as_ptr(), 16) };

    // SAFETY: `block` came from this tracker with `small`.
    let grown = unsafe { tracker.realloc(block, small, 4096) };
    assert!(!grown.is_null());
    // SAFETY: the first 16 bytes were carried over.
    assert_eq!(unsafe { std::slice::from_raw_parts(grown, 16) }, &[7u8; 16]);
    assert_eq!(tracker.inner().reallocs.load(Relaxed), 1);
    assert_eq!(tracker.inner().last_size.load(Relaxed), 4096 + HEADER_BYTES);
    assert_eq!(tracker.inner().allocs.load(Relaxed), 1);
    assert_eq!(tracker.inner().deallocs.load(Relaxed), 0);

    // SAFETY: `grown` came from this tracker with 4096 bytes, align 8.
    let shrunk = unsafe { tracker.realloc(grown, layout(4096), 100) };
    assert!(!shrunk.is_null());
    // SAFETY: the first 16 bytes were carried over again.
    let kept = unsafe { std::slice::from_raw_parts(shrunk, 16) };
    assert_eq!(kept, &[7u8; 16]);

    let row = task_row(&tracker, 3).unwrap();
    assert_eq!(row.figures, figures(16 + 4096 + 100, 3, 16 + 4096, 2, 4096));
    assert_eq!(row.figures.live_bytes(), 100);
    assert_consistent(&tracker);
    free(&tracker, shrunk, layout(100));
    assert_eq!(tracker.totals().figures, figures(4212, 3, 4212, 3, 4096));
}

#[test]
fn realloc_of_another_tasks_block_credits_the_maker_with_the_free() {
    let tracker = tracker();
    set_task(Some(1));
    let block = alloc(&tracker, layout(32)) as usize;
    let grown = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                set_task(Some(2));
                // SAFETY: the block came from this tracker with 32 bytes.
                unsafe { tracker.realloc(block as *mut u8, layout(32), 64) as usize }
            })
            .join()
            .unwrap()
    });
    let maker = task_row(&tracker, 1).unwrap();
    assert_eq!(maker.figures, figures(32, 1, 32, 1, 32));
    assert_eq!(maker.freed_by_others_bytes, 32);
    let caller = task_row(&tracker, 2).unwrap();
    assert_eq!(caller.figures, figures(64, 1, 0, 0, 64));
    assert_eq!(caller.freed_of_others_bytes, 32);
    free(&tracker, grown as *mut u8, layout(64));
    assert_eq!(task_row(&tracker, 2).unwrap().freed_by_others_bytes, 64);
    assert_consistent(&tracker);
}

#[test]
fn alloc_zeroed_is_zeroed_and_counted() {
    let tracker = tracker();
    set_task(Some(4));
    let layout = Layout::from_size_align(300, 16).unwrap();
    // SAFETY: non-zero size.
    let block = unsafe { tracker.alloc_zeroed(layout) };
    assert!(!block.is_null());
    // SAFETY: 300 initialised bytes.
    assert!(unsafe { std::slice::from_raw_parts(block, 300) }
        .iter()
        .all(|&b| b == 0));
    assert_eq!(tracker.inner().zeroed_allocs.load(Relaxed), 1);
    assert_eq!(
        task_row(&tracker, 4).unwrap().figures,
        figures(300, 1, 0, 0, 300)
    );
    free(&tracker, block, layout);
    assert_consistent(&tracker);
}

#[test]
fn every_alignment_is_kept_and_overhead_is_as_documented() {
    let tracker = tracker();
    set_task(Some(5));
    let mut align = 1;
    while align <= 1 << 16 {
        for size in [1, 3, 8, 17, 100, 4096] {
            let layout = Layout::from_size_align(size, align).unwrap();
            let block = alloc(&tracker, layout);
            assert_eq!(block as usize % align, 0, "size {size} align {align}");
            let overhead = tracker.inner().last_size.load(Relaxed) - size;
            // The documented overhead: 8 bytes up to alignment 8, 16 at
            // alignment 16, 8 plus padding to a multiple of 8 beyond.
            let documented = match align {
                ..=8 => HEADER_BYTES,
                16 => 2 * HEADER_BYTES,
                _ => HEADER_BYTES + (size.next_multiple_of(8) - size),
            };
            assert_eq!(overhead, documented, "size {size} align {align}");
            // SAFETY: the block has `size` writable bytes.
            unsafe { block.write_bytes(0xee, size) };
            // SAFETY: the block came from this tracker with `layout`.
            let grown = unsafe { tracker.realloc(block, layout, size * 3) };
            assert_eq!(grown as usize % align, 0);
            free(
                &tracker,
                grown,
                Layout::from_size_align(size * 3, align).unwrap(),
            );
        }
        align *= 2;
    }
    let totals = tracker.totals();
    assert_eq!(totals.figures.live_bytes(), 0);
    assert_eq!(totals.figures.allocations, 17 * 6 * 2);
    assert_eq!(totals.damaged_headers, 0);
    assert_consistent(&tracker);
}

#[test]
fn ended_tasks_fold_and_their_rows_are_reused_without_limit() {
    let tracker = tracker(); // 8 rows
                             // Far more tasks than rows (a tenth as many under Miri, which is slow).
    const TASKS: u64 = if cfg!(miri) { 100 } else { 1000 };
    let mut leftovers = Vec::new();
    for id in 100..100 + TASKS {
        set_task(Some(id));
        let keep = alloc(&tracker, layout(10));
        let drop = alloc(&tracker, layout(20));
        leftovers.push(alloc(&tracker, layout(30)));
        free(&tracker, drop, layout(20));
        leftovers.push(keep);
        assert!(tracker.task_exit(id));
        assert!(!tracker.task_exit(id), "a task ends once");
    }
    assert_eq!(tracker.task_rows_in_use(), 0);
    let finished = tracker.task_bucket(TaskBucket::Finished);
    assert_eq!(
        finished.figures,
        figures(60 * TASKS, 3 * TASKS, 20 * TASKS, TASKS, 40 * TASKS)
    );
    assert_eq!(
        tracker
            .task_bucket(TaskBucket::Overflow)
            .figures
            .allocations,
        0
    );

    // The blocks outlived their tasks; a new task, in a reused row, frees
    // them, and the finished bucket is credited, not the new task.
    set_task(Some(5000));
    let own = alloc(&tracker, layout(1));
    for (i, block) in leftovers.into_iter().enumerate() {
        free(&tracker, block, layout(if i % 2 == 0 { 30 } else { 10 }));
    }
    let finished = tracker.task_bucket(TaskBucket::Finished);
    assert_eq!(
        finished.figures,
        figures(60 * TASKS, 3 * TASKS, 60 * TASKS, 3 * TASKS, 40 * TASKS)
    );
    assert_eq!(
        (finished.freed_by_others_bytes, finished.freed_by_others),
        (40 * TASKS, 2 * TASKS)
    );
    assert_eq!(
        cross_frees(&tracker),
        [(
            Party::Bucket(TaskBucket::Finished),
            Party::Task(5000),
            40 * TASKS,
            2 * TASKS
        )]
    );
    let new_task = task_row(&tracker, 5000).unwrap();
    assert_eq!(new_task.figures, figures(1, 1, 0, 0, 1));
    assert_eq!(
        (new_task.freed_of_others_bytes, new_task.freed_of_others),
        (40 * TASKS, 2 * TASKS)
    );
    free(&tracker, own, layout(1));
    let totals = tracker.totals().figures;
    // The global peak came before the last task freed its 20 bytes.
    assert_eq!(
        totals,
        figures(
            60 * TASKS + 1,
            3 * TASKS + 1,
            60 * TASKS + 1,
            3 * TASKS + 1,
            40 * TASKS + 20
        )
    );
    assert_consistent(&tracker);
}

#[test]
fn a_reused_row_is_never_credited_with_its_previous_tasks_blocks() {
    let tracker = tallied(Tracker::<_, _, 1, 4, 8>::new(TestAlloc::new(), TestContext));
    set_task(Some(1));
    let old = alloc(&tracker, layout(500));
    tracker.task_exit(1);
    set_task(Some(2)); // takes the only row, with the next generation
    let new = alloc(&tracker, layout(7));
    free(&tracker, old, layout(500));
    let row = task_row(&tracker, 2).unwrap();
    assert_eq!(row.figures, figures(7, 1, 0, 0, 7));
    assert_eq!(row.freed_of_others_bytes, 500);
    let finished = tracker.task_bucket(TaskBucket::Finished);
    assert_eq!(finished.figures, figures(500, 1, 500, 1, 500));
    free(&tracker, new, layout(7));
    assert_consistent(&tracker);
}

#[test]
fn tasks_beyond_capacity_go_to_the_overflow_bucket() {
    let tracker = tracker(); // 8 rows
    let mut blocks = Vec::new();
    for id in 0..12 {
        set_task(Some(id));
        blocks.push((id, alloc(&tracker, layout(100 + id as usize)) as usize));
    }
    assert_eq!(tracker.task_rows_in_use(), 8);
    let overflow = tracker.task_bucket(TaskBucket::Overflow);
    // Tasks 8..12 found no row: 108 + 109 + 110 + 111 bytes.
    assert_eq!(overflow.figures, figures(438, 4, 0, 0, 438));
    for (id, block) in blocks {
        set_task(Some(id));
        free(&tracker, block as *mut u8, layout(100 + id as usize));
    }
    let overflow = tracker.task_bucket(TaskBucket::Overflow);
    assert_eq!(overflow.figures, figures(438, 4, 438, 4, 438));
    assert_eq!(tracker.totals().figures.live_bytes(), 0);
    assert_consistent(&tracker);
}

#[test]
fn an_unnamed_task_is_counted_in_the_unknown_bucket() {
    let tracker = tracker();
    set_task(None);
    let block = alloc(&tracker, layout(33));
    free(&tracker, block, layout(33));
    let unknown = tracker.task_bucket(TaskBucket::Unknown);
    assert_eq!(unknown.figures, figures(33, 1, 33, 1, 33));
    assert_eq!(tracker.task_rows_in_use(), 0);
    assert_consistent(&tracker);
}

#[inline(never)]
fn site_a<const T: usize, const S: usize, const D: usize, const P: usize>(
    tracker: &Tallied<TestTrackerOf<T, S, D, P>>,
    size: usize,
) -> *mut u8 {
    black_box(alloc(tracker, layout(size)))
}

#[inline(never)]
fn site_b<const T: usize, const S: usize, const D: usize, const P: usize>(
    tracker: &Tallied<TestTrackerOf<T, S, D, P>>,
    size: usize,
) -> *mut u8 {
    black_box(alloc(tracker, layout(size)))
}

#[test]
fn each_callsite_gets_its_own_row() {
    let tracker = tracker();
    set_task(Some(9));
    let mut blocks = Vec::new();
    for _ in 0..10 {
        blocks.push((site_a(&tracker, 24), 24));
    }
    for _ in 0..3 {
        blocks.push((site_b(&tracker, 1000), 1000));
    }
    let mut rows = Vec::new();
    tracker.for_each_callsite(|row| rows.push(*row));
    assert_eq!(rows.len(), 2);
    rows.sort_by_key(|row| row.figures.allocations);
    assert_eq!(rows[0].figures, figures(3000, 3, 0, 0, 3000));
    assert_eq!(rows[1].figures, figures(240, 10, 0, 0, 240));
    // Real stacks: the innermost frame is in the shared helper, the next
    // ones differ. Under Miri the walker's stub records one frame, the
    // allocating source line.
    let least = if cfg!(miri) { 1 } else { 2 };
    assert!(rows[0].frames().len() >= least && rows[1].frames().len() >= least);
    assert_ne!(rows[0].frames(), rows[1].frames());
    for (block, size) in blocks {
        free(&tracker, block, layout(size));
    }
    let mut freed = Vec::new();
    tracker.for_each_callsite(|row| freed.push(row.figures.freed_bytes));
    freed.sort();
    assert_eq!(freed, [240, 3000]);
    assert_consistent(&tracker);
}

/// A task takes a lane of a callsite row at its second allocation there
/// (the first tells it one is free), a second task takes the row's other
/// lane, a third finds none and counts on the shared counters; the lanes go
/// back as their tasks end, and every count stays the callsite's.
#[test]
#[cfg(target_has_atomic = "64")] // lanes are only where 64-bit atomics are native
fn callsite_lanes_are_taken_and_given_back_and_lose_no_count() {
    /// `count` blocks of 24 bytes, from one stack whoever calls.
    #[inline(never)]
    fn from_one_stack(tracker: &TestTracker, count: usize, blocks: &mut Vec<*mut u8>) {
        for _ in 0..count {
            blocks.push(site_a(tracker, 24));
        }
    }
    let tracker = tracker();
    let mut blocks = Vec::new();
    // One loop, so that every allocation has the same stack.
    for (step, task) in [21, 22, 23, 23].into_iter().enumerate() {
        if step == 3 {
            assert_eq!(tracker.ledger().callsite_lanes_held(), 2);
            // Task 23 frees everything: its own blocks and, across tasks,
            // the others'.
            for block in blocks.drain(..) {
                free(&tracker, block, layout(24));
            }
            assert!(tracker.task_exit(21));
            assert_eq!(tracker.ledger().callsite_lanes_held(), 1);
        }
        set_task(Some(task));
        from_one_stack(&tracker, 3, &mut blocks);
    }
    // Task 23 found the lane that task 21 gave back.
    assert_eq!(tracker.ledger().callsite_lanes_held(), 2);
    for block in blocks {
        free(&tracker, block, layout(24));
    }
    assert!(tracker.task_exit(22));
    assert!(tracker.task_exit(23));
    assert_eq!(tracker.ledger().callsite_lanes_held(), 0);
    let mut rows = Vec::new();
    tracker.for_each_callsite(|row| rows.push(row.figures));
    assert_eq!(rows, [figures(288, 12, 288, 12, 216)]);
    set_task(None);
    assert_consistent(&tracker);
}

/// Allocates from one of `2^levels` distinct stacks, chosen by `path`.
#[cfg(not(miri))]
#[inline(never)]
fn descend<const T: usize, const S: usize, const D: usize, const P: usize>(
    tracker: &Tallied<TestTrackerOf<T, S, D, P>>,
    path: u32,
    levels: u32,
) -> *mut u8 {
    if levels == 0 {
        return black_box(alloc(tracker, layout(100)));
    }
    let block = if path & 1 == 0 {
        left(tracker, path >> 1, levels - 1)
    } else {
        right(tracker, path >> 1, levels - 1)
    };
    black_box(block)
}

// `left` and `right` are the same code on purpose: two functions, so that
// each level of `descend` has two distinct return addresses.
#[cfg(not(miri))]
#[inline(never)]
fn left<const T: usize, const S: usize, const D: usize, const P: usize>(
    tracker: &Tallied<TestTrackerOf<T, S, D, P>>,
    path: u32,
    levels: u32,
) -> *mut u8 {
    black_box(descend(tracker, path, levels))
}

#[cfg(not(miri))]
#[inline(never)]
fn right<const T: usize, const S: usize, const D: usize, const P: usize>(
    tracker: &Tallied<TestTrackerOf<T, S, D, P>>,
    path: u32,
    levels: u32,
) -> *mut u8 {
    black_box(descend(tracker, path, levels))
}

// Every row is used before a stack overflows: no probe limit cuts the table
// short, whatever the stacks' hashes.
#[cfg(not(miri))]
#[test]
fn the_callsite_table_fills_to_its_last_row() {
    // 32 frames, so that all 8 levels of the 256 paths are in the stack.
    let tracker = tallied(Tracker::<_, _, 8, 256, 32>::new(
        TestAlloc::new(),
        TestContext,
    ));
    set_task(Some(1));
    // All from one line, so that (path, levels) alone tells stacks apart:
    // 256 stacks, then one more, then a known one again.
    let calls: Vec<(u32, u32)> = (0..256)
        .map(|path| (path, 8))
        .chain([(0, 9), (255, 8)])
        .collect();
    let mut blocks = Vec::new();
    for (index, &(path, levels)) in calls.iter().enumerate() {
        blocks.push(descend(&tracker, path, levels));
        if index == 255 {
            assert_eq!(tracker.callsite_rows_in_use(), 256);
            assert_eq!(
                tracker.callsite_bucket(CallsiteBucket::Overflow),
                figures(0, 0, 0, 0, 0)
            );
        }
    }
    // The extra stack overflowed; the known one found its row.
    assert_eq!(
        tracker.callsite_bucket(CallsiteBucket::Overflow),
        figures(100, 1, 0, 0, 100)
    );
    let mut counts = Vec::new();
    tracker.for_each_callsite(|row| counts.push(row.figures.allocations));
    counts.sort();
    assert_eq!((counts.len(), counts[0], counts[255]), (256, 1, 2));
    for block in blocks {
        free(&tracker, block, layout(100));
    }
    assert_consistent(&tracker);
}

// The same limit, set at run time below the compile-time capacity.
#[cfg(not(miri))]
#[test]
fn a_callsite_limit_set_at_run_time_is_kept() {
    let tracker = tracker(); // 32 callsite rows
    tracker.ledger().set_callsite_limit(10);
    set_task(Some(1));
    let blocks: Vec<_> = (0..16).map(|path| descend(&*tracker, path, 4)).collect();
    assert_eq!(tracker.callsite_rows_in_use(), 10);
    assert_eq!(tracker.ledger().callsite_limit(), 10);
    assert_eq!(
        tracker
            .callsite_bucket(CallsiteBucket::Overflow)
            .allocations,
        6
    );
    for block in blocks {
        free(&tracker, block, layout(100));
    }
    assert_consistent(&tracker);
}

// Under Miri the walker's stub tells callsites apart by source line only,
// and these 64 stacks share one line.
#[cfg(not(miri))]
#[test]
fn callsites_beyond_capacity_go_to_the_overflow_bucket() {
    let tracker = tracker(); // 32 callsite rows
    set_task(Some(1));
    let mut blocks = Vec::new();
    // Each round walks the same 64 stacks from the same call below.
    for round in 1..=2 {
        for path in 0..64 {
            blocks.push(descend(&tracker, path, 6));
        }
        let mut rows = 0;
        tracker.for_each_callsite(|row| {
            rows += 1;
            assert_eq!(row.figures, figures(100 * round, round, 0, 0, 100 * round));
        });
        assert_eq!(rows, 32);
        assert_eq!(
            tracker.callsite_bucket(CallsiteBucket::Overflow),
            figures(3200 * round, 32 * round, 0, 0, 3200 * round)
        );
    }
    for block in blocks {
        free(&tracker, block, layout(100));
    }
    assert_eq!(
        tracker.callsite_bucket(CallsiteBucket::Overflow),
        figures(6400, 64, 6400, 64, 6400)
    );
    assert_consistent(&tracker);
}

#[test]
fn modes_can_change_while_blocks_are_live() {
    let tracker = tracker();
    set_task(Some(1));
    tracker.set_mode(Mode::Off);
    let untracked = alloc(&tracker, layout(1000));
    tracker.set_mode(Mode::Tasks);
    let tasks_only = alloc(&tracker, layout(200));
    tracker.set_mode(Mode::TasksAndCallsites);
    let full = site_a(&tracker, 30);
    assert_eq!(tracker.totals().figures, figures(230, 2, 0, 0, 230));
    assert_eq!(
        tracker.callsite_bucket(CallsiteBucket::Uncaptured),
        figures(200, 1, 0, 0, 0)
    );

    // Freed under other modes than they were allocated in.
    free(&tracker, untracked, layout(1000)); // tracking on: still not counted
    tracker.set_mode(Mode::Off);
    free(&tracker, tasks_only, layout(200)); // tracking off: still counted
    free(&tracker, full, layout(30));
    assert_eq!(tracker.totals().figures, figures(230, 2, 230, 2, 230));
    assert_eq!(
        tracker.callsite_bucket(CallsiteBucket::Uncaptured),
        figures(200, 1, 200, 1, 0)
    );
    // Reallocating across a mode change: counted as the mode says now.
    let block = alloc(&tracker, layout(8)); // off
    tracker.set_mode(Mode::Tasks);
    // SAFETY: the block came from this tracker with 8 bytes.
    let block = unsafe { tracker.realloc(block, layout(8), 80) };
    assert_eq!(tracker.totals().figures, figures(310, 3, 230, 2, 230));
    tracker.set_mode(Mode::Off);
    // SAFETY: the block came from this tracker with 80 bytes.
    let block = unsafe { tracker.realloc(block, layout(80), 800) };
    assert_eq!(tracker.totals().figures, figures(310, 3, 310, 3, 230));
    free(&tracker, block, layout(800));
    assert_eq!(tracker.totals().figures, figures(310, 3, 310, 3, 230));
    assert_consistent(&tracker);
}

#[test]
fn an_inner_failure_records_nothing_and_keeps_the_old_block() {
    let tracker = tracker();
    set_task(Some(1));
    let block = site_a(&tracker, 64);
    let before = (
        tracker.totals(),
        task_row(&tracker, 1),
        tracker.captured_totals(),
    );

    tracker.inner().fail.store(true, Relaxed);
    // SAFETY: non-zero sizes; the block came from this tracker with 64 bytes.
    unsafe {
        assert!(tracker.alloc(layout(10)).is_null());
        assert!(tracker.alloc_zeroed(layout(10)).is_null());
        assert!(tracker.realloc(block, layout(64), 1 << 20).is_null());
    }
    assert_eq!(
        (
            tracker.totals(),
            task_row(&tracker, 1),
            tracker.captured_totals()
        ),
        before
    );
    tracker.inner().fail.store(false, Relaxed);

    // The old block kept its attribution: freeing it from another task
    // still credits task 1 and its callsite.
    let block = block as usize;
    std::thread::scope(|scope| {
        scope.spawn(|| {
            set_task(Some(2));
            free(&tracker, block as *mut u8, layout(64));
        });
    });
    assert_eq!(task_row(&tracker, 1).unwrap().freed_by_others_bytes, 64);
    assert_eq!(tracker.captured_totals().freed_bytes, 64);
    assert_consistent(&tracker);
}

#[test]
fn requests_too_large_for_a_header_fail_cleanly() {
    let tracker = tracker();
    set_task(Some(1));
    let huge = Layout::from_size_align(isize::MAX as usize - 7, 8).unwrap();
    // SAFETY: non-zero size.
    assert!(unsafe { tracker.alloc(huge) }.is_null());
    let block = alloc(&tracker, layout(8));
    // SAFETY: the block came from this tracker with 8 bytes.
    assert!(unsafe { tracker.realloc(block, layout(8), isize::MAX as usize - 7) }.is_null());
    assert_eq!(tracker.inner().allocs.load(Relaxed), 1);
    assert_eq!(tracker.inner().reallocs.load(Relaxed), 0);
    free(&tracker, block, layout(8));
    assert_eq!(tracker.totals().figures, figures(8, 1, 8, 1, 8));
}

#[test]
fn a_damaged_header_is_counted_and_the_block_still_freed() {
    let tracker = tracker();
    set_task(Some(1));
    let block = alloc(&tracker, layout(16));
    // SAFETY: the header is the 8 bytes before the block, inside the inner
    // allocation; this stands for a buffer underflow in the program.
    unsafe { block.sub(HEADER_BYTES).write_bytes(0x55, HEADER_BYTES) };
    free(&tracker, block, layout(16));
    assert_eq!(tracker.inner().deallocs.load(Relaxed), 1);
    let totals = tracker.totals();
    assert_eq!(totals.damaged_headers, 1);
    assert_eq!(totals.figures, figures(16, 1, 0, 0, 16));
}

#[test]
fn without_the_global_peak_no_peak_is_reported() {
    let tracker = tallied(
        Tracker::<_, _, 4, 4, 4>::new(TestAlloc::new(), TestContext).with_global_peak(false),
    );
    set_task(Some(1));
    let block = alloc(&tracker, layout(64));
    free(&tracker, block, layout(64));
    let totals = tracker.totals();
    assert!(!totals.global_peak);
    assert_eq!(totals.figures, figures(64, 1, 64, 1, 0));
    assert_eq!(task_row(&tracker, 1).unwrap().figures.peak_live_bytes, 64);
}

/// A context whose ledger never keeps the global peak, whatever the
/// ledger's setting; every call is task 1's.
struct WithoutGlobalPeak;

impl Context for WithoutGlobalPeak {
    const GLOBAL_PEAK: bool = false;

    fn who(&self) -> Who {
        Who::Task(1)
    }
}

#[test]
fn a_context_without_the_global_peak_overrules_the_setting() {
    let tracker =
        Tracker::<_, _, 4, 4, 4>::new(TestAlloc::new(), WithoutGlobalPeak).with_global_peak(true);
    // SAFETY: a non-zero size, freed once with the layout it was made with.
    unsafe {
        let block = tracker.alloc(layout(64));
        assert!(!block.is_null());
        tracker.dealloc(block, layout(64));
    }
    let totals = tracker.totals();
    assert!(!totals.global_peak);
    assert_eq!(totals.figures, figures(64, 1, 64, 1, 0));
}

#[test]
fn an_allocation_on_the_kept_row_counts_by_the_ticket_when_the_row_is_gone() {
    let tracker = tracker();
    set_task(Some(7));
    // The row is claimed, so that the kept row's path may be taken.
    free(&tracker, alloc(&tracker, layout(16)), layout(16));
    // SAFETY: a non-zero size, freed once with the layout it was made with.
    let block = unsafe { tracker.alloc_on_row_gone(layout(48)) };
    assert!(!block.is_null());
    assert_eq!(
        task_row(&tracker, 7).unwrap().figures,
        figures(64, 2, 16, 1, 48)
    );
    free(&tracker, block, layout(48));
    assert_eq!(
        task_row(&tracker, 7).unwrap().figures,
        figures(64, 2, 64, 2, 48)
    );
    assert_eq!(tracker.totals().figures, figures(64, 2, 64, 2, 48));
    assert_consistent(&tracker);
}

#[test]
fn the_global_peak_is_the_peak_of_all_tasks_together() {
    let tracker = tracker();
    set_task(Some(1));
    let a = alloc(&tracker, layout(100));
    set_task(Some(2));
    let b = alloc(&tracker, layout(300));
    free(&tracker, b, layout(300));
    set_task(Some(1));
    let c = alloc(&tracker, layout(50));
    assert_eq!(tracker.totals().figures.peak_live_bytes, 400);
    assert_eq!(task_row(&tracker, 1).unwrap().figures.peak_live_bytes, 150);
    assert_eq!(task_row(&tracker, 2).unwrap().figures.peak_live_bytes, 300);
    free(&tracker, a, layout(100));
    free(&tracker, c, layout(50));
}

#[test]
fn the_tracker_lives_in_a_static() {
    static TRACKER: Tallied<Tracker<TestAlloc, TestContext>> = Tallied::new(
        Tracker::new(TestAlloc::new(), TestContext)
            .with_mode(Mode::Tasks)
            .with_global_peak(true),
    );
    assert_eq!(TRACKER.mode(), Mode::Tasks);
    set_task(Some(77));
    let block = alloc(&TRACKER, layout(5));
    free(&TRACKER, block, layout(5));
    assert_eq!(
        task_row(&TRACKER, 77).unwrap().figures,
        figures(5, 1, 5, 1, 5)
    );
}

#[test]
fn pairs_beyond_capacity_go_to_the_overflow_bucket() {
    let tracker = tallied(Tracker::<_, _, 64, 4, 4, 4>::new(
        TestAlloc::new(),
        TestContext,
    ));
    set_task(Some(1));
    let blocks: Vec<_> = (0..10)
        .map(|_| alloc(&tracker, layout(3)) as usize)
        .collect();
    // Ten freers, four pair rows.
    for (freer, block) in blocks.into_iter().enumerate() {
        set_task(Some(100 + freer as u64));
        free(&tracker, block as *mut u8, layout(3));
    }
    let pairs = cross_frees(&tracker);
    assert_eq!(pairs.len(), 4);
    assert!(pairs
        .iter()
        .all(|&(owner, _, bytes, frees)| owner == Party::Task(1) && (bytes, frees) == (3, 1)));
    assert_eq!(tracker.cross_free_overflow(), (18, 6));
    set_task(None);
    let block = alloc(&tracker, layout(5));
    set_task(Some(100));
    free(&tracker, block, layout(5));
    assert_consistent(&tracker);
}
