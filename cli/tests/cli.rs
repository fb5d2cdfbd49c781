//! The command-line tool on snapshot files of this test's own process: the
//! diff around a known leak shows exactly the leaked bytes at the leaking
//! callsite; `show`, `folded`, `flamegraph` and `pprof` name it.

use std::alloc::System;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;

use alloc_track::{AllocTrack, BacktraceMode, Snapshot};

#[global_allocator]
static GLOBAL: AllocTrack<System> = AllocTrack::new(System, BacktraceMode::Short);

/// Leaks 25 blocks of 1,000 bytes.
#[inline(never)]
fn leak_some() {
    for _ in 0..25 {
        black_box(Box::leak(Box::new([1u8; 1000])));
    }
}

fn tool(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_alloc-track"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "alloc-track {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name)
}

fn text(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn the_tool_reads_snapshots_and_finds_the_leak() {
    let (earlier, later) = (file("cli-earlier.json"), file("cli-later.json"));
    Snapshot::take().write_to(&earlier).unwrap();
    leak_some();
    Snapshot::take().write_to(&later).unwrap();

    // The diff: exactly the leak, at its callsite.
    let diff: serde_json::Value =
        serde_json::from_str(&tool(&["diff", text(&earlier), text(&later), "--json"])).unwrap();
    let leak = diff["callsites"]
        .as_array()
        .unwrap()
        .iter()
        .find(|site| {
            site["backtrace"]["frames"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|frame| frame["symbols"].as_array().unwrap())
                .any(|symbol| symbol["name"] == "cli::leak_some")
        })
        .expect("the leaking callsite");
    assert_eq!(leak["in_use_change"], 25_000);
    assert_eq!(leak["allocations"], 25);
    assert_eq!(leak["freed"], 0);
    let text_diff = tool(&["diff", text(&earlier), text(&later)]);
    let grew = text_diff.split("CHURNED").next().unwrap();
    assert!(
        grew.contains("in use +24 KB (now 24 KB), allocated 24 KB in 25 allocations"),
        "{text_diff}"
    );
    assert!(grew.contains("cli::leak_some"), "{text_diff}");

    let shown = tool(&["show", text(&later)]);
    assert!(shown.starts_with("THREADS\n"), "{shown}");
    assert!(shown.contains("cli::leak_some"), "{shown}");

    // 25,000 bytes in use at the leak's stack.
    let folded = tool(&["folded", text(&later)]);
    let line = folded
        .lines()
        .find(|line| line.contains(";cli::leak_some "))
        .unwrap_or_else(|| panic!("{folded}"));
    assert!(line.ends_with(" 25000"), "{line}");
    let objects = tool(&["folded", text(&later), "--value", "alloc_objects"]);
    assert!(objects
        .lines()
        .any(|line| line.contains(";cli::leak_some ") && line.ends_with(" 25")));

    let svg = file("cli.svg");
    tool(&["flamegraph", text(&later), "-o", text(&svg)]);
    let svg = std::fs::read_to_string(&svg).unwrap();
    let options = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..roxmltree::ParsingOptions::default()
    };
    roxmltree::Document::parse_with_options(&svg, options).expect("well-formed XML");
    assert!(svg.contains("cli::leak_some"));

    let profile = file("cli.pb.gz");
    tool(&[
        "pprof",
        text(&later),
        "-o",
        text(&profile),
        "--sample-index",
        "alloc_space",
    ]);
    if let Some(top) =
        alloc_track_tests::go_pprof(&["-top", "-unit=byte", "-focus=leak_some"], &profile)
    {
        assert!(top.contains("Type: alloc_space"), "{top}");
        assert!(
            top.contains("25000B") && top.contains("cli::leak_some"),
            "{top}"
        );
    }

    // A file that is not a snapshot: a clear error, and a failing status.
    let output = Command::new(env!("CARGO_BIN_EXE_alloc-track"))
        .args(["show", text(&file("cli.svg"))])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).starts_with("alloc-track: "));
}
