//! Pausing tracking and switching the backtrace mode at run time: blocks are
//! counted as the mode was when they were allocated, whenever they are
//! freed.

use std::alloc::System;
use std::hint::black_box;

use alloc_track::{AllocTrack, BacktraceMode, CallsiteKind, ThreadMetric};

#[global_allocator]
static GLOBAL: AllocTrack<System> = AllocTrack::new(System, BacktraceMode::Short);

fn me() -> ThreadMetric {
    alloc_track::thread_report().0.remove("switcher").unwrap()
}

#[inline(never)]
fn block(size: usize) -> Vec<u8> {
    vec![0u8; size]
}

/// Bytes allocated at the stack ending in `block`, and bytes not captured.
fn callsites() -> (u64, u64) {
    let report = alloc_track::backtrace_report(|_, _| true);
    let at_block = report
        .0
        .iter()
        .filter(|(backtrace, _)| backtrace.innermost_function() == Some("std_modes::block"))
        .map(|(_, metric)| metric.allocated)
        .sum();
    let uncaptured = report
        .0
        .iter()
        .filter(|(backtrace, _)| backtrace.kind == CallsiteKind::Uncaptured)
        .map(|(_, metric)| metric.allocated)
        .sum();
    (at_block, uncaptured)
}

#[test]
fn modes_switch_at_run_time() {
    std::thread::Builder::new()
        .name("switcher".into())
        .spawn(|| {
            let start = me();
            alloc_track::set_tracking(false);
            let unseen = black_box(block(1000));
            alloc_track::set_tracking(true);
            let seen = black_box(block(300));
            let after = me();
            assert_eq!(after.total_alloc - start.total_alloc, 300);
            drop(unseen); // allocated while paused: never counted
            drop(seen);
            let after = me();
            assert_eq!(after.total_freed - start.total_freed, 300);
            assert_eq!(after.current_used, start.current_used);

            // Threads only: the allocation is counted for the thread, and as
            // not captured for the callsites.
            let (at_block, uncaptured) = callsites();
            assert_eq!(at_block, 300, "the paused allocation has no callsite");
            alloc_track::set_backtrace_mode(BacktraceMode::None);
            let before = me();
            let threads_only = black_box(block(4321));
            assert_eq!(me().total_alloc - before.total_alloc, 4321);
            alloc_track::set_backtrace_mode(BacktraceMode::Short);
            let (at_block_after, uncaptured_after) = callsites();
            assert_eq!(at_block_after, 300);
            // Reports add their own allocations to the uncaptured bucket.
            assert!(uncaptured_after - uncaptured >= 4321);
            drop(threads_only);
        })
        .unwrap()
        .join()
        .unwrap();
}
