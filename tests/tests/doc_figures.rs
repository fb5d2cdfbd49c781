//! The figures of the tracker's own memory in BENCHMARKS.md are the code's:
//! each is computed here the way the program that prints it computes it,
//! and looked for in the document with the same digits. A change that moves
//! a table's size fails here until the document says the new figure.

use std::alloc::System;
use std::path::Path;

use alloc_track_core::{Context, MemoRecord, Stack, StackMemo, Tracker, Who};

/// `value` as the document writes it: digits in groups of three, commas
/// between.
fn grouped(value: usize) -> String {
    let digits = value.to_string();
    let mut out = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// BENCHMARKS.md with every run of white space made one space, so that
/// where its lines break does not matter.
fn benchmarks() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../BENCHMARKS.md");
    let text = std::fs::read_to_string(path).expect("BENCHMARKS.md");
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A context of no size, as the scheduler example's is.
struct NoContext;

impl Context for NoContext {
    fn who(&self) -> Who {
        Who::Unknown
    }

    fn stack(&self) -> Option<Stack> {
        None
    }
}

#[test]
fn grouping_is_the_documents() {
    assert_eq!(grouped(7), "7");
    assert_eq!(grouped(6888), "6,888");
    assert_eq!(grouped(14_016), "14,016");
    assert_eq!(grouped(17_646_208), "17,646,208");
}

// The figures are those of 64-bit x86 (the document says so), where CI runs.
#[cfg(target_arch = "x86_64")]
#[test]
fn the_benchmarks_give_the_tables_sizes_of_this_code() {
    let benchmarks = benchmarks();
    // The scheduler example's tracker: 8 tasks, 32 callsites of 16 frames,
    // the default pairs and samples, a context of no size (as it prints).
    let scheduler = std::mem::size_of::<Tracker<System, NoContext, 8, 32, 16>>();
    let expected = format!(
        "32 callsites of 16 frames take {} bytes on x86-64",
        grouped(scheduler)
    );
    assert!(
        benchmarks.contains(&expected),
        "BENCHMARKS.md should say the scheduler's tables take {} bytes",
        grouped(scheduler)
    );
    // The stack memo each thread keeps: two stacks of the callsites' depth.
    let memo = std::mem::size_of::<StackMemo<[MemoRecord; 2 * alloc_track::CALLSITE_DEPTH]>>();
    let expected = format!("in a stack memo of {} bytes", grouped(memo));
    assert!(
        benchmarks.contains(&expected),
        "BENCHMARKS.md should say a thread's stack memo takes {} bytes",
        grouped(memo)
    );
    // The std adapter's tables, as `compare` prints them.
    let std_tables = alloc_track::table_bytes();
    let expected = format!("tables are {} bytes", grouped(std_tables));
    assert!(
        benchmarks.contains(&expected),
        "BENCHMARKS.md should say the std adapter's tables are {} bytes",
        grouped(std_tables)
    );
}
