//! The sampling form: which allocations are sampled, what each sample
//! stands for, and the table of live sampled blocks.
//!
//! Sampling is by bytes, not by address: every byte the program allocates
//! is a sample point with probability `1/R` (a Bernoulli process over the
//! byte stream, `R` the mean interval), and an allocation is sampled when
//! one of its bytes is. So an allocation of `s` bytes is sampled with
//! probability `p(s) = 1 - (1 - 1/R)^s` (about `1 - exp(-s/R)`), whatever
//! its address, its size mix or its callsite, and with `R = 1` every
//! allocation is. Each task counts down the bytes to its next sample point,
//! drawn from the geometric distribution of the gaps; an allocation that
//! reaches it is sampled and the next gap is drawn afresh (the process has
//! no memory, so what follows an allocation does not depend on it).
//!
//! A sample is weighed when it is taken (Horvitz-Thompson): it stands for
//! `1/p(s)` allocations and `s/p(s)` bytes. Sums of these weights are
//! unbiased estimates of the true counts and bytes of any set of
//! allocations (a task's, a callsite's, the live ones), even where sizes
//! vary at one callsite. Weights are kept in fixed point, [`SCALE`] units
//! to one.
//!
//! Sampled blocks are the only ones the tracker marks: they are placed so
//! that the caller's pointer is 16 bytes past a 4 KiB boundary (256 bytes on
//! 32-bit targets), for alignments up to 16, and recorded in a
//! fixed-capacity lock-free table keyed by address. A free looks at the
//! table only for pointers in that position (one in 256 of an allocator's
//! 16-byte aligned blocks by chance, and every block aligned beyond 16), so
//! an unsampled free costs an `and` and a compare. Large blocks (64 KiB and
//! more; 4 KiB on 32-bit targets) are not moved to the mark: every free of
//! one looks in the table, which costs little beside such a block, and
//! their reallocations stay in place where the inner allocator can.

mod countdown;
mod math;
mod policy;
mod table;

pub use countdown::HotCountdown;
pub(crate) use countdown::{BucketSampler, Countdown};
pub(crate) use policy::{may_be_sampled, sampled_in_place, weight, SampledPlacement};
pub use table::{SampleTable, SampledBlock};

/// Fixed-point units of one in the estimates: weights are kept to 1/65536.
pub const SCALE: u64 = 1 << 16;

/// The most bytes a task's countdown holds at once: a gap drawn longer is
/// counted down in pieces of at most this, the rest waiting in the row
/// until the piece is used up. So an allocation of this size or more never
/// fits in the countdown, and [`HotCountdown::count_unsampled`] declines
/// it whatever the gap: an adapter whose fast path counts and jumps to the
/// inner allocator, unable to see a refusal, has every allocation this
/// large on its slow path, where a refusal can be taken back, without a
/// test of the size of its own. Where a sample point falls does not change.
pub const COUNTDOWN_PIECE: u64 = 64 * 1024;
