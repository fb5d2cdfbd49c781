//! The tool on an ELF the test builds: this test binary itself. A log names
//! a return address taken inside this file (moved to the ELF's own address
//! space); the tool's report resolves it to the calling function, file and
//! line, and the figures of the log's tasks come through by name.

use std::path::PathBuf;
use std::process::Command;

use alloc_track_core::{frame_pointer, stack_pointer, walk, Stack};

/// The return address of this call: an address in `caller`, on the line
/// that calls.
#[inline(never)]
fn return_address() -> usize {
    let (_, high) = alloc_track::thread_stack().expect("the thread's stack");
    // SAFETY: from this frame's stack pointer to the top of the running
    // thread's own stack: mapped and readable while this function runs.
    let stack = unsafe { Stack::new(stack_pointer(), high) }.unwrap();
    let mut frames = [0usize; 1];
    assert_eq!(walk(frame_pointer(), stack, &mut frames), 1);
    frames[0]
}

#[inline(never)]
fn caller() -> (usize, u32) {
    let line = line!() + 1;
    let address = std::hint::black_box(return_address());
    (address, line)
}

/// Where this binary's image starts in memory: its first mapping, at file
/// offset 0 (a position-independent executable's addresses count from it).
fn load_base() -> usize {
    let exe = std::env::current_exe().unwrap();
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    maps.lines()
        .find(|line| {
            line.ends_with(exe.to_str().unwrap())
                && line.split_whitespace().nth(2) == Some("00000000")
        })
        .and_then(|line| line.split('-').next())
        .map(|start| usize::from_str_radix(start, 16).unwrap())
        .expect("the executable's first mapping")
}

#[test]
fn the_report_resolves_the_elfs_return_addresses() {
    let (address, line) = caller();
    let address = address - load_base();
    let log = format!(
        "\
INFO  task 1 is parser
INFO  task 1: live=300 peak=400 allocated=900 allocations=9 freed=600 frees=6 freed_by_others=0 freed_of_others=0
INFO  callsite live=300 peak=400 allocated=900 allocations=9 freed=600 frees=6: frames=[{address:#x}]
INFO  verdict: pass
"
    );
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let log_path = dir.join("resolve.log");
    std::fs::write(&log_path, log).unwrap();
    let profile = dir.join("resolve.pb.gz");
    let tasks = dir.join("resolve-tasks.csv");
    let output = Command::new(env!("CARGO_BIN_EXE_alloc-track-firmware-report"))
        .arg("--elf")
        .arg(std::env::current_exe().unwrap())
        .arg(&log_path)
        .arg("--pprof")
        .arg(&profile)
        .arg("--tasks-csv")
        .arg(&tasks)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("parser (task 1):\ntotal_alloc: 900 B"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "  resolve::caller\n      at firmware-report/tests/resolve.rs:{line}"
        )) || stdout.contains(&format!(
            "  resolve::caller\n      at tests/resolve.rs:{line}"
        )),
        "{stdout}"
    );
    assert!(std::fs::metadata(&profile).unwrap().len() > 0);
    // The task's figures to the byte, under its name.
    let csv = std::fs::read_to_string(&tasks).unwrap();
    assert_eq!(
        csv.lines().nth(1),
        Some("parser (task 1),900,600,600,300,9,6,400,0,,1,,,"),
        "{csv}"
    );
}
