//! A second wrapper of the other form than the global allocator's, called
//! directly: here the sampling form beside an exact global allocator. Its
//! blocks are sound (written, grown, shrunk and freed, at every alignment
//! and size) and it counts nothing, while the global allocator's figures
//! stay exact. `std_other_form_sampled.rs` is the converse.

use std::alloc::System;

use alloc_track::{AllocTrack, BacktraceMode};
use alloc_track_tests::check_that_the_other_form_counts_nothing;

#[global_allocator]
static GLOBAL: AllocTrack<System> = AllocTrack::new(System, BacktraceMode::Short);

/// Of the sampling form, which would sample every allocation if it counted.
static OTHER: AllocTrack<System> = AllocTrack::new(System, BacktraceMode::Short).with_sampling(1);

#[test]
fn a_sampling_wrapper_beside_an_exact_global_allocator_counts_nothing() {
    check_that_the_other_form_counts_nothing(&OTHER, "direct-sampling");
    assert_eq!(alloc_track::sampling_interval(), None);
}
