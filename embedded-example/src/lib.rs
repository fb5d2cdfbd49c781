//! What both firmwares share: the one main stack every task runs on, the
//! active exception, the verdict and exit through semihosting, the fault
//! and panic handlers, and the cost of an allocation counted in
//! instructions (SysTick under QEMU's `-icount`).
#![no_std]

pub mod cost;

use alloc_track_core::{Context, Ledger, MemoRecord, Order, Stack, StackMemo, Who};
// thumbv6m has no read-modify-write atomics: these come with interrupts
// masked.
use cortex_m_rt::{exception, ExceptionFrame};
use cortex_m_semihosting::debug;
use defmt_semihosting as _;
use portable_atomic::{AtomicU32, Ordering::Relaxed};

/// Task ids of exception handlers: this plus the exception number.
pub const EXCEPTION_TASKS: u64 = 0x100;

/// The exception being handled (the IPSR's number), 0 in thread mode.
#[inline]
pub fn active_exception() -> u32 {
    let ipsr: u32;
    // SAFETY: reads a status register into a local; no memory is touched.
    unsafe {
        core::arch::asm!("mrs {}, IPSR", out(reg) ipsr, options(nomem, nostack, preserves_flags));
    }
    ipsr & 0x1ff
}

/// The task id of the running exception handler, if one is running.
#[inline]
fn exception_task() -> Option<u64> {
    match active_exception() {
        0 => None,
        exception => Some(EXCEPTION_TASKS + u64::from(exception)),
    }
}

/// The main stack, from the stack pointer up to its top: every task and
/// handler of these firmwares runs on it.
#[inline]
fn main_stack() -> Option<Stack> {
    extern "C" {
        /// The top of the main stack, from cortex-m-rt's linker script.
        static _stack_start: u32;
    }
    let top = core::ptr::addr_of!(_stack_start) as usize;
    // SAFETY: from the stack pointer, below every frame the walker reads,
    // up to the top of the one stack all code runs on: RAM that is mapped
    // for the firmware's whole life.
    unsafe { Stack::new(alloc_track_core::stack_pointer(), top) }
}

/// Frame records the main stack's memo keeps: for each of its two stacks,
/// as many as both firmwares' callsites have frames (a ledger with more
/// does not use it).
const MEMO_RECORDS: usize = 2 * 16;

/// The main stack's memo of the last two stacks walked there, which every task and
/// handler shares, since they all run on that one stack: what the memo
/// compares is the stack's contents, whoever runs.
#[derive(Debug)]
struct MainStackMemo(StackMemo<[MemoRecord; MEMO_RECORDS]>);

// SAFETY: these firmwares run on one core, so two users of the memo never
// run at the same time: a handler that interrupts code using the memo runs
// to its end before that code resumes. The memo's busy flag, set before its
// records are read or written and cleared after, sends a handler that
// arrives meanwhile to a walk without the memo; one that arrives between
// the flag's test and its setting uses the memo and is done with it before
// the interrupted code goes on. So the records are only ever those of one
// walk, as `StackMemo` requires.
unsafe impl Sync for MainStackMemo {}

/// Who is running, for both firmwares: the active exception if any (as task
/// `EXCEPTION_TASKS` plus its number), else the task that `running` names
/// (0: none, the scheduler or executor itself), all on the one main stack.
#[derive(Debug)]
pub struct MainStackContext {
    running: &'static AtomicU32,
    memo: MainStackMemo,
}

impl MainStackContext {
    /// A context that reads the running task's id from `running`, which
    /// the scheduler (or the executor's hooks) keeps up to date.
    pub const fn new(running: &'static AtomicU32) -> Self {
        MainStackContext {
            running,
            memo: MainStackMemo(StackMemo::new()),
        }
    }
}

impl Context for MainStackContext {
    fn who(&self) -> Who {
        Who::Task(exception_task().unwrap_or_else(|| u64::from(self.running.load(Relaxed))))
    }

    fn stack(&self) -> Option<Stack> {
        main_stack()
    }

    fn with_stack_memo<R>(&self, visit: impl FnOnce(Option<(&StackMemo, Stack)>) -> R) -> R {
        let memo: &StackMemo = &self.memo.0;
        visit(main_stack().map(|stack| (memo, stack)))
    }
}

/// Logs the heap report in the lines the host tool reads: the tracker's
/// size (`tracker_bytes`, the whole static), every task row and bucket, the
/// totals, who freed whose blocks, and the callsites that hold the most.
pub fn log_report(ledger: &impl HeapLog, tracker_bytes: usize) {
    ledger.log_tasks(tracker_bytes);
    ledger.log_callsites();
    ledger.log_churn();
}

/// The parts of the heap report, each in a frame of its own (never
/// inlined): a report is large for the microbit's stack, and gone once its
/// part returns.
pub trait HeapLog {
    /// The tracker's size, the task rows and buckets, the totals, who freed
    /// whose blocks.
    fn log_tasks(&self, tracker_bytes: usize);
    /// The callsites holding the most, and the callsite buckets.
    fn log_callsites(&self);
    /// The callsite that churned the most.
    fn log_churn(&self);
}

impl<
        C: Context,
        const TASKS: usize,
        const SITES: usize,
        const DEPTH: usize,
        const PAIRS: usize,
        const SAMPLES: usize,
    > HeapLog for Ledger<C, TASKS, SITES, DEPTH, PAIRS, SAMPLES>
{
    #[inline(never)]
    fn log_tasks(&self, tracker_bytes: usize) {
        if self.sampling().is_some() {
            defmt::info!(
                "tracker RAM: {=usize} bytes of tables; no header on unsampled blocks",
                tracker_bytes
            );
        } else {
            defmt::info!(
                "tracker RAM: {=usize} bytes of tables; {=usize} bytes of header per block",
                tracker_bytes,
                alloc_track_core::HEADER_BYTES
            );
        }
        let tasks = self.task_report::<8>(Order::LiveBytes);
        for row in &tasks.top {
            defmt::info!("{}", row);
        }
        defmt::info!("finished: {}", tasks.finished);
        defmt::info!("overflow: {}", tasks.overflow);
        defmt::info!("unknown: {}", tasks.unknown);
        defmt::info!("{}", tasks.totals);
        self.for_each_cross_free(|pair| {
            defmt::info!(
                "freed across tasks: owner={} freer={} bytes={=u64} frees={=u64}",
                pair.owner,
                pair.freer,
                pair.bytes,
                pair.frees
            );
        });
    }

    #[inline(never)]
    fn log_callsites(&self) {
        let sites = self.callsite_report::<6>(Order::LiveBytes);
        for row in &sites.top {
            defmt::info!("{}", row);
        }
        defmt::info!("callsite overflow: {}", sites.overflow);
        defmt::info!("callsite uncaptured: {}", sites.uncaptured);
    }

    #[inline(never)]
    fn log_churn(&self) {
        let churn = self.callsite_report::<1>(Order::Churn);
        if let Some(row) = churn.top.first() {
            defmt::info!("churning {}", row);
        }
    }
}

/// Logs the verdict and ends the QEMU run with it as the exit code.
pub fn finish(pass: bool) -> ! {
    if pass {
        defmt::info!("verdict: pass");
        debug::exit(debug::EXIT_SUCCESS);
    } else {
        defmt::error!("verdict: fail");
        debug::exit(debug::EXIT_FAILURE);
    }
    halt()
}

/// A check of the firmware's own figures: a failed one is logged, and the
/// verdict remembers it.
#[derive(Debug)]
pub struct Checks {
    pass: bool,
}

impl Checks {
    /// No check has failed yet.
    pub const fn new() -> Self {
        Checks { pass: true }
    }

    /// Records one check.
    pub fn check(&mut self, ok: bool, what: &str) {
        if !ok {
            defmt::error!("check failed: {=str}", what);
            self.pass = false;
        }
    }

    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        self.pass
    }
}

impl Default for Checks {
    fn default() -> Self {
        Self::new()
    }
}

fn halt() -> ! {
    loop {
        cortex_m::asm::bkpt();
    }
}

#[exception]
unsafe fn HardFault(_frame: &ExceptionFrame) -> ! {
    defmt::error!("hard fault");
    debug::exit(debug::EXIT_FAILURE);
    halt()
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    defmt::error!("panic");
    debug::exit(debug::EXIT_FAILURE);
    halt()
}
