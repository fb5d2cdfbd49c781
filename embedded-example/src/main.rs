//! Firmware heap diagnostics: the core tracker wraps an embedded heap as the
//! global allocator; a tiny scheduler runs four tasks and an interrupt
//! handler allocates too; the firmware then logs its heap report over defmt,
//! checks the figures it knows to expect, and exits with its verdict.
//!
//! Tasks: 1 leaks 16 buffers of 100 bytes, 2 churns through 500 short-lived
//! blocks, 3 produces 8 buffers that 4 frees, and SysTick (task
//! `EXCEPTION_TASKS + 15`) allocates and frees from interrupt context.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::hint::black_box;
use core::mem::MaybeUninit;
use core::sync::atomic::Ordering::Relaxed;

use alloc_track_core::{Mode, TaskBucket, Tracker};
use alloc_track_firmware::cost::InstructionCounter;
use alloc_track_firmware::{finish, log_report, Checks, MainStackContext, EXCEPTION_TASKS};
use cortex_m::peripheral::SCB;
use cortex_m_rt::{entry, exception};
use embedded_alloc::LlffHeap as Heap;
// thumbv6m has no read-modify-write atomics: these come with interrupts
// masked.
use portable_atomic::AtomicU32;

const LEAKER: u32 = 1;
const CHURNER: u32 = 2;
const PRODUCER: u32 = 3;
const CONSUMER: u32 = 4;

const LEAKED_BUFFERS: usize = 16;
const LEAKED_SIZE: usize = 100;
const CHURNS: usize = 500;
const HANDED_OVER: usize = 8;

/// The task the scheduler runs now (0: the scheduler itself).
static CURRENT_TASK: AtomicU32 = AtomicU32::new(0);
/// SysTick handler runs.
static TICKS: AtomicU32 = AtomicU32::new(0);
/// The source line of the leaking allocation, for the host to check.
static LEAK_LINE: AtomicU32 = AtomicU32::new(0);

/// Return addresses kept per callsite.
const DEPTH: usize = 16;
/// Callsite rows: 32, or 16 for the sampling form on the microbit, whose 16
/// KiB of RAM hold the tables, the heap and a stack the reports need some
/// 4 KiB of (the workload makes 5 callsites).
#[cfg(any(not(small_ram), not(feature = "sampling")))]
const SITES: usize = 32;
#[cfg(all(small_ram, feature = "sampling"))]
const SITES: usize = 16;

/// 8 tasks, 32 callsites of 16 frames, 8 (owner, freer) pairs.
#[cfg(not(feature = "sampling"))]
#[global_allocator]
static TRACKER: Tracker<Heap, MainStackContext, 8, SITES, DEPTH, 8> =
    Tracker::new(Heap::empty(), MainStackContext::new(&CURRENT_TASK));

/// The sampling form (feature `sampling`): one sample per
/// `SAMPLING_INTERVAL` bytes on average, 32 live samples at most, no header
/// on unsampled blocks. The sampling sequence is seeded the same way every
/// run, so the estimates the checks see are the same every run.
#[cfg(feature = "sampling")]
#[global_allocator]
static TRACKER: Tracker<Heap, MainStackContext, 8, SITES, DEPTH, 8, 32> =
    Tracker::new(Heap::empty(), MainStackContext::new(&CURRENT_TASK))
        .with_sampling(SAMPLING_INTERVAL);

#[cfg(feature = "sampling")]
const SAMPLING_INTERVAL: u64 = 256;

#[cfg(not(small_ram))]
const HEAP_SIZE: usize = 32 * 1024;
// The microbit has 16 KiB of RAM: the tracker's tables, this heap, and a
// stack that the reports need a few KiB of. With a 6 KiB heap the stack grew
// into the statics below it during the report, silently.
#[cfg(all(small_ram, not(feature = "sampling")))]
const HEAP_SIZE: usize = 4 * 1024;
#[cfg(all(small_ram, feature = "sampling"))]
const HEAP_SIZE: usize = 5 * 1024;

fn run_as(task: u32, work: impl FnOnce()) {
    CURRENT_TASK.store(task, Relaxed);
    work();
    CURRENT_TASK.store(0, Relaxed);
}

/// Keeps every buffer it makes: a leak.
#[inline(never)]
fn leaker() {
    for _ in 0..LEAKED_BUFFERS {
        LEAK_LINE.store(line!() + 1, Relaxed);
        let buffer = Box::new([0x5au8; LEAKED_SIZE]);
        black_box(Box::leak(buffer));
    }
}

/// Many short-lived blocks from one line: churn.
#[inline(never)]
fn churner() {
    for round in 0..CHURNS {
        black_box(Box::new([round as u8; 24]));
    }
}

/// Separate buffers handed between tasks: each box is one allocation whose
/// free crosses tasks, which is the point (hence boxes in a vector).
#[allow(clippy::vec_box)]
type Buffers = Vec<Box<[u8; 64]>>;

/// Buffers for another task to free.
#[inline(never)]
fn producer() -> Buffers {
    (0..HANDED_OVER).map(|i| Box::new([i as u8; 64])).collect()
}

#[inline(never)]
fn consumer(buffers: Buffers) {
    drop(buffers);
}

#[exception]
fn SysTick() {
    black_box(Box::new([0u8; 16]));
    TICKS.fetch_add(1, Relaxed);
}

#[entry]
fn main() -> ! {
    static mut HEAP_MEMORY: [MaybeUninit<u8>; HEAP_SIZE] = [MaybeUninit::uninit(); HEAP_SIZE];
    // SAFETY: the heap is initialised once, before the first allocation,
    // with memory that `entry` gives this function alone.
    unsafe {
        TRACKER
            .inner()
            .init(HEAP_MEMORY.as_mut_ptr() as usize, HEAP_SIZE)
    };

    run_as(LEAKER, leaker);
    run_as(CHURNER, churner);
    TRACKER.task_exit(u64::from(CHURNER));
    let mut handed = None;
    run_as(PRODUCER, || handed = Some(producer()));
    run_as(CONSUMER, || consumer(handed.take().unwrap_or_default()));
    for _ in 0..3 {
        // Interrupts are enabled: the pended SysTick runs at once.
        SCB::set_pendst();
        cortex_m::asm::isb();
    }

    let mut checks = Checks::new();
    report(&mut checks);
    if let Some(peripherals) = cortex_m::Peripherals::take() {
        measure_cost(InstructionCounter::new(peripherals.SYST));
    }
    finish(checks.passed())
}

/// Logs the instructions an allocation and free of 32 bytes take on the
/// bare heap and through the tracker in each of its modes (the sampling
/// form in its one mode), after the report so that its blocks stay out
/// of it.
fn measure_cost(mut counter: InstructionCounter) {
    let layout = core::alloc::Layout::new::<[u8; 32]>();
    let bare = counter.tenths_per_pair(TRACKER.inner(), layout);
    #[cfg(not(feature = "sampling"))]
    for (mode, name) in [
        (Mode::Off, "off"),
        (Mode::Tasks, "tasks"),
        (Mode::TasksAndCallsites, "callsites"),
    ] {
        TRACKER.set_mode(mode);
        let tracked = counter.tenths_per_pair(&TRACKER, layout);
        log_cost(name, tracked, bare);
    }
    #[cfg(feature = "sampling")]
    {
        TRACKER.set_mode(Mode::TasksAndCallsites);
        let tracked = counter.tenths_per_pair(&TRACKER, layout);
        log_cost("sampled", tracked, bare);
    }
}

fn log_cost(mode: &str, tracked: u32, bare: u32) {
    defmt::info!(
        "instructions per alloc+free of 32 bytes: mode={=str} tracked={=u32}.{=u32} bare={=u32}.{=u32} ratio={=u32}.{=u32:02}",
        mode,
        tracked / 10,
        tracked % 10,
        bare / 10,
        bare % 10,
        tracked * 100 / bare.max(1) / 100,
        tracked * 100 / bare.max(1) % 100,
    );
}

/// Logs the heap report and checks the figures the workload fixes.
fn report(checks: &mut Checks) {
    // Names for the host tool's report.
    for (task, name) in [
        (LEAKER, "leaker"),
        (CHURNER, "churner"),
        (PRODUCER, "producer"),
        (CONSUMER, "consumer"),
    ] {
        defmt::info!("task {=u32} is {=str}", task, name);
    }
    defmt::info!("task {=u64} is SysTick", EXCEPTION_TASKS + 15);
    log_report(TRACKER.ledger(), core::mem::size_of_val(&TRACKER));
    let leaked = (LEAKED_BUFFERS * LEAKED_SIZE) as u64;
    let mut leak_site = None;
    TRACKER.for_each_callsite(|row| {
        if row.figures.live_bytes() == leaked {
            leak_site = Some(*row);
        }
    });
    if let Some(row) = &leak_site {
        defmt::info!("leaking {}", row);
    }
    defmt::info!("leak line: {=u32}", LEAK_LINE.load(Relaxed));

    #[cfg(feature = "sampling")]
    check_sampled(checks);
    #[cfg(not(feature = "sampling"))]
    check_exact(leak_site.is_some(), checks);
}

/// The exact form's checks: the figures the workload fixes, to the byte.
#[cfg(not(feature = "sampling"))]
fn check_exact(leak_site_found: bool, checks: &mut Checks) {
    let leaked = (LEAKED_BUFFERS * LEAKED_SIZE) as u64;
    let task = |id: u32| TRACKER.task_figures(u64::from(id));
    checks.check(
        task(LEAKER).is_some_and(|f| f.figures.live_bytes() == leaked),
        "the leaker's live bytes are what it leaked",
    );
    checks.check(leak_site_found, "one callsite holds the leak");
    checks.check(
        TRACKER
            .callsite_report::<1>(alloc_track_core::Order::Churn)
            .top
            .first()
            .is_some_and(|row| row.figures.allocations == CHURNS as u64),
        "the churning callsite made exactly 500 allocations",
    );
    let finished = TRACKER.task_bucket(TaskBucket::Finished);
    checks.check(
        finished.figures.allocations == CHURNS as u64 && finished.figures.live_bytes() == 0,
        "the churner's figures are in the finished bucket",
    );
    let handler = TRACKER.task_figures(EXCEPTION_TASKS + 15);
    checks.check(
        handler.is_some_and(|f| f.figures.allocations == u64::from(TICKS.load(Relaxed)))
            && TICKS.load(Relaxed) == 3,
        "SysTick allocated once per run, as its own task",
    );
    checks.check(
        task(PRODUCER).is_some_and(|f| {
            f.freed_by_others_bytes == (HANDED_OVER * 64 + HANDED_OVER * 4) as u64
        }),
        "the producer's buffers (and their vector) were freed by the consumer",
    );
    checks.check(
        TRACKER
            .task_bucket(TaskBucket::Overflow)
            .figures
            .allocations
            == 0
            && TRACKER
                .callsite_bucket(alloc_track_core::CallsiteBucket::Overflow)
                .allocations
                == 0,
        "nothing overflowed",
    );
    checks.check(
        TRACKER.totals().damaged_headers == 0,
        "no header was damaged",
    );
}

/// The sampling form's checks: what each task allocated is exact, the rest
/// are estimates near the truth.
#[cfg(feature = "sampling")]
fn check_sampled(checks: &mut Checks) {
    let totals = TRACKER.totals();
    defmt::info!(
        "form: sampled, one sample per {=u64} bytes on average; {=u64} samples dropped",
        SAMPLING_INTERVAL,
        totals.dropped_samples
    );
    let leaked = (LEAKED_BUFFERS * LEAKED_SIZE) as u64;
    let leaker = TRACKER.task_figures(u64::from(LEAKER));
    if let Some(figures) = leaker {
        let exact = figures.exact_allocations.unwrap_or_default();
        defmt::info!(
            "leaker allocated exactly {=u64} bytes in {=u64} allocations; live estimated {=u64}",
            exact.bytes,
            exact.count,
            figures.figures.live_bytes()
        );
    }
    checks.check(
        totals.sampling == Some(SAMPLING_INTERVAL),
        "the report says it is sampled",
    );
    checks.check(totals.dropped_samples == 0, "no sample was dropped");
    checks.check(
        leaker.is_some_and(|figures| {
            let exact = figures.exact_allocations.unwrap_or_default();
            exact.bytes == leaked && exact.count == LEAKED_BUFFERS as u64
        }),
        "the leaker's allocations are exact",
    );
    checks.check(
        leaker.is_some_and(|figures| {
            let live = figures.figures.live_bytes();
            live > leaked / 2 && live < leaked * 3 / 2
        }),
        "the leaker's live bytes are estimated within half",
    );
    let finished = TRACKER.task_bucket(TaskBucket::Finished);
    checks.check(
        finished
            .exact_allocations
            .is_some_and(|exact| exact.count == CHURNS as u64 && exact.bytes == 24 * CHURNS as u64),
        "the churner's allocations, exact, are in the finished bucket",
    );
}
