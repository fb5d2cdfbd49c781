//! The allocation-free reports: which rows they keep, in which order, and
//! what they print.
#![cfg(not(alloc_track_loom))] // these use `const` constructors, which loom builds lack

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::hint::black_box;

use alloc_track_core::{Order, Tracker};
use support::*;

/// Three tasks with distinct profiles:
/// - 1 leaks: 4 blocks of 900 bytes, none freed (live 3600, 4 allocations);
/// - 2 churns: 500 blocks of 8 bytes, all but one freed (live 8, 500
///   allocations);
/// - 3 is big and done: one 100000-byte block, freed (live 0).
fn three_tasks() -> ThreeTasks {
    let tracker = tracker();
    let mut live = Vec::new();
    set_task(Some(1));
    for _ in 0..4 {
        live.push((black_box(alloc(&tracker, layout(900))), 900));
    }
    set_task(Some(2));
    for _ in 0..499 {
        let block = alloc(&tracker, layout(8));
        free(&tracker, block, layout(8));
    }
    live.push((black_box(alloc(&tracker, layout(8))), 8));
    set_task(Some(3));
    let block = alloc(&tracker, layout(100_000));
    free(&tracker, block, layout(100_000));
    ThreeTasks { tracker, live }
}

/// The tracker of `three_tasks`, which frees the still-live blocks when the
/// test is done with it (so that leak checkers see none).
struct ThreeTasks {
    tracker: Box<TestTracker>,
    live: Vec<(*mut u8, usize)>,
}

impl std::ops::Deref for ThreeTasks {
    type Target = TestTracker;

    fn deref(&self) -> &TestTracker {
        &self.tracker
    }
}

impl Drop for ThreeTasks {
    fn drop(&mut self) {
        for &(block, size) in &self.live {
            free(&self.tracker, block, layout(size));
        }
    }
}

fn ids<const K: usize>(report: &alloc_track_core::TaskReport<K>) -> Vec<u64> {
    report.top.iter().map(|row| row.id).collect()
}

#[test]
fn task_reports_rank_by_the_order_asked_for() {
    let tracker = three_tasks();
    assert_eq!(ids(&tracker.task_report::<3>(Order::LiveBytes)), [1, 2, 3]);
    assert_eq!(
        ids(&tracker.task_report::<3>(Order::AllocatedBytes)),
        [3, 2, 1]
    );
    // 2: 500 allocations per 9; 3: 1 per 1; 1: 4 per 3601.
    assert_eq!(ids(&tracker.task_report::<3>(Order::Churn)), [2, 3, 1]);
    // A shorter report keeps the best.
    assert_eq!(ids(&tracker.task_report::<1>(Order::Churn)), [2]);
    assert_eq!(
        ids(&tracker.task_report::<2>(Order::AllocatedBytes)),
        [3, 2]
    );
    let report = tracker.task_report::<0>(Order::LiveBytes);
    assert!(report.top.is_empty());
    assert_eq!((report.rows_in_use, report.capacity), (3, 8));
    assert_eq!(
        report.totals.figures,
        figures(107_600, 505, 103_992, 500, 103_608)
    );
}

#[test]
fn callsite_reports_rank_and_keep_frames() {
    let tracker = three_tasks();
    let report = tracker.callsite_report::<8>(Order::LiveBytes);
    // Every allocation above came through `support::alloc`, but from
    // different lines of `three_tasks`, so each loop is its own callsite.
    assert_eq!(report.rows_in_use, 4);
    let lives: Vec<_> = report
        .top
        .iter()
        .map(|row| row.figures.live_bytes())
        .collect();
    assert_eq!(lives, [3600, 8, 0, 0]);
    let churn = tracker.callsite_report::<1>(Order::Churn);
    assert_eq!(churn.top[0].figures, figures(3992, 499, 3992, 499, 8));
    assert!(report.top.iter().all(|row| !row.frames().is_empty()));
    assert_eq!(report.totals, figures(107_600, 505, 103_992, 500, 100_000));
    assert_eq!(
        report.overflow.allocations + report.uncaptured.allocations,
        0
    );
}

#[test]
fn reports_print_one_line_per_row_with_exact_numbers() {
    let tracker = three_tasks();
    let text = tracker.task_report::<2>(Order::LiveBytes).to_string();
    let lines: Vec<_> = text.lines().collect();
    assert_eq!(lines[0], "tasks by live bytes (3 of 8 rows in use)");
    let words = |line: &str| {
        line.split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        words(lines[2]),
        ["1", "3600", "3600", "3600", "4", "0", "0", "0", "0"]
    );
    assert_eq!(
        words(lines[3]),
        ["2", "8", "8", "4000", "500", "3992", "499", "0", "0"]
    );
    assert_eq!(words(lines[4])[0], "(finished)");
    assert_eq!(
        words(lines[7]),
        ["(total)", "3608", "103608", "107600", "505", "103992", "500"]
    );
    assert_eq!(lines.len(), 8);

    let text = tracker.callsite_report::<1>(Order::LiveBytes).to_string();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("callsites by live bytes (4 of 32 rows in use)")
    );
    lines.next();
    assert_eq!(
        words(lines.next().unwrap()),
        ["1", "3600", "3600", "3600", "4", "0", "0"]
    );
    assert!(lines.next().unwrap().trim_start().starts_with("at 0x"));
}

#[test]
fn reports_taken_from_a_static_allocate_nothing() {
    // The tracker below is not the global allocator, so count what the
    // global allocator sees while the reports are made and formatted into a
    // fixed buffer.
    static TRACKER: TestTracker = Tallied::new(Tracker::new(TestAlloc::new(), TestContext));
    set_task(Some(1));
    let block = alloc(&TRACKER, layout(10));
    let mut buffer = [0u8; 4096];
    let before = global_allocations();
    let report = TRACKER.task_report::<4>(Order::LiveBytes);
    let sites = TRACKER.callsite_report::<4>(Order::LiveBytes);
    let written = {
        use std::io::Write;
        let mut cursor = std::io::Cursor::new(&mut buffer[..]);
        write!(cursor, "{report}\n{sites}").unwrap();
        cursor.position()
    };
    assert_eq!(global_allocations(), before);
    assert!(written > 100);
    free(&TRACKER, block, layout(10));
}

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

/// This thread's allocations through the global allocator so far.
fn global_allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

/// The system allocator, counting each thread's allocations.
struct CountingSystem;

// SAFETY: forwards to System; the thread-local has no destructor, so it can
// be reached at any time without allocating.
unsafe impl GlobalAlloc for CountingSystem {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|count| count.set(count.get() + 1));
        // SAFETY: forwarded from our caller.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded from our caller.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingSystem = CountingSystem;
