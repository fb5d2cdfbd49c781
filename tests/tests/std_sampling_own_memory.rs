//! The tracker's own memory is exact in the sampling form: its blocks are
//! made in its own heap, which a free tells by address, so they are counted
//! as they come and go, never sampled, whichever thread frees them and
//! however the program resizes them.

use std::hint::black_box;

use alloc_track::{AllocTrack, BacktraceMode, REPORTS};
use alloc_track_tests::thread_metric;

const INTERVAL: u64 = 512 * 1024;

#[global_allocator]
static GLOBAL: AllocTrack<std::alloc::System> =
    AllocTrack::new(std::alloc::System, BacktraceMode::Short).with_sampling(INTERVAL);

/// A block far larger than the interval: sampled, so its callsite is in
/// the reports.
#[inline(never)]
fn held_here() -> Vec<u8> {
    black_box(vec![7; 8 * INTERVAL as usize])
}

/// A report of one callsite with memory in use (the first of the table's,
/// `held_here`'s): a few kilobytes of the tracker's, far less than any
/// sampling interval.
fn small_report() -> alloc_track::BacktraceReport {
    let taken = std::cell::Cell::new(false);
    let report = alloc_track::backtrace_report(|backtrace, metric| {
        backtrace.addresses().count() > 0 && metric.in_use() > 0 && !taken.replace(true)
    });
    assert_eq!(report.0.len(), 1);
    report
}

/// The tracker's row, with nothing of the report that read it kept (the
/// row's name is the tracker's own memory too).
fn reports() -> Row {
    let metric = thread_metric(REPORTS);
    Row {
        in_use: metric.current_used,
        live: metric.live_allocations(),
        allocated: metric.total_alloc,
        freed: metric.total_freed,
        exact: metric.sampling_interval.is_none(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Row {
    in_use: u64,
    live: u64,
    allocated: u64,
    freed: u64,
    exact: bool,
}

#[test]
fn the_trackers_own_memory_is_counted_exactly() {
    std::thread::Builder::new()
        .name("program".into())
        .spawn(counted_exactly)
        .unwrap()
        .join()
        .unwrap();
}

fn counted_exactly() {
    let kept = held_here();
    // A thread that has finished, and symbols looked up once, so that the
    // thread report reads the same rows each time.
    std::thread::spawn(|| black_box(vec![1u8; 10]))
        .join()
        .unwrap();
    drop(small_report());
    alloc_track::release_symbols();

    let program = thread_metric("program");
    assert_eq!(program.sampling_interval, Some(INTERVAL));
    let before = reports();
    assert!(before.exact, "the tracker's row is exact: {before:?}");
    assert_eq!(before.allocated - before.freed, before.in_use);

    for round in 0..2 {
        let report = small_report();
        let during = reports();
        let held = during.in_use - before.in_use;
        // A sampled estimate at the tracker's interval (64 KiB at least)
        // would be none or a multiple of it.
        assert!(
            held > 0 && held < 64 * 1024,
            "round {round}: the kept report holds {held} bytes: {during:?}"
        );
        assert!(during.live > before.live);

        // Freed on another thread: counted back at once, to the byte.
        std::thread::spawn(move || drop(report)).join().unwrap();
        alloc_track::release_symbols();
        let after = reports();
        assert_eq!(after.in_use, before.in_use, "round {round}");
        assert_eq!(after.live, before.live, "round {round}");
        assert!(after.exact);
    }

    // The program grows a vector the tracker made: the old block is freed
    // as the tracker's, the new one is the program's.
    let mut report = small_report();
    let during = reports();
    report.0.reserve(10_000);
    let grown = reports();
    assert!(grown.in_use < during.in_use, "{grown:?} after {during:?}");
    drop(report);
    alloc_track::release_symbols();
    assert_eq!(reports().in_use, before.in_use);
    drop(kept);
}
