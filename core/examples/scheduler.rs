//! Firmware-style heap diagnostics on the desktop: a tiny cooperative
//! scheduler runs three tasks on one stack, the core tracker is the global
//! allocator, and the context is two words the scheduler updates. One task
//! leaks, one churns, one frees the others' buffers; the reports show which
//! is which.
//!
//! Run with `cargo run -p alloc-track-core --example scheduler`.

use std::alloc::System;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

use alloc_track_core::{Context, Order, Stack, TaskBucket, Tracker, Who};

/// The task the scheduler is running (0 while the scheduler itself runs).
static CURRENT_TASK: AtomicU64 = AtomicU64::new(0);
/// The top of the one stack every task runs on, set at start-up (firmware
/// takes it from the linker's `_stack_start`).
static STACK_TOP: AtomicUsize = AtomicUsize::new(0);

struct SchedulerContext;

impl Context for SchedulerContext {
    fn who(&self) -> Who {
        Who::Task(CURRENT_TASK.load(Relaxed))
    }

    fn stack(&self) -> Option<Stack> {
        let here = 0u8;
        // SAFETY: from a local of this call, which is below every frame the
        // walker will read, up to the top recorded in `main`: all of it is
        // the live part of this thread's stack.
        unsafe { Stack::new(&here as *const u8 as usize, STACK_TOP.load(Relaxed)) }
    }
}

/// 8 tasks, 32 callsites of 16 frames: about the size a firmware would use.
#[global_allocator]
static TRACKER: Tracker<System, SchedulerContext, 8, 32, 16> =
    Tracker::new(System, SchedulerContext);

const LEAKER: u64 = 1;
const CHURNER: u64 = 2;
const COLLECTOR: u64 = 3;

/// Keeps every 1 KiB buffer it receives: a leak.
#[inline(never)]
fn leaker(round: usize, kept: &mut Vec<Vec<u8>>, outbox: &mut Vec<Vec<u8>>) {
    let buffer = vec![round as u8; 1024];
    if round % 2 == 0 {
        kept.push(buffer);
    } else {
        outbox.push(buffer);
    }
}

/// Formats a short message a hundred times: many small, short-lived blocks.
#[inline(never)]
fn churner(round: usize) {
    for i in 0..100 {
        black_box(format!("message {round}.{i}"));
    }
}

/// Frees what the leaker handed over.
#[inline(never)]
fn collector(outbox: &mut Vec<Vec<u8>>) {
    outbox.clear();
}

fn main() {
    let top = 0u8;
    STACK_TOP.store(&top as *const u8 as usize, Relaxed);

    // The scheduler's own structures are allocated by task 0 before the
    // tasks start.
    let mut kept = Vec::with_capacity(64);
    let mut outbox = Vec::with_capacity(64);
    for round in 0..32 {
        CURRENT_TASK.store(LEAKER, Relaxed);
        leaker(round, &mut kept, &mut outbox);
        CURRENT_TASK.store(CHURNER, Relaxed);
        churner(round);
        CURRENT_TASK.store(COLLECTOR, Relaxed);
        collector(&mut outbox);
        CURRENT_TASK.store(0, Relaxed);
    }
    // The churner is done: its figures fold into the finished bucket.
    TRACKER.task_exit(CHURNER);

    println!(
        "the tracker's tables: {} bytes, inside the static\n",
        std::mem::size_of_val(&TRACKER)
    );
    println!("{}\n", TRACKER.task_report::<4>(Order::LiveBytes));
    println!("{}\n", TRACKER.callsite_report::<3>(Order::LiveBytes));
    println!("{}", TRACKER.callsite_report::<1>(Order::Churn));

    let leaked = TRACKER
        .task_report::<8>(Order::LiveBytes)
        .top
        .iter()
        .find(|row| row.id == LEAKER)
        .map(|row| row.figures.figures.live_bytes());
    assert_eq!(leaked, Some(16 * 1024), "the leaker keeps 16 buffers");
    let churned = TRACKER.task_bucket(TaskBucket::Finished).figures;
    assert_eq!(churned.allocations, 32 * 100);
    assert_eq!(churned.live_bytes(), 0);
    black_box(kept);
}
