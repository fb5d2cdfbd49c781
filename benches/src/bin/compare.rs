//! Runs every benchmark binary (one per global allocator) in one go and
//! prints a table of time per operation and its ratio to the bare system
//! allocator, instructions per alloc+free pair (counted by callgrind, which
//! gives the same figure on a busy machine as on a quiet one), resident
//! memory per live allocation, and the std adapter's table memory.
//!
//! Workloads 1 to 3, whose ratios have targets, run in five rounds that take
//! every variant in turn, and each variant's time is the median of its
//! rounds.
//!
//! `cargo run -p alloc-track-bench --release --bin compare`; extra arguments
//! go to criterion (for instance `--measurement-time 5`). Without valgrind on
//! the machine the instruction row is left out. With `--write`, the table
//! replaces the latest one in BENCHMARKS.md and a summary of it the one in
//! the README.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Benchmark target and the name it reports under, baseline first, then
/// the reference wrappers that do the least a tracker must
/// (`alloc_track_bench::floor`).
const VARIANTS: [(&str, &str); 11] = [
    ("system", "system"),
    ("floor_count", "floor-count"),
    ("floor_refusals", "floor-refusals"),
    ("floor_header", "floor-header"),
    ("ours_off", "ours-off"),
    ("ours_threads", "ours-threads"),
    ("ours_callsites", "ours-callsites"),
    ("ours_sampled", "ours-sampled"),
    ("seed_none", "seed-none"),
    ("seed_short", "seed-short"),
    ("dhat", "dhat"),
];

/// Criterion group, what one iteration is, and how many operations it holds.
const WORKLOADS: [(&str, &str, f64); 7] = [
    ("1-box-churn", "1. alloc + free 64 B, ns", 1.0),
    ("2-rotating-64", "2. replace 1 of 64 live, ns", 1.0),
    (
        "3-two-threads",
        "3. 1 and 2 on two threads, ns per op per thread",
        1.0,
    ),
    (
        "4-cross-thread",
        "4. 1 KiB allocated here, freed there, ns",
        1.0,
    ),
    (
        "5-push-1m",
        "5. Vec::push of u64 (realloc growth), ns per push",
        1_000_000.0,
    ),
    (
        "7-thread-report-64",
        "7a. thread_report, 64 threads, µs",
        1_000.0,
    ),
    (
        "7-backtrace-report-1000",
        "7b. backtrace_report, 1,000 callsites, resolved, µs",
        1_000.0,
    ),
];

/// The counted workloads (`ALLOC_TRACK_BENCH_COUNTED`) and their rows:
/// workload 1's zeroed box, workload 2's replacement, which glibc serves
/// from its per-thread cache in far fewer instructions, and workload 1 from
/// two stacks in turn (the stack memo's second stack) and from three (one
/// more than it keeps, so every allocation is walked).
const COUNTED: [(&str, &str); 4] = [
    (
        "1",
        "1i. instructions per alloc + free of 64 B (workload 1)",
    ),
    ("2", "2i. instructions per replacement (workload 2)"),
    (
        "3",
        "1a. instructions per alloc + free of 64 B from two stacks in turn",
    ),
    (
        "4",
        "1b. instructions per alloc + free of 64 B from three stacks in turn",
    ),
];

/// The workloads whose ratios have targets, run again in rounds that take
/// every variant in turn: a variant's time is the median of its rounds, so
/// that a minute when the machine is busy moves one round of one variant,
/// not the ratio.
const ROUNDS: usize = 5;
const TARGETED: &str = "^(1-box-churn|2-rotating-64|3-two-threads)/";

fn main() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| manifest.join("../target"), PathBuf::from);
    let mut extra: Vec<String> = std::env::args().skip(1).collect();
    let write = extra.iter().any(|argument| argument == "--write");
    extra.retain(|argument| argument != "--write");

    let mut memory = BTreeMap::new();
    let mut instructions = BTreeMap::new();
    let mut tables = None;
    let mut rounds: BTreeMap<(&str, &str), Vec<f64>> = BTreeMap::new();
    for (bench, name) in VARIANTS {
        eprintln!("== {name}");
        run_criterion(bench, &extra);
        record_round(&target, name, &mut rounds);
        let output = Command::new(env!("CARGO"))
            .args(["bench", "-q", "-p", "alloc-track-bench", "--bench", bench])
            .env("ALLOC_TRACK_BENCH_MEMORY", "1")
            .output()
            .expect("cargo runs");
        let text = String::from_utf8_lossy(&output.stdout);
        if let Some(bytes) = text
            .lines()
            .find_map(|line| line.strip_prefix(&format!("memory {name} ")))
            .and_then(|value| value.trim().parse::<f64>().ok())
        {
            memory.insert(name, bytes);
        }
        if let Some(bytes) = text.lines().find_map(|line| line.strip_prefix("tables ")) {
            tables = Some(bytes.trim().to_owned());
        }
        for (row, _) in COUNTED {
            if let Some(count) = instructions_per_pair(bench, row) {
                instructions.insert((name, row), count);
            }
        }
    }

    for round in 2..=ROUNDS {
        for (bench, name) in VARIANTS {
            eprintln!("== {name}, round {round} of {ROUNDS} of workloads 1-3");
            let mut filtered = extra.clone();
            filtered.push(TARGETED.to_owned());
            run_criterion(bench, &filtered);
            record_round(&target, name, &mut rounds);
        }
    }

    let mut table = String::new();
    let _ = write!(table, "| workload |");
    for (_, name) in VARIANTS {
        let _ = write!(table, " {name} |");
    }
    let _ = write!(table, "\n|---|");
    for _ in VARIANTS {
        let _ = write!(table, "---|");
    }
    table.push('\n');
    for (group, label, per_iteration) in WORKLOADS {
        let times: Vec<Option<f64>> = VARIANTS
            .iter()
            .map(|(_, name)| {
                let time = match rounds.get(&(group, *name)) {
                    Some(times) => median(times),
                    None => mean_ns(&target, group, name),
                };
                time.map(|ns| ns / per_iteration)
            })
            .collect();
        let baseline = times[0];
        let _ = write!(table, "| {label} |");
        for time in &times {
            match (time, baseline) {
                (Some(time), Some(base)) => {
                    let _ = write!(table, " {} ({:.2}x) |", figure(*time), time / base);
                }
                (Some(time), None) => {
                    let _ = write!(table, " {} |", figure(*time));
                }
                (None, _) => table.push_str(" - |"),
            }
        }
        table.push('\n');
    }
    for (row, label) in COUNTED {
        let counts: BTreeMap<&str, f64> = instructions
            .iter()
            .filter(|((_, counted), _)| *counted == row)
            .map(|((name, _), count)| (*name, *count))
            .collect();
        if counts.is_empty() {
            continue;
        }
        let _ = write!(table, "| {label} |");
        let base = counts.get("system").copied();
        for (_, name) in VARIANTS {
            match (counts.get(name), base) {
                (Some(count), Some(base)) => {
                    let _ = write!(table, " {count:.0} ({:.2}x) |", count / base);
                }
                _ => table.push_str(" - |"),
            }
        }
        table.push('\n');
    }
    let _ = write!(
        table,
        "| 6. resident bytes per live 64 B block (over system) |"
    );
    let base = memory.get("system").copied();
    for (_, name) in VARIANTS {
        match (memory.get(name), base) {
            (Some(bytes), Some(base)) => {
                let _ = write!(table, " {bytes:.1} ({:+.1}) |", bytes - base);
            }
            _ => table.push_str(" - |"),
        }
    }
    table.push('\n');
    if let Some(bytes) = tables {
        let _ = writeln!(
            table,
            "\nThe std adapter's tables: {bytes} bytes of zeroed static memory \
             (`alloc_track::table_bytes()`), mapped by the system as rows are used."
        );
    }
    println!("{table}");
    let saved = target.join("criterion").join("alloc-track-table.md");
    if std::fs::write(&saved, &table).is_ok() {
        eprintln!("saved to {}", saved.display());
    }
    if write {
        let root = manifest.join("..");
        alloc_track_bench::write_section(&root.join("BENCHMARKS.md"), "compare", &table)
            .expect("BENCHMARKS.md is written");
        let summary = summary(&rounds, &target);
        alloc_track_bench::write_section(&root.join("README.md"), "summary", &summary)
            .expect("the README is written");
    }
}

/// The README's table: what the tracker costs per allocation in each form
/// and what a report takes, beside the seed crate and dhat, as ratios to
/// the system allocator in the same run.
fn summary(rounds: &BTreeMap<(&str, &str), Vec<f64>>, target: &Path) -> String {
    const COLUMNS: [(&str, &str); 5] = [
        ("ours-threads", "threads only"),
        ("ours-callsites", "threads and callsites"),
        ("ours-sampled", "sampled, 512 KiB"),
        ("seed-short", "`alloc-track` 0.4, backtraces"),
        ("dhat", "dhat 0.3"),
    ];
    let time = |group: &str, name: &str| -> Option<f64> {
        match rounds.get(&(group, name)) {
            Some(times) => median(times),
            None => mean_ns(target, group, name),
        }
    };
    let mut out = String::from("| |");
    for (_, heading) in COLUMNS {
        let _ = write!(out, " {heading} |");
    }
    out.push_str("\n|---|");
    for _ in COLUMNS {
        out.push_str("---|");
    }
    out.push('\n');
    for (group, label) in [
        (
            "1-box-churn",
            "allocate and free 64 B, time against the system allocator's",
        ),
        ("2-rotating-64", "replace one of 64 live blocks, the same"),
    ] {
        let _ = write!(out, "| {label} |");
        for (name, _) in COLUMNS {
            match (time(group, name), time(group, "system")) {
                (Some(time), Some(base)) => {
                    let _ = write!(out, " {:.2}x |", time / base);
                }
                _ => out.push_str(" - |"),
            }
        }
        out.push('\n');
    }
    out.push_str("| a backtrace report of 1,000 callsites, resolved |");
    for (name, _) in COLUMNS {
        match time("7-backtrace-report-1000", name) {
            Some(ns) if ns >= 1e9 => {
                let _ = write!(out, " {:.1} s |", ns / 1e9);
            }
            Some(ns) => {
                let _ = write!(out, " {:.1} ms |", ns / 1e6);
            }
            None => out.push_str(" - |"),
        }
    }
    out.push('\n');
    out
}

/// Runs `bench` under criterion with `arguments`; criterion's own report
/// goes to stderr, so that stdout is the table alone.
fn run_criterion(bench: &str, arguments: &[String]) {
    let to_stderr = std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map_or_else(|_| Stdio::null(), Stdio::from);
    let status = Command::new(env!("CARGO"))
        .args(["bench", "-p", "alloc-track-bench", "--bench", bench, "--"])
        .args(arguments)
        .stdout(to_stderr)
        .status()
        .expect("cargo runs");
    assert!(status.success(), "{bench} failed");
}

/// Adds the latest times of `name` in the targeted workloads to `rounds`.
fn record_round<'a>(
    target: &Path,
    name: &'a str,
    rounds: &mut BTreeMap<(&'static str, &'a str), Vec<f64>>,
) {
    for (group, _, _) in WORKLOADS.iter().take(3) {
        if let Some(time) = mean_ns(target, group, name) {
            rounds.entry((group, name)).or_default().push(time);
        }
    }
}

/// The middle value (the mean of the two middle ones for an even count).
fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    match sorted.len() {
        0 => None,
        n if n % 2 == 1 => sorted.get(middle).copied(),
        _ => Some((sorted.get(middle - 1)? + sorted.get(middle)?) / 2.0),
    }
}

/// Instructions per alloc+free pair of `bench` under callgrind, in the
/// counted workload `counted`: the count of its function at 20,000 pairs
/// less that at 10,000, over 10,000, so that start-up and the measuring
/// frame cancel out.
fn instructions_per_pair(bench: &str, counted: &str) -> Option<f64> {
    let function = match counted {
        "2" => "alloc_track_bench::counted_replacements",
        "3" => "alloc_track_bench::counted_alternating",
        "4" => "alloc_track_bench::counted_rotating",
        _ => "alloc_track_bench::counted_pairs",
    };
    let build = Command::new(env!("CARGO"))
        .args(["bench", "-q", "-p", "alloc-track-bench", "--bench", bench])
        .args(["--no-run", "--message-format=json"])
        .output()
        .ok()?;
    let executable = String::from_utf8_lossy(&build.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|message| {
            message["reason"] == "compiler-artifact" && message["target"]["name"] == bench
        })?["executable"]
        .as_str()?
        .to_owned();
    let count = |pairs: u64| -> Option<f64> {
        let run = Command::new("valgrind")
            .args(["--tool=callgrind", "--callgrind-out-file=/dev/null"])
            .arg(format!("--toggle-collect={function}"))
            .arg(&executable)
            .env("ALLOC_TRACK_BENCH_PAIRS", pairs.to_string())
            .env("ALLOC_TRACK_BENCH_COUNTED", counted)
            .output()
            .ok()?;
        String::from_utf8_lossy(&run.stderr)
            .lines()
            .find_map(|line| line.split("Collected :").nth(1))
            .and_then(|count| count.trim().replace(',', "").parse().ok())
    };
    Some((count(20_000)? - count(10_000)?) / 10_000.0)
}

/// Criterion's mean time per iteration for one group and variant, in ns.
fn mean_ns(target: &Path, group: &str, name: &str) -> Option<f64> {
    let path = target
        .join("criterion")
        .join(group)
        .join(name)
        .join("new")
        .join("estimates.json");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    json["mean"]["point_estimate"].as_f64()
}

fn figure(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}
