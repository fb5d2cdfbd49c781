//! The service with the tracker's sampling form, one sample per 512 KiB.

use std::alloc::System;

use alloc_track::{AllocTrack, BacktraceMode};

#[global_allocator]
static GLOBAL: AllocTrack<System> =
    AllocTrack::new(System, BacktraceMode::Short).with_sampling(512 * 1024);

fn main() {
    alloc_track_service_bench::run(true);
}
