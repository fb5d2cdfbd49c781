//! Reference wrappers of the system allocator that do the least a tracker
//! of each kind must do, and nothing else: the floor under the tracker's
//! own ratios, measured by the same workloads in the same run.
//!
//! - [`Floor<COUNT>`](Floor): what the sampling form's unsampled
//!   allocation does at the least, a thread-local countdown to the next
//!   sample and a count of the thread's allocations, then a jump to the
//!   inner allocator; a free tests the block's address (the sampling
//!   form's test for a sampled block) and jumps to the inner free. A
//!   refused allocation stays counted: this floor is below what exact
//!   figures allow.
//! - [`Floor<REFUSALS>`](Floor): the same, with a refused allocation's
//!   count taken back, which needs the inner allocator's answer and so a
//!   call rather than a jump: the least that keeps a thread's allocated
//!   bytes and count exact.
//! - [`Floor<HEADER>`](Floor): what the exact form does at the least, in
//!   threads-only mode: an 8-byte header that names the allocating
//!   thread, written after the inner allocation (which is counted on the
//!   thread if it was made), and compared at the free with the freeing
//!   thread's own, which counts the free when they match.
//!
//! None of them reports anything, keeps a peak, or reads a configuration:
//! what they count is only there so that the work is done.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// The thread-local countdown and count of [`Floor<COUNT>`](Floor).
pub const COUNT: u8 = 0;
/// [`COUNT`], with refused allocations taken back.
pub const REFUSALS: u8 = 1;
/// The exact form's header and a thread's counts.
pub const HEADER: u8 = 2;

/// The mean distance between samples, as the benchmark's sampling form.
const INTERVAL: u64 = 512 * 1024;

/// The page offset of a sampled block (the sampling form's mark).
const MARK: usize = 16;

/// The header's size: a word, as the exact form's compact header.
const WORD: usize = 8;

thread_local! {
    /// Bytes left before the thread's next sample.
    static LEFT: Cell<u64> = const { Cell::new(INTERVAL) };
    /// The thread's allocations.
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
    /// Their bytes (counted with the header).
    static ALLOCATED: Cell<u64> = const { Cell::new(0) };
    /// The thread's frees of its own blocks, counted by the header.
    static FREES: Cell<u64> = const { Cell::new(0) };
    /// Their bytes.
    static FREED: Cell<u64> = const { Cell::new(0) };
    /// The header of the thread's blocks: its stack's address, unique
    /// among the threads alive.
    static OWN: Cell<u64> = const { Cell::new(0) };
}

/// What the slow paths saw, so that they are not optimised away.
static SLOW: AtomicU64 = AtomicU64::new(0);

/// The system allocator's block of `layout`, zeroed when `zeroed`.
///
/// # Safety
/// As for `GlobalAlloc::alloc`.
#[inline(always)]
unsafe fn system(zeroed: bool, layout: Layout) -> *mut u8 {
    // SAFETY: forwarded from our caller.
    unsafe {
        if zeroed {
            System.alloc_zeroed(layout)
        } else {
            System.alloc(layout)
        }
    }
}

/// A reference wrapper of the system allocator (see the module).
pub struct Floor<const KIND: u8>;

impl<const KIND: u8> Floor<KIND> {
    /// Counts an allocation of `size` bytes on the countdown; `false`,
    /// with nothing counted, when a sample point falls in it.
    #[inline(always)]
    fn count_down(size: u64) -> bool {
        let left = LEFT.get();
        if size >= left {
            return false;
        }
        LEFT.set(left - size);
        ALLOCATIONS.set(ALLOCATIONS.get() + 1);
        true
    }

    /// An allocation in which a sample point fell: counted, the countdown
    /// started again, and the block allocated (zeroed when `zeroed`), out
    /// of line, as a tracker's sample would be.
    ///
    /// # Safety
    /// As for `GlobalAlloc::alloc`.
    #[cold]
    #[inline(never)]
    unsafe fn sample(layout: Layout, zeroed: bool) -> *mut u8 {
        SLOW.fetch_add(layout.size() as u64, Relaxed);
        LEFT.set(INTERVAL);
        ALLOCATIONS.set(ALLOCATIONS.get() + 1);
        // SAFETY: forwarded from our caller.
        let block = unsafe { system(zeroed, layout) };
        if block.is_null() {
            ALLOCATIONS.set(ALLOCATIONS.get().wrapping_sub(1));
        }
        block
    }

    /// Takes back the count of an allocation of `size` bytes that the
    /// system allocator refused.
    #[cold]
    #[inline(never)]
    fn refused(size: u64) {
        LEFT.set(LEFT.get().saturating_add(size));
        ALLOCATIONS.set(ALLOCATIONS.get().wrapping_sub(1));
    }

    /// A free the fast test could not place, out of line.
    ///
    /// # Safety
    /// `block` and `layout` are a block of the system allocator's.
    #[cold]
    #[inline(never)]
    unsafe fn slow_free(block: *mut u8, layout: Layout) {
        SLOW.fetch_add(block as u64, Relaxed);
        // SAFETY: as our caller says.
        unsafe { System.dealloc(block, layout) }
    }

    /// The thread's header, made at its first allocation.
    #[inline(always)]
    fn own() -> u64 {
        let own = OWN.get();
        if own != 0 {
            return own;
        }
        Self::first_own()
    }

    #[cold]
    #[inline(never)]
    fn first_own() -> u64 {
        let stack = 0u8;
        let own = std::ptr::from_ref(&stack) as u64 | 1;
        OWN.set(own);
        own
    }

    /// The header's place before a block of `layout`, and the inner
    /// block's layout.
    #[inline(always)]
    fn placed(layout: Layout) -> Option<(usize, Layout)> {
        let offset = layout.align().max(WORD);
        // One comparison, as a tracker's own placement makes: rounded up
        // to its alignment, a size within this bound stays a layout's.
        // (`offset` is at most 2^62 for a layout of a non-zero size.)
        if layout.size() > (isize::MAX as usize).saturating_sub(2 * offset) {
            return None;
        }
        // SAFETY: the alignment is the caller's, a power of two, and the
        // size rounded up to it is at most `size + offset + align - 1`,
        // within `isize::MAX` by the test above (`offset >= align`).
        let inner =
            unsafe { Layout::from_size_align_unchecked(layout.size() + offset, layout.align()) };
        Some((offset, inner))
    }

    /// The counted allocation of the header floor: the header written and
    /// the allocation counted if the inner allocator made the block.
    ///
    /// # Safety
    /// As for `GlobalAlloc::alloc`.
    #[inline(always)]
    unsafe fn with_header(layout: Layout, zeroed: bool) -> *mut u8 {
        let Some((offset, inner)) = Self::placed(layout) else {
            return std::ptr::null_mut();
        };
        // SAFETY: `inner` has a non-zero size (at least the header).
        let base = unsafe { system(zeroed, inner) };
        if base.is_null() {
            return base;
        }
        ALLOCATIONS.set(ALLOCATIONS.get() + 1);
        ALLOCATED.set(ALLOCATED.get() + layout.size() as u64);
        // SAFETY: the block holds `offset` bytes before the user's, and
        // `offset` is a multiple of the word's alignment.
        unsafe {
            let block = base.add(offset);
            block.sub(WORD).cast::<u64>().write(Self::own());
            block
        }
    }

    /// `alloc`, or `alloc_zeroed` when `zeroed`.
    ///
    /// # Safety
    /// As for `GlobalAlloc::alloc`.
    #[inline(always)]
    unsafe fn allocate(layout: Layout, zeroed: bool) -> *mut u8 {
        if KIND == HEADER {
            // SAFETY: forwarded from our caller.
            return unsafe { Self::with_header(layout, zeroed) };
        }
        let size = layout.size() as u64;
        if !Self::count_down(size) {
            // SAFETY: forwarded from our caller.
            return unsafe { Self::sample(layout, zeroed) };
        }
        // SAFETY: forwarded from our caller.
        let block = unsafe { system(zeroed, layout) };
        if KIND == REFUSALS && block.is_null() {
            Self::refused(size);
        }
        block
    }
}

// SAFETY: every block is the system allocator's, with the caller's layout
// (`COUNT`, `REFUSALS`) or with the header's words before it and the
// layout `placed` gives (`HEADER`), and is freed and reallocated the same
// way.
unsafe impl<const KIND: u8> GlobalAlloc for Floor<KIND> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded from our caller.
        unsafe { Self::allocate(layout, false) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded from our caller.
        unsafe { Self::allocate(layout, true) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if KIND == HEADER {
            let offset = layout.align().max(WORD);
            // SAFETY: `ptr` came from `with_header` with this layout, so
            // the header's word and the inner block start before it.
            unsafe {
                let inner =
                    Layout::from_size_align_unchecked(layout.size() + offset, layout.align());
                if ptr.sub(WORD).cast::<u64>().read() != OWN.get() {
                    return Self::slow_free(ptr.sub(offset), inner);
                }
                FREES.set(FREES.get() + 1);
                FREED.set(FREED.get() + layout.size() as u64);
                return System.dealloc(ptr.sub(offset), inner);
            }
        }
        // SAFETY: the block is the system allocator's, with this layout.
        unsafe {
            if ptr as usize % 4096 == MARK {
                return Self::slow_free(ptr, layout);
            }
            System.dealloc(ptr, layout)
        }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if KIND == HEADER {
            let offset = layout.align().max(WORD);
            // The bound `placed` keeps, so that the inner block's new size
            // stays a layout's.
            if new_size > (isize::MAX as usize).saturating_sub(2 * offset) {
                return std::ptr::null_mut();
            }
            // SAFETY: as in `dealloc`; the header's words move with the
            // contents, and the new inner size is within the bound above.
            return unsafe {
                let inner =
                    Layout::from_size_align_unchecked(layout.size() + offset, layout.align());
                let base = System.realloc(ptr.sub(offset), inner, new_size + offset);
                if base.is_null() {
                    return base;
                }
                ALLOCATIONS.set(ALLOCATIONS.get() + 1);
                ALLOCATED.set(ALLOCATED.get() + new_size as u64);
                base.add(offset)
            };
        }
        let size = new_size as u64;
        if !Self::count_down(size) {
            // The sample's own handling is left out: the countdown starts
            // again, as after a sample.
            LEFT.set(INTERVAL);
            ALLOCATIONS.set(ALLOCATIONS.get() + 1);
        }
        // SAFETY: forwarded from our caller.
        let block = unsafe { System.realloc(ptr, layout, new_size) };
        if KIND == REFUSALS && block.is_null() {
            Self::refused(size);
        }
        block
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The figures the wrappers keep for the current thread.
    fn counts() -> [u64; 5] {
        [
            LEFT.get(),
            ALLOCATIONS.get(),
            ALLOCATED.get(),
            FREES.get(),
            FREED.get(),
        ]
    }

    #[test]
    fn the_header_floor_counts_its_thread_and_keeps_the_contents() {
        let floor = Floor::<HEADER>;
        let before = counts();
        let layouts = [(24, 1), (100, 8), (48, 16), (8, 64)];
        // SAFETY: non-zero sizes; each block is written within its size,
        // reallocated and freed once with the layout it has then.
        unsafe {
            let blocks: Vec<_> = layouts
                .iter()
                .map(|&(size, align)| {
                    let layout = Layout::from_size_align(size, align).unwrap();
                    let block = floor.alloc(layout);
                    assert!(!block.is_null());
                    assert_eq!(block as usize % align, 0);
                    block.write_bytes(0xa5, size);
                    (block, layout)
                })
                .collect();
            let (grown, layout) = blocks[1];
            let grown = floor.realloc(grown, layout, 4000);
            assert!(std::slice::from_raw_parts(grown, 100)
                .iter()
                .all(|&byte| byte == 0xa5));
            let grown_layout = Layout::from_size_align(4000, 8).unwrap();
            for (index, &(block, layout)) in blocks.iter().enumerate() {
                if index == 1 {
                    floor.dealloc(grown, grown_layout);
                } else {
                    floor.dealloc(block, layout);
                }
            }
        }
        let after = counts();
        // Five allocations (the reallocation counts as one) of 24 + 100 +
        // 48 + 8 + 4000 bytes; four frees of 24 + 48 + 8 + 4000.
        assert_eq!(after[1] - before[1], 5);
        assert_eq!(after[2] - before[2], 4180);
        assert_eq!(after[3] - before[3], 4);
        assert_eq!(after[4] - before[4], 4080);
    }

    #[test]
    fn a_block_from_another_thread_is_not_counted_as_the_freeing_threads() {
        let floor = Floor::<HEADER>;
        let layout = Layout::from_size_align(32, 8).unwrap();
        // SAFETY: a non-zero size.
        let block = unsafe { floor.alloc(layout) } as usize;
        std::thread::spawn(move || {
            // Its own block first, so that the thread has a header.
            // SAFETY: a non-zero size; both blocks are freed once with
            // their layout.
            unsafe {
                let own = floor.alloc(layout);
                floor.dealloc(own, layout);
                let before = counts();
                floor.dealloc(block as *mut u8, layout);
                assert_eq!(counts(), before);
            }
        })
        .join()
        .unwrap();
    }

    #[test]
    fn the_count_floors_count_down_and_count_allocations() {
        fn check<const KIND: u8>() {
            let floor = Floor::<KIND>;
            let before = counts();
            let layout = Layout::from_size_align(1000, 8).unwrap();
            // SAFETY: a non-zero size, freed once with its layout.
            unsafe {
                let block = floor.alloc_zeroed(layout);
                assert!(!block.is_null());
                assert!(std::slice::from_raw_parts(block, 1000)
                    .iter()
                    .all(|&byte| byte == 0));
                floor.dealloc(block, layout);
            }
            let after = counts();
            assert_eq!(after[1] - before[1], 1);
            assert_eq!(before[0] - after[0], 1000);
        }
        check::<COUNT>();
        check::<REFUSALS>();
    }

    #[test]
    fn a_sample_point_starts_the_countdown_again() {
        let floor = Floor::<COUNT>;
        let small = Layout::from_size_align(1000, 8).unwrap();
        let large = Layout::from_size_align(INTERVAL as usize, 8).unwrap();
        let before = counts();
        // SAFETY: non-zero sizes, each freed once with its layout.
        unsafe {
            for layout in [small, large] {
                let block = floor.alloc(layout);
                assert!(!block.is_null());
                floor.dealloc(block, layout);
            }
        }
        let after = counts();
        assert_eq!(before[0], INTERVAL);
        assert_eq!(after[0], INTERVAL);
        assert_eq!(after[1] - before[1], 2);
    }
}
