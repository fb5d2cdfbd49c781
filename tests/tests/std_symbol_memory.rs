//! What symbol lookup keeps after a report, and that releasing it gives the
//! memory back: the answers alone (the symbols of each address resolved),
//! never the program's debug info, which is read for one lookup and let go.

use std::alloc::System;
use std::hint::black_box;
use std::time::Instant;

use alloc_track::{AllocTrack, BacktraceMode, BacktraceOptions, REPORTS};

#[global_allocator]
static GLOBAL: AllocTrack<System> = AllocTrack::new(System, BacktraceMode::Short);

fn reports_in_use() -> u64 {
    alloc_track::thread_report()
        .0
        .get(REPORTS)
        .map_or(0, |metric| metric.current_used)
}

#[inline(never)]
fn some_callsite() -> Vec<u8> {
    vec![5u8; 500]
}

// One test: nothing else in this binary reports meanwhile.
#[test]
fn released_symbols_give_their_memory_back() {
    let kept = black_box(some_callsite());
    let before = reports_in_use();
    let started = Instant::now();
    // Every stack apart, so that every address resolved is in the report.
    let report = alloc_track::backtrace_report_with(
        BacktraceOptions::new().merge_same_frames(false),
        |_, _| true,
    );
    let first = started.elapsed();
    let mut distinct: Vec<usize> = report
        .0
        .iter()
        .flat_map(|(trace, _)| trace.addresses())
        .collect();
    distinct.sort_unstable();
    distinct.dedup();
    let addresses = distinct.len();
    assert!(report.0.iter().any(|(trace, _)| trace
        .innermost_function()
        .is_some_and(|name| name.ends_with("some_callsite"))));
    drop(report);
    let kept_by_symbols = reports_in_use() - before;

    alloc_track::release_symbols();
    let after_release = reports_in_use();

    // A report after the release reads the debug info again, and works.
    let started = Instant::now();
    let report = alloc_track::backtrace_report(|_, _| true);
    let again = started.elapsed();
    assert!(report.0.iter().any(|(trace, _)| trace
        .innermost_function()
        .is_some_and(|name| name.ends_with("some_callsite"))));
    drop(report);
    let kept_again = reports_in_use() - after_release;
    alloc_track::release_symbols();
    let released_again = reports_in_use();
    println!(
        "symbol lookup kept {kept_by_symbols} bytes for {addresses} addresses ({first:?}); after release \
         {after_release} bytes in use ({} before the report); again {kept_again} bytes \
         ({again:?}), released to {released_again}",
        before
    );

    // What lookup keeps is its answers: under a kilobyte for each
    // address resolved, though this binary has full debug info (tens of
    // megabytes of it). What is left after a release is what the tracker
    // held before, give or take the test harness's own report-free noise.
    assert!(addresses > 10, "{addresses}");
    assert!(kept_by_symbols > 0);
    assert!(
        kept_by_symbols <= addresses as u64 * 2048,
        "{kept_by_symbols} bytes kept for {addresses} addresses"
    );
    assert!(
        after_release <= before + 64 * 1024,
        "{after_release} vs {before}"
    );
    assert!(
        released_again <= before + 64 * 1024,
        "{released_again} vs {before}"
    );
    drop(kept);
}
