//! This tracker with recording paused: what the headers alone cost.

use std::alloc::System;

use alloc_track::{AllocTrack, BacktraceMode};
use alloc_track_bench::Variant;

#[global_allocator]
static GLOBAL: AllocTrack<System> = AllocTrack::new(System, BacktraceMode::Short);

struct Off;

impl Variant for Off {
    const NAME: &'static str = "ours-off";

    fn start() {
        alloc_track::set_tracking(false);
    }
}

fn main() {
    alloc_track_bench::main::<Off>();
}
