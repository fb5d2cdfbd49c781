//! The test helpers: `measure` gives exactly what a closure allocated and
//! freed on its thread while other threads measure at the same time, and
//! `assert_no_alloc` passes a closure that does not allocate and names the
//! callsite of one that does.

use std::alloc::System;
use std::hint::black_box;
use std::sync::Barrier;

use alloc_track::{assert_no_alloc, measure, AllocTrack, BacktraceMode, Usage};

#[global_allocator]
static GLOBAL: AllocTrack<System> = AllocTrack::new(System, BacktraceMode::Short);

/// Keeps `size` bytes, allocates and frees five blocks of `size / 10`, and
/// frees `old`, a block allocated before.
#[inline(never)]
fn work(size: usize, old: Box<[u8; 64]>) -> Vec<u8> {
    let kept = black_box(vec![1u8; size]);
    for _ in 0..5 {
        black_box(vec![2u8; size / 10]);
    }
    drop(old);
    kept
}

fn expected(size: u64) -> Usage {
    Usage {
        allocated: size + 5 * (size / 10),
        allocations: 6,
        freed: 5 * (size / 10) + 64,
        frees: 6,
        peak: size + size / 10,
        in_use: size,
    }
}

#[test]
fn parallel_measurements_each_see_their_own() {
    const THREADS: usize = 8;
    let barrier = Barrier::new(THREADS);
    std::thread::scope(|scope| {
        for thread in 0..THREADS {
            let barrier = &barrier;
            scope.spawn(move || {
                let size = 1000 * (thread + 1);
                barrier.wait();
                for _ in 0..200 {
                    let old = Box::new([0u8; 64]);
                    let (kept, usage) = measure(|| work(size, old));
                    assert_eq!(usage, expected(size as u64), "thread {thread}");
                    drop(kept);
                    // A measurement inside a measurement: its own figures.
                    let ((_, inner), outer) = measure(|| measure(|| black_box(vec![0u8; 10])));
                    // The inner closure returned its block: still live.
                    assert_eq!((inner.allocated, inner.in_use), (10, 10));
                    assert_eq!(outer.allocations, 0);
                }
            });
        }
    });
}

#[test]
fn nothing_allocated_nothing_counted() {
    let numbers = [3u64, 1, 2];
    let (sum, usage) = measure(|| numbers.iter().sum::<u64>());
    assert_eq!(sum, 6);
    assert_eq!(usage, Usage::default());
    // Scopes inside a measurement change nothing: the measurement counts.
    let (_, usage) = measure(|| {
        let _scope = alloc_track::scope("inside a measurement");
        black_box(vec![0u8; 77])
    });
    assert_eq!(usage.allocated, 77);
}

#[inline(never)]
fn allocating_helper(numbers: &[u64]) -> Vec<u64> {
    numbers.iter().map(|n| n * 2).collect()
}

#[test]
fn assert_no_alloc_passes_and_fails() {
    let numbers = [1u64, 2, 3];
    assert_eq!(assert_no_alloc(|| numbers.iter().sum::<u64>()), 6);

    let panic = std::panic::catch_unwind(|| {
        assert_no_alloc(|| black_box(allocating_helper(&numbers)).len())
    })
    .expect_err("an allocating closure fails");
    let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        message.starts_with("assert_no_alloc: the closure allocated 24 bytes in 1 allocations"),
        "{message}"
    );
    assert!(
        message.contains("std_measure::allocating_helper"),
        "{message}"
    );
    assert!(message.contains("tests/std_measure.rs:"), "{message}");
    // And afterwards the thread's allocations count as before.
    let (_, usage) = measure(|| black_box(vec![0u8; 5]));
    assert_eq!(usage.allocated, 5);
}
