//! What a report of every callsite costs the process in memory, measured as
//! the system sees it (`/proc/self/status`), not by the tracker's own
//! counters: the resident peak while it runs, and the anonymous memory left
//! once it is done, which must go back to the system rather than stay with
//! the allocator. The workload is a parser's: `syn` parsing and printing
//! some of its own sources gives thousands of distinct stacks, each
//! resolved against this binary's full debug info.

use std::alloc::System;
use std::path::{Path, PathBuf};

use alloc_track::{AllocTrack, BacktraceMode, BacktraceOptions};
use alloc_track_tests::syn_sources;
use quote::ToTokens;

#[global_allocator]
static GLOBAL: AllocTrack<System> = AllocTrack::new(System, BacktraceMode::Short);

/// A field of `/proc/self/status`, in bytes (the file gives kB).
fn status(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().strip_suffix(" kB"))
        .and_then(|kb| kb.trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or_else(|| panic!("{field} in /proc/self/status"))
}

/// Resets the resident peak (`VmHWM`) to the resident size now.
fn reset_peak() {
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
}

/// Parses a file and prints it: the parsed file is kept, as a program keeps
/// what it built.
fn parse(path: &Path) -> (syn::File, String) {
    let text = std::fs::read_to_string(path).unwrap();
    let file = syn::parse_file(&text).unwrap();
    let printed = file.to_token_stream().to_string();
    (file, printed)
}

/// A report of every callsite, every stack apart and resolved, written out
/// as text as the endpoint writes it; returns the entries and the text's
/// length.
fn report_everything() -> (usize, usize) {
    let report = alloc_track::backtrace_report_with(
        BacktraceOptions::new().merge_same_frames(false),
        |_, _| true,
    );
    let text = format!("{report:#}");
    let sizes = (report.0.len(), text.len());
    drop((report, text));
    // The report was the caller's: dropped, its memory is given back.
    alloc_track::release_memory();
    sizes
}

const MIB: u64 = 1 << 20;

/// Runs `work` and says how far the resident size rose above where it
/// started, at its highest (and, printed, how long it took).
fn peak_of(work: impl FnOnce() -> (usize, usize)) -> (usize, usize, u64) {
    reset_peak();
    let before = status("VmRSS");
    let started = std::time::Instant::now();
    let (entries, text) = work();
    println!("a report of {entries} entries took {:?}", started.elapsed());
    (entries, text, status("VmHWM").saturating_sub(before))
}

// One test: nothing else in this binary allocates meanwhile.
#[test]
fn a_report_of_every_callsite_gives_its_memory_back() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(syn_sources())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "rs"))
        .collect();
    files.sort();
    files.truncate(1);
    let kept: Vec<(syn::File, String)> = files.iter().map(|file| parse(file)).collect();
    let callsites = alloc_track::callsite_memory().rows_in_use;
    assert!(callsites > 1_000, "{callsites} callsites");

    // A report, its symbols released, gives back what it took.
    let anonymous_before = status("RssAnon");
    let (entries, text, first_peak) = peak_of(report_everything);
    alloc_track::release_symbols();
    alloc_track::release_memory();
    let anonymous_after = status("RssAnon");
    println!(
        "{entries} entries ({text} bytes of text) of {callsites} callsites: the resident \
         peak rose by {:.1} MiB; anonymous memory {:.1} MiB before, {:.1} MiB after",
        first_peak as f64 / MIB as f64,
        anonymous_before as f64 / MIB as f64,
        anonymous_after as f64 / MIB as f64,
    );
    assert!(entries >= callsites, "{entries} entries");
    assert!(
        anonymous_after <= anonymous_before + 2 * MIB,
        "{anonymous_after} bytes anonymous after, {anonymous_before} before"
    );

    // A report that looks its symbols up, then one that finds them kept:
    // what the first costs beyond the second is symbol lookup's own.
    let (_, _, cold) = peak_of(report_everything);
    let (_, _, warm) = peak_of(report_everything);
    alloc_track::release_symbols();
    alloc_track::release_memory();
    let settled = status("RssAnon");
    println!(
        "symbols looked up: the peak rose by {:.1} MiB; symbols kept: {:.1} MiB; \
         {:.1} MiB anonymous after",
        cold as f64 / MIB as f64,
        warm as f64 / MIB as f64,
        settled as f64 / MIB as f64,
    );
    // This binary has full debug info (the test profile's), unoptimised:
    // more of it than a release build has.
    assert!(
        cold.saturating_sub(warm) <= 16 * MIB,
        "symbol lookup raised the peak by {} bytes",
        cold.saturating_sub(warm)
    );

    // More reports, symbols looked up afresh each time, add nothing but
    // what glibc keeps at the top of a thread's arena: after a large block
    // (the report's text) is freed, it keeps more free memory there before
    // it gives it back, and `malloc_trim` trims only the main arena's top.
    for _ in 0..3 {
        report_everything();
        alloc_track::release_symbols();
        alloc_track::release_memory();
    }
    let again = status("RssAnon");
    println!(
        "after three more: {:.1} MiB anonymous",
        again as f64 / MIB as f64
    );
    assert!(
        again <= settled + 2 * MIB,
        "{again} bytes anonymous after three more reports, {settled} before"
    );
    drop(kept);
}
