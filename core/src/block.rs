//! Where a block's header goes, and what the inner allocator is asked for.
//!
//! Every block the tracker hands out carries a 16-byte header that names the
//! task row (with its generation) and the callsite row that allocated it, so
//! a free is credited in O(1) with no map of live pointers. The header's
//! place depends only on the caller's `Layout`, which the caller passes again
//! to `dealloc` and `realloc`, never on the tracker's mode:
//!
//! - alignment up to 16: the header is a prefix. The inner block is 16 bytes
//!   larger and the caller's pointer is 16 bytes into it, which keeps every
//!   alignment up to 16.
//! - larger alignment: the header is a trailer after the caller's bytes
//!   (rounded up to 4). The caller's pointer is the inner block's start, so
//!   a page-aligned block costs 16 to 19 bytes rather than a page.

use core::alloc::Layout;
use core::mem::{align_of, size_of};

use crate::task::Ticket;

/// Bytes the tracker adds to every block whose alignment is 16 or less. A
/// block with a larger alignment costs this plus at most 3 bytes of padding.
pub const HEADER_BYTES: usize = size_of::<Header>();

/// The largest alignment for which the header is a prefix.
const PREFIX_MAX_ALIGN: usize = HEADER_BYTES;

/// Mixed into `check` so that a header overwritten with zeros or with user
/// data is recognised.
const CHECK_SEED: u32 = 0xa110_c7ac;

/// What the tracker writes beside each block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub(crate) struct Header {
    task_index: u32,
    task_generation: u32,
    site: u32,
    check: u32,
}

const _: () = assert!(size_of::<Header>() == 16 && align_of::<Header>() == 4);

impl Header {
    pub(crate) const fn new(task: Ticket, site: u32) -> Self {
        Self {
            task_index: task.index,
            task_generation: task.generation,
            site,
            check: Self::check_of(task.index, task.generation, site),
        }
    }

    const fn check_of(index: u32, generation: u32, site: u32) -> u32 {
        CHECK_SEED ^ index ^ generation.rotate_left(11) ^ site.rotate_left(22)
    }

    /// The task ticket and callsite, or `None` if the header was damaged.
    pub(crate) const fn decode(&self) -> Option<(Ticket, u32)> {
        if self.check == Self::check_of(self.task_index, self.task_generation, self.site) {
            Some((
                Ticket {
                    index: self.task_index,
                    generation: self.task_generation,
                },
                self.site,
            ))
        } else {
            None
        }
    }
}

/// The inner block for one caller's layout and where things are in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Placement {
    /// What the inner allocator is asked for.
    pub(crate) inner: Layout,
    /// From the inner block's start to the caller's pointer.
    pub(crate) user_offset: usize,
    /// From the inner block's start to the header.
    pub(crate) header_offset: usize,
}

impl Placement {
    /// The placement for `layout`, or `None` if the enlarged block would not
    /// be a valid layout (the caller then gets a null pointer).
    #[inline]
    pub(crate) fn of(layout: Layout) -> Option<Self> {
        if layout.align() <= PREFIX_MAX_ALIGN {
            let align = layout.align().max(align_of::<Header>());
            let size = layout.size().checked_add(HEADER_BYTES)?;
            Some(Self {
                inner: Layout::from_size_align(size, align).ok()?,
                user_offset: HEADER_BYTES,
                header_offset: 0,
            })
        } else {
            let header_offset = layout
                .size()
                .checked_next_multiple_of(align_of::<Header>())?;
            let size = header_offset.checked_add(HEADER_BYTES)?;
            Some(Self {
                inner: Layout::from_size_align(size, layout.align()).ok()?,
                user_offset: 0,
                header_offset,
            })
        }
    }

    /// Writes `header` into the inner block at `base`.
    ///
    /// # Safety
    /// - `base` must point to a live inner block allocated (or reallocated)
    ///   with `self.inner`.
    #[inline]
    pub(crate) unsafe fn write_header(&self, base: *mut u8, header: Header) {
        // SAFETY: `header_offset + HEADER_BYTES <= inner.size()` by
        // construction, the block is live (caller's duty), and the offset is
        // a multiple of 4 from a base aligned to at least 4, which is the
        // header's alignment.
        unsafe { base.add(self.header_offset).cast::<Header>().write(header) }
    }

    /// Reads the header of the inner block at `base`.
    ///
    /// # Safety
    /// - `base` must point to a live inner block allocated (or reallocated)
    ///   with `self.inner`, whose header was written by `write_header`.
    #[inline]
    pub(crate) unsafe fn read_header(&self, base: *const u8) -> Header {
        // SAFETY: as in `write_header`; the header was initialised when the
        // block was handed out.
        unsafe { base.add(self.header_offset).cast::<Header>().read() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placement(size: usize, align: usize) -> Placement {
        Placement::of(Layout::from_size_align(size, align).unwrap()).unwrap()
    }

    #[test]
    fn small_alignments_get_a_prefix() {
        for align in [1, 2, 4, 8, 16] {
            let p = placement(24, align);
            assert_eq!((p.user_offset, p.header_offset), (16, 0));
            assert_eq!(p.inner.size(), 24 + HEADER_BYTES);
            assert_eq!(p.inner.align(), align.max(4));
            assert_eq!(p.user_offset % align, 0);
        }
    }

    #[test]
    fn large_alignments_get_a_trailer() {
        for (size, header_offset) in [(1, 4), (4, 4), (4095, 4096), (4096, 4096)] {
            let p = placement(size, 4096);
            assert_eq!((p.user_offset, p.header_offset), (0, header_offset));
            assert_eq!(p.inner.size(), header_offset + HEADER_BYTES);
            assert_eq!(p.inner.align(), 4096);
        }
        assert_eq!(placement(100, 32).inner.size(), 116);
    }

    #[test]
    fn sizes_near_the_limit_are_refused() {
        let top = isize::MAX as usize;
        assert!(Placement::of(Layout::from_size_align(top - 8, 8).unwrap()).is_none());
        assert!(Placement::of(Layout::from_size_align(top - 64, 64).unwrap()).is_none());
        assert!(Placement::of(Layout::from_size_align(top - 64, 8).unwrap()).is_some());
    }

    #[test]
    fn headers_round_trip_and_damage_is_seen() {
        let ticket = Ticket {
            index: 5,
            generation: 9,
        };
        let header = Header::new(ticket, 77);
        assert_eq!(header.decode(), Some((ticket, 77)));
        let mut damaged = header;
        damaged.site = 78;
        assert_eq!(damaged.decode(), None);
        let zeros = Header {
            task_index: 0,
            task_generation: 0,
            site: 0,
            check: 0,
        };
        assert_eq!(zeros.decode(), None);
    }
}
