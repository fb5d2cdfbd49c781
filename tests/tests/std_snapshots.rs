//! Two snapshots and their difference show what grew (a leak) and what
//! churned, by thread and by callsite, with exact figures; the reports and
//! the difference serialise to JSON.

use std::alloc::System;
use std::hint::black_box;

use alloc_track::{AllocTrack, BacktraceMode, CallsiteKind, Snapshot};

#[global_allocator]
static GLOBAL: AllocTrack<System> = AllocTrack::new(System, BacktraceMode::Short);

#[inline(never)]
fn leak_some() {
    for _ in 0..10 {
        black_box(Box::leak(Box::new([0u8; 500])));
    }
}

#[inline(never)]
fn churn_some() {
    for _ in 0..1000 {
        black_box(Box::new([0u8; 32]));
    }
}

fn top_function(change: &alloc_track::CallsiteChange) -> Option<&str> {
    change.backtrace.innermost_function()
}

#[test]
fn a_diff_shows_what_grew_and_what_churned() {
    std::thread::Builder::new()
        .name("leaky".into())
        .spawn(|| {
            let earlier = Snapshot::take();
            leak_some();
            churn_some();
            let later = Snapshot::take();
            let diff = later.diff(&earlier);

            // The snapshots' own allocations are the tracker's, listed last
            // and left out of what grew.
            let own = diff.callsites.last().unwrap();
            assert_eq!(own.backtrace.kind, CallsiteKind::Tracker);
            assert!(own.change.in_use_change > 0);
            let leak = diff
                .grew()
                .find(|change| top_function(change) == Some("std_snapshots::leak_some"))
                .expect("the leak grew");
            let leaked = leak.change;
            assert_eq!(
                (leaked.allocated, leaked.allocations, leaked.freed),
                (5_000, 10, 0)
            );
            assert_eq!((leaked.in_use_change, leaked.in_use), (5_000, 5_000));

            let churn = diff
                .churned()
                .into_iter()
                .find(|change| top_function(change) == Some("std_snapshots::churn_some"))
                .expect("the churn");
            let churned = churn.change;
            assert_eq!(
                (churned.allocated, churned.allocations, churned.freed),
                (32_000, 1000, 32_000)
            );
            assert_eq!(churned.in_use_change, 0);

            let thread = diff.threads.iter().find(|t| t.name == "leaky").unwrap();
            let thread = thread.change;
            assert_eq!((thread.allocated, thread.allocations), (37_000, 1010));
            assert_eq!((thread.freed, thread.in_use_change), (32_000, 5_000));

            let text = diff.to_string();
            assert!(text.contains("leaky: in use +4 KB"), "{text}");
            assert!(text.contains("std_snapshots::leak_some"), "{text}");

            let json: serde_json::Value = serde_json::from_str(&diff.to_json().unwrap()).unwrap();
            let leaky = json["threads"]
                .as_array()
                .unwrap()
                .iter()
                .find(|thread| thread["name"] == "leaky")
                .unwrap();
            assert_eq!(leaky["in_use_change"], 5_000);
            let leak_in_json = json["callsites"].as_array().unwrap().iter().any(|site| {
                site["in_use_change"] == 5_000
                    && site["backtrace"]["frames"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|frame| {
                            let symbols = frame["symbols"].as_array().unwrap();
                            symbols
                                .iter()
                                .any(|symbol| symbol["name"] == "std_snapshots::leak_some")
                        })
            });
            assert!(leak_in_json);
        })
        .unwrap()
        .join()
        .unwrap();

    let threads: serde_json::Value =
        serde_json::from_str(&alloc_track::thread_report().to_json().unwrap()).unwrap();
    assert!(threads["main"]["total_alloc"].as_u64().unwrap() > 0);
    let backtraces: serde_json::Value = serde_json::from_str(
        &alloc_track::backtrace_report(|_, m| m.allocated == 5_000)
            .to_json()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(backtraces[0][1]["allocations"], 10);
}

#[test]
fn json_is_written_for_paths_that_are_not_utf8() {
    use std::os::unix::ffi::OsStrExt;
    use std::path::PathBuf;

    use alloc_track::{
        Backtrace, BacktraceFrame, BacktraceMetric, BacktraceReport, BacktraceSymbol,
    };

    let file = PathBuf::from(std::ffi::OsStr::from_bytes(b"src/caf\xe9.rs"));
    let backtrace = Backtrace {
        kind: CallsiteKind::Stack,
        frames: vec![BacktraceFrame {
            address: 0x1234,
            symbols: vec![BacktraceSymbol::new(
                Some("crate::f"),
                Some(&file),
                Some(7),
                None,
            )]
            .into(),
        }],
    };
    let report = BacktraceReport(vec![(backtrace, BacktraceMetric::default())]);
    let json: serde_json::Value = serde_json::from_str(&report.to_json().unwrap()).unwrap();
    assert_eq!(
        json[0][0]["frames"][0]["symbols"][0]["file"],
        "src/caf\u{fffd}.rs"
    );
}

#[inline(never)]
fn hold_a_megabyte() -> Vec<u8> {
    vec![1u8; 1 << 20]
}

#[test]
fn a_snapshot_report_keeps_what_its_filter_keeps() {
    let held = black_box(hold_a_megabyte());
    let snapshot = Snapshot::take();
    let all = snapshot.backtrace_report(alloc_track::BacktraceOptions::new());
    let large = snapshot.backtrace_report_with(alloc_track::BacktraceOptions::new(), |_, m| {
        m.in_use() >= 1 << 20
    });
    assert!(large.0.len() < all.0.len());
    assert!(large.0.iter().all(|(_, metric)| metric.in_use() >= 1 << 20));
    let (_, held_here) = large
        .0
        .iter()
        .find(|(backtrace, _)| {
            backtrace
                .innermost_function()
                .is_some_and(|name| name.ends_with("hold_a_megabyte"))
        })
        .unwrap_or_else(|| panic!("{large}"));
    assert_eq!(held_here.in_use(), 1 << 20);
    drop(held);
}
