//! Code written against the seed crate's API compiles and runs unchanged:
//! its example's scenario, with its field names, filters and output calls.

use std::{alloc::System, sync::mpsc};

use alloc_track::{AllocTrack, BacktraceMetric, BacktraceMode, ThreadMetric};

#[global_allocator]
static GLOBAL_ALLOC: AllocTrack<System> = AllocTrack::new(System, BacktraceMode::Short);

#[inline(never)]
fn buffer() -> Vec<u8> {
    vec![1u8; 1024]
}

fn thread(receiver: mpsc::Receiver<Vec<u8>>) {
    let mut flip = false;
    while let Ok(block) = receiver.recv() {
        if flip {
            drop(block);
        } else {
            std::mem::forget(block);
        }
        flip = !flip;
    }
}

#[test]
fn the_seed_example_runs_unchanged() {
    // The example's `main`, on a thread of a known name (the test harness
    // names its threads after the tests, cut to the OS's 15 bytes).
    std::thread::Builder::new()
        .name("seed-main".into())
        .spawn(seed_main)
        .unwrap()
        .join()
        .unwrap();
}

fn seed_main() {
    let (sender, receiver) = mpsc::channel();
    let consumer = std::thread::Builder::new()
        .name("thread2".to_string())
        .spawn(move || thread(receiver))
        .unwrap();
    for _ in 0..100 {
        sender.send(buffer()).ok();
    }
    drop(sender);
    consumer.join().unwrap();

    let report = alloc_track::backtrace_report(|_, _| true);
    let text = format!("BACKTRACES\n{report}");
    let csv = report.csv();
    // Of the program's own callsites none holds a MiB; what does is the
    // symbol data the first report loaded, which is the tracker's own.
    let big = alloc_track::backtrace_report(|_, m| m.in_use() > 1 << 20);
    assert!(
        big.0
            .iter()
            .all(|(backtrace, _)| backtrace.kind == alloc_track::CallsiteKind::Tracker),
        "{big}"
    );
    let threads = alloc_track::thread_report();
    let thread_text = format!("THREADS\n{threads}");

    // The seed's public fields.
    let main: &ThreadMetric = &threads.0["seed-main"];
    let ThreadMetric {
        total_alloc,
        total_did_free,
        total_freed,
        current_used,
        freed_by_others,
        ..
    } = main;
    assert!(*total_alloc >= 100 * 1024);
    assert!(*total_freed >= 50 * 1024 && *current_used >= 50 * 1024);
    assert!(freed_by_others["thread2"] >= 50 * 1024);
    assert!(
        *total_did_free < *total_freed,
        "thread2 did most of the freeing"
    );

    // The buffers' callsite, exactly: 100 allocated, every other one freed.
    let (_, metric): &(_, BacktraceMetric) = report
        .0
        .iter()
        .find(|(backtrace, _)| backtrace.innermost_function() == Some("std_seed_api::buffer"))
        .unwrap();
    assert_eq!(
        (metric.allocated, metric.allocations, metric.freed),
        (102_400, 100, 51_200)
    );
    assert_eq!((metric.in_use(), metric.avg_allocation()), (51_200, 1024.0));
    assert_eq!(metric.mode, BacktraceMode::Short);
    assert!(text.contains("std_seed_api::buffer"));
    assert!(csv
        .lines()
        .any(|line| line.starts_with("102400,100,1024,51200,51200,")));
    assert!(thread_text.contains("thread2"));
}
