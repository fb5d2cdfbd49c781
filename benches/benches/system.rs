//! The bare system allocator: the baseline of every ratio.

use std::alloc::System;

use alloc_track_bench::Variant;

#[global_allocator]
static GLOBAL: System = System;

struct Bare;

impl Variant for Bare {
    const NAME: &'static str = "system";
}

fn main() {
    alloc_track_bench::main::<Bare>();
}
