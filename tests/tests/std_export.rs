//! Snapshots in other tools' formats, exact figures: Go's own `pprof` tool
//! reads the heap profile and tops it with the allocating function and its
//! exact bytes and counts; the flamegraph is well-formed SVG that names it;
//! folded stacks carry the same figures; a snapshot file reads back
//! unchanged, and the diff of two files around a leak shows exactly the
//! leaked bytes at the leaking callsite.

use std::alloc::System;
use std::hint::black_box;
use std::path::PathBuf;

use alloc_track::export::SampleType;
use alloc_track::{AllocTrack, BacktraceMode, CallsiteKind, Snapshot};
use alloc_track_tests::{go_pprof, top_line};

#[global_allocator]
static GLOBAL: AllocTrack<System> = AllocTrack::new(System, BacktraceMode::Short);

const BLOCKS: usize = 200;
const BLOCK: usize = 3000;
/// The vector that holds the blocks: 200 pointers.
const HOLDER: u64 = BLOCKS as u64 * 8;

/// Keeps 200 blocks of 3,000 bytes, and allocates and frees 100 more: the
/// blocks are one callsite, the vector that holds them another, in one
/// function.
// One allocation per block is the point.
#[allow(clippy::vec_box)]
#[inline(never)]
fn hold_blocks() -> Vec<Box<[u8; BLOCK]>> {
    let mut blocks = Vec::with_capacity(BLOCKS);
    for index in 0..BLOCKS + 100 {
        // The line `-lines` names: `BOX_LINE`.
        let block = black_box(Box::new([index as u8; BLOCK]));
        if index < BLOCKS {
            blocks.push(block);
        }
    }
    blocks
}

/// The line of the blocks' allocation in `hold_blocks`.
const BOX_LINE: u32 = 34;

/// What `hold_blocks` leaves: the figures of its two callsites together.
const IN_USE: u64 = (BLOCKS * BLOCK) as u64 + HOLDER;
const IN_USE_OBJECTS: u64 = BLOCKS as u64 + 1;
const ALLOCATED: u64 = ((BLOCKS + 100) * BLOCK) as u64 + HOLDER;
const ALLOCATIONS: u64 = BLOCKS as u64 + 100 + 1;

fn path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name)
}

/// A snapshot taken while a thread holds what `hold_blocks` kept.
fn snapshot_holding_blocks() -> Snapshot {
    std::thread::Builder::new()
        .name("holder".into())
        .spawn(|| {
            let blocks = hold_blocks();
            let snapshot = Snapshot::take();
            drop(blocks);
            snapshot
        })
        .unwrap()
        .join()
        .unwrap()
}

/// One test holds blocks: the figures of `hold_blocks` are its alone.
#[test]
fn go_tool_pprof_tops_the_profile_with_the_allocating_function() {
    let snapshot = snapshot_holding_blocks();
    let profile = path("exact.pb.gz");
    std::fs::write(&profile, snapshot.pprof(SampleType::InuseSpace)).unwrap();

    // Every sample type, with its exact figure.
    for (index, figure, unit) in [
        ("inuse_space", IN_USE, "B"),
        ("inuse_objects", IN_USE_OBJECTS, ""),
        ("alloc_space", ALLOCATED, "B"),
        ("alloc_objects", ALLOCATIONS, ""),
    ] {
        let sample_index = format!("-sample_index={index}");
        let mut args = vec!["-top", sample_index.as_str()];
        if unit == "B" {
            args.push("-unit=byte");
        }
        let Some(top) = go_pprof(&args, &profile) else {
            return;
        };
        assert!(top.contains(&format!("Type: {index}")), "{top}");
        // By bytes it tops the profile; by count the test harness's many
        // small allocations may come first.
        let line = if unit == "B" {
            top_line(&top)
        } else {
            top.lines()
                .find(|line| line.ends_with(" std_export::hold_blocks"))
                .unwrap_or_else(|| panic!("{index}:\n{top}"))
                .split_whitespace()
                .collect()
        };
        assert_eq!(line[0], format!("{figure}{unit}"), "{index}:\n{top}");
        assert_eq!(line[5], "std_export::hold_blocks", "{index}:\n{top}");
    }

    // The default sample type is inuse_space; the stacks read as the
    // program's, its file and line named.
    let traces = go_pprof(&["-traces", "-unit=byte"], &profile).unwrap();
    assert!(traces.contains("Type: inuse_space"), "{traces}");
    let blocks_trace = traces
        .split("-----------+")
        .find(|trace| trace.contains(&format!("{}B   std_export::hold_blocks", BLOCKS * BLOCK)))
        .unwrap_or_else(|| panic!("no trace of the blocks in\n{traces}"));
    let frames: Vec<&str> = blocks_trace
        .lines()
        .skip(1)
        .filter_map(|line| line.split_whitespace().last())
        .collect();
    // The closure's name as the legacy demangler writes it, or as the v0
    // one does (a nightly toolchain's default).
    assert_eq!(frames[0], "std_export::hold_blocks", "{blocks_trace}");
    assert!(
        ["{{closure}}", "{closure#0}"]
            .map(|closure| format!("std_export::snapshot_holding_blocks::{closure}"))
            .contains(&frames[1].to_owned()),
        "{blocks_trace}"
    );
    let lines = go_pprof(&["-top", "-lines", "-unit=byte"], &profile).unwrap();
    let line = top_line(&lines);
    assert_eq!(line[0], format!("{}B", BLOCKS * BLOCK), "{lines}");
    assert!(
        line[6].ends_with(&format!("tests/std_export.rs:{BOX_LINE}")),
        "{lines}"
    );

    // Go's `allocs` profile: the same, alloc_space shown first.
    let allocs = path("exact-allocs.pb.gz");
    std::fs::write(&allocs, snapshot.pprof(SampleType::AllocSpace)).unwrap();
    let top = go_pprof(&["-top", "-unit=byte"], &allocs).unwrap();
    assert!(top.contains("Type: alloc_space"), "{top}");
    assert_eq!(top_line(&top)[0], format!("{ALLOCATED}B"), "{top}");

    flamegraphs_and_folded_stacks_name_the_allocating_function(&snapshot);
}

/// Folded stacks and flamegraphs of the snapshot `go_tool_pprof_...` read.
fn flamegraphs_and_folded_stacks_name_the_allocating_function(snapshot: &Snapshot) {
    for (value, figure) in [
        (SampleType::InuseSpace, IN_USE),
        (SampleType::AllocSpace, ALLOCATED),
        (SampleType::AllocObjects, ALLOCATIONS),
    ] {
        let folded = snapshot.folded(value);
        // Two stacks end in the function (the blocks, their vector); their
        // figures add up to what it did.
        let own: u64 = folded
            .lines()
            .filter_map(|line| line.rsplit_once(' '))
            .filter(|(stack, _)| stack.ends_with(";std_export::hold_blocks"))
            .map(|(_, figure)| figure.parse::<u64>().unwrap())
            .sum();
        assert_eq!(own, figure, "{value:?}:\n{folded}");
        // Outermost frame first.
        let line = folded
            .lines()
            .find(|line| line.contains("hold_blocks"))
            .unwrap();
        let frames: Vec<&str> = line.split(';').collect();
        assert!(
            frames
                .iter()
                .position(|f| f.contains("snapshot_holding_blocks"))
                < frames.iter().position(|f| f.contains("hold_blocks ")),
            "{line}"
        );

        let svg = snapshot.flamegraph(value);
        let document = roxmltree::Document::parse_with_options(
            &svg,
            roxmltree::ParsingOptions {
                allow_dtd: true,
                ..roxmltree::ParsingOptions::default()
            },
        )
        .expect("well-formed XML");
        assert_eq!(document.root_element().tag_name().name(), "svg");
        let titles: Vec<&str> = document
            .descendants()
            .filter(|node| node.has_tag_name("title"))
            .filter_map(|node| node.text())
            .collect();
        assert!(
            titles
                .iter()
                .any(|title| title.starts_with("std_export::hold_blocks (")),
            "{titles:?}"
        );
    }
}

/// Leaks 40 blocks of 700 bytes.
#[inline(never)]
fn leak_blocks() {
    for _ in 0..40 {
        black_box(Box::leak(Box::new([0u8; 700])));
    }
}

#[test]
fn snapshot_files_read_back_unchanged_and_diff_to_the_leak() {
    std::thread::Builder::new()
        .name("leaker".into())
        .spawn(|| {
            let earlier = Snapshot::take();
            leak_blocks();
            let later = Snapshot::take();
            let (earlier_file, later_file) = (path("earlier.json"), path("later.json"));
            earlier.write_to(&earlier_file).unwrap();
            later.write_to(&later_file).unwrap();

            // What was written reads back the same: the stacks resolved,
            // every figure kept.
            let mut resolved = later.clone();
            resolved.resolve();
            let read = Snapshot::read_from(&later_file).unwrap();
            assert_eq!(read, resolved);
            assert!(read.same_process(&later));
            assert_eq!(read.to_json().unwrap(), later.to_json().unwrap());

            // The diff of the files: exactly the leak at its callsite.
            let diff = read.diff(&Snapshot::read_from(&earlier_file).unwrap());
            let leaking = |change: &&alloc_track::CallsiteChange| {
                change.backtrace.innermost_function() == Some("std_export::leak_blocks")
            };
            let leak = diff.grew().find(leaking).expect("the leak grew");
            assert_eq!(leak.change.in_use_change, 40 * 700);
            assert_eq!(
                (leak.change.allocated, leak.change.allocations),
                (28_000, 40)
            );
            assert_eq!(leak.change.freed, 0);
            let leaker = diff.threads.iter().find(|t| t.name == "leaker").unwrap();
            assert!(leaker.change.in_use_change >= 28_000, "{diff}");

            // As another run would see them: matched by function, file and
            // line rather than by address.
            let json = std::fs::read_to_string(&earlier_file).unwrap();
            let other_run = json.replacen("\"process\":", "\"process\":1", 1);
            let other_run = Snapshot::from_json(&other_run).unwrap();
            assert!(!other_run.same_process(&read));
            let across = read.diff(&other_run);
            let leak = across.grew().find(leaking).expect("the leak grew");
            assert_eq!(leak.change.in_use_change, 28_000);
            assert!(across
                .callsites
                .iter()
                .all(|site| site.backtrace.kind == CallsiteKind::Tracker
                    || site.change.allocated
                        <= diff.callsites.iter().map(|s| s.change.allocated).sum()));

            // Not a snapshot: a clear error.
            let error = Snapshot::from_json("{\"format\":\"x\",\"version\":1}").unwrap_err();
            assert_eq!(error.kind(), std::io::ErrorKind::InvalidData);
        })
        .unwrap()
        .join()
        .unwrap();
}
