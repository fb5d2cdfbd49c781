//! `AllocTrack` never calls the allocator from inside the allocator, with
//! frame-pointer capture, through thread start and exit, names, reallocation,
//! cross-thread frees and every kind of report: a detector wrapped around it
//! counts nested calls.

use std::alloc::System;

use alloc_track::{AllocTrack, BacktraceMode, UNKNOWN_THREAD};
use alloc_track_tests::{std_adapter_workout, ReentryDetector};

#[global_allocator]
static GLOBAL: ReentryDetector<AllocTrack<System>> =
    ReentryDetector::new(AllocTrack::new(System, BacktraceMode::Short));

#[test]
fn no_call_reenters_the_allocator() {
    std_adapter_workout();
    assert_eq!(GLOBAL.reentries(), 0);
    // Nothing needed the fallback for nested calls either.
    assert!(!alloc_track::thread_report().0.contains_key(UNKNOWN_THREAD));
}
