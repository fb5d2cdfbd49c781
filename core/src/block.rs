//! Where a block's header goes, and what the inner allocator is asked for.
//!
//! Every block the tracker hands out carries an 8-byte header that names the
//! task row (with its generation) and the callsite row that allocated it, so
//! a free is credited in O(1) with no map of live pointers. The header's
//! place depends only on the caller's `Layout`, which the caller passes again
//! to `dealloc` and `realloc`, never on the tracker's mode:
//!
//! - alignment up to 8: the header is an 8-byte prefix; the caller's pointer
//!   is 8 bytes into the inner block. A 64-byte request becomes 72 bytes,
//!   which most allocators serve from the same size class as 64.
//! - alignment 16: a 16-byte prefix (the header in its second half), so the
//!   caller's pointer keeps its alignment.
//! - larger alignment: the header is a trailer after the caller's bytes
//!   (rounded up to 8). The caller's pointer is the inner block's start, so
//!   a page-aligned block costs 8 to 15 bytes rather than a page.

use core::alloc::Layout;

use crate::party::Ticket;

/// Bytes the tracker adds to a block whose alignment is 8 or less: the
/// header. Alignment 16 costs twice that; larger alignments this plus at
/// most 7 bytes of padding.
pub const HEADER_BYTES: usize = 8;

/// What the tracker writes beside each block: one word, packed (from the
/// low bits) as the task row's index (16 bits), the row's generation (20
/// bits), the callsite row (20 bits) and a check (8 bits) made from the
/// rest, so that a header overwritten with zeros or with the program's data
/// is recognised (all but one in 256 times).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(transparent)]
pub(crate) struct Header(u64);

impl Header {
    const INDEX_BITS: u32 = 16;
    const GENERATION_BITS: u32 = 20;
    const SITE_BITS: u32 = 20;
    const PAYLOAD_BITS: u32 = Self::INDEX_BITS + Self::GENERATION_BITS + Self::SITE_BITS;
    const PAYLOAD: u64 = (1 << Self::PAYLOAD_BITS) - 1;

    /// The task index that marks a block allocated while tracking was off.
    pub(crate) const UNTRACKED_INDEX: u32 = (1 << Self::INDEX_BITS) - 1;
    /// The largest task index (buckets included) a header can carry.
    pub(crate) const MAX_TASK_INDEX: u32 = Self::UNTRACKED_INDEX - 1;
    /// The callsite index of a block allocated while tracking was off.
    pub(crate) const NO_SITE: u32 = (1 << Self::SITE_BITS) - 1;
    /// The largest callsite index (buckets included) a header can carry.
    pub(crate) const MAX_SITE: u32 = Self::NO_SITE - 1;
    /// Generations are counted modulo this, so that they fit.
    pub(crate) const GENERATIONS: u32 = 1 << Self::GENERATION_BITS;

    /// The header of a block allocated while tracking was off.
    pub(crate) const UNTRACKED: Header = Header::new(Ticket::UNTRACKED, Self::NO_SITE);

    /// The header of a block allocated by `task` at `site`. The ticket's
    /// index and the site fit by the ledger's capacity checks; the
    /// generation is counted modulo [`GENERATIONS`](Self::GENERATIONS).
    #[inline]
    pub(crate) const fn new(task: Ticket, site: u32) -> Self {
        let payload = (task.index as u64 & ((1 << Self::INDEX_BITS) - 1))
            | (task.generation as u64 & ((1 << Self::GENERATION_BITS) - 1)) << Self::INDEX_BITS
            | (site as u64 & ((1 << Self::SITE_BITS) - 1))
                << (Self::INDEX_BITS + Self::GENERATION_BITS);
        Header(payload | Self::check_of(payload) << Self::PAYLOAD_BITS)
    }

    /// Eight bits that depend on every bit of the payload.
    #[inline]
    const fn check_of(payload: u64) -> u64 {
        (payload ^ 0xa110_c7ac_a110_c7ac).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56
    }

    /// The callsite of a block whose header names the same task as `own`
    /// (a header this ledger made), if its check holds: a block of that
    /// task's, with whatever callsite. `None` for another task's block, or
    /// a damaged header.
    #[inline(always)]
    pub(crate) fn site_if_task_of(self, own: Header) -> Option<u32> {
        const TASK: u64 = (1 << (Header::INDEX_BITS + Header::GENERATION_BITS)) - 1;
        match self.checked_payload() {
            Some(payload) if (self.0 ^ own.0) & TASK == 0 => Some(Self::site_of(payload)),
            _ => None,
        }
    }

    /// The payload, if the check holds.
    #[inline(always)]
    const fn checked_payload(self) -> Option<u64> {
        let payload = self.0 & Self::PAYLOAD;
        if self.0 >> Self::PAYLOAD_BITS == Self::check_of(payload) {
            Some(payload)
        } else {
            None
        }
    }

    /// The callsite a payload names.
    #[inline(always)]
    const fn site_of(payload: u64) -> u32 {
        (payload >> (Self::INDEX_BITS + Self::GENERATION_BITS)) as u32
    }

    /// The task ticket of a header this ledger made (no check).
    #[inline(always)]
    pub(crate) const fn ticket(self) -> Ticket {
        Ticket {
            index: (self.0 & ((1 << Self::INDEX_BITS) - 1)) as u32,
            generation: (self.0 >> Self::INDEX_BITS) as u32 & ((1 << Self::GENERATION_BITS) - 1),
        }
    }

    /// The task ticket and callsite, or `None` if the header was damaged.
    #[inline]
    pub(crate) const fn decode(self) -> Option<(Ticket, u32)> {
        let Some(payload) = self.checked_payload() else {
            return None;
        };
        let ticket = match self.ticket() {
            ticket if ticket.index == Self::UNTRACKED_INDEX => Ticket::UNTRACKED,
            ticket => ticket,
        };
        Some((ticket, Self::site_of(payload)))
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
        Self::sized(layout.size(), layout.align())
    }

    /// The placement for `layout` if it is the 8-byte prefix (alignment up
    /// to 8), else `None`: [`of`](Self::of)'s common case alone.
    #[inline]
    pub(crate) fn prefixed(layout: Layout) -> Option<Self> {
        if layout.align() > 8 {
            return None;
        }
        Self::sized(layout.size(), layout.align())
    }

    /// The placement of a block of `layout`'s alignment resized to
    /// `new_size`, as `realloc` makes it.
    #[inline]
    pub(crate) fn resized(layout: Layout, new_size: usize) -> Option<Self> {
        Self::sized(new_size, layout.align())
    }

    /// The placement of a block this ledger handed out with `layout`, which
    /// [`of`](Self::of) accepted then.
    ///
    /// # Safety
    /// - `Placement::of(layout)` must have returned `Some` (the block was
    ///   allocated with this layout, and allocations are refused where it
    ///   returns `None`).
    #[inline]
    pub(crate) unsafe fn of_allocated(layout: Layout) -> Self {
        let (size, align) = (layout.size(), layout.align());
        let (user_offset, header_offset, inner_size, inner_align) = if align <= 8 {
            (8, 0, size.wrapping_add(8), 8)
        } else if align == 16 {
            (16, 8, size.wrapping_add(16), 16)
        } else {
            let header_offset = size.wrapping_add(7) & !7;
            (0, header_offset, header_offset.wrapping_add(8), align)
        };
        // SAFETY: these are the figures `sized` computes for `layout`, whose
        // checks passed when the block was allocated (caller's duty), so no
        // arithmetic above wrapped and the layout is valid.
        let inner = unsafe { Layout::from_size_align_unchecked(inner_size, inner_align) };
        Self {
            inner,
            user_offset,
            header_offset,
        }
    }

    /// The placement for `size` bytes aligned to `align`, which comes from a
    /// `Layout` and so is a power of two.
    #[inline]
    fn sized(size: usize, align: usize) -> Option<Self> {
        if align <= 8 {
            // The common case, with one comparison: `size + 8`, rounded up
            // to 8, must not pass `isize::MAX`.
            if size > isize::MAX as usize - 15 {
                return None;
            }
            // SAFETY: 8 is a power of two, and `size + 8` (which does not
            // wrap) rounded up to it is at most `isize::MAX`, checked just
            // above.
            let inner = unsafe { Layout::from_size_align_unchecked(size + 8, 8) };
            return Some(Self {
                inner,
                user_offset: 8,
                header_offset: 0,
            });
        }
        let (user_offset, header_offset, inner_size, inner_align) = if align == 16 {
            (16, 8, size.checked_add(16)?, 16)
        } else {
            let header_offset = size.checked_next_multiple_of(8)?;
            (0, header_offset, header_offset.checked_add(8)?, align)
        };
        // What `Layout::from_size_align` checks, less the power-of-two test
        // that the alignment passed already: rounded up to its alignment,
        // the block's size must not pass `isize::MAX`.
        if inner_size > isize::MAX as usize - (inner_align - 1) {
            return None;
        }
        // SAFETY: `inner_align` is a power of two (8, or a `Layout`'s
        // alignment) and `inner_size` rounded up to it does not exceed
        // `isize::MAX`, checked just above.
        let inner = unsafe { Layout::from_size_align_unchecked(inner_size, inner_align) };
        Some(Self {
            inner,
            user_offset,
            header_offset,
        })
    }

    /// Writes `header` into the inner block at `base`.
    ///
    /// # Safety
    /// - `base` must point to a live inner block allocated (or reallocated)
    ///   with `self.inner`.
    #[inline]
    pub(crate) unsafe fn write_header(&self, base: *mut u8, header: Header) {
        // SAFETY: `header_offset + 8 <= inner.size()` by construction, the
        // block is live (caller's duty), and the offset is a multiple of 8
        // from a base aligned to at least 8, which is the header's
        // alignment.
        unsafe { base.add(self.header_offset).cast::<u64>().write(header.0) }
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
        Header(unsafe { base.add(self.header_offset).cast::<u64>().read() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placement(size: usize, align: usize) -> Placement {
        let layout = Layout::from_size_align(size, align).unwrap();
        let placement = Placement::of(layout).unwrap();
        // SAFETY: `of` accepted the layout just above.
        assert_eq!(unsafe { Placement::of_allocated(layout) }, placement);
        placement
    }

    #[test]
    fn small_alignments_get_an_eight_byte_prefix() {
        for align in [1, 2, 4, 8] {
            let p = placement(24, align);
            assert_eq!((p.user_offset, p.header_offset), (8, 0));
            assert_eq!(p.inner.size(), 24 + HEADER_BYTES);
            assert_eq!(p.inner.align(), 8);
        }
        let p = placement(24, 16);
        assert_eq!((p.user_offset, p.header_offset), (16, 8));
        assert_eq!((p.inner.size(), p.inner.align()), (40, 16));
    }

    #[test]
    fn large_alignments_get_a_trailer() {
        for (size, header_offset) in [(1, 8), (8, 8), (4095, 4096), (4096, 4096)] {
            let p = placement(size, 4096);
            assert_eq!((p.user_offset, p.header_offset), (0, header_offset));
            assert_eq!(p.inner.size(), header_offset + HEADER_BYTES);
            assert_eq!(p.inner.align(), 4096);
        }
        assert_eq!(placement(100, 32).inner.size(), 112);
    }

    #[test]
    fn sizes_near_the_limit_are_refused() {
        let top = isize::MAX as usize;
        assert!(Placement::of(Layout::from_size_align(top - 7, 8).unwrap()).is_none());
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
        assert_eq!(header.ticket(), ticket);
        let own = Header::new(ticket, 3);
        assert_eq!(header.site_if_task_of(own), Some(77));
        let other = Header::new(
            Ticket {
                index: 5,
                generation: 10,
            },
            77,
        );
        assert_eq!(header.site_if_task_of(other), None);
        assert_eq!(Header(header.0 ^ 1 << 40).site_if_task_of(own), None);
        assert_eq!(
            Header::UNTRACKED.decode(),
            Some((Ticket::UNTRACKED, Header::NO_SITE))
        );
        let widest = Ticket {
            index: Header::MAX_TASK_INDEX,
            generation: Header::GENERATIONS - 1,
        };
        assert_eq!(
            Header::new(widest, Header::MAX_SITE).decode(),
            Some((widest, Header::MAX_SITE))
        );
        // Every single-bit flip, and zeros, are seen.
        for bit in 0..64 {
            assert_eq!(Header(header.0 ^ 1 << bit).decode(), None, "bit {bit}");
        }
        assert_eq!(Header(0).decode(), None);
    }
}
