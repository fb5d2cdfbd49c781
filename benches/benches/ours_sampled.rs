//! This tracker in the sampling form, for production: one sample per 512 KiB
//! allocated on average, callsites walked for the samples only.

use std::alloc::System;

use alloc_track::{AllocTrack, BacktraceMode};
use alloc_track_bench::{ours, Variant};

#[global_allocator]
static GLOBAL: AllocTrack<System> =
    AllocTrack::new(System, BacktraceMode::Short).with_sampling(512 * 1024);

struct Sampled;

impl Variant for Sampled {
    const NAME: &'static str = "ours-sampled";

    fn thread_report() -> Option<usize> {
        ours::thread_report()
    }

    // No report of the thousand callsites: at one sample per 512 KiB, their
    // few hundred bytes each are mostly unsampled, and the report would list
    // a few dozen of them.
}

fn main() {
    alloc_track_bench::main::<Sampled>();
}
