//! The sampling form's unsampled allocations, which count down on counters
//! the thread keeps in its own memory, attached to the row it counts on:
//! exact per thread, per scope and while a report runs (on the thread or on
//! another), and taken back when the inner allocator refuses one of 64 KiB
//! or more (a smaller one that fits in the countdown jumps to the inner
//! allocator, and a refusal of it stays counted).
//!
//! The interval is large (1 GiB), so the few kilobytes each test allocates
//! are, but for a chance of about one in a hundred thousand, all unsampled,
//! and all count down on those counters.

use std::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;

use alloc_track::{AllocTrack, BacktraceMode, ThreadMetric};
use alloc_track_tests::{thread_metric, Fallible};

const INTERVAL: u64 = 1 << 30;

#[global_allocator]
static GLOBAL: AllocTrack<Fallible> =
    AllocTrack::new(Fallible, BacktraceMode::None).with_sampling(INTERVAL);

fn scope_metric(name: &str) -> ThreadMetric {
    alloc_track::scope_report()
        .0
        .remove(name)
        .unwrap_or_else(|| panic!("no scope {name}"))
}

/// Runs `work` on a new thread named `name`, after its first allocation
/// (which claims its row).
fn on_thread(name: &str, work: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(|| {
            black_box(Box::new(0u8));
            work();
        })
        .unwrap()
        .join()
        .unwrap();
}

#[test]
fn refused_allocations_of_64_kib_and_more_are_not_counted() {
    on_thread("refused", || {
        let layout = Layout::from_size_align(64 * 1024, 8).unwrap();
        let before = thread_metric("refused");
        Fallible::fail(true);
        // SAFETY: a layout of non-zero size; a null result is expected and
        // nothing is freed.
        let (plain, zeroed) = unsafe { (GLOBAL.alloc(layout), GLOBAL.alloc_zeroed(layout)) };
        let mut vector: Vec<u8> = Vec::new();
        let reserved = vector.try_reserve_exact(300 * 1024);
        Fallible::fail(false);
        assert!(plain.is_null() && zeroed.is_null() && reserved.is_err());
        let after = thread_metric("refused");
        assert_eq!(after.total_alloc, before.total_alloc);
        assert_eq!(after.allocations, before.allocations);

        // And the countdown goes on as before: the next blocks count.
        let kept = black_box(vec![5u8; 700]);
        let zeroed = black_box(vec![0u8; 40]);
        let large = black_box(vec![0u8; 100 * 1024]);
        let after = thread_metric("refused");
        assert_eq!(after.total_alloc - before.total_alloc, 740 + 100 * 1024);
        assert_eq!(after.allocations - before.allocations, 3);
        drop((kept, zeroed, large));
    });
}

/// Under 64 KiB, an allocation that fits in what is left of the countdown's
/// piece is counted and the inner allocator reached by a jump, so that its
/// answer goes to the caller unseen: a refusal stays counted, as the docs
/// say. One that does not fit is counted out of line, where a refusal is
/// taken back.
#[test]
fn a_refused_allocation_under_64_kib_stays_counted() {
    on_thread("refused-small", || {
        // Counted out of line, where it starts the countdown's next piece:
        // 64 KiB, as the gap (1 GiB on average) goes on past it.
        let large = black_box(vec![0u8; 64 * 1024]);
        let small = Layout::from_size_align(1000, 8).unwrap();
        let rest_of_piece = Layout::from_size_align(64 * 1024 - 2000, 8).unwrap();
        let before = thread_metric("refused-small");
        Fallible::fail(true);
        // SAFETY: layouts of non-zero size; null results are expected and
        // nothing is freed.
        let (plain, zeroed, over) = unsafe {
            (
                GLOBAL.alloc(small),
                GLOBAL.alloc_zeroed(small),
                GLOBAL.alloc(rest_of_piece),
            )
        };
        Fallible::fail(false);
        assert!(plain.is_null() && zeroed.is_null() && over.is_null());
        let after = thread_metric("refused-small");
        assert_eq!(after.total_alloc - before.total_alloc, 2000);
        assert_eq!(after.allocations - before.allocations, 2);
        drop(large);
    });
}

#[test]
fn scopes_and_reports_count_on_their_own_rows() {
    on_thread("scoped-sampler", || {
        let before = thread_metric("scoped-sampler");
        let kept = {
            let _scope = alloc_track::scope("sampled-scope");
            let kept = black_box(vec![1u8; 1000]);
            // A report inside the scope counts as the tracker's, and the
            // scope's figures go on after it.
            let _ = scope_metric("sampled-scope");
            black_box(vec![2u8; 24]);
            kept
        };
        black_box(vec![3u8; 10]);
        let scope = scope_metric("sampled-scope");
        assert_eq!((scope.total_alloc, scope.allocations), (1024, 2));
        let after = thread_metric("scoped-sampler");
        assert_eq!(after.total_alloc - before.total_alloc, 10);
        assert_eq!(after.allocations - before.allocations, 1);
        drop(kept);
    });
}

/// Another thread's report reads a live thread's counts as they stand on
/// the counters it keeps in its own memory, and again after the thread
/// entered and left a scope (which moves the counters to the scope's row
/// and back). The two threads meet at a barrier, which allocates nothing.
#[test]
fn a_report_on_another_thread_reads_a_live_threads_counts_exactly() {
    use std::sync::{Arc, Barrier};
    let barrier = Arc::new(Barrier::new(2));
    let worker = {
        let barrier = barrier.clone();
        std::thread::Builder::new()
            .name("watched".into())
            .spawn(move || {
                black_box(Box::new(0u8));
                let first = black_box(vec![1u8; 1000]);
                barrier.wait();
                barrier.wait();
                let second = {
                    let _scope = alloc_track::scope("watched-scope");
                    black_box(vec![2u8; 300])
                };
                let third = black_box(vec![3u8; 24]);
                barrier.wait();
                barrier.wait();
                drop((first, second, third));
            })
            .unwrap()
    };
    barrier.wait();
    let at_first = thread_metric("watched");
    barrier.wait();
    barrier.wait();
    let at_second = thread_metric("watched");
    assert_eq!(at_second.total_alloc - at_first.total_alloc, 24);
    assert_eq!(at_second.allocations - at_first.allocations, 1);
    let scope = scope_metric("watched-scope");
    assert_eq!((scope.total_alloc, scope.allocations), (300, 1));
    barrier.wait();
    worker.join().unwrap();
    assert!(at_first.total_alloc >= 1001);
}
