//! The stress workload that the exact and the sampled stress binaries
//! share: eight threads allocate, reallocate and free each other's blocks
//! for a bounded time, while another thread takes thread and backtrace
//! reports in a loop and threads are started and finished continuously.
//! Once they stop, every row is back where it started and every figure of
//! the workload's callsites adds up.

use std::collections::VecDeque;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use alloc_track::{BacktraceMetric, ThreadReport, REPORTS};

const WORKERS: usize = 8;
/// The most blocks the shared pool holds: past it, a worker that adds one
/// frees the oldest, most likely another worker's.
const POOL_CAP: usize = 4096;

static ALLOCATED: AtomicU64 = AtomicU64::new(0);
static GROWN: AtomicU64 = AtomicU64::new(0);

#[inline(never)]
fn make(size: usize) -> Vec<u8> {
    ALLOCATED.fetch_add(1, Relaxed);
    vec![size as u8; size]
}

#[inline(never)]
fn grow(block: &mut Vec<u8>) {
    GROWN.fetch_add(1, Relaxed);
    block.reserve_exact(block.capacity() + 16);
}

/// The figures of every callsite whose innermost own frame is `function`.
fn sites(function: &str) -> Vec<BacktraceMetric> {
    alloc_track::backtrace_report(|_, _| true)
        .0
        .into_iter()
        .filter(|(backtrace, _)| backtrace.innermost_function() == Some(function))
        .map(|(_, metric)| metric)
        .collect()
}

/// Live bytes by report row, the tracker's own row left out.
fn live_by_row(report: &ThreadReport) -> Vec<(String, u64)> {
    report
        .0
        .iter()
        .filter(|(name, _)| name.as_str() != REPORTS)
        .map(|(name, metric)| (name.clone(), metric.current_used))
        .filter(|&(_, live)| live > 0)
        .collect()
}

/// Runs the workload and checks it; the reports taken and the threads
/// started meanwhile. The figures are the tracker's: exact, or in the
/// sampling form estimates, whose samples' weights are taken off exactly
/// as they were put on, so that what adds up exactly in one form adds up
/// exactly in the other, dropped samples or not (they count in neither the
/// allocation nor the free).
pub fn everything_at_once() -> (u64, u64) {
    // Reports are the tracker's own memory, so keeping one costs the test
    // thread nothing.
    let at_start = alloc_track::thread_report();
    let seconds = std::env::var("ALLOC_TRACK_STRESS_SECONDS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(2);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    // Blocks any worker may take and free: a shared pool.
    let pool: Mutex<VecDeque<Vec<u8>>> = Mutex::new(VecDeque::new());
    let stop = AtomicBool::new(false);
    let (mut reports, mut started) = (0u64, 0u64);
    std::thread::scope(|scope| {
        let mut threads = Vec::with_capacity(WORKERS + 2);
        for worker in 0..WORKERS {
            let pool = &pool;
            threads.push(scope.spawn(move || {
                let mut mine: Vec<Vec<u8>> = Vec::with_capacity(64);
                let mut round = 0usize;
                while Instant::now() < deadline {
                    round += 1;
                    let size = 8 + (round * 7 + worker * 13) % 500;
                    let mut block = make(size);
                    if round % 3 == 0 {
                        grow(&mut block);
                    }
                    if round % 2 == 0 {
                        let oldest = {
                            let mut pool = pool.lock().unwrap();
                            pool.push_back(block);
                            if pool.len() > POOL_CAP {
                                pool.pop_front()
                            } else {
                                None
                            }
                        };
                        drop(oldest);
                    } else {
                        mine.push(block);
                    }
                    if mine.len() > 32 {
                        mine.clear();
                    }
                    if round % 4 == 0 {
                        // Someone else's block, most likely.
                        let taken = pool.lock().unwrap().pop_back();
                        drop(taken);
                    }
                }
            }));
        }
        let (stop, reports) = (&stop, &mut reports);
        threads.push(scope.spawn(move || {
            while !stop.load(Relaxed) {
                black_box(alloc_track::thread_report());
                black_box(alloc_track::backtrace_report(|_, m| m.in_use() > 4096));
                *reports += 1;
            }
        }));
        let started = &mut started;
        threads.push(scope.spawn(move || {
            while Instant::now() < deadline {
                std::thread::spawn(|| black_box(vec![0u8; 64]))
                    .join()
                    .unwrap();
                *started += 1;
            }
        }));
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        // Workers and the thread starter stop at the deadline; the reporter
        // stops once they have.
        std::thread::sleep(Duration::from_millis(50));
        stop.store(true, Relaxed);
        // Joined here, not left to the scope's end: that waits only until
        // each thread's closure has returned, and a thread goes on to run
        // its thread-local destructors, which free what the main thread
        // allocated for it (its `Thread` handle). A join waits for them.
        for thread in threads {
            thread.join().unwrap();
        }
    });
    drop(pool);
    assert!(reports > 0 && started > 0);
    // Everything the program allocated meanwhile is freed: every row is
    // back where it started, the finished threads' included. What the
    // reports keep is the tracker's, in its own row.
    let at_end = alloc_track::thread_report();
    assert_eq!(live_by_row(&at_end), live_by_row(&at_start));

    let made: Vec<_> = sites(concat!(module_path!(), "::make"));
    let grown: Vec<_> = sites(concat!(module_path!(), "::grow"));
    assert!(!made.is_empty() && !grown.is_empty());
    let allocations: u64 = made.iter().map(|m| m.allocations).sum();
    let frees: u64 = made.iter().map(|m| m.frees).sum();
    let in_use: u64 = made.iter().chain(&grown).map(BacktraceMetric::in_use).sum();
    // Every block made was counted once where it was made; each growth is a
    // free there (or at an earlier growth) and an allocation at `grow`.
    if alloc_track::sampling_interval().is_none() {
        assert_eq!(allocations, ALLOCATED.load(Relaxed));
        assert_eq!(
            grown.iter().map(|m| m.allocations).sum::<u64>(),
            GROWN.load(Relaxed)
        );
    }
    assert_eq!(frees, allocations, "every block made was freed or grown");
    assert_eq!(in_use, 0, "nothing is left");
    (reports, started)
}
