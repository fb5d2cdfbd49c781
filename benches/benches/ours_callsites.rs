//! This tracker recording threads and callsites, by frame-pointer walk.

use std::alloc::System;

use alloc_track::{AllocTrack, BacktraceMode};
use alloc_track_bench::{ours, Variant};

#[global_allocator]
static GLOBAL: AllocTrack<System> = AllocTrack::new(System, BacktraceMode::Short);

struct Callsites;

impl Variant for Callsites {
    const NAME: &'static str = "ours-callsites";

    fn thread_report() -> Option<usize> {
        ours::thread_report()
    }

    fn backtrace_report() -> Option<usize> {
        ours::backtrace_report()
    }

    fn table_bytes() -> Option<usize> {
        ours::table_bytes()
    }
}

fn main() {
    alloc_track_bench::main::<Callsites>();
}
