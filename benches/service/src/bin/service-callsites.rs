//! The service with the tracker's exact callsites.

use std::alloc::System;

use alloc_track::{AllocTrack, BacktraceMode};

#[global_allocator]
static GLOBAL: AllocTrack<System> = AllocTrack::new(System, BacktraceMode::Short);

fn main() {
    alloc_track_service_bench::run(true);
}
