//! Several threads allocate, free each other's blocks and end their tasks
//! while another thread takes reports; once they stop, every figure is exact.
#![cfg(not(alloc_track_loom))] // these use `const` constructors, which loom builds lack

mod support;

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::mpsc;

use alloc_track_core::{Order, TaskBucket, Tracker};
use support::*;

const THREADS: u64 = 4;
// Miri runs the same interleavings' code about a million times slower.
const ROUNDS: u64 = if cfg!(miri) { 100 } else { 50_000 };

#[test]
fn figures_are_exact_after_concurrent_work_and_reporting() {
    // More tasks over time (4 threads x 5 generations) than rows (8).
    let tracker = tallied(Tracker::<_, _, 8, 64, 16>::new(
        TestAlloc::new(),
        TestContext,
    ));
    let stop_reporting = AtomicBool::new(false);
    let (senders, receivers): (Vec<_>, Vec<_>) =
        (0..THREADS).map(|_| mpsc::channel::<usize>()).unzip();

    std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut reports = 0u64;
            while !stop_reporting.load(Relaxed) || reports == 0 {
                let tasks = tracker.task_report::<4>(Order::LiveBytes);
                let sites = tracker.callsite_report::<4>(Order::Churn);
                assert!(tasks.rows_in_use <= 8 && sites.rows_in_use <= 64);
                reports += 1;
            }
        });
        let workers: Vec<_> = receivers
            .into_iter()
            .enumerate()
            .map(|(thread, inbox)| {
                let tracker = &tracker;
                // Each thread hands its odd blocks to the next thread.
                let outbox = senders[(thread + 1) % THREADS as usize].clone();
                scope.spawn(move || {
                    for generation in 0..5 {
                        let id = thread as u64 * 100 + generation;
                        set_task(Some(id));
                        for round in 0..ROUNDS / 5 {
                            let size = 16 + (round as usize % 7) * 8;
                            let block = alloc(tracker, layout(size));
                            if round % 2 == 1 {
                                // SAFETY: the block has 16 bytes or more,
                                // aligned to 8.
                                unsafe { block.cast::<usize>().write(size) };
                                outbox.send(block as usize).unwrap();
                            } else {
                                free(tracker, block, layout(size));
                            }
                            // Free what the previous thread sent so far.
                            while let Ok(foreign) = inbox.try_recv() {
                                free(tracker, foreign as *mut u8, layout(foreign_size(foreign)));
                            }
                        }
                        assert!(tracker.task_exit(id));
                    }
                    drop(outbox);
                    inbox
                })
            })
            .collect();
        let inboxes: Vec<_> = workers.into_iter().map(|w| w.join().unwrap()).collect();
        drop(senders);
        set_task(Some(999));
        for inbox in inboxes {
            for foreign in inbox.try_iter() {
                free(&tracker, foreign as *mut u8, layout(foreign_size(foreign)));
            }
        }
        stop_reporting.store(true, Relaxed);
    });

    let mut bytes = 0;
    for round in 0..ROUNDS / 5 {
        bytes += 16 + (round % 7) * 8;
    }
    let bytes = bytes * 5 * THREADS;
    let count = ROUNDS * THREADS;
    let totals = tracker.totals().figures;
    assert_eq!((totals.allocated_bytes, totals.allocations), (bytes, count));
    assert_eq!((totals.freed_bytes, totals.frees), (bytes, count));
    let finished = tracker.task_bucket(TaskBucket::Finished);
    assert_eq!(finished.figures.allocated_bytes, bytes);
    assert_eq!(finished.figures.live_bytes(), 0);
    // Half of all blocks crossed threads.
    let crossed =
        task_row(&tracker, 999).map_or(0, |row| row.freed_of_others) + finished.freed_of_others;
    assert_eq!(crossed, count / 2);
    assert_eq!(tracker.task_rows_in_use(), 1);
    assert_consistent(&tracker);
}

/// The size a block that crossed threads was allocated with, which its
/// sender wrote into its first word.
fn foreign_size(block: usize) -> usize {
    // SAFETY: every block sent between threads starts with its size.
    unsafe { *(block as *const usize) }
}
