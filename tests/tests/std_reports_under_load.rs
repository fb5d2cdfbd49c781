//! Reports taken in a loop while other threads allocate, free each other's
//! blocks, start and end: no deadlock, and exact figures once they stop.

use std::alloc::System;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use alloc_track::{AllocTrack, BacktraceMode};

#[global_allocator]
static GLOBAL: AllocTrack<System> = AllocTrack::new(System, BacktraceMode::Short);

const WORKERS: usize = 4;
const ROUNDS: usize = 20_000;

/// One 48-byte block, from one callsite.
#[inline(never)]
fn block(round: usize) -> Box<[usize; 6]> {
    Box::new([round; 6])
}

/// The allocations the workers' `block` callsites have made, as a report
/// sees them.
fn blocks_allocated(report: &alloc_track::BacktraceReport) -> u64 {
    report
        .0
        .iter()
        .filter(|(backtrace, _)| {
            backtrace.innermost_function() == Some("std_reports_under_load::block")
        })
        .map(|(_, metric)| metric.allocations)
        .sum()
}

#[test]
fn reports_while_others_allocate() {
    let done = AtomicBool::new(false);
    // Reports finished while the workers were still at work, and the most
    // of their blocks that such a report counted.
    let reports_during_work = &AtomicU64::new(0);
    let mut seen_mid_run = 0;
    std::thread::scope(|scope| {
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..WORKERS)
            .map(|_| mpsc::channel::<Box<[usize; 6]>>())
            .unzip();
        let mut workers = Vec::new();
        for (index, inbox) in receivers.into_iter().enumerate() {
            let outbox = senders[(index + 1) % WORKERS].clone();
            workers.push(scope.spawn(move || {
                for round in 0..ROUNDS {
                    if round == ROUNDS / 2 {
                        // Halfway, wait for two reports to be taken while
                        // every worker is still working.
                        let deadline = Instant::now() + Duration::from_secs(60);
                        while reports_during_work.load(Relaxed) < 2 {
                            assert!(Instant::now() < deadline, "no report while working");
                            std::thread::yield_now();
                        }
                    }
                    let mine = block(round);
                    if round % 3 == 0 {
                        outbox.send(mine).unwrap();
                    } else {
                        black_box(mine);
                    }
                    while let Ok(theirs) = inbox.try_recv() {
                        drop(theirs);
                    }
                    if round % 5_000 == 0 {
                        // Threads come and go while reports run.
                        std::thread::spawn(|| black_box(block(0))).join().unwrap();
                    }
                }
                drop(outbox);
                inbox
            }));
        }
        drop(senders);
        let done = &done;
        let reporter = scope.spawn(move || {
            let mut seen = 0;
            while !done.load(Relaxed) {
                let threads = alloc_track::thread_report();
                let backtraces = alloc_track::backtrace_report(|_, _| true);
                assert!(!threads.0.is_empty() && !backtraces.0.is_empty());
                if !done.load(Relaxed) {
                    seen = seen.max(blocks_allocated(&backtraces));
                    reports_during_work.fetch_add(1, Relaxed);
                }
            }
            seen
        });
        let inboxes: Vec<_> = workers.into_iter().map(|w| w.join().unwrap()).collect();
        for inbox in inboxes {
            inbox.try_iter().for_each(drop);
        }
        done.store(true, Relaxed);
        seen_mid_run = reporter.join().unwrap();
    });

    let total = (WORKERS * ROUNDS + WORKERS * ROUNDS / 5_000) as u64;
    // The reports ran among the workers: one of them saw part of the work.
    assert!(reports_during_work.load(Relaxed) >= 2);
    assert!(
        seen_mid_run > 0 && seen_mid_run < total,
        "{seen_mid_run} of {total}"
    );
    let report = alloc_track::backtrace_report(|_, metric| metric.allocated % 48 == 0);
    // Two stacks end in `block`: the workers' loop and the short-lived
    // threads'.
    let sites: Vec<_> = report
        .0
        .iter()
        .filter(|(backtrace, _)| {
            backtrace.innermost_function() == Some("std_reports_under_load::block")
        })
        .map(|(_, metric)| metric.clone())
        .collect();
    assert_eq!(sites.len(), 2);
    let sum =
        |figure: fn(&alloc_track::BacktraceMetric) -> u64| sites.iter().map(figure).sum::<u64>();
    assert_eq!((sum(|m| m.allocations), sum(|m| m.frees)), (total, total));
    assert_eq!(
        (sum(|m| m.allocated), sum(|m| m.freed)),
        (48 * total, 48 * total)
    );
}
