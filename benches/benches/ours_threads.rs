//! This tracker recording threads only.

use std::alloc::System;

use alloc_track::{AllocTrack, BacktraceMode};
use alloc_track_bench::{ours, Variant};

#[global_allocator]
static GLOBAL: AllocTrack<System> = AllocTrack::new(System, BacktraceMode::None);

struct Threads;

impl Variant for Threads {
    const NAME: &'static str = "ours-threads";

    fn thread_report() -> Option<usize> {
        ours::thread_report()
    }
}

fn main() {
    alloc_track_bench::main::<Threads>();
}
