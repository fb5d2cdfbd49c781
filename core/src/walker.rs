//! The callsite walker: follows the chain of saved frame pointers up the
//! current stack and collects return addresses, without ever reading outside
//! the stack's bounds.
//!
//! Every frame record this walker knows stores the caller's frame pointer at
//! the frame pointer and the return address one word above it: x86-64 (`rbp`),
//! AArch64 (`x29`) and Thumb (`r7`). On other targets no frames are captured
//! and allocations are counted as uncaptured.
//!
//! Under Miri, which cannot read frames it did not create, a deterministic
//! stub stands in: `frame_pointer` is `#[track_caller]` and returns a value
//! made of the caller's source location, and `walk` records that one value
//! as the stack. Code that calls a `#[track_caller]` chain down to the
//! tracker then has one "callsite" per source line.

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
    #[inline]
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
/// walker does not know the target. Under Miri: the caller's source
/// location (see the module's docs).
#[inline(always)]
#[cfg_attr(miri, track_caller)]
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
    #[cfg(miri)]
    {
        // The location's value, not its address: Miri may make a new
        // location object for every call.
        let location = core::panic::Location::caller();
        let file = location
            .file()
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325u64, |hash, byte| {
                (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
            });
        (file ^ (u64::from(location.line()) << 20) ^ u64::from(location.column())) as usize | 1
    }
    #[cfg(all(
        not(miri),
        not(any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "arm"))
    ))]
    {
        0
    }
}

/// The current stack pointer: a lower bound of every frame a walk from here
/// reads. Where the register cannot be read, the address of a local, which
/// is the same under most builds (not with AddressSanitizer's fake stacks,
/// which move locals to the heap).
#[inline(always)]
pub fn stack_pointer() -> usize {
    #[cfg(all(not(miri), target_arch = "x86_64"))]
    {
        let sp: usize;
        // SAFETY: copies a register into a local; no memory is touched.
        unsafe {
            core::arch::asm!("mov {}, rsp", out(reg) sp, options(nomem, nostack, preserves_flags));
        }
        sp
    }
    #[cfg(all(not(miri), any(target_arch = "aarch64", target_arch = "arm")))]
    {
        let sp: usize;
        // SAFETY: copies a register into a local; no memory is touched.
        unsafe {
            core::arch::asm!("mov {}, sp", out(reg) sp, options(nomem, nostack, preserves_flags));
        }
        sp
    }
    #[cfg(any(
        miri,
        not(any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "arm"))
    ))]
    {
        let here = 0u8;
        core::hint::black_box(&here) as *const u8 as usize
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
    #[cfg(miri)]
    {
        let _ = stack;
        return match out.first_mut() {
            Some(slot) if frame_pointer != 0 => {
                *slot = frame_pointer;
                1
            }
            _ => 0,
        };
    }
    #[cfg(not(miri))]
    walk_records(frame_pointer, stack, out)
}

/// The walk itself; `walk` under Miri stands in with its stub.
#[cfg_attr(miri, allow(dead_code))]
fn walk_records(frame_pointer: usize, stack: Stack, out: &mut [usize]) -> usize {
    walk_records_seen(frame_pointer, stack, out, core::iter::repeat(()), |_, _| {}).0
}

/// [`walk_records`], telling `seen` the contents of every record it reads,
/// in order, each with the next item of `beside` (a walk reads no more
/// records than `beside` has items): what a [`StackMemo`](crate::StackMemo)
/// keeps. Returns how many return addresses it wrote and how many records
/// it read: one more than it wrote when the last record read ended the
/// walk with a zero return address.
#[inline(always)]
pub(crate) fn walk_records_seen<T>(
    frame_pointer: usize,
    stack: Stack,
    out: &mut [usize],
    beside: impl Iterator<Item = T>,
    mut seen: impl FnMut(T, FrameRecord),
) -> (usize, usize) {
    let mut fp = frame_pointer;
    let mut written = 0;
    for (slot, item) in out.iter_mut().zip(beside) {
        if !stack.holds_record(fp) {
            return (written, written);
        }
        // SAFETY: `fp` is word-aligned and the two words from `fp` lie inside
        // `stack` (`holds_record`), which the context promised is readable.
        let record = unsafe { FrameRecord::read(fp) };
        seen(item, record);
        if record.return_address == 0 {
            return (written, written + 1);
        }
        *slot = record.return_address;
        written += 1;
        if record.caller <= fp {
            break;
        }
        fp = record.caller;
    }
    (written, written)
}

/// The two words of a frame record: the caller's frame pointer and the
/// return address into the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FrameRecord {
    pub(crate) caller: usize,
    pub(crate) return_address: usize,
}

impl FrameRecord {
    /// The record at `address`.
    ///
    /// # Safety
    /// - `address` is word-aligned and the two words from it are readable.
    #[inline(always)]
    pub(crate) unsafe fn read(address: usize) -> Self {
        let record = address as *const usize;
        // SAFETY: the caller promised both words are aligned and readable.
        // They are read as integers only; volatile because the frames belong
        // to functions that Rust does not know are being read.
        unsafe {
            Self {
                caller: core::ptr::read_volatile(record),
                return_address: core::ptr::read_volatile(record.wrapping_add(1)),
            }
        }
    }
}

// These test the record walker itself, on a fake stack of the test's own
// memory, so they run under Miri too.
#[cfg(test)]
mod tests {
    use super::*;

    /// A fake stack of 16 words with frame records at words 2, 6 and 10.
    struct FakeStack {
        words: [usize; 16],
    }

    /// Makes a linked fake stack in place (its links are its own addresses,
    /// so it must not move afterwards).
    macro_rules! fake_stack {
        ($name:ident) => {
            let mut $name = FakeStack { words: [0; 16] };
            $name.words[2] = $name.address(6);
            $name.words[3] = 0x1111;
            $name.words[6] = $name.address(10);
            $name.words[7] = 0x2222;
            $name.words[10] = $name.address(14);
            $name.words[11] = 0x3333;
        };
    }

    impl FakeStack {
        fn address(&self, word: usize) -> usize {
            self.words.as_ptr() as usize + word * WORD
        }

        fn bounds(&self) -> Stack {
            // SAFETY: the array is readable and outlives every walk below.
            unsafe { Stack::new(self.address(0), self.address(16)) }.unwrap()
        }

        fn walk_from(&self, word: usize, out: &mut [usize]) -> usize {
            walk_records(self.address(word), self.bounds(), out)
        }
    }

    #[test]
    fn follows_the_chain_to_the_end() {
        fake_stack!(stack);
        let mut out = [0; 8];
        // The record at 14 has a zero return address, which ends the chain.
        assert_eq!(stack.walk_from(2, &mut out), 3);
        assert_eq!(out[..3], [0x1111, 0x2222, 0x3333]);
    }

    #[test]
    fn stops_when_the_output_is_full() {
        fake_stack!(stack);
        let mut out = [0; 2];
        assert_eq!(stack.walk_from(2, &mut out), 2);
        assert_eq!(out, [0x1111, 0x2222]);
    }

    #[test]
    fn stops_at_a_chain_that_does_not_grow() {
        fake_stack!(stack);
        stack.words[6] = stack.address(2); // points back down
        let mut out = [0; 8];
        assert_eq!(stack.walk_from(2, &mut out), 2);
        stack.words[6] = stack.address(6); // points at itself
        assert_eq!(stack.walk_from(2, &mut out), 2);
    }

    #[test]
    fn never_reads_outside_the_bounds_or_misaligned() {
        fake_stack!(stack);
        let mut out = [0; 8];
        // Start outside, misaligned, or with a record that crosses the top.
        assert_eq!(
            walk_records(stack.address(0) - WORD, stack.bounds(), &mut out),
            0
        );
        assert_eq!(
            walk_records(stack.address(2) + 1, stack.bounds(), &mut out),
            0
        );
        assert_eq!(stack.walk_from(15, &mut out), 0);
        assert_eq!(walk_records(0, stack.bounds(), &mut out), 0);
        // A link that leaves the stack, or is misaligned, ends the walk.
        stack.words[6] = stack.address(16);
        assert_eq!(stack.walk_from(2, &mut out), 2);
        stack.words[6] = stack.address(10) + 2;
        assert_eq!(stack.walk_from(2, &mut out), 2);
        stack.words[6] = usize::MAX - 3;
        assert_eq!(stack.walk_from(2, &mut out), 2);
    }

    #[test]
    fn empty_bounds_are_refused() {
        // SAFETY: nothing is read.
        unsafe {
            assert!(Stack::new(8, 8).is_none());
            assert!(Stack::new(16, 8).is_none());
        }
    }
}
