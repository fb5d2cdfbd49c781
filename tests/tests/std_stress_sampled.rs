//! The stress workload of `std_stress` in the sampling form: samples taken,
//! freed by other threads, moved by reallocation and outliving their
//! threads, while reports run and threads come and go. No deadlock, no
//! panic, and once the workload stops, every thread's estimated live bytes
//! are back where they started and its callsites' estimated allocations and
//! frees balance exactly: each sample's weight is taken off as it was put
//! on.
//!
//! One sample per 4 KiB: some 6 in 100 of the workload's blocks (8 to 507
//! bytes) are samples, and the symbols that the reports cache stay well
//! within the table of live samples. Runs for 2 seconds;
//! `ALLOC_TRACK_STRESS_SECONDS` sets a longer soak. A test binary of its own
//! without the test harness, so that every thread of the process is the
//! test's own.

use std::alloc::System;

use alloc_track::{AllocTrack, BacktraceMode};

mod stress;

const INTERVAL: u64 = 4096;

#[global_allocator]
static GLOBAL: AllocTrack<System> =
    AllocTrack::new(System, BacktraceMode::Short).with_sampling(INTERVAL);

fn main() {
    let (reports, started) = stress::everything_at_once();
    // Set by the first allocation, which the workload has made by now (the
    // standard library rebuilt for a sanitizer makes none before `main`).
    assert_eq!(alloc_track::sampling_interval(), Some(INTERVAL));
    let dropped = alloc_track::dropped_samples().unwrap_or_default();
    println!(
        "std_stress_sampled: every figure balanced ({reports} reports, {started} threads \
         started, {} samples dropped)",
        dropped.samples
    );
}
