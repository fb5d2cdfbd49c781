//! A program that leaks 25 blocks of 1,000 bytes and checks for leaks at
//! exit, for `tests/tests/std_exit_check.rs`. Its argument is the number of
//! bytes allowed live at exit (none: report only); with `exit`, it ends
//! through `std::process::exit` rather than by returning from `main`.

use std::alloc::System;
use std::hint::black_box;

use alloc_track::{AllocTrack, BacktraceMode};

#[global_allocator]
static GLOBAL: AllocTrack<System> = AllocTrack::new(System, BacktraceMode::Short);

#[inline(never)]
fn leak_blocks() {
    for _ in 0..25 {
        black_box(Box::leak(Box::new([7u8; 1000])));
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let limit = args.next().and_then(|arg| arg.parse().ok());
    alloc_track::leak_check_at_exit(limit);
    leak_blocks();
    // Freed before exit: not a leak.
    drop(black_box(vec![0u8; 5000]));
    println!("done");
    if args.next().as_deref() == Some("exit") {
        std::process::exit(0);
    }
}
