//! Callsites captured by unwinding instead of frame pointers name the same
//! function and line.

use std::alloc::System;
use std::hint::black_box;

use alloc_track::{AllocTrack, BacktraceMode, Capture};

#[global_allocator]
static GLOBAL: AllocTrack<System> =
    AllocTrack::new(System, BacktraceMode::Short).with_capture(Capture::Unwind);

#[inline(never)]
fn allocate_here() -> (Vec<u8>, u32) {
    (vec![1u8; 555], line!())
}

#[test]
fn unwinding_finds_the_allocating_line() {
    let (kept, line) = allocate_here();
    let report = alloc_track::backtrace_report(|_, metric| metric.allocated == 555);
    let (backtrace, metric) = report
        .0
        .iter()
        .find(|(backtrace, _)| backtrace.innermost_function() == Some("std_unwind::allocate_here"))
        .unwrap_or_else(|| panic!("no callsite in allocate_here:\n{report}"));
    assert_eq!((metric.allocations, metric.in_use()), (1, 555));
    assert_eq!(backtrace.short_symbols()[0].line, Some(line));
    assert_eq!(
        backtrace.short_symbols()[1].name.as_deref(),
        Some("std_unwind::unwinding_finds_the_allocating_line")
    );
    black_box(kept);
}
