//! The tracker's own memory is never the program's: what reports allocate
//! and keep (symbol caches) stays in the reports' row after the thread that
//! asked for them has ended; and the finished threads' peak is the largest
//! peak of any one of them.

use std::alloc::System;
use std::hint::black_box;

use alloc_track::{AllocTrack, BacktraceMode, ThreadMetric, FINISHED_THREADS, REPORTS};

#[global_allocator]
static GLOBAL: AllocTrack<System> = AllocTrack::new(System, BacktraceMode::Short);

fn row(name: &str) -> ThreadMetric {
    alloc_track::thread_report()
        .0
        .remove(name)
        .unwrap_or_default()
}

#[inline(never)]
fn some_callsite() -> Vec<u8> {
    vec![3u8; 300]
}

// One test, so that nothing else in this binary runs threads meanwhile.
#[test]
fn the_trackers_memory_and_the_finished_threads_peak() {
    reports_made_by_a_finished_thread_stay_the_trackers();
    the_finished_threads_peak_is_the_largest_of_their_peaks();
}

fn reports_made_by_a_finished_thread_stay_the_trackers() {
    let kept = black_box(some_callsite());
    let finished_before = row(FINISHED_THREADS);
    // A thread that resolves every callsite (filling the symbol cache, which
    // lives as long as the process) and then exits.
    std::thread::spawn(|| {
        let report = alloc_track::backtrace_report(|_, _| true);
        assert!(!report.0.is_empty());
        black_box(alloc_track::thread_report());
    })
    .join()
    .unwrap();
    let finished_after = row(FINISHED_THREADS);
    // Only the thread's own start-up and exit blocks moved into the finished
    // bucket; none of them is still live.
    assert_eq!(
        finished_after.current_used, finished_before.current_used,
        "the finished threads hold report memory: {finished_after:?}"
    );
    let reports = row(REPORTS);
    assert!(
        reports.current_used > 0,
        "the symbol cache is the tracker's"
    );
    drop(kept);
}

fn the_finished_threads_peak_is_the_largest_of_their_peaks() {
    std::thread::spawn(|| {
        // 1 MiB allocated and freed, and 1 KiB left behind.
        black_box(vec![1u8; 1 << 20]);
        std::mem::forget(black_box(vec![2u8; 1024]));
    })
    .join()
    .unwrap();
    let finished = row(FINISHED_THREADS);
    assert!(
        finished.peak_used >= 1 << 20,
        "peak {} below the worker's own 1 MiB",
        finished.peak_used
    );
    assert!(finished.current_used >= 1024);
}
