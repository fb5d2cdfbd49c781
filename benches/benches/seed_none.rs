//! The seed crate (`alloc-track` 0.4 from crates.io) without backtraces.

use std::alloc::System;

use alloc_track_bench::{seed_reports, Variant};

#[global_allocator]
static GLOBAL: seed::AllocTrack<System> = seed::AllocTrack::new(System, seed::BacktraceMode::None);

struct SeedNone;

impl Variant for SeedNone {
    const NAME: &'static str = "seed-none";

    fn thread_report() -> Option<usize> {
        seed_reports::thread_report()
    }
}

fn main() {
    alloc_track_bench::main::<SeedNone>();
}
