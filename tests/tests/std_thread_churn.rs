//! 100,000 short-lived threads, far beyond the thread table's capacity: no
//! panic, their figures folded into the finished bucket, callsite figures
//! exact, and the table never fuller than the threads alive at once.

use std::alloc::System;
use std::hint::black_box;

use alloc_track::{AllocTrack, BacktraceMode, FINISHED_THREADS, THREAD_ROWS};

#[global_allocator]
static GLOBAL: AllocTrack<System> = AllocTrack::new(System, BacktraceMode::Short);

const BATCHES: usize = 400;
const PER_BATCH: usize = 250;

/// Allocates 100 bytes and frees them; returns a 16-byte block to its parent.
#[inline(never)]
fn work() -> Box<[u8; 16]> {
    black_box(vec![0u8; 100]);
    Box::new([1; 16])
}

#[test]
fn threads_without_limit() {
    for _ in 0..BATCHES {
        let handles: Vec<_> = (0..PER_BATCH).map(|_| std::thread::spawn(work)).collect();
        for handle in handles {
            drop(handle.join().unwrap());
        }
    }
    const { assert!(BATCHES * PER_BATCH > 90 * THREAD_ROWS) };

    let report = alloc_track::thread_report();
    // Live rows: this thread, the test harness's, and the report rows.
    assert!(report.0.len() <= 6, "{:?}", report.0.keys());
    let finished = &report.0[FINISHED_THREADS];
    assert_eq!(finished.current_used, 0, "every thread's blocks were freed");
    assert!(finished.total_alloc >= (BATCHES * PER_BATCH * 116) as u64);

    let total = (BATCHES * PER_BATCH) as u64;
    let backtraces = alloc_track::backtrace_report(|_, metric| metric.allocations >= total);
    let in_work: Vec<_> = backtraces
        .0
        .iter()
        .filter(|(backtrace, _)| backtrace.innermost_function() == Some("std_thread_churn::work"))
        .map(|(_, metric)| (metric.allocated, metric.allocations, metric.in_use()))
        .collect();
    let mut in_work = in_work;
    in_work.sort();
    assert_eq!(in_work, [(16 * total, total, 0), (100 * total, total, 0)]);
}
