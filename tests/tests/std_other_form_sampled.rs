//! A second wrapper of the other form than the global allocator's, called
//! directly: here the exact form beside a sampling global allocator (the
//! converse of `std_other_form.rs`). Its blocks carry the untracked header
//! and are sound; it counts nothing, and the global allocator's exact
//! per-thread figures stay exact.

use std::alloc::System;

use alloc_track::{AllocTrack, BacktraceMode};
use alloc_track_tests::check_that_the_other_form_counts_nothing;

const INTERVAL: u64 = 1 << 30;

#[global_allocator]
static GLOBAL: AllocTrack<System> =
    AllocTrack::new(System, BacktraceMode::Short).with_sampling(INTERVAL);

/// Of the exact form, which would write a counted header on every block if
/// it counted.
static OTHER: AllocTrack<System> = AllocTrack::new(System, BacktraceMode::Short);

#[test]
fn an_exact_wrapper_beside_a_sampling_global_allocator_counts_nothing() {
    check_that_the_other_form_counts_nothing(&OTHER, "direct-exact");
    assert_eq!(alloc_track::sampling_interval(), Some(INTERVAL));
    assert_eq!(alloc_track::damaged_headers(), 0);
}
