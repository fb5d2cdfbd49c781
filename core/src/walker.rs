//! The callsite walker: follows the chain of saved frame pointers up the
//! current stack and collects return addresses, without ever reading outside
//! the stack's bounds.
//!
//! Every frame record this walker knows stores the caller's frame pointer at
//! the frame pointer and the return address one word above it: x86-64 (`rbp`),
//! AArch64 (`x29`) and Thumb (`r7`). On other targets, and under Miri, no
//! frames are captured and allocations are counted as uncaptured.

use core::mem::size_of;

const WORD: usize = size_of::<usize>();

/// The bounds of a stack that may be read: every address in `low..high` is
/// mapped and readable for as long as the task runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stack {
    low: usize,
    high: usize,
}

impl Stack {
    /// Bounds from `low` (lowest address) to `high` (one past the highest).
    /// Returns `None` if they are empty.
    ///
    /// # Safety
    /// - Every address in `low..high` must be readable memory that stays
    ///   mapped while the tracker may walk it (normally: the running task's
    ///   own stack, from the current stack pointer or lower up to its top).
    pub const unsafe fn new(low: usize, high: usize) -> Option<Self> {
        if low < high {
            Some(Self { low, high })
        } else {
            None
        }
    }

    /// The lowest address of the stack.
    pub const fn low(&self) -> usize {
        self.low
    }

    /// One past the highest address of the stack.
    pub const fn high(&self) -> usize {
        self.high
    }

    /// Whether a whole frame record (two words) at `address` lies inside.
    fn holds_record(&self, address: usize) -> bool {
        address >= self.low
            && address % WORD == 0
            && self
                .high
                .checked_sub(2 * WORD)
                .is_some_and(|last| address <= last)
    }
}

/// The frame pointer of the function this is inlined into, or zero where the
/// walker does not know the target (and under Miri).
#[inline(always)]
pub fn frame_pointer() -> usize {
    #[cfg(all(not(miri), target_arch = "x86_64"))]
    {
        let fp: usize;
        // SAFETY: copies a register into a local; no memory is touched.
        unsafe {
            core::arch::asm!("mov {}, rbp", out(reg) fp, options(nomem, nostack, preserves_flags));
        }
        fp
    }
    #[cfg(all(not(miri), target_arch = "aarch64"))]
    {
        let fp: usize;
        // SAFETY: copies a register into a local; no memory is touched.
        unsafe {
            core::arch::asm!("mov {}, x29", out(reg) fp, options(nomem, nostack, preserves_flags));
        }
        fp
    }
    #[cfg(all(not(miri), target_arch = "arm"))]
    {
        let fp: usize;
        // SAFETY: copies a register into a local; no memory is touched.
        unsafe {
            core::arch::asm!("mov {}, r7", out(reg) fp, options(nomem, nostack, preserves_flags));
        }
        fp
    }
    #[cfg(any(
        miri,
        not(any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "arm"))
    ))]
    {
        0
    }
}

/// Follows the frame-pointer chain from `frame_pointer` and writes the return
/// addresses into `out`, innermost first. Returns how many were written.
///
/// Stops at the first frame pointer that is outside `stack`, misaligned or
/// not above the one before (the chain must strictly grow towards the top
/// of the stack), at a zero return address, or when `out` is full. It never
/// faults, whatever the registers hold: code built without frame pointers
/// only shortens or garbles the stack it reports.
pub fn walk(frame_pointer: usize, stack: Stack, out: &mut [usize]) -> usize {
    let mut fp = frame_pointer;
    let mut written = 0;
    for slot in out.iter_mut() {
        if !stack.holds_record(fp) {
            break;
        }
        // SAFETY: `fp` is word-aligned and the two words from `fp` lie inside
        // `stack`, which the context promised is readable (`Stack::new`).
        // The words are read as integers only; volatile because the frames
        // belong to functions that Rust does not know are being read.
        let (caller_fp, return_address) = unsafe {
            let record = fp as *const usize;
            (
                core::ptr::read_volatile(record),
                core::ptr::read_volatile(record.wrapping_add(1)),
            )
        };
        if return_address == 0 {
            break;
        }
        *slot = return_address;
        written += 1;
        if caller_fp <= fp {
            break;
        }
        fp = caller_fp;
    }
    written
}
