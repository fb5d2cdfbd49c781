//! The seed crate (`alloc-track` 0.4 from crates.io) with short backtraces.

use std::alloc::System;

use alloc_track_bench::{seed_reports, Variant};

#[global_allocator]
static GLOBAL: seed::AllocTrack<System> =
    seed::AllocTrack::new(System, seed::BacktraceMode::Short(|_| true));

struct SeedShort;

impl Variant for SeedShort {
    const NAME: &'static str = "seed-short";

    fn thread_report() -> Option<usize> {
        seed_reports::thread_report()
    }

    fn backtrace_report() -> Option<usize> {
        seed_reports::backtrace_report()
    }
}

fn main() {
    alloc_track_bench::main::<SeedShort>();
}
