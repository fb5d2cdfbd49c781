//! Eight threads allocate, reallocate and free each other's blocks for a
//! bounded time, while another thread takes thread and backtrace reports in
//! a loop and threads are started and finished continuously: no deadlock, no
//! panic, and once they stop every figure of the workload's callsites is
//! exact (the workload: `stress/mod.rs`).
//!
//! Runs for 2 seconds; `ALLOC_TRACK_STRESS_SECONDS` sets a longer soak, in
//! which the workload's memory stays bounded (the shared pool is capped). A
//! test binary of its own without the test harness, so that every thread of
//! the process is the test's own.

use std::alloc::System;

use alloc_track::{AllocTrack, BacktraceMode};

mod stress;

#[global_allocator]
static GLOBAL: AllocTrack<System> = AllocTrack::new(System, BacktraceMode::Short);

fn main() {
    let (reports, started) = stress::everything_at_once();
    println!("std_stress: every figure exact ({reports} reports, {started} threads started)");
}
