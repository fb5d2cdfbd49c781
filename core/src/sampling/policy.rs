//! What is sampled and what a sample stands for: the sampling gaps, the
//! weights, and where a sampled block is placed (the mark).

use core::alloc::Layout;

use crate::figures::Amount;

use super::math;

use super::SCALE;

/// The granule whose offset marks a sampled block: a page where memory is
/// plentiful; on smaller targets (firmware) a smaller one, so that a sampled
/// block's alignment wastes little of a small heap, at the price of more
/// frees that look in the table (one in 16 of 16-byte aligned blocks).
#[cfg(target_pointer_width = "64")]
const MARK_GRANULE: usize = 4096;
#[cfg(not(target_pointer_width = "64"))]
const MARK_GRANULE: usize = 256;
/// Where in its granule a sampled block (alignment up to 16) starts.
const MARK_OFFSET: usize = 16;
/// Blocks of this size and more are sampled where the inner allocator put
/// them, unmarked: their frees always look in the table (a lookup is little
/// beside the cost of such a block), and their reallocations stay the inner
/// allocator's, in place where it can (a marked block would have to move).
const LARGE_BLOCK: usize = 16 * MARK_GRANULE;

/// Whether a block at `pointer` with `layout` may be a sampled one, so that
/// its free must look in the table: the cheap test every free makes.
#[inline(always)]
pub(crate) fn may_be_sampled(pointer: *mut u8, layout: Layout) -> bool {
    // The mark first, as a test of the low bits of the pointer less the
    // offset: most frees then take two untaken branches on the layout.
    if (pointer as usize).wrapping_sub(MARK_OFFSET) & (MARK_GRANULE - 1) == 0 {
        return true;
    }
    layout.size() >= LARGE_BLOCK || layout.align() > MARK_OFFSET
}

/// Whether a sampled block of `layout` stays where the inner allocator put
/// it (large blocks) rather than at the mark.
#[inline]
pub(crate) fn sampled_in_place(layout: Layout) -> bool {
    layout.size() >= LARGE_BLOCK
}

/// Where a sampled block goes: the caller's own layout for a large block;
/// else an inner block aligned to at least a granule, with the caller's
/// pointer at the mark.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SampledPlacement {
    pub(crate) inner: Layout,
    pub(crate) user_offset: usize,
}

impl SampledPlacement {
    /// The placement for `layout`, or `None` if it would not be a valid
    /// layout.
    #[inline]
    pub(crate) fn of(layout: Layout) -> Option<Self> {
        if sampled_in_place(layout) {
            return Some(Self {
                inner: layout,
                user_offset: 0,
            });
        }
        let align = layout.align();
        let user_offset = align.max(MARK_OFFSET);
        let inner_align = align.max(MARK_GRANULE);
        let size = layout.size().checked_add(user_offset)?;
        Some(Self {
            inner: Layout::from_size_align(size, inner_align).ok()?,
            user_offset,
        })
    }
}

/// A small, fast generator (xorshift64*) for the sampling gaps: one per
/// task, so drawing needs no shared state. Not for anything but sampling.
pub(crate) fn next_random(state: &mut u64) -> u64 {
    let mut x = *state;
    if x == 0 {
        x = 0x9e37_79b9_7f4a_7c15;
    }
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    x.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

/// The bytes to the next sample point, from `random` (64 random bits): a
/// geometric draw on `1, 2, ...` with mean `interval`.
pub(crate) fn gap(random: u64, interval: u64) -> u64 {
    if interval <= 1 {
        return 1;
    }
    // A uniform draw in (0, 1]: never zero, so its logarithm is finite.
    let uniform = ((random >> 11) + 1) as f64 / (1u64 << 53) as f64;
    let q = 1.0 / interval as f64;
    // P(gap > k) = (1 - q)^k, so gap = ceil(ln(u) / ln(1 - q)).
    let gap = math::ln(uniform) / math::ln_1p(-q);
    if gap >= (u64::MAX / 2) as f64 {
        return u64::MAX / 2;
    }
    let whole = gap as u64;
    if (whole as f64) < gap {
        whole + 1
    } else {
        whole.max(1)
    }
}

/// What a sample of `size` bytes stands for, in [`SCALE`] units: the count
/// `1/p(size)` and the bytes `size/p(size)`, with `p` the chance that a
/// byte process of mean gap `interval` samples it.
pub(crate) fn weight(size: u64, interval: u64) -> Amount {
    if interval <= 1 {
        return Amount {
            bytes: size.saturating_mul(SCALE),
            count: SCALE,
        };
    }
    // p = 1 - (1 - q)^s = -expm1(s * ln(1 - q)).
    let p = -math::exp_m1(size as f64 * math::ln_1p(-1.0 / interval as f64));
    if p <= 0.0 {
        return Amount { bytes: 0, count: 0 };
    }
    let count = SCALE as f64 / p;
    Amount {
        bytes: round(count * size as f64),
        count: round(count),
    }
}

fn round(value: f64) -> u64 {
    if value >= u64::MAX as f64 {
        u64::MAX
    } else {
        (value + 0.5) as u64
    }
}
