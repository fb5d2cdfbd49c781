//! A real program's worth of distinct stacks: parsing, printing and parsing
//! again 24 of `syn`'s own source files (of the version the lock file pins,
//! so the workload does not grow with this workspace), on four threads,
//! gives about 50,000 distinct allocation stacks. The
//! default callsite table holds them all, with nothing in overflow, and
//! says what that costs.

use std::alloc::System;
use std::path::{Path, PathBuf};

use alloc_track::{AllocTrack, BacktraceMode, BacktraceOptions, CallsiteKind};
use alloc_track_tests::syn_sources;
use quote::ToTokens;

#[global_allocator]
static GLOBAL: AllocTrack<System> = AllocTrack::new(System, BacktraceMode::Short);

/// Parses a file, prints it and parses the printed text.
fn round_trip(path: &Path) -> usize {
    let text = std::fs::read_to_string(path).unwrap();
    let file = syn::parse_file(&text).unwrap();
    let printed = file.to_token_stream().to_string();
    let again: syn::File = syn::parse_str(&printed).unwrap();
    again.items.len()
}

#[test]
fn the_default_table_holds_a_parsers_callsites() {
    // The hand-written sources: `src/gen/` holds generated visitors, more
    // of the same.
    let mut files: Vec<PathBuf> = std::fs::read_dir(syn_sources())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "rs"))
        .collect();
    files.sort();
    // The first 24 (`attr.rs` to `item.rs`, the expression and item
    // parsers among them): about 50,000 stacks, a margin below the table's
    // 65,536 rows.
    files.truncate(24);
    assert_eq!(files.len(), 24, "{} source files", files.len());
    let items: usize = std::thread::scope(|scope| {
        let workers: Vec<_> = files
            .chunks(files.len().div_ceil(4))
            .map(|chunk| scope.spawn(move || chunk.iter().map(|f| round_trip(f)).sum::<usize>()))
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).sum()
    });
    assert!(items > 0);

    // Every stack apart, even those that print the same.
    let options = BacktraceOptions::new().merge_same_frames(false);
    let report = alloc_track::backtrace_report_with(options, |_, _| true);
    // Read before this thread allocates again (from new stacks).
    let memory = alloc_track::callsite_memory();
    let stacks = report
        .0
        .iter()
        .filter(|(backtrace, _)| backtrace.kind == CallsiteKind::Stack)
        .count();
    let overflow = report
        .0
        .iter()
        .find(|(backtrace, _)| backtrace.kind == CallsiteKind::Overflow);
    println!(
        "{stacks} distinct stacks; callsite table: {} bytes in use of {} reserved, {} per row",
        memory.in_use, memory.reserved, memory.per_row
    );
    assert!(stacks >= 20_000, "only {stacks} distinct stacks");
    assert!(overflow.is_none(), "overflow: {:?}", overflow.map(|o| &o.1));
    assert_eq!(memory.rows_in_use, stacks);
    assert_eq!(memory.limit, alloc_track::CALLSITE_ROWS);
    // The rows in use and the index, nothing more.
    assert_eq!(
        memory.in_use,
        memory.reserved - (alloc_track::CALLSITE_ROWS - stacks) * memory.per_row
    );
}
