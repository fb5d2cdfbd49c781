//! The service with the seed crate (`alloc-track` 0.4 from crates.io), short
//! backtraces.

use std::alloc::System;

#[global_allocator]
static GLOBAL: seed::AllocTrack<System> =
    seed::AllocTrack::new(System, seed::BacktraceMode::Short(|_| true));

fn main() {
    alloc_track_service_bench::run(false);
}
