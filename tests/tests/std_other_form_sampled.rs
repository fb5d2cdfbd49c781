//! A second wrapper of the other form than the global allocator's, called
//! directly: here the exact form beside a sampling global allocator (the
//! converse of `std_other_form.rs`). Its blocks carry the untracked header
//! and are sound; it counts nothing, and the global allocator's exact
//! per-thread figures stay exact.

use std::alloc::System;
use std::hint::black_box;

use alloc_track::{AllocTrack, BacktraceMode, ThreadMetric};
use alloc_track_tests::exercise_directly;

const INTERVAL: u64 = 1 << 30;

#[global_allocator]
static GLOBAL: AllocTrack<System> =
    AllocTrack::new(System, BacktraceMode::Short).with_sampling(INTERVAL);

/// Of the exact form, which would write a counted header on every block if
/// it counted.
static OTHER: AllocTrack<System> = AllocTrack::new(System, BacktraceMode::Short);

fn metric(name: &str) -> ThreadMetric {
    alloc_track::thread_report()
        .0
        .remove(name)
        .unwrap_or_else(|| panic!("no thread {name}"))
}

#[test]
fn an_exact_wrapper_beside_a_sampling_global_allocator_counts_nothing() {
    std::thread::Builder::new()
        .name("direct-exact".into())
        .spawn(|| {
            black_box(Box::new(0u8));
            let before = metric("direct-exact");
            let asked = exercise_directly(&OTHER);
            assert!(asked > 500_000);
            let after = metric("direct-exact");
            assert_eq!(
                (after.total_alloc, after.allocations),
                (before.total_alloc, before.allocations)
            );
            assert_eq!(alloc_track::sampling_interval(), Some(INTERVAL));
            assert_eq!(alloc_track::damaged_headers(), 0);
            let kept = black_box(vec![1u8; 1000]);
            let after = metric("direct-exact");
            assert_eq!(after.total_alloc - before.total_alloc, 1000);
            assert_eq!(after.allocations - before.allocations, 1);
            drop(kept);
        })
        .unwrap()
        .join()
        .unwrap();
}
