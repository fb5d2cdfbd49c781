//! As `std_no_reentry`, with callsites captured by the platform unwinder.
#![cfg(unix)]

use std::alloc::System;

use alloc_track::{AllocTrack, BacktraceMode, Capture, UNKNOWN_THREAD};
use alloc_track_tests::{std_adapter_workout, ReentryDetector};

#[global_allocator]
static GLOBAL: ReentryDetector<AllocTrack<System>> = ReentryDetector::new(
    AllocTrack::new(System, BacktraceMode::Short).with_capture(Capture::Unwind),
);

#[test]
fn no_call_reenters_the_allocator_while_unwinding() {
    std_adapter_workout();
    assert_eq!(GLOBAL.reentries(), 0);
    assert!(!alloc_track::thread_report().0.contains_key(UNKNOWN_THREAD));
}
