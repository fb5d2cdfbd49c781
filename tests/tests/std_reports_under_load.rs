//! Reports taken in a loop while other threads allocate, free each other's
//! blocks, start and end: no deadlock, and exact figures once they stop.

use std::alloc::System;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::mpsc;

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

#[test]
fn reports_while_others_allocate() {
    let done = AtomicBool::new(false);
    let mut reports = 0;
    std::thread::scope(|scope| {
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..WORKERS)
            .map(|_| mpsc::channel::<Box<[usize; 6]>>())
            .unzip();
        let mut workers = Vec::new();
        for (index, inbox) in receivers.into_iter().enumerate() {
            let outbox = senders[(index + 1) % WORKERS].clone();
            workers.push(scope.spawn(move || {
                for round in 0..ROUNDS {
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
        let reporter = scope.spawn(|| {
            let mut count = 0;
            while !done.load(Relaxed) || count == 0 {
                let threads = alloc_track::thread_report();
                let backtraces = alloc_track::backtrace_report(|_, _| true);
                assert!(!threads.0.is_empty() && !backtraces.0.is_empty());
                count += 1;
            }
            count
        });
        let inboxes: Vec<_> = workers.into_iter().map(|w| w.join().unwrap()).collect();
        for inbox in inboxes {
            inbox.try_iter().for_each(drop);
        }
        done.store(true, Relaxed);
        reports = reporter.join().unwrap();
    });
    assert!(reports > 0);

    let total = (WORKERS * ROUNDS + WORKERS * ROUNDS / 5_000) as u64;
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
