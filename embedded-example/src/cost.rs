//! The cost of an allocation and its free, in instructions.
//!
//! QEMU implements no cycle counter (the DWT's stays at 0, and Cortex-M0
//! has none), but with `-icount` its virtual clock advances by a fixed
//! step per instruction, and SysTick counts that clock. The number of
//! instructions per SysTick tick then depends only on the machine's
//! clock, so it is measured here rather than assumed: a loop of a known
//! number of instructions is timed first. The runner passes
//! `-icount shift=0`; without it SysTick follows the host's real time and
//! the figures mean nothing (the firmware cannot tell the difference).

use core::alloc::{GlobalAlloc, Layout};
use core::hint::black_box;

use cortex_m::peripheral::syst::SystClkSource;
use cortex_m::peripheral::SYST;

/// SysTick's counter has 24 bits.
const COUNTER_MASK: u32 = 0x00ff_ffff;
/// Iterations of the calibration loop, two instructions each.
const CALIBRATION_ROUNDS: u32 = 200_000;
/// Allocation and free pairs per measurement.
const PAIRS: u32 = 1_000;

/// SysTick as a free-running counter of QEMU's instruction clock.
pub struct InstructionCounter {
    /// Held, so that nothing else reconfigures the counter meanwhile.
    _syst: SYST,
    /// Instructions per 1,024 ticks, from the calibration loop.
    per_1024_ticks: u64,
}

impl InstructionCounter {
    /// Starts SysTick counting the core clock without interrupts (its
    /// exception can still be pended by hand) and calibrates it.
    pub fn new(mut syst: SYST) -> Self {
        syst.disable_interrupt();
        syst.set_clock_source(SystClkSource::Core);
        syst.set_reload(COUNTER_MASK);
        syst.clear_current();
        syst.enable_counter();
        let mut counter = InstructionCounter {
            _syst: syst,
            per_1024_ticks: 0,
        };
        let ticks = counter.ticks(|| spin(CALIBRATION_ROUNDS));
        counter.per_1024_ticks =
            (2 * u64::from(CALIBRATION_ROUNDS) * 1024) / u64::from(ticks.max(1));
        counter
    }

    /// Ticks spent in `work`, which must take fewer than 2^24 of them.
    fn ticks(&mut self, work: impl FnOnce()) -> u32 {
        let start = SYST::get_current();
        work();
        let end = SYST::get_current();
        // The counter counts down and wraps from 0 to the reload value.
        start.wrapping_sub(end) & COUNTER_MASK
    }

    /// Instructions per allocation and free of `layout` through
    /// `allocator`, in tenths (the loop around them included, a handful
    /// of instructions).
    pub fn tenths_per_pair(&mut self, allocator: &dyn GlobalAlloc, layout: Layout) -> u32 {
        let ticks = self.ticks(|| {
            for _ in 0..PAIRS {
                // SAFETY: the layouts measured have a non-zero size; each
                // block is freed at once with the layout it was made with.
                unsafe { allocator.dealloc(black_box(allocator.alloc(layout)), layout) };
            }
        });
        let tenths = u64::from(ticks) * self.per_1024_ticks * 10 / 1024 / u64::from(PAIRS);
        u32::try_from(tenths).unwrap_or(u32::MAX)
    }
}

/// Runs `rounds` (at least 1) iterations of a two-instruction loop.
#[inline(never)]
fn spin(rounds: u32) {
    // SAFETY: counts a register down to zero; touches no memory and no
    // register but its own operand and the flags.
    unsafe {
        core::arch::asm!(
            "2:",
            "subs {0}, #1",
            "bne 2b",
            inout(reg) rounds => _,
            options(nomem, nostack),
        );
    }
}
