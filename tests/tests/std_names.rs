//! A live thread keeps its name however many threads start and end after
//! it, and threads that share a name are reported apart.

use std::alloc::System;
use std::hint::black_box;
use std::sync::mpsc;

use alloc_track::{AllocTrack, BacktraceMode};

#[global_allocator]
static GLOBAL: AllocTrack<System> = AllocTrack::new(System, BacktraceMode::None);

#[test]
fn live_threads_keep_their_names_through_thread_churn() {
    let (stop, wait_stop) = mpsc::channel::<()>();
    let (ready, wait_ready) = mpsc::channel::<()>();
    let keeper = std::thread::Builder::new()
        .name("keeper".into())
        .spawn(move || {
            let kept = black_box(vec![0u8; 777]);
            ready.send(()).unwrap();
            wait_stop.recv().unwrap();
            drop(kept);
        })
        .unwrap();
    wait_ready.recv().unwrap();
    // More unnamed threads than any fixed table of names would hold.
    for _ in 0..10_000 {
        std::thread::spawn(|| black_box(vec![0u8; 8]))
            .join()
            .unwrap();
    }
    let report = alloc_track::thread_report();
    let names: Vec<&String> = report.0.keys().collect();
    assert!(report.0.contains_key("main"), "{names:?}");
    let keeper_row = report.0.get("keeper").expect("the keeper's name");
    assert!(keeper_row.current_used >= 777);
    stop.send(()).unwrap();
    keeper.join().unwrap();
}
