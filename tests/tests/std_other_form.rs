//! A second wrapper of the other form than the global allocator's, called
//! directly: here the sampling form beside an exact global allocator. Its
//! blocks are sound (written, grown, shrunk and freed, at every alignment
//! and size) and it counts nothing, while the global allocator's figures
//! stay exact. `std_other_form_sampled.rs` is the converse.

use std::alloc::System;
use std::hint::black_box;

use alloc_track::{AllocTrack, BacktraceMode, ThreadMetric};
use alloc_track_tests::exercise_directly;

#[global_allocator]
static GLOBAL: AllocTrack<System> = AllocTrack::new(System, BacktraceMode::Short);

/// Of the sampling form, which would sample every allocation if it counted.
static OTHER: AllocTrack<System> = AllocTrack::new(System, BacktraceMode::Short).with_sampling(1);

fn metric(name: &str) -> ThreadMetric {
    alloc_track::thread_report()
        .0
        .remove(name)
        .unwrap_or_else(|| panic!("no thread {name}"))
}

#[test]
fn a_sampling_wrapper_beside_an_exact_global_allocator_counts_nothing() {
    std::thread::Builder::new()
        .name("direct-sampling".into())
        .spawn(|| {
            black_box(Box::new(0u8));
            let before = metric("direct-sampling");
            let asked = exercise_directly(&OTHER);
            assert!(asked > 500_000);
            let after = metric("direct-sampling");
            assert_eq!(
                (after.total_alloc, after.allocations),
                (before.total_alloc, before.allocations)
            );
            assert_eq!(alloc_track::sampling_interval(), None);
            let kept = black_box(vec![1u8; 1000]);
            let after = metric("direct-sampling");
            assert_eq!(after.total_alloc - before.total_alloc, 1000);
            assert_eq!(after.allocations - before.allocations, 1);
            drop(kept);
        })
        .unwrap()
        .join()
        .unwrap();
}
