//! Callsite figures stay exact when a thread allocates from stacks that the
//! stack memo could confuse: two functions called from the same frame (the
//! same frame pointer, another return address), one leaf reached through two
//! callers (the stacks differ only further up), and the same stack again and
//! again (every call a hit).

use std::alloc::System;
use std::hint::black_box;

use alloc_track::{AllocTrack, BacktraceMode};

#[global_allocator]
static GLOBAL: AllocTrack<System> = AllocTrack::new(System, BacktraceMode::Short);

const ROUNDS: u64 = 1_000;

#[inline(never)]
fn first() -> Vec<u8> {
    black_box(vec![1u8; 101])
}

#[inline(never)]
fn second() -> Vec<u8> {
    black_box(vec![2u8; 202])
}

/// Allocates `size` bytes; reached through [`left`] and [`right`].
#[inline(never)]
fn leaf(size: usize) -> Vec<u8> {
    black_box(vec![3u8; size])
}

#[inline(never)]
fn left() -> Vec<u8> {
    leaf(black_box(303))
}

#[inline(never)]
fn right() -> Vec<u8> {
    leaf(black_box(303))
}

#[inline(never)]
fn repeated() -> Vec<u8> {
    black_box(vec![4u8; 404])
}

/// The callsites of the report whose function names (innermost first, the
/// program's own frames) start with `names`, as (bytes, allocations, frees).
fn figures(names: &[&str]) -> Vec<(u64, u64, u64)> {
    let report = alloc_track::backtrace_report(|_, _| true);
    report
        .0
        .iter()
        .filter(|(backtrace, _)| {
            let shown: Vec<Option<&str>> = backtrace
                .short_symbols()
                .iter()
                .map(|symbol| symbol.name.as_deref())
                .collect();
            shown.len() >= names.len()
                && shown
                    .iter()
                    .zip(names)
                    .all(|(shown, name)| *shown == Some(*name))
        })
        .map(|(_, metric)| (metric.allocated, metric.allocations, metric.frees))
        .collect()
}

#[test]
fn stacks_the_memo_could_confuse_count_apart() {
    for _ in 0..ROUNDS {
        drop(first());
        drop(second());
        drop(left());
        drop(right());
    }
    for _ in 0..ROUNDS {
        drop(repeated());
    }

    assert_eq!(
        figures(&["std_stack_memo::first"]),
        [(101 * ROUNDS, ROUNDS, ROUNDS)]
    );
    assert_eq!(
        figures(&["std_stack_memo::second"]),
        [(202 * ROUNDS, ROUNDS, ROUNDS)]
    );
    assert_eq!(
        figures(&["std_stack_memo::leaf", "std_stack_memo::left"]),
        [(303 * ROUNDS, ROUNDS, ROUNDS)]
    );
    assert_eq!(
        figures(&["std_stack_memo::leaf", "std_stack_memo::right"]),
        [(303 * ROUNDS, ROUNDS, ROUNDS)]
    );
    assert_eq!(
        figures(&["std_stack_memo::repeated"]),
        [(404 * ROUNDS, ROUNDS, ROUNDS)]
    );
}
