//! `Short` under every debug-info level a release build may use: `full`,
//! `limited`, `line-tables-only` (where inlined functions lose their module
//! paths) and none (function names from the symbol table, no file or line).
//! Each level builds `tests/debuginfo-probe` with a profile of the
//! workspace's and checks what its short backtrace shows of a callsite in
//! the program's own `impl Clone`: the program's frames, in order, and
//! nothing of the standard library's or the runtime's.

use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Builds the probe with `profile` and returns what it printed.
fn run_probe(profile: &str) -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // A target directory of its own, so that this never waits for the build
    // running the tests.
    let target = workspace().join("target").join("debuginfo-levels");
    let status = Command::new(&cargo)
        .current_dir(workspace())
        .args([
            "build",
            "--quiet",
            "-p",
            "alloc-track-debuginfo-probe",
            "--profile",
        ])
        .arg(profile)
        .arg("--target-dir")
        .arg(&target)
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building the probe with {profile}");
    let output = Command::new(target.join(profile).join("alloc-track-debuginfo-probe"))
        .output()
        .expect("the probe runs");
    assert!(output.status.success(), "the probe failed under {profile}");
    String::from_utf8(output.stdout).unwrap()
}

struct Frame {
    origin: String,
    name: String,
    file: String,
    line: u32,
}

fn check(profile: &str, has_files: bool) {
    let output = run_probe(profile);
    let mut lines = output.lines();
    let clone_line: u32 = lines
        .next()
        .and_then(|line| line.strip_prefix("clone-line "))
        .unwrap()
        .parse()
        .unwrap();
    let entries: Vec<&str> = output.lines().filter(|l| l.starts_with("entry ")).collect();
    assert_eq!(entries.len(), 1, "{profile}:\n{output}");
    let frames: Vec<Frame> = output
        .lines()
        .filter_map(|line| line.strip_prefix("frame "))
        .map(|line| {
            let parts: Vec<&str> = line.split('|').collect();
            Frame {
                origin: parts[0].into(),
                name: parts[1].into(),
                file: parts[2].into(),
                line: parts[3].parse().unwrap(),
            }
        })
        .collect();
    // Ten clones from one line.
    let innermost = entries[0].strip_prefix("entry 10 ").unwrap_or_else(|| {
        panic!("{profile}: the entry is not the ten clones:\n{output}");
    });
    // With its path at every level: with line tables only, the debug info
    // names a function without it, and the symbol table's name is taken.
    assert_eq!(
        innermost, "<alloc_track_debuginfo_probe::Catalog as core::clone::Clone>::clone",
        "{profile}: innermost function"
    );
    // The program's frames only, innermost first: clone, serve (its closure
    // where debug info keeps inlined calls), main, and nothing above.
    assert!(
        frames.iter().all(|frame| frame.origin == "Program"),
        "{profile}:\n{output}"
    );
    assert!(frames.len() <= 5, "{profile}:\n{output}");
    assert_eq!(frames[0].name, innermost);
    assert!(
        frames
            .iter()
            .any(|f| f.name == "alloc_track_debuginfo_probe::serve"),
        "{profile}:\n{output}"
    );
    assert_eq!(
        frames.last().unwrap().name,
        "alloc_track_debuginfo_probe::main",
        "{profile}:\n{output}"
    );
    if has_files {
        assert!(
            frames[0].file.ends_with("debuginfo-probe/src/main.rs"),
            "{profile}"
        );
        assert_eq!(frames[0].line, clone_line, "{profile}");
        assert!(frames.iter().all(|f| f.file.ends_with("main.rs")));
    } else {
        assert!(frames.iter().all(|f| f.file == "-" && f.line == 0));
    }
}

#[test]
fn short_backtraces_at_every_debug_info_level() {
    check("debuginfo-full", true);
    check("debuginfo-limited", true);
    check("debuginfo-line-tables-only", true);
    check("debuginfo-none", false);
}
