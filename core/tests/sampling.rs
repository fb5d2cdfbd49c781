//! The sampling form: estimates that are unbiased whatever the sizes at a
//! callsite, figures that are exact when every allocation is sampled,
//! lifetimes that are exact on a known clock, exact per-task allocation
//! counts, and tracker memory that does not grow with the program's live
//! blocks.
#![cfg(not(alloc_track_loom))] // these use `const` constructors, which loom builds lack

mod support;

use std::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;
use std::sync::atomic::Ordering::Relaxed;

use alloc_track_core::raw::SAMPLE_SCALE;
use alloc_track_core::{
    lifetime_bucket, CallsiteRowView, ExactAllocations, Figures, Lifetimes, Mode, Tracker,
    LIFETIME_BUCKETS,
};
use support::*;

type Sampled<const SAMPLES: usize> = Tracker<TestAlloc, TestContext, 8, 64, 16, 16, SAMPLES>;

fn sampled<const SAMPLES: usize>(interval: u64, seed: u64) -> Box<Sampled<SAMPLES>> {
    let tracker = Box::new(Tracker::new(TestAlloc::new(), TestContext).with_sampling(interval));
    tracker.ledger().set_sampling(interval, seed);
    tracker
}

/// A block the test holds, to free later.
struct Held {
    pointer: *mut u8,
    layout: Layout,
}

fn free_held<const S: usize>(tracker: &Sampled<S>, held: Held) {
    // SAFETY: each held block came from this tracker with its layout and is
    // freed once.
    unsafe { tracker.dealloc(held.pointer, held.layout) }
}

// One function per callsite; `site_of` tells which a callsite row is by its
// innermost return address.
#[inline(never)]
fn at_fixed<const S: usize>(tracker: &Sampled<S>, size: usize) -> *mut u8 {
    // SAFETY: non-zero sizes.
    black_box(unsafe { tracker.alloc(layout(size)) })
}
#[inline(never)]
fn at_uniform<const S: usize>(tracker: &Sampled<S>, size: usize) -> *mut u8 {
    // SAFETY: as above.
    black_box(unsafe { tracker.alloc(layout(size)) })
}
#[inline(never)]
fn at_mixed<const S: usize>(tracker: &Sampled<S>, size: usize) -> *mut u8 {
    // SAFETY: as above.
    black_box(unsafe { tracker.alloc(layout(size)) })
}
#[inline(never)]
fn at_steps<const S: usize>(tracker: &Sampled<S>, size: usize) -> *mut u8 {
    // SAFETY: as above.
    black_box(unsafe { tracker.alloc(layout(size)) })
}

type Site<const S: usize> = fn(&Sampled<S>, usize) -> *mut u8;
/// A site's sizes, from a random number.
type Sizes = fn(u64) -> usize;

/// The four callsites, each with its own mix of sizes: one size; sizes
/// spread from 1 byte to 2 KB; tiny blocks mixed with 64 KiB ones; powers
/// of two from 16 bytes to 32 KiB.
fn sites<const S: usize>() -> [(Site<S>, Sizes); 4] {
    [
        (at_fixed::<S>, |_| 64),
        (at_uniform::<S>, |r| 1 + (r % 2000) as usize),
        (at_mixed::<S>, |r| if r % 20 == 0 { 64 * 1024 } else { 32 }),
        (at_steps::<S>, |r| 16 << (r % 12)),
    ]
}

/// Which of the sites a callsite row is: the one whose code holds its
/// innermost return address (the site function that starts last below it).
fn site_of<const S: usize>(row: &CallsiteRowView<16>) -> Option<usize> {
    let innermost = *row.frames().first()?;
    sites::<S>()
        .iter()
        .enumerate()
        .map(|(index, (site, _))| (index, *site as usize))
        .filter(|&(_, start)| start <= innermost)
        .max_by_key(|&(_, start)| start)
        .map(|(index, _)| index)
}

/// What the test itself made at each site: allocated bytes and count, live
/// bytes and count.
#[derive(Clone, Copy, Default, Debug)]
struct Truth {
    allocated: u64,
    allocations: u64,
    live: u64,
    live_blocks: u64,
}

fn random(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// Runs the workload and returns the truth and the estimates per site.
fn run_workload<const S: usize>(
    tracker: &Sampled<S>,
    rounds: usize,
    seed: u64,
) -> ([Truth; 4], [Figures; 4]) {
    let mut truth = [Truth::default(); 4];
    let mut held = Vec::new();
    let mut state = seed | 1;
    for round in 0..rounds {
        for (index, (site, size_of)) in sites::<S>().iter().enumerate() {
            let size = size_of(random(&mut state));
            let pointer = site(tracker, size);
            assert!(!pointer.is_null());
            let t = &mut truth[index];
            t.allocated += size as u64;
            t.allocations += 1;
            // Every other block of each site stays live.
            if round % 2 == 0 {
                t.live += size as u64;
                t.live_blocks += 1;
                held.push(Held {
                    pointer,
                    layout: layout(size),
                });
            } else {
                free_held(
                    tracker,
                    Held {
                        pointer,
                        layout: layout(size),
                    },
                );
            }
        }
    }
    let mut estimates = [Figures::default(); 4];
    tracker.for_each_callsite(|row| {
        if let Some(site) = site_of::<S>(row) {
            estimates[site].accumulate(&row.figures);
        }
    });
    for block in held {
        free_held(tracker, block);
    }
    (truth, estimates)
}

/// How far an estimate is from the truth, relatively.
#[cfg(not(miri))]
fn error(estimate: u64, truth: u64) -> f64 {
    (estimate as f64 - truth as f64) / truth as f64
}

// Under Miri, a thousandth of the work would say nothing statistically.
#[cfg(not(miri))]
#[test]
fn estimates_are_unbiased_whatever_the_sizes() {
    const INTERVAL: u64 = 256;
    const SEEDS: u64 = 40;
    const ROUNDS: usize = 20_000;
    let mut sums = [[0.0f64; 4]; 4];
    let mut truths = [Truth::default(); 4];
    for seed in 1..=SEEDS {
        set_task(Some(seed));
        // Room for every live sample; the table is built on a stack large
        // enough for it (debug builds build it there before boxing it).
        let (tracker, truth, estimates) = std::thread::Builder::new()
            .stack_size(64 << 20)
            .spawn(move || {
                set_task(Some(seed));
                let tracker = sampled::<65536>(INTERVAL, seed);
                let (truth, estimates) = run_workload(&tracker, ROUNDS, seed * 7919);
                (tracker, truth, estimates)
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(tracker.totals().dropped_samples, 0);
        for (site, (t, e)) in truth.iter().zip(&estimates).enumerate() {
            // Every site has far more than 20 intervals of traffic.
            assert!(t.allocated > 20 * INTERVAL);
            let figures = [
                error(e.allocated_bytes, t.allocated),
                error(e.allocations, t.allocations),
                error(e.live_bytes(), t.live),
                error(e.live_allocations(), t.live_blocks),
            ];
            for (figure, err) in figures.iter().enumerate() {
                assert!(
                    err.abs() < 0.10,
                    "seed {seed} site {site} figure {figure}: {err:+.3} ({e:?} against {t:?})"
                );
                sums[site][figure] += err;
            }
        }
        truths = truth;
        // What the task allocated is exact, not estimated.
        let row = task_row(&tracker, seed).unwrap();
        let allocated: u64 = truth.iter().map(|t| t.allocated).sum();
        let allocations: u64 = truth.iter().map(|t| t.allocations).sum();
        assert_eq!(
            row.exact_allocations,
            Some(ExactAllocations {
                bytes: allocated,
                count: allocations
            })
        );
    }
    // Unbiased: over the seeds, the errors average out.
    for (site, figures) in sums.iter().enumerate() {
        for (figure, sum) in figures.iter().enumerate() {
            let mean = sum / SEEDS as f64;
            assert!(
                mean.abs() < 0.02,
                "site {site} figure {figure}: mean error {mean:+.4} ({:?})",
                truths[site]
            );
        }
    }
}

#[test]
fn an_interval_of_one_byte_samples_everything_exactly() {
    set_task(Some(1));
    let tracker = sampled::<256>(1, 5);
    let rounds = if cfg!(miri) { 5 } else { 50 };
    let (truth, estimates) = run_workload(&tracker, rounds, 99);
    if cfg!(miri) {
        // Miri's walker stub names no site's code, so the sites cannot be
        // told apart: all four together must be exact (every block is
        // freed by now).
        let mut all = Figures::default();
        tracker.for_each_callsite(|row| all.accumulate(&row.figures));
        let allocated: u64 = truth.iter().map(|t| t.allocated).sum();
        let allocations: u64 = truth.iter().map(|t| t.allocations).sum();
        assert_eq!(
            (all.allocated_bytes, all.allocations, all.live_bytes()),
            (allocated, allocations, 0)
        );
    } else {
        for (t, e) in truth.iter().zip(&estimates) {
            assert_eq!(
                (
                    e.allocated_bytes,
                    e.allocations,
                    e.live_bytes(),
                    e.live_allocations()
                ),
                (t.allocated, t.allocations, t.live, t.live_blocks)
            );
        }
    }
    let row = task_row(&tracker, 1).unwrap();
    let allocated: u64 = truth.iter().map(|t| t.allocated).sum();
    assert_eq!(row.figures.allocated_bytes, allocated);
    assert_eq!(row.exact_allocations.unwrap().bytes, allocated);
    assert_eq!(
        row.figures.live_bytes(),
        0,
        "everything was freed at the end"
    );
    let totals = tracker.totals();
    assert_eq!(totals.sampling, Some(1));
    assert_eq!(totals.figures.allocated_bytes, allocated);
    // Nothing is left with the inner allocator.
    assert_eq!(tracker.inner().live_blocks.load(Relaxed), 0);
}

#[test]
fn lifetimes_on_a_known_clock_are_exact() {
    set_task(Some(2));
    take_freed_samples();
    let tracker = sampled::<64>(1, 3);
    // Blocks allocated at time 0 and freed at known times (nanoseconds).
    let lifetimes = [
        0u64,
        500,
        1_000,
        3_000,
        1_500_000,
        9_000_000_000,
        8_000_000_000_000,
    ];
    let mut blocks = Vec::new();
    set_now(1_000);
    for _ in lifetimes {
        blocks.push(at_fixed(&tracker, 100));
    }
    for (block, lifetime) in blocks.into_iter().zip(lifetimes) {
        set_now(1_000 + lifetime);
        free_held(
            &tracker,
            Held {
                pointer: block,
                layout: layout(100),
            },
        );
    }
    let freed = take_freed_samples();
    assert_eq!(
        freed.iter().map(|f| f.lifetime).collect::<Vec<_>>(),
        lifetimes
    );
    let histogram = Lifetimes::new();
    for f in &freed {
        histogram.record(f.lifetime, f.bytes, f.count);
    }
    let buckets = histogram.load();
    let mut expected = [0u64; LIFETIME_BUCKETS];
    for lifetime in lifetimes {
        expected[lifetime_bucket(lifetime)] += 1;
    }
    for (bucket, want) in buckets.iter().zip(expected) {
        assert_eq!(bucket.blocks, want * SAMPLE_SCALE);
        assert_eq!(bucket.bytes, want * 100 * SAMPLE_SCALE);
    }
    // Under a microsecond, a few microseconds, 1.5 ms, 9 s, over two hours.
    assert_eq!(buckets[0].blocks, 2 * SAMPLE_SCALE);
    assert_eq!(buckets[LIFETIME_BUCKETS - 1].blocks, SAMPLE_SCALE);
}

#[cfg(not(miri))]
#[test]
fn the_trackers_memory_does_not_grow_with_the_programs_blocks() {
    const SAMPLES: usize = 64;
    const BLOCKS: usize = 1_000_000;
    set_task(Some(3));
    let tracker = sampled::<SAMPLES>(4096, 11);
    let mut held = Vec::with_capacity(BLOCKS);
    for _ in 0..BLOCKS {
        held.push(Held {
            pointer: at_fixed(&tracker, 24),
            layout: layout(24),
        });
    }
    // The inner allocator holds the program's bytes, and at most 16 more
    // for each live sampled block, of which there are at most SAMPLES.
    let inner = tracker.inner().live_bytes.load(Relaxed) as usize;
    let program = 24 * BLOCKS;
    assert!(
        inner >= program && inner - program <= 16 * SAMPLES,
        "{inner} {program}"
    );
    // The samples that found no entry are counted, not lost silently.
    let totals = tracker.totals();
    assert!(totals.dropped_samples > 1000, "{totals:?}");
    assert_eq!(
        totals.exact_allocations.unwrap().count,
        BLOCKS as u64,
        "allocations are counted exactly all the same"
    );
    for block in held {
        free_held(&tracker, block);
    }
    assert_eq!(tracker.inner().live_bytes.load(Relaxed), 0);
}

#[test]
fn realloc_keeps_the_bytes_of_sampled_and_unsampled_blocks() {
    // Everything sampled, then nothing sampled (a huge interval).
    for interval in [1, u64::MAX / 4] {
        // A new tracker: the task's ticket of the last one is forgotten.
        set_task(Some(4));
        let tracker = sampled::<64>(interval, 1);
        let block = at_fixed(&tracker, 16);
        // SAFETY: 16 writable bytes.
        unsafe { block.copy_from_nonoverlapping([9u8; 16].as_ptr(), 16) };
        // SAFETY: the block came from this tracker with 16 bytes.
        let grown = unsafe { tracker.realloc(block, layout(16), 5000) };
        assert!(!grown.is_null());
        // SAFETY: the first 16 bytes were carried over.
        assert_eq!(unsafe { std::slice::from_raw_parts(grown, 16) }, [9u8; 16]);
        // SAFETY: as above.
        let shrunk = unsafe { tracker.realloc(grown, layout(5000), 8) };
        // SAFETY: the first 8 bytes were carried over.
        assert_eq!(unsafe { std::slice::from_raw_parts(shrunk, 8) }, [9u8; 8]);
        free_held(
            &tracker,
            Held {
                pointer: shrunk,
                layout: layout(8),
            },
        );
        let row = task_row(&tracker, 4).unwrap();
        assert_eq!(
            row.exact_allocations,
            Some(ExactAllocations {
                bytes: 16 + 5000 + 8,
                count: 3
            })
        );
        if interval == 1 {
            assert_eq!(row.figures.allocated_bytes, 16 + 5000 + 8);
            assert_eq!(row.figures.live_bytes(), 0);
            // A realloc counts the old block's free before the new block's
            // allocation, as the exact form does: at most the 5000 bytes
            // were live, never both blocks.
            assert_eq!(row.figures.peak_live_bytes, 5000);
            assert_eq!(tracker.totals().figures.peak_live_bytes, 5000);
        }
        assert_eq!(tracker.inner().live_blocks.load(Relaxed), 0);
    }
}

/// 64 KiB: from this size (on 64-bit targets) a sampled block stays where
/// the inner allocator put it.
const LARGE: usize = 64 * 1024;

#[test]
fn large_sampled_blocks_are_reallocated_in_place_by_the_inner_allocator() {
    set_task(Some(6));
    // Every allocation sampled.
    let tracker = sampled::<64>(1, 1);
    let inner = tracker.inner();
    let block = at_fixed(&tracker, LARGE);
    // SAFETY: 16 writable bytes at least.
    unsafe { block.copy_from_nonoverlapping([5u8; 16].as_ptr(), 16) };
    // Allocated as asked, at the inner allocator's address, not moved.
    assert_eq!(inner.allocs.load(Relaxed), 1);
    assert_eq!(inner.last_size.load(Relaxed), LARGE);
    // Large to larger: one inner realloc, no allocation, no copy by us.
    // SAFETY: the block came from this tracker with `LARGE` bytes.
    let grown = unsafe { tracker.realloc(block, layout(LARGE), 2 * LARGE) };
    assert!(!grown.is_null());
    assert_eq!(
        (
            inner.allocs.load(Relaxed),
            inner.reallocs.load(Relaxed),
            inner.deallocs.load(Relaxed)
        ),
        (1, 1, 0)
    );
    // SAFETY: the first 16 bytes were carried over.
    assert_eq!(unsafe { std::slice::from_raw_parts(grown, 16) }, [5u8; 16]);
    let row = task_row(&tracker, 6).unwrap();
    assert_eq!(
        (
            row.figures.allocated_bytes,
            row.figures.freed_bytes,
            row.figures.live_bytes(),
            row.figures.live_allocations()
        ),
        (
            (LARGE + 2 * LARGE) as u64,
            LARGE as u64,
            2 * LARGE as u64,
            1
        )
    );
    // Large to small: the small block goes to the mark, so it moves.
    // SAFETY: as above, with the size it has now.
    let shrunk = unsafe { tracker.realloc(grown, layout(2 * LARGE), 100) };
    assert_eq!(
        (inner.allocs.load(Relaxed), inner.deallocs.load(Relaxed)),
        (2, 1)
    );
    // SAFETY: the first 16 bytes were carried over.
    assert_eq!(unsafe { std::slice::from_raw_parts(shrunk, 16) }, [5u8; 16]);
    // Small (at the mark) to large: moves out of the mark.
    // SAFETY: as above.
    let regrown = unsafe { tracker.realloc(shrunk, layout(100), LARGE) };
    // SAFETY: the first 16 bytes were carried over.
    let carried = unsafe { std::slice::from_raw_parts(regrown, 16) };
    assert_eq!(carried, [5u8; 16]);
    free_held(
        &tracker,
        Held {
            pointer: regrown,
            layout: layout(LARGE),
        },
    );
    let row = task_row(&tracker, 6).unwrap();
    let allocated = (LARGE + 2 * LARGE + 100 + LARGE) as u64;
    assert_eq!(
        (
            row.figures.allocated_bytes,
            row.figures.freed_bytes,
            row.figures.live_bytes()
        ),
        (allocated, allocated, 0)
    );
    assert_eq!(
        row.exact_allocations,
        Some(ExactAllocations {
            bytes: allocated,
            count: 4
        })
    );
    assert_eq!(tracker.totals().dropped_samples, 0);
    assert_eq!(inner.live_blocks.load(Relaxed), 0);
}

#[test]
fn a_refused_allocation_is_not_counted_sampled_or_not() {
    // Everything sampled, then nothing sampled.
    for interval in [1, u64::MAX / 4] {
        set_task(Some(7));
        let tracker = sampled::<64>(interval, 1);
        let kept = at_fixed(&tracker, 48);
        tracker.inner().fail.store(true, Relaxed);
        assert!(at_fixed(&tracker, 48).is_null());
        assert!(at_fixed(&tracker, LARGE).is_null());
        // SAFETY: `kept` came from this tracker with 48 bytes; the refused
        // realloc leaves it as it was.
        assert!(unsafe { tracker.realloc(kept, layout(48), 4000) }.is_null());
        // SAFETY: as above.
        assert!(unsafe { tracker.realloc(kept, layout(48), LARGE) }.is_null());
        tracker.inner().fail.store(false, Relaxed);
        let row = task_row(&tracker, 7).unwrap();
        assert_eq!(
            row.exact_allocations,
            Some(ExactAllocations {
                bytes: 48,
                count: 1
            }),
            "interval {interval}"
        );
        if interval == 1 {
            assert_eq!((row.figures.allocations, row.figures.live_bytes()), (1, 48));
        }
        assert_eq!(tracker.totals().dropped_samples, 0);
        free_held(
            &tracker,
            Held {
                pointer: kept,
                layout: layout(48),
            },
        );
        assert_eq!(tracker.inner().live_blocks.load(Relaxed), 0);
    }
}

#[test]
fn paused_sampling_counts_nothing_and_frees_what_it_counted() {
    set_task(Some(5));
    let tracker = sampled::<64>(1, 1);
    let counted = at_fixed(&tracker, 40);
    let moved = at_fixed(&tracker, 40);
    tracker.set_mode(Mode::Off);
    let uncounted = at_fixed(&tracker, 40);
    // A sampled block reallocated while paused moves (its place is the
    // mark's): its free is counted, the new block is not.
    // SAFETY: the block came from this tracker with 40 bytes.
    let moved = unsafe { tracker.realloc(moved, layout(40), 100) };
    assert!(!moved.is_null());
    free_held(
        &tracker,
        Held {
            pointer: moved,
            layout: layout(100),
        },
    );
    free_held(
        &tracker,
        Held {
            pointer: counted,
            layout: layout(40),
        },
    );
    free_held(
        &tracker,
        Held {
            pointer: uncounted,
            layout: layout(40),
        },
    );
    let row = task_row(&tracker, 5).unwrap();
    assert_eq!(row.figures.allocated_bytes, 40 + 40);
    assert_eq!(row.figures.freed_bytes, 40 + 40);
    assert_eq!(tracker.inner().live_blocks.load(Relaxed), 0);
}

#[test]
fn sampling_works_from_another_thread_and_credits_frees_across() {
    set_task(Some(6));
    let tracker = sampled::<64>(1, 1);
    let block = at_fixed(&tracker, 128) as usize;
    std::thread::scope(|scope| {
        scope.spawn(|| {
            set_task(Some(7));
            free_held(
                &tracker,
                Held {
                    pointer: block as *mut u8,
                    layout: layout(128),
                },
            );
        });
    });
    let owner = task_row(&tracker, 6).unwrap();
    assert_eq!(
        (owner.freed_by_others_bytes, owner.freed_by_others),
        (128, 1)
    );
    let freer = task_row(&tracker, 7).unwrap();
    assert_eq!(freer.freed_of_others_bytes, 128);
}
