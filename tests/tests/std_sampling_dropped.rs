//! Samples the sampling form cannot take: with an interval of one byte every
//! allocation is a sample, and an inner allocator that refuses the sampled
//! block's page-aligned place (out of aligned memory) makes each one a
//! dropped sample. The allocation is still made and its thread's exact
//! figures count it; the estimates miss it, and every report, and a pprof
//! profile, says how much they miss.

use std::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;
use std::path::PathBuf;

use alloc_track::export::SampleType;
use alloc_track::{AllocTrack, BacktraceMode, DroppedSamples, Snapshot, REPORTS};
use alloc_track_tests::{go_pprof, thread_metric, Fallible};

#[global_allocator]
static GLOBAL: AllocTrack<Fallible> =
    AllocTrack::new(Fallible, BacktraceMode::Short).with_sampling(1);

/// The only test that drops samples: the figures it reads are its own.
#[test]
fn dropped_samples_are_counted_and_every_report_says_so() {
    std::thread::Builder::new()
        .name("dropper".into())
        .spawn(|| {
            black_box(Box::new(0u8));
            let before = thread_metric("dropper");
            let dropped_before = alloc_track::dropped_samples().expect("the sampling form");
            let layout = Layout::from_size_align(100, 8).unwrap();
            Fallible::fail_aligned(true);
            // SAFETY: a layout of non-zero size; each block is freed below
            // with it.
            let blocks = unsafe { [GLOBAL.alloc(layout), GLOBAL.alloc_zeroed(layout)] };
            Fallible::fail_aligned(false);
            assert!(blocks.iter().all(|block| !block.is_null()));

            let dropped = alloc_track::dropped_samples().unwrap();
            assert_eq!(
                dropped,
                DroppedSamples {
                    samples: dropped_before.samples + 2,
                    bytes: dropped_before.bytes + 200,
                }
            );
            // Exact: both allocations. Estimated: neither, so the report
            // has them freed already, and says what it misses.
            let after = thread_metric("dropper");
            assert_eq!(after.total_alloc - before.total_alloc, 200);
            assert_eq!(after.allocations - before.allocations, 2);
            assert_eq!(after.current_used, before.current_used);
            assert_eq!(after.dropped_samples, Some(dropped));

            // Their frees touch nothing: they were never recorded.
            for block in blocks {
                // SAFETY: allocated above with `layout`, freed once.
                unsafe { GLOBAL.dealloc(block, layout) };
            }
            let freed = thread_metric("dropper");
            assert_eq!(freed.current_used, after.current_used);
            assert_eq!(freed.total_alloc, after.total_alloc);
            assert_eq!(freed.frees, after.frees);

            // And sampling goes on: the next block is a sample again.
            let kept = black_box(vec![9u8; 300]);
            let sampled = thread_metric("dropper");
            assert_eq!(sampled.current_used - freed.current_used, 300);
            drop(kept);
            assert_eq!(alloc_track::dropped_samples(), Some(dropped));

            // Every estimated entry of each report carries the figure, and its text
            // says it. (Resolving symbols makes many blocks of the tracker's
            // own, some of them samples at the tracker's interval, whose
            // places this allocator refuses too: it may drop samples
            // itself, so nothing is checked after it.)
            let said = format!(
                "{} samples dropped, with no room to record them: the estimates miss about",
                dropped.samples
            );
            let scoped = {
                let _scope = alloc_track::scope("dropping-scope");
                black_box(vec![1u8; 10])
            };
            let scopes = alloc_track::scope_report();
            assert_eq!(scopes.0["dropping-scope"].dropped_samples, Some(dropped));
            assert!(scopes.to_string().contains(&said), "{scopes}");
            drop((scoped, scopes));
            let report = alloc_track::thread_report();
            // Every estimated row, that is; the tracker's own row is exact.
            assert!(report.0.values().all(|metric| {
                metric.dropped_samples == metric.sampling_interval.map(|_| dropped)
                    && (metric.sampling_interval.is_some() || metric.name == REPORTS)
            }));
            assert!(report.to_string().contains(&said), "{report}");
            let columns = format!(",1,{},{}", dropped.samples, dropped.bytes);
            let csv = report.csv();
            assert!(
                csv.lines()
                    .any(|line| line.starts_with("dropper,") && line.ends_with(&columns)),
                "{csv}"
            );
            // Only the callsite of the 300 bytes above, so that few symbols
            // are resolved.
            let callsites = alloc_track::backtrace_report(|_, metric| metric.allocated == 300);
            assert!(!callsites.0.is_empty());
            assert!(callsites
                .0
                .iter()
                .all(|(_, metric)| metric.dropped_samples == Some(dropped)));
            assert!(callsites.to_string().contains(&said), "{callsites}");
            // The interval, then the short-lived share, then the figure.
            let csv = callsites.csv();
            let (samples, bytes) = (dropped.samples.to_string(), dropped.bytes.to_string());
            assert!(
                csv.lines().skip(1).all(|line| {
                    let tail: Vec<&str> = line.rsplitn(5, ',').collect();
                    tail[0] == bytes && tail[1] == samples && tail[3] == "1"
                }),
                "{csv}"
            );

            // A pprof profile of a snapshot says it in a comment, with the
            // figure of when the snapshot was taken.
            let snapshot = Snapshot::take();
            let then = snapshot
                .threads()
                .0
                .values()
                .find_map(|metric| metric.dropped_samples)
                .expect("the sampling form");
            assert!(then.samples >= dropped.samples);
            let offline = snapshot.backtrace_report(alloc_track::BacktraceOptions::default());
            assert!(!offline.0.is_empty());
            assert!(offline
                .0
                .iter()
                .all(|(_, metric)| metric.dropped_samples == Some(then)));
            let profile = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dropped.pb.gz");
            std::fs::write(&profile, snapshot.pprof(SampleType::InuseSpace)).unwrap();
            if let Some(comments) = go_pprof(&["-comments"], &profile) {
                let said = format!(
                    "alloc-track: {} samples dropped, with no room to record them: the \
                     estimates miss about {} bytes",
                    then.samples, then.bytes
                );
                assert!(comments.contains(&said), "{comments}");
            }
        })
        .unwrap()
        .join()
        .unwrap();
}
