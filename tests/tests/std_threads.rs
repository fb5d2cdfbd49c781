//! Named threads allocate known blocks and free each other's: exact figures
//! per thread, frees credited to the allocating thread and callsite, and who
//! freed them.

use std::alloc::System;
use std::hint::black_box;
use std::sync::mpsc;

use alloc_track::{AllocTrack, BacktraceMode};
use alloc_track_tests::thread_metric as metric;

#[global_allocator]
static GLOBAL: AllocTrack<System> = AllocTrack::new(System, BacktraceMode::Short);

/// Allocates the ten blocks whose fate the test follows.
#[inline(never)]
fn produce() -> Vec<usize> {
    let mut blocks = Vec::with_capacity(10);
    for _ in 0..10 {
        blocks.push(Box::into_raw(Box::new([7u8; 1000])) as usize);
    }
    blocks
}

fn free(block: usize) {
    // SAFETY: every block is a `Box<[u8; 1000]>` leaked by `produce`, freed
    // once.
    drop(unsafe { Box::from_raw(block as *mut [u8; 1000]) });
}

#[test]
fn known_blocks_on_named_threads_give_exact_figures() {
    // Channels rather than barriers: if either side panics, the other's
    // `recv` fails instead of waiting forever.
    let (handed_over, wait_handed_over) = mpsc::channel::<()>();
    let (checked, wait_checked) = mpsc::channel::<()>();
    let producer = {
        std::thread::Builder::new()
            .name("producer".into())
            .spawn(move || {
                let before = metric("producer");
                let blocks = black_box(produce());
                let after = metric("producer");
                assert_eq!(after.total_alloc - before.total_alloc, 10_000 + 80);
                assert_eq!(after.allocations - before.allocations, 11);
                assert_eq!(after.current_used - before.current_used, 10_080);
                assert_eq!(after.total_did_free, before.total_did_free);
                // What std's thread start-up alone makes a new thread free of
                // its parent's blocks: an idle thread shows it.
                std::thread::Builder::new()
                    .name("idle".into())
                    .spawn(|| {})
                    .unwrap()
                    .join()
                    .unwrap();
                // Four blocks go to another thread, which frees them.
                let given: Vec<usize> = blocks[..4].to_vec();
                std::thread::Builder::new()
                    .name("consumer".into())
                    .spawn(move || given.into_iter().for_each(free))
                    .unwrap()
                    .join()
                    .unwrap();
                handed_over.send(()).unwrap();
                wait_checked.recv().unwrap();
                // The rest it frees itself.
                let mid = metric("producer");
                blocks[4..].iter().copied().for_each(free);
                let last = metric("producer");
                assert_eq!(last.total_did_free - mid.total_did_free, 6_000);
                assert_eq!(last.total_freed - mid.total_freed, 6_000);
                assert_eq!(mid.current_used - last.current_used, 6_000);
                assert_eq!(last.frees - mid.frees, 6);
                assert_eq!(last.freed_by_others, mid.freed_by_others);
                (before, blocks.len())
            })
            .unwrap()
    };
    wait_handed_over.recv().unwrap();
    let report = alloc_track::thread_report();
    let producer_now = &report.0["producer"];
    // The consumer has exited; its frees are credited to the producer, and
    // the consumer is named as the one who freed them.
    // The consumer freed the four blocks, the vector's 32-byte buffer, and
    // the start-up data, whose boxed closure is 24 bytes (the vector's
    // handle) larger than the idle thread's.
    let start_up = producer_now.freed_by_others["idle"];
    assert_eq!(
        producer_now.freed_by_others.get("consumer"),
        Some(&(4_000 + 32 + start_up + 24))
    );
    // The CSV has the same figures, and empty sampling columns: exact.
    let others: Vec<String> = producer_now
        .freed_by_others
        .iter()
        .map(|(freer, bytes)| format!("{freer}={bytes}"))
        .collect();
    let ids: Vec<String> = producer_now.thread_ids.iter().map(u64::to_string).collect();
    let line = format!(
        "producer,{},{},{},{},{},{},{},{},{},{},,,",
        producer_now.total_alloc,
        producer_now.total_did_free,
        producer_now.total_freed,
        producer_now.current_used,
        producer_now.allocations,
        producer_now.frees,
        producer_now.peak_used,
        producer_now.freed_of_others,
        others.join(";"),
        ids.join(";"),
    );
    let csv = report.csv();
    assert!(csv.lines().any(|row| row == line), "{line}\n{csv}");
    assert!(report.0.contains_key(alloc_track::FINISHED_THREADS));
    assert!(
        !report.0.contains_key("consumer"),
        "an exited thread has no row"
    );
    checked.send(()).unwrap();
    let (before, count) = producer.join().unwrap();
    assert_eq!(count, 10);
    assert!(producer_now.total_freed - before.total_freed >= 4_000);

    // The callsite in `produce` was credited with all ten blocks and their
    // frees, by whichever thread.
    let backtraces = alloc_track::backtrace_report(|_, metric| metric.allocations >= 10);
    let site = backtraces
        .0
        .iter()
        .find(|(backtrace, _)| backtrace.innermost_function() == Some("std_threads::produce"))
        .map(|(_, metric)| metric.clone())
        .expect("the producing callsite");
    assert_eq!((site.allocated, site.allocations), (10_000, 10));
    assert_eq!((site.freed, site.frees), (10_000, 10));
    assert_eq!(site.peak, 10_000);
}
