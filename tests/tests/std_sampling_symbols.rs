//! The sampling form at an interval of one byte, where every allocation of
//! the program is a sample and its figures are exact: reports that resolve
//! symbols make tens of thousands of blocks of their own, which are made in
//! the tracker's own heap and counted there, exactly, never sampled, so
//! they neither fill the table of sampled blocks nor make the program's
//! samples be dropped.

use std::hint::black_box;

use alloc_track::{AllocTrack, BacktraceMode, DroppedSamples, REPORTS};
use alloc_track_tests::thread_metric;

#[global_allocator]
static GLOBAL: AllocTrack<std::alloc::System> =
    AllocTrack::new(std::alloc::System, BacktraceMode::Short).with_sampling(1);

/// 2,000 blocks of 40 bytes, kept, in a vector of 16,000 bytes.
// Boxed: each block is an allocation of its own.
#[allow(clippy::vec_box)]
#[inline(never)]
fn two_thousand() -> Vec<Box<[u8; 40]>> {
    (0..2000u32)
        .map(|k| black_box(Box::new([k as u8; 40])))
        .collect()
}

const NONE_DROPPED: DroppedSamples = DroppedSamples {
    samples: 0,
    bytes: 0,
};

#[test]
fn resolving_symbols_drops_none_of_the_programs_samples() {
    std::thread::Builder::new()
        .name("resolved".into())
        .spawn(|| {
            let before = thread_metric("resolved");
            let first = two_thousand();
            let after_first = thread_metric("resolved");
            assert_eq!(after_first.current_used - before.current_used, 96_000);

            // Two reports with every callsite's symbols resolved: the first
            // parses the debug information and keeps it.
            for _ in 0..2 {
                let report = alloc_track::backtrace_report(|_, _| true);
                assert!(report.to_string().contains("two_thousand"), "{report}");
                assert_eq!(alloc_track::dropped_samples(), Some(NONE_DROPPED));
            }
            let tracker = thread_metric(REPORTS);
            assert!(tracker.allocations > 10_000, "{tracker:?}");
            assert_eq!(tracker.sampling_interval, None, "exact: {tracker:?}");

            // The program's blocks made after the reports are all sampled
            // still: its figures stay exact.
            let before_second = thread_metric("resolved");
            let second = two_thousand();
            let after_second = thread_metric("resolved");
            assert_eq!(
                after_second.current_used - before_second.current_used,
                96_000
            );
            assert_eq!(
                after_second.allocations - before_second.allocations,
                2_000 + 1
            );
            assert_eq!(alloc_track::dropped_samples(), Some(NONE_DROPPED));
            drop((first, second));
            let after_free = thread_metric("resolved");
            assert_eq!(after_second.current_used - after_free.current_used, 192_000);
        })
        .unwrap()
        .join()
        .unwrap();
}
