//! Heap diagnostics of async firmware: the tasks of an `embassy-executor`
//! all run on one stack, so the tracker learns which task is running from
//! the executor's trace hooks, which it calls as each poll begins and ends
//! (and as a task ends, which retires its row).
//!
//! Tasks: a leaker keeps 12 buffers of 100 bytes, a churner makes and
//! drops 300 blocks, a producer sends 4 batches of buffers over a channel
//! to a consumer that frees them, and a one-shot task allocates 3 blocks,
//! frees 2 and ends; the others stay alive, so that their rows are in the
//! report. Each yields to the others between allocations, so
//! their polls interleave. A reporter waits for them, then logs the heap
//! report, checks its figures and exits with the verdict.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::hint::black_box;
use core::mem::MaybeUninit;
use core::sync::atomic::Ordering::Relaxed;

use alloc_track_core::{CallsiteBucket, TaskBucket, Tracker};
use alloc_track_firmware::{finish, log_report, Checks, MainStackContext};
use embassy_executor::{SpawnError, SpawnToken, Spawner};
use embassy_futures::yield_now;
use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
use embassy_sync::channel::Channel;
use embedded_alloc::LlffHeap as Heap;
// thumbv6m has no read-modify-write atomics: these come with interrupts
// masked.
use portable_atomic::AtomicU32;

const LEAKED_BUFFERS: usize = 12;
const LEAKED_SIZE: usize = 100;
const CHURNS: usize = 300;
const BATCHES: usize = 4;
const BATCH: usize = 4;
const WORKERS: u32 = 5;

/// The task the executor is polling (its trace id), 0 between polls.
static POLLING: AtomicU32 = AtomicU32::new(0);
/// Workers that have done their work.
static DONE: AtomicU32 = AtomicU32::new(0);
/// The source line of the leaking allocation, for the host to check.
static LEAK_LINE: AtomicU32 = AtomicU32::new(0);
/// Task ids, as spawned, for the checks.
static LEAKER: AtomicU32 = AtomicU32::new(0);
static CHURNER: AtomicU32 = AtomicU32::new(0);
static PRODUCER: AtomicU32 = AtomicU32::new(0);
static CONSUMER: AtomicU32 = AtomicU32::new(0);

/// 8 tasks, 32 callsites of 16 frames, 8 (owner, freer) pairs.
#[global_allocator]
static TRACKER: Tracker<Heap, MainStackContext, 8, 32, 16, 8> =
    Tracker::new(Heap::empty(), MainStackContext::new(&POLLING));

#[cfg(not(small_ram))]
const HEAP_SIZE: usize = 16 * 1024;
#[cfg(small_ram)]
const HEAP_SIZE: usize = 4 * 1024;

// The executor's trace hooks (its `trace` feature): every one must exist.
// They run in the executor's loop, between polls, and must not allocate.

#[no_mangle]
fn _embassy_trace_task_exec_begin(_executor_id: u32, task_id: u32) {
    POLLING.store(task_id, Relaxed);
}

#[no_mangle]
fn _embassy_trace_task_exec_end(_executor_id: u32, _task_id: u32) {
    POLLING.store(0, Relaxed);
}

#[no_mangle]
fn _embassy_trace_task_end(_executor_id: u32, task_id: u32) {
    // Its figures fold into the finished bucket, and a task spawned later
    // at the same address gets a row of its own.
    TRACKER.task_exit(u64::from(task_id));
}

#[no_mangle]
fn _embassy_trace_poll_start(_executor_id: u32) {}

#[no_mangle]
fn _embassy_trace_task_new(_executor_id: u32, _task_id: u32) {}

#[no_mangle]
fn _embassy_trace_task_ready_begin(_executor_id: u32, _task_id: u32) {}

#[no_mangle]
fn _embassy_trace_executor_idle(_executor_id: u32) {}

/// Separate buffers handed between tasks: each box is one allocation whose
/// free crosses tasks, which is the point (hence boxes in a vector).
#[allow(clippy::vec_box)]
type Buffers = Vec<Box<[u8; 64]>>;

static HANDOVER: Channel<CriticalSectionRawMutex, Buffers, 1> = Channel::new();

/// Keeps every buffer it makes: a leak.
#[embassy_executor::task]
async fn leaker() {
    for _ in 0..LEAKED_BUFFERS {
        LEAK_LINE.store(line!() + 1, Relaxed);
        let buffer = Box::new([0x5au8; LEAKED_SIZE]);
        black_box(Box::leak(buffer));
        yield_now().await;
    }
    stay().await
}

/// Many short-lived blocks from one line: churn.
#[embassy_executor::task]
async fn churner() {
    for round in 0..CHURNS {
        black_box(Box::new([round as u8; 24]));
        if round % 10 == 0 {
            yield_now().await;
        }
    }
    stay().await
}

/// Batches of buffers for the consumer to free.
#[embassy_executor::task]
async fn producer() {
    for batch in 0..BATCHES {
        let buffers: Buffers = (0..BATCH)
            .map(|i| Box::new([(batch + i) as u8; 64]))
            .collect();
        HANDOVER.send(buffers).await;
    }
    stay().await
}

/// Frees what the producer sends.
#[embassy_executor::task]
async fn consumer() {
    for _ in 0..BATCHES {
        drop(black_box(HANDOVER.receive().await));
    }
    stay().await
}

/// Allocates three blocks, frees two and ends.
#[embassy_executor::task]
async fn one_shot() {
    let kept = Box::new([1u8; 40]);
    for _ in 0..2 {
        black_box(Box::new([2u8; 40]));
        yield_now().await;
    }
    black_box(Box::leak(kept));
    DONE.fetch_add(1, Relaxed);
}

/// Counts a worker done and keeps its task alive, so that its row is in
/// the report: a task that ends is retired into the finished bucket.
async fn stay() {
    DONE.fetch_add(1, Relaxed);
    core::future::pending::<()>().await
}

/// Waits for the workers, then reports and ends the run.
#[embassy_executor::task]
async fn reporter() {
    while DONE.load(Relaxed) < WORKERS {
        yield_now().await;
    }
    let mut checks = Checks::new();
    report(&mut checks);
    finish(checks.passed())
}

/// Spawns a task and logs its name beside its id, for the host tool.
fn start<S>(
    spawner: &Spawner,
    token: Result<SpawnToken<S>, SpawnError>,
    name: &str,
    id: Option<&AtomicU32>,
) -> bool {
    let Ok(token) = token else {
        defmt::error!("could not spawn {=str}", name);
        return false;
    };
    defmt::info!("task {=u32} is {=str}", token.id(), name);
    if let Some(id) = id {
        id.store(token.id(), Relaxed);
    }
    spawner.spawn(token);
    true
}

#[embassy_executor::main]
async fn main(spawner: Spawner) {
    static mut HEAP_MEMORY: [MaybeUninit<u8>; HEAP_SIZE] = [MaybeUninit::uninit(); HEAP_SIZE];
    // SAFETY: the heap is initialised once, here, before anything allocates;
    // nothing else names its memory.
    unsafe {
        TRACKER
            .inner()
            .init(core::ptr::addr_of_mut!(HEAP_MEMORY) as usize, HEAP_SIZE)
    };
    let spawned = start(&spawner, leaker(), "leaker", Some(&LEAKER))
        && start(&spawner, churner(), "churner", Some(&CHURNER))
        && start(&spawner, producer(), "producer", Some(&PRODUCER))
        && start(&spawner, consumer(), "consumer", Some(&CONSUMER))
        && start(&spawner, one_shot(), "one-shot", None)
        && start(&spawner, reporter(), "reporter", None);
    if !spawned {
        finish(false);
    }
}

/// Logs the heap report and checks the figures the tasks fix, to the byte.
fn report(checks: &mut Checks) {
    log_report(TRACKER.ledger(), core::mem::size_of_val(&TRACKER));
    defmt::info!("leak line: {=u32}", LEAK_LINE.load(Relaxed));

    let row = |id: &AtomicU32| TRACKER.task_figures(u64::from(id.load(Relaxed)));
    let leaked = (LEAKED_BUFFERS * LEAKED_SIZE) as u64;
    checks.check(
        row(&LEAKER).is_some_and(|f| {
            f.figures.live_bytes() == leaked && f.figures.allocations == LEAKED_BUFFERS as u64
        }),
        "the leaker holds exactly what it leaked",
    );
    checks.check(
        row(&CHURNER).is_some_and(|f| {
            f.figures.allocations == CHURNS as u64
                && f.figures.allocated_bytes == 24 * CHURNS as u64
                && f.figures.live_bytes() == 0
        }),
        "the churner made exactly 300 blocks of 24 bytes, all freed",
    );
    // Each batch: its buffers and the vector of their 4-byte pointers.
    let handed = (BATCHES * BATCH * 64 + BATCHES * BATCH * 4) as u64;
    checks.check(
        row(&PRODUCER).is_some_and(|f| {
            f.figures.allocated_bytes == handed
                && f.freed_by_others_bytes == handed
                && f.figures.live_bytes() == 0
        }),
        "the consumer freed every byte the producer made",
    );
    checks.check(
        row(&CONSUMER)
            .is_some_and(|f| f.freed_of_others_bytes == handed && f.figures.allocations == 0),
        "the consumer freed the producer's blocks and made none",
    );
    let finished = TRACKER.task_bucket(TaskBucket::Finished);
    checks.check(
        finished.figures.allocations == 3 && finished.figures.live_bytes() == 40,
        "the one-shot task's figures are in the finished bucket",
    );
    checks.check(
        TRACKER
            .task_bucket(TaskBucket::Overflow)
            .figures
            .allocations
            == 0
            && TRACKER
                .callsite_bucket(CallsiteBucket::Overflow)
                .allocations
                == 0,
        "nothing overflowed",
    );
    let mut leak_site = false;
    TRACKER.for_each_callsite(|site| leak_site |= site.figures.live_bytes() == leaked);
    checks.check(leak_site, "one callsite holds the leak");
}
