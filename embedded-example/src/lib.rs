//! What both firmwares share: the one main stack every task runs on, the
//! active exception, the verdict and exit through semihosting, the fault
//! and panic handlers, and the cost of an allocation counted in
//! instructions (SysTick under QEMU's `-icount`).
#![no_std]

pub mod cost;

use alloc_track_core::Stack;
use cortex_m_rt::{exception, ExceptionFrame};
use cortex_m_semihosting::debug;
use defmt_semihosting as _;

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
pub fn exception_task() -> Option<u64> {
    match active_exception() {
        0 => None,
        exception => Some(EXCEPTION_TASKS + u64::from(exception)),
    }
}

/// The main stack, from the stack pointer up to its top: every task and
/// handler of these firmwares runs on it.
#[inline]
pub fn main_stack() -> Option<Stack> {
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
