//! The workloads every benchmark binary runs, one binary per global
//! allocator (a program has exactly one), so that the bare allocator, this
//! tracker in each mode, the seed crate and dhat are measured by the same
//! code in the same run. `compare` runs them all and prints the ratios.
//!
//! Every allocation happens at least a dozen frames deep ([`deep`]), as in a
//! real program, so that callsite capture pays for a realistic stack.

use std::hint::black_box;
use std::sync::{mpsc, Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::Criterion;

/// What a variant can do besides allocating.
pub trait Variant {
    /// The name in the results: `system`, `ours-threads`, ...
    const NAME: &'static str;

    /// Called once before anything is measured.
    fn start() {}

    /// Takes a thread report and returns how many threads it lists, if the
    /// variant has thread reports.
    fn thread_report() -> Option<usize> {
        None
    }

    /// Takes a backtrace report of every callsite, resolved, and returns how
    /// many callsites it lists, if the variant has backtrace reports.
    fn backtrace_report() -> Option<usize> {
        None
    }

    /// The bytes of the tracker's own tables, if it has fixed ones.
    fn table_bytes() -> Option<usize> {
        None
    }
}

/// The frames every workload runs under.
pub const DEPTH: usize = 12;

/// Runs `work` `levels` frames further down the stack.
#[inline(never)]
pub fn deep<R>(levels: usize, work: &mut dyn FnMut() -> R) -> R {
    if levels == 0 {
        return work();
    }
    let result = deep(levels - 1, work);
    black_box(&result);
    result
}

/// A timed workload: runs `iters` operations and returns how long they took.
type Workload = fn(u64) -> Duration;

/// Workload 1: allocate and drop a 64-byte box.
fn box_churn(iters: u64) -> Duration {
    deep(DEPTH, &mut || {
        let start = Instant::now();
        for _ in 0..iters {
            black_box(Box::new([0u8; 64]));
        }
        start.elapsed()
    })
}

/// Workload 2: 64 live boxes, one replaced per iteration.
fn rotating(iters: u64) -> Duration {
    deep(DEPTH, &mut || {
        let mut live: Vec<Box<[u8; 64]>> = (0..64).map(|_| Box::new([0u8; 64])).collect();
        let start = Instant::now();
        for i in 0..iters {
            live[(i % 64) as usize] = black_box(Box::new([i as u8; 64]));
        }
        start.elapsed()
    })
}

/// Workload 3: workloads 1 and 2 on two threads at once; the time of the
/// slower thread per operation, i.e. the per-thread cost under contention.
fn two_threads(iters: u64) -> Duration {
    let barrier = Arc::new(Barrier::new(2));
    let run = |work: Workload| {
        let barrier = barrier.clone();
        std::thread::spawn(move || {
            barrier.wait();
            work(iters)
        })
    };
    let first = run(box_churn);
    let second = run(rotating);
    first.join().unwrap().max(second.join().unwrap())
}

/// Workload 4: one thread allocates 1 KiB buffers, another frees them.
fn cross_thread(iters: u64) -> Duration {
    let (sender, receiver) = mpsc::sync_channel::<Box<[u8; 1024]>>(256);
    let consumer = std::thread::spawn(move || receiver.iter().for_each(drop));
    let elapsed = deep(DEPTH, &mut || {
        let start = Instant::now();
        for _ in 0..iters {
            sender.send(Box::new([1u8; 1024])).unwrap();
        }
        start.elapsed()
    });
    drop(sender);
    consumer.join().unwrap();
    elapsed
}

/// Pushes per iteration of workload 5.
pub const PUSHES: u64 = 1_000_000;

/// Workload 5: push a million `u64` into a vector one by one (growth by
/// `realloc`).
fn pushes(iters: u64) -> Duration {
    deep(DEPTH, &mut || {
        let start = Instant::now();
        for _ in 0..iters {
            let mut numbers = Vec::new();
            for n in 0..PUSHES {
                numbers.push(n);
            }
            black_box(numbers);
        }
        start.elapsed()
    })
}

/// Workload 6: resident memory per live 64-byte block, over a million.
pub fn memory_per_allocation() -> f64 {
    const BLOCKS: usize = 1_000_000;
    let mut blocks: Vec<Box<[u8; 64]>> = Vec::with_capacity(BLOCKS);
    let before = resident_bytes();
    deep(DEPTH, &mut || {
        for _ in 0..BLOCKS {
            blocks.push(Box::new([1u8; 64]));
        }
    });
    let after = resident_bytes();
    black_box(&blocks);
    (after - before) as f64 / BLOCKS as f64
}

fn resident_bytes() -> i64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| {
            value
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<i64>()
                .ok()
        })
        .map_or(0, |kib| kib * 1024)
}

/// Blocks kept alive for the reports: each box is one allocation from its
/// own callsite, which is the point (hence boxes in a vector).
#[allow(clippy::vec_box)]
type Kept = Vec<Box<[u8; 32]>>;

/// Allocates one live block from the stack that `path` picks among
/// `2^levels`: one frame per level, `left` or `right`.
#[inline(always)]
fn branch(path: u32, levels: u32, keep: &mut Kept) {
    if levels == 0 {
        keep.push(Box::new([0u8; 32]));
    } else if path & 1 == 0 {
        left(path >> 1, levels - 1, keep);
    } else {
        right(path >> 1, levels - 1, keep);
    }
}

#[inline(never)]
fn left(path: u32, levels: u32, keep: &mut Kept) {
    branch(path, levels, keep);
    black_box(&keep);
}

#[inline(never)]
fn right(path: u32, levels: u32, keep: &mut Kept) {
    branch(path, levels, keep);
    black_box(&keep);
}

/// The function whose instructions `compare` counts under callgrind
/// (`--toggle-collect`): `pairs` allocations and frees of a 64-byte box, a
/// dozen frames deep, as workload 1 makes them.
#[inline(never)]
pub fn counted_pairs(pairs: u64) {
    deep(DEPTH, &mut || {
        for _ in 0..pairs {
            black_box(Box::new([0u8; 64]));
        }
    });
}

/// The function whose instructions `compare` counts for workload 2: `pairs`
/// replacements of one of 64 live 64-byte boxes (an allocation, not zeroed,
/// and the free of another block), a dozen frames deep.
#[inline(never)]
pub fn counted_replacements(pairs: u64) {
    deep(DEPTH, &mut || {
        let mut live: Vec<Box<[u8; 64]>> = (0..64).map(|_| Box::new([1u8; 64])).collect();
        for i in 0..pairs {
            live[(i % 64) as usize] = black_box(Box::new([i as u8; 64]));
        }
    });
}

/// The function whose instructions `compare` counts for the cost of a
/// callsite walk that the stack memo cannot spare: `pairs` allocations and
/// frees of a 64-byte box, as in [`counted_pairs`], from two stacks in turn
/// (two functions called from the same loop), so that no allocation's stack
/// is the one before it.
#[inline(never)]
pub fn counted_alternating(pairs: u64) {
    deep(DEPTH, &mut || {
        for pair in 0..pairs {
            if pair % 2 == 0 {
                one_box();
            } else {
                another_box();
            }
        }
    });
}

/// The function whose instructions `compare` counts for a stack memo that
/// keeps missing: as [`counted_alternating`], from three stacks in turn,
/// one more than the memo keeps.
#[inline(never)]
pub fn counted_rotating(pairs: u64) {
    deep(DEPTH, &mut || {
        for pair in 0..pairs {
            match pair % 3 {
                0 => one_box(),
                1 => another_box(),
                _ => a_third_box(),
            }
        }
    });
}

// These differ by the constant each passes on, so that the compiler does not
// fold them into one function (which would make their stacks one).
#[inline(never)]
fn one_box() {
    black_box((Box::new([0u8; 64]), 1));
}

#[inline(never)]
fn another_box() {
    black_box((Box::new([0u8; 64]), 2));
}

#[inline(never)]
fn a_third_box() {
    black_box((Box::new([0u8; 64]), 3));
}

/// Runs every workload of `V` under criterion; with
/// `ALLOC_TRACK_BENCH_MEMORY` set, prints workload 6's figure instead; with
/// `ALLOC_TRACK_BENCH_PAIRS=N`, only runs [`counted_pairs`] for callgrind,
/// or [`counted_replacements`] with `ALLOC_TRACK_BENCH_COUNTED=2`, or
/// [`counted_alternating`] with `ALLOC_TRACK_BENCH_COUNTED=3`, or
/// [`counted_rotating`] with `ALLOC_TRACK_BENCH_COUNTED=4`.
pub fn main<V: Variant>() {
    V::start();
    if std::env::var_os("ALLOC_TRACK_BENCH_MEMORY").is_some() {
        println!("memory {} {:.2}", V::NAME, memory_per_allocation());
        if let Some(bytes) = V::table_bytes() {
            println!("tables {bytes}");
        }
        return;
    }
    if let Some(pairs) = std::env::var("ALLOC_TRACK_BENCH_PAIRS")
        .ok()
        .and_then(|pairs| pairs.parse().ok())
    {
        // A warm-up that both counts take, so that first-call set-up (the
        // thread's row, the callsite's row, and in the sampling form the
        // thread's stack bounds, looked up at its first sample) cancels out
        // of their difference: 6.4 MB, past the first sample whatever the
        // seed.
        let counted = match std::env::var("ALLOC_TRACK_BENCH_COUNTED").as_deref() {
            Ok("2") => counted_replacements,
            Ok("3") => counted_alternating,
            Ok("4") => counted_rotating,
            _ => counted_pairs,
        };
        counted(100_000);
        counted(pairs);
        return;
    }
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20)
        .configure_from_args();
    let workloads: [(&str, Workload); 5] = [
        ("1-box-churn", box_churn),
        ("2-rotating-64", rotating),
        ("3-two-threads", two_threads),
        ("4-cross-thread", cross_thread),
        ("5-push-1m", pushes),
    ];
    for (name, workload) in workloads {
        criterion
            .benchmark_group(name)
            .bench_function(V::NAME, |bencher| bencher.iter_custom(workload));
    }
    if V::thread_report().is_some() {
        // 64 threads alive, each with something allocated.
        let parked = Arc::new(Barrier::new(65));
        let threads: Vec<_> = (0..64)
            .map(|_| {
                let parked = parked.clone();
                std::thread::spawn(move || {
                    let kept = black_box(vec![0u8; 100]);
                    parked.wait();
                    parked.wait();
                    drop(kept);
                })
            })
            .collect();
        parked.wait();
        criterion
            .benchmark_group("7-thread-report-64")
            .bench_function(V::NAME, |bencher| {
                bencher.iter(|| black_box(V::thread_report()))
            });
        parked.wait();
        threads
            .into_iter()
            .for_each(|thread| thread.join().unwrap());
    }
    // Room for every block up front: the vector's growth is not a callsite
    // of its own.
    let mut kept = Vec::with_capacity(1000);
    for path in 0..1000 {
        deep(2, &mut || branch(path, 10, &mut kept));
    }
    if let Some(listed) = V::backtrace_report() {
        assert!(listed >= 1000, "{} lists {listed} callsites", V::NAME);
        criterion
            .benchmark_group("7-backtrace-report-1000")
            .bench_function(V::NAME, |bencher| {
                bencher.iter(|| black_box(V::backtrace_report()))
            });
    }
    black_box(kept);
    criterion.final_summary();
}

pub mod floor;

/// Reports of this project's std adapter.
pub mod ours {
    /// The bytes of the std adapter's tables.
    pub fn table_bytes() -> Option<usize> {
        Some(alloc_track::table_bytes())
    }

    /// The thread report's length.
    pub fn thread_report() -> Option<usize> {
        Some(alloc_track::thread_report().0.len())
    }

    /// A resolved report of every callsite.
    pub fn backtrace_report() -> Option<usize> {
        Some(alloc_track::backtrace_report(|_, _| true).0.len())
    }
}

/// Reports of the seed crate.
pub mod seed_reports {
    /// The thread report's length.
    pub fn thread_report() -> Option<usize> {
        Some(seed::thread_report().0.len())
    }

    /// A resolved report of every callsite.
    pub fn backtrace_report() -> Option<usize> {
        Some(seed::backtrace_report(|_, _| true).0.len())
    }
}

/// Puts `text` in the document at `path` between the lines `<!-- NAME:
/// begin -->` and `<!-- NAME: end -->`, replacing what was there (the
/// latest run only: earlier runs are in the history), or appends the
/// section if the document has no such lines.
pub fn write_section(path: &std::path::Path, name: &str, text: &str) -> std::io::Result<()> {
    let begin = format!("<!-- {name}: begin -->");
    let end = format!("<!-- {name}: end -->");
    let document = std::fs::read_to_string(path).unwrap_or_default();
    let section = format!("{begin}\n{text}{end}");
    let document = match (document.find(&begin), document.find(&end)) {
        (Some(from), Some(to)) if from < to => format!(
            "{}{section}{}",
            &document[..from],
            &document[to + end.len()..]
        ),
        _ => format!("{document}\n{section}\n"),
    };
    std::fs::write(path, document)
}
