//! pprof heap profiles in the sampling form: Go's `pprof` tool shows the
//! allocating function on top with exactly the snapshot's estimates (already
//! unbiased, not scaled again), the period is the sampling interval, and
//! the estimates are near the truth.

use std::alloc::System;
use std::hint::black_box;
use std::path::PathBuf;

use alloc_track::export::SampleType;
use alloc_track::{AllocTrack, BacktraceMode, BacktraceOptions, Snapshot};
use alloc_track_tests::{go_pprof, top_line};

const INTERVAL: u64 = 4096;

#[global_allocator]
static GLOBAL: AllocTrack<System> =
    AllocTrack::new(System, BacktraceMode::Short).with_sampling(INTERVAL);

const BLOCKS: usize = 2000;
const BLOCK: usize = 3000;

/// Keeps 2,000 blocks of 3,000 bytes (6 MB: about 1,500 samples), and
/// allocates and frees 1,000 more.
// One allocation per block is the point.
#[allow(clippy::vec_box)]
#[inline(never)]
fn hold_blocks() -> Vec<Box<[u8; BLOCK]>> {
    let mut blocks = Vec::with_capacity(BLOCKS);
    for index in 0..BLOCKS + 1000 {
        let block = black_box(Box::new([index as u8; BLOCK]));
        if index < BLOCKS {
            blocks.push(block);
        }
    }
    blocks
}

#[test]
fn go_tool_pprof_shows_the_estimates_unscaled() {
    let snapshot = std::thread::Builder::new()
        .name("holder".into())
        .spawn(|| {
            let blocks = hold_blocks();
            let snapshot = Snapshot::take();
            drop(blocks);
            snapshot
        })
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(snapshot.sampling_interval(), Some(INTERVAL));

    // The snapshot's own estimates for the function.
    let report = snapshot.backtrace_report(BacktraceOptions::new().merge_same_frames(false));
    let (mut in_use, mut allocated) = (0, 0);
    for (backtrace, metric) in &report.0 {
        if backtrace.innermost_function() == Some("std_export_sampled::hold_blocks") {
            in_use += metric.in_use();
            allocated += metric.allocated;
        }
    }
    // Near the truth: about 1,500 samples in use, 2,200 made.
    let (true_in_use, true_allocated) = (BLOCKS * BLOCK, (BLOCKS + 1000) * BLOCK);
    let near = |estimate: u64, truth: usize| (estimate as f64 / truth as f64 - 1.0).abs() < 0.15;
    assert!(near(in_use, true_in_use), "{in_use} vs {true_in_use}");
    assert!(
        near(allocated, true_allocated),
        "{allocated} vs {true_allocated}"
    );

    let profile = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("sampled.pb.gz");
    std::fs::write(&profile, snapshot.pprof(SampleType::InuseSpace)).unwrap();
    for (index, figure) in [("inuse_space", in_use), ("alloc_space", allocated)] {
        let sample_index = format!("-sample_index={index}");
        let Some(top) = go_pprof(&["-top", "-unit=byte", &sample_index], &profile) else {
            return;
        };
        let line = top_line(&top);
        assert_eq!(line[0], format!("{figure}B"), "{index}:\n{top}");
        assert_eq!(line[5], "std_export_sampled::hold_blocks", "{top}");
    }
    let raw = go_pprof(&["-raw"], &profile).unwrap();
    assert!(raw.contains(&format!("Period: {INTERVAL}")), "{raw}");
    assert!(raw.contains("PeriodType: space bytes"), "{raw}");
    assert!(raw.contains("already scaled"), "{raw}");
}
