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

use core::alloc::Layout;

use crate::figures::Amount;
use crate::party::Ticket;
use crate::primitive::{
    atomic_array, fence, loom_const_fn, spin_hint, AtomicPtr, AtomicU32, AtomicU64, AtomicU8,
    AtomicUsize, Counter, Ordering,
};

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

/// The two counters of a task's countdown that every unsampled allocation
/// writes (the bytes to the next sample point, and the allocations), kept
/// where an adapter's thread reaches them at a fixed place of its own (a
/// thread-local) rather than through its row's address: the allocation path
/// then makes no load whose address waits on another load. While attached
/// to the row the thread counts on ([`OwnRow::attach`]), they stand in for
/// the row's own; detached, they hold no bytes to count down, so the fast
/// path ([`count_unsampled`](Self::count_unsampled)) declines and the
/// ledger counts on the row.
///
/// [`OwnRow::attach`]: crate::OwnRow::attach
pub struct HotCountdown {
    left: Counter,
    allocations: Counter,
    /// Under loom, the counters' memory as the model sees it: reports read
    /// it, and [`model_reuse`](Self::model_reuse) writes it, so that a read
    /// not ordered before the reuse is a race the model finds.
    #[cfg(alloc_track_loom)]
    memory: loom::cell::UnsafeCell<()>,
}

impl HotCountdown {
    loom_const_fn! {
        /// Counters attached to no row.
        pub fn new() -> Self {
            Self {
                left: Counter::new(),
                allocations: Counter::new(),
                #[cfg(alloc_track_loom)]
                memory: loom::cell::UnsafeCell::new(()),
            }
        }
    }

    /// Under loom: the counters' memory goes to other use, as when their
    /// thread ends. Any report's read of them that is not ordered before
    /// this is a race.
    #[cfg(alloc_track_loom)]
    pub fn model_reuse(&self) {
        self.memory.with_mut(|_| ());
    }

    /// Counts an allocation of `size` bytes if it fits in the countdown's
    /// piece, so that no sample point falls in it (the sampling form's
    /// whole fast path); `false`, with nothing counted, when it does not
    /// (a sample point may fall in it; one of [`COUNTDOWN_PIECE`] or more
    /// never fits) or while the counters are attached to no row: the
    /// ledger's `alloc_sampling` then counts it. Only the thread that owns
    /// the counters may call this.
    #[inline(always)]
    pub fn count_unsampled(&self, size: u64) -> bool {
        count_unsampled(&self.left, &self.allocations, size)
    }

    /// Takes back [`count_unsampled`](Self::count_unsampled)'s count of an
    /// allocation the inner allocator then refused, for an adapter that
    /// waits for the inner allocator's answer.
    #[cold]
    pub fn uncount_unsampled(&self, size: u64) {
        self.allocations.add_owned(1u64.wrapping_neg());
        self.left.add_owned(size);
    }
}

impl Default for HotCountdown {
    fn default() -> Self {
        Self::new()
    }
}

/// [`Countdown::count_unsampled`] on the counters in force.
#[inline(always)]
fn count_unsampled(left: &Counter, allocations: &Counter, size: u64) -> bool {
    let bytes_left = left.get();
    if size >= bytes_left {
        return false;
    }
    // The value read, less the size: the owner alone writes it.
    left.set(bytes_left - size);
    allocations.add_owned(1);
    true
}

/// How often [`Countdown::exact`] tries, while every try overlaps an attach
/// or a detach of the row's hot counters (its thread was preempted in one,
/// or switches rows without pause), before it settles for the row's own
/// counters, which may then lag by the counts of the switch in progress.
const SWITCH_RETRIES: usize = 64;

/// A task's sampling state, written by the task alone: the bytes to its next
/// sample point, and what it allocated, counted exactly. The bytes to the
/// next sample point are `left + rest`: `left` is counted down, and holds
/// at most [`COUNTDOWN_PIECE`]; `rest` is what waits of a longer gap. What
/// the task allocated is `before + gap - left`: the bytes of the pieces it
/// finished, and of the one it is in (`gap`).
///
/// While a thread counts on the row, `left` and `allocations` may live in
/// its [`HotCountdown`] instead (see [`attach`](Self::attach)). The owner's
/// operations take the hot counters its context gives, and use them only
/// if they are the ones attached here; reports read them through `hot`.
pub(crate) struct Countdown {
    /// Bytes to the end of the piece counted down: at least 1 once started,
    /// at most [`COUNTDOWN_PIECE`].
    left: Counter,
    /// The bytes of the gap drawn last beyond this piece. Read and written
    /// by the owner alone: reports need `gap` and `left`, not this.
    rest: Counter,
    /// The piece counted down.
    gap: Counter,
    /// Bytes allocated in the pieces already finished.
    before: Counter,
    /// Allocations counted.
    allocations: Counter,
    /// The task's random state.
    random: Counter,
    /// The hot counters standing in for `left` and `allocations`, or null.
    hot: AtomicPtr<HotCountdown>,
    /// Odd while hot counters are being attached or detached, and stepped
    /// by each: a report whose read overlaps one reads again.
    switches: AtomicU32,
}

impl Countdown {
    loom_const_fn! {
        pub(crate) fn new() -> Self {
            Self {
                left: Counter::new(),
                rest: Counter::new(),
                gap: Counter::new(),
                before: Counter::new(),
                allocations: Counter::new(),
                random: Counter::new(),
                hot: AtomicPtr::new(core::ptr::null_mut()),
                switches: AtomicU32::new(0),
            }
        }
    }

    /// The counters for `left` and `allocations`: `hot`'s if they are the
    /// ones attached here, else the row's own.
    #[inline(always)]
    fn cells<'a>(&'a self, hot: Option<&'a HotCountdown>) -> (&'a Counter, &'a Counter) {
        match hot {
            Some(hot) if core::ptr::eq(self.hot.load(Ordering::Relaxed), hot) => {
                (&hot.left, &hot.allocations)
            }
            _ => (&self.left, &self.allocations),
        }
    }

    /// Starts counting for a new task: the first gap, from `seed`. No hot
    /// counters are attached to a row being claimed.
    pub(crate) fn start(&self, seed: u64, interval: u64) {
        self.random.set(crate::hash::mix(seed) | 1);
        self.before.set(0);
        self.allocations.set(0);
        self.draw(interval, None);
    }

    /// Counts an allocation of `size` bytes if it fits in the piece, so
    /// that no sample point falls in it (the allocation path's fast half);
    /// `false`, with nothing counted, when it does not:
    /// [`count`](Self::count) then counts it. `hot` is the
    /// calling thread's hot counters, if it has any.
    #[inline(always)]
    pub(crate) fn count_unsampled(&self, size: u64, hot: Option<&HotCountdown>) -> bool {
        let (left, allocations) = self.cells(hot);
        count_unsampled(left, allocations, size)
    }

    /// Counts an allocation of `size` bytes; whether a sample point falls in
    /// it. Then [`draw`](Self::draw) must be called before the next count.
    #[inline]
    pub(crate) fn count(&self, size: u64, hot: Option<&HotCountdown>) -> bool {
        let (left, allocations) = self.cells(hot);
        if count_unsampled(left, allocations, size) {
            return false;
        }
        allocations.add_owned(1);
        let bytes_left = left.get();
        // The piece ends in this allocation: all of it is counted as before.
        let gap = self.gap.get();
        self.before
            .add_owned(gap.wrapping_sub(bytes_left).wrapping_add(size));
        let remaining = bytes_left.saturating_add(self.rest.get());
        if size < remaining {
            // The gap goes on past it: the next piece.
            self.next_piece(remaining - size, left);
            return false;
        }
        self.rest.set(0);
        self.gap.set(0);
        left.set(0);
        true
    }

    /// Starts a piece of the `bytes` left of the gap: at most
    /// [`COUNTDOWN_PIECE`] in `left`, the rest waiting.
    fn next_piece(&self, bytes: u64, left: &Counter) {
        let piece = bytes.min(COUNTDOWN_PIECE);
        self.rest.set(bytes - piece);
        self.gap.set(piece);
        left.set(piece);
    }

    /// Takes back the count of an allocation of `size` bytes that the inner
    /// allocator then refused, so that what the task allocated stays exact;
    /// `sampled` is what [`count`](Self::count) said (a sample point that fell
    /// in it is gone, and the next gap already drawn: the process has no
    /// memory, so nothing is biased).
    pub(crate) fn uncount(&self, size: u64, sampled: bool, hot: Option<&HotCountdown>) {
        let (_, allocations) = self.cells(hot);
        allocations.add_owned(1u64.wrapping_neg());
        self.before.add_owned(size.wrapping_neg());
        if !sampled {
            // Its bytes go back to the gap, after the piece, which holds
            // no more than it may.
            self.rest.add_owned(size);
        }
    }

    /// Draws the next gap, and starts its first piece.
    pub(crate) fn draw(&self, interval: u64, hot: Option<&HotCountdown>) {
        let mut random = self.random.get();
        let gap = gap(next_random(&mut random), interval);
        self.random.set(random);
        self.next_piece(gap, self.cells(hot).0);
    }

    /// Moves `left` and `allocations` into `hot`, which stands in for them
    /// from now on, for the owner's fast path and for reports. The owner
    /// alone calls this, on a row it counts on and to which no counters are
    /// attached.
    ///
    /// # Safety
    /// - `hot` stays where it is, alive, until [`detach`](Self::detach) has
    ///   taken it off, and then until no report reads it: until the table's
    ///   count of hot readers has been seen at zero after the detach.
    pub(crate) unsafe fn attach(&self, hot: &HotCountdown) {
        self.switch(|| {
            hot.left.set(self.left.get());
            hot.allocations.set(self.allocations.get());
            self.hot
                .store(core::ptr::from_ref(hot).cast_mut(), Ordering::Release);
        });
    }

    /// Takes `hot` off the row, if it is attached here, moving its counts
    /// back, and leaves it with no bytes to count down, so that the fast
    /// path declines until it is attached again.
    pub(crate) fn detach(&self, hot: &HotCountdown) {
        if core::ptr::eq(self.hot.load(Ordering::Relaxed), hot) {
            self.switch(|| {
                self.left.set(hot.left.get());
                self.allocations.set(hot.allocations.get());
                // Released: a reader that counts itself after the owner's
                // check of the count (both read-modify-writes) sees null.
                self.hot.store(core::ptr::null_mut(), Ordering::Release);
                hot.left.set(0);
            });
        } else {
            hot.left.set(0);
        }
    }

    /// Runs `change` with the switch count odd (a sequence lock with one
    /// writer, the owner), so that a report whose read overlaps it reads
    /// again.
    fn switch(&self, change: impl FnOnce()) {
        let switches = self.switches.load(Ordering::Relaxed);
        self.switches
            .store(switches.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        change();
        self.switches
            .store(switches.wrapping_add(2), Ordering::Release);
    }

    /// What the task allocated: bytes and count, exactly, from any thread.
    /// `readers` is the table's count of reports reading hot counters.
    pub(crate) fn exact(&self, readers: &AtomicUsize) -> (u64, u64) {
        for _ in 0..SWITCH_RETRIES {
            let switches = self.switches.load(Ordering::Acquire);
            if switches & 1 == 0 {
                let (left, allocations) = self.left_and_allocations(readers);
                let figures = self.figures(left, allocations);
                fence(Ordering::Acquire);
                if self.switches.load(Ordering::Relaxed) == switches {
                    return figures;
                }
            }
            spin_hint();
        }
        // A switch during every read: the row's own counters, as of the
        // last switch.
        self.figures(self.left.get(), self.allocations.get())
    }

    /// `left` and `allocations` as they stand: the attached hot counters',
    /// or the row's own. Only a read that may go through the address counts
    /// itself in `readers`: a row with none attached (every row in the
    /// exact form) costs the shared count nothing. Reading the row's own
    /// counters is safe at any moment, and the caller's switch count
    /// catches an attach that overlaps it.
    fn left_and_allocations(&self, readers: &AtomicUsize) -> (u64, u64) {
        if self.hot.load(Ordering::Acquire).is_null() {
            return (self.left.get(), self.allocations.get());
        }
        readers.fetch_add(1, Ordering::AcqRel);
        let hot = self.hot.load(Ordering::Acquire);
        let counters = if hot.is_null() {
            (self.left.get(), self.allocations.get())
        } else {
            // SAFETY: a thread attached its live counters here and keeps
            // them alive until, after detaching them (storing null), its
            // read-modify-write of `readers` has found zero (`attach`'s
            // contract). This read counted itself in `readers` before
            // loading the pointer. The two read-modify-writes are ordered:
            // if the thread's came first, this one acquired its release, so
            // the load above saw null; if this one came first, the thread
            // found it counted and waits for the release below.
            let hot = unsafe { &*hot };
            #[cfg(alloc_track_loom)]
            hot.memory.with(|_| ());
            (hot.left.get(), hot.allocations.get())
        };
        readers.fetch_sub(1, Ordering::Release);
        counters
    }

    /// What the task allocated, with `left` and `allocations` as given.
    fn figures(&self, left: u64, allocations: u64) -> (u64, u64) {
        let bytes = self
            .before
            .get()
            .wrapping_add(self.gap.get())
            .wrapping_sub(left);
        (bytes, allocations)
    }

    /// What the task allocated, leaving nothing counted. Only once the task
    /// has ended, with no counters attached.
    pub(crate) fn take(&self) -> (u64, u64) {
        let figures = self.figures(self.left.get(), self.allocations.get());
        for counter in [
            &self.left,
            &self.rest,
            &self.gap,
            &self.before,
            &self.allocations,
        ] {
            counter.set(0);
        }
        figures
    }
}

/// The sampling of a bucket, which many tasks allocate in at once: each
/// allocation is sampled on its own with a chance in proportion to its size
/// (`size / interval`, at most 1), from a shared sequence of random numbers,
/// and weighed by the inverse of that chance. Just as unbiased, with no
/// countdown to share; what was allocated is counted exactly.
pub(crate) struct BucketSampler {
    allocated_bytes: Counter,
    allocations: Counter,
    sequence: Counter,
}

impl BucketSampler {
    loom_const_fn! {
        pub(crate) fn new() -> Self {
            Self {
                allocated_bytes: Counter::new(),
                allocations: Counter::new(),
                sequence: Counter::new(),
            }
        }
    }

    /// Counts an allocation of `size` bytes; what the sample stands for, if
    /// it is sampled.
    pub(crate) fn count(&self, size: u64, interval: u64) -> Option<Amount> {
        self.allocated_bytes.add_shared(size);
        self.allocations.add_shared(1);
        let random = crate::hash::mix(self.sequence.fetch_add(0x9e37_79b9_7f4a_7c15));
        if size >= interval {
            return Some(Amount {
                bytes: size.saturating_mul(SCALE),
                count: SCALE,
            });
        }
        // Sampled with chance size / interval: when random / 2^64 falls below.
        let threshold = ((u128::from(size) << 64) / u128::from(interval.max(1))) as u64;
        (random < threshold).then(|| Amount {
            bytes: interval.saturating_mul(SCALE),
            count: ((u128::from(interval) * u128::from(SCALE)) / u128::from(size.max(1))) as u64,
        })
    }

    /// Takes back the count of an allocation the inner allocator refused.
    pub(crate) fn uncount(&self, size: u64) {
        self.allocated_bytes.add_shared(size.wrapping_neg());
        self.allocations.add_shared(1u64.wrapping_neg());
    }

    /// What was allocated in the bucket: bytes and count, exactly.
    pub(crate) fn exact(&self) -> (u64, u64) {
        (self.allocated_bytes.get(), self.allocations.get())
    }

    /// Adds a finished task's exact figures.
    pub(crate) fn absorb(&self, (bytes, count): (u64, u64)) {
        self.allocated_bytes.add_shared(bytes);
        self.allocations.add_shared(count);
    }
}

fn round(value: f64) -> u64 {
    if value >= u64::MAX as f64 {
        u64::MAX
    } else {
        (value + 0.5) as u64
    }
}

/// Natural logarithm and exponential for the sampling arithmetic, which the
/// core (without `std`) has no library for. Accurate to a few parts in
/// 10^16, well beyond what the estimates need; they run only when a sample
/// is taken.
mod math {
    const LN_2: f64 = core::f64::consts::LN_2;

    /// `ln(x)` for `x > 0`.
    pub(super) fn ln(x: f64) -> f64 {
        if x <= 0.0 {
            return f64::NEG_INFINITY;
        }
        // x = m * 2^e with m in [1, 2), then m in [sqrt(1/2), sqrt(2)).
        let bits = x.to_bits();
        let mut exponent = ((bits >> 52) & 0x7ff) as i64 - 1023;
        let mut m = f64::from_bits(bits & 0x000f_ffff_ffff_ffff | 0x3ff0_0000_0000_0000);
        if exponent == -1023 {
            // Subnormal: scale up first.
            return ln(x * (1u64 << 52) as f64) - 52.0 * LN_2;
        }
        if m > core::f64::consts::SQRT_2 {
            m /= 2.0;
            exponent += 1;
        }
        exponent as f64 * LN_2 + ln_near_one(m)
    }

    /// Terms smaller than this, relative to the sum so far, change it no
    /// more: the series stop there.
    const NEGLIGIBLE: f64 = f64::EPSILON / 4.0;

    /// `1/k` for `k = 1, 2, ..., 60`, so that the series multiply where they
    /// would divide: on targets without a floating-point unit (most
    /// firmware) a division costs several multiplications.
    // Evaluated at compile time, where an index out of range fails the
    // build rather than the program.
    #[allow(clippy::indexing_slicing)]
    const RECIPROCALS: [f64; 60] = {
        let mut table = [0.0; 60];
        let mut k = 0;
        while k < 60 {
            table[k] = 1.0 / (k + 1) as f64;
            k += 1;
        }
        table
    };

    /// `2 atanh(z)` by its series, for `|z|` well below 1: the sum of
    /// `z^k / k` over odd `k`, until the terms are negligible (at most 30
    /// of them; ten for the `z` that `ln` passes, fewer for smaller ones).
    fn twice_atanh(z: f64) -> f64 {
        let z2 = z * z;
        let mut power = z;
        let mut sum = 0.0;
        for reciprocal in RECIPROCALS.iter().step_by(2) {
            let term = power * reciprocal;
            sum += term;
            if term.abs() <= sum.abs() * NEGLIGIBLE {
                break;
            }
            power *= z2;
        }
        2.0 * sum
    }

    /// `ln(m)` for `m` near 1: `2 atanh((m - 1) / (m + 1))`.
    fn ln_near_one(m: f64) -> f64 {
        twice_atanh((m - 1.0) / (m + 1.0))
    }

    /// `ln(1 + x)` for `x > -1`, accurate for small `x`.
    pub(super) fn ln_1p(x: f64) -> f64 {
        if x.abs() < 0.25 {
            // ln(1 + x) = 2 atanh(x / (2 + x)), without forming 1 + x.
            twice_atanh(x / (2.0 + x))
        } else {
            ln(1.0 + x)
        }
    }

    /// `exp(x) - 1`, accurate for small `x`.
    pub(super) fn exp_m1(x: f64) -> f64 {
        if x.abs() < 0.5 {
            // The series x^k / k!, until its terms are negligible (at most
            // 30 of them).
            let mut term = x;
            let mut sum = 0.0;
            for reciprocal in RECIPROCALS.iter().skip(1).take(29) {
                sum += term;
                if term.abs() <= sum.abs() * NEGLIGIBLE {
                    break;
                }
                term *= x * reciprocal;
            }
            sum
        } else {
            exp(x) - 1.0
        }
    }

    /// `exp(x)`.
    pub(super) fn exp(x: f64) -> f64 {
        if x < -745.0 {
            return 0.0;
        }
        if x > 709.0 {
            return f64::INFINITY;
        }
        // x = k ln 2 + r with |r| <= ln 2 / 2; exp(x) = 2^k exp(r). ln 2 in
        // two parts, the first with few enough bits that k times it is
        // exact, so that r keeps its precision for large k.
        const LN_2_HIGH: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000);
        const LN_2_LOW: f64 = f64::from_bits(0x3dea_39ef_3579_3c76);
        let k = (x / LN_2 + if x < 0.0 { -0.5 } else { 0.5 }) as i64;
        let r = (x - k as f64 * LN_2_HIGH) - k as f64 * LN_2_LOW;
        let exp_r = 1.0 + exp_m1(r);
        let scale = |value: f64, by: i64| -> f64 {
            // 2^by, built in two steps so that neither leaves the range.
            let half = by / 2;
            let power = |e: i64| f64::from_bits(((e + 1023) as u64) << 52);
            value * power(half) * power(by - half)
        };
        scale(exp_r, k)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn close(a: f64, b: f64) -> bool {
            (a - b).abs() <= 1e-13 * b.abs().max(1e-300)
        }

        #[test]
        fn agree_with_the_standard_library() {
            let mut x = 1e-300;
            while x < 1e300 {
                assert!(close(ln(x), x.ln()), "ln {x}");
                x *= 3.7;
            }
            for x in [-0.2, -1e-9, 1e-12, 0.1, 0.24] {
                assert!(close(ln_1p(x), x.ln_1p()), "ln_1p {x}");
            }
            let mut x = -700.0;
            while x < 700.0 {
                assert!(close(exp(x), x.exp()), "exp {x}");
                x += 0.731;
            }
            for x in [-0.49, -1e-10, 1e-15, 0.3, 2.0, -5.0] {
                assert!(close(exp_m1(x), x.exp_m1()), "exp_m1 {x}");
            }
        }
    }
}

/// A live sampled block as its entry records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SampledBlock {
    /// Where its allocation was counted.
    pub owner: Ticket,
    /// Its callsite row.
    pub site: u32,
    /// The caller's size.
    pub size: u64,
    /// What it stands for, in [`SCALE`] units: allocations, and bytes.
    pub count: u64,
    /// See `count`.
    pub bytes: u64,
    /// When it was allocated, by the context's clock.
    pub time: u64,
}

/// Key states of an entry: empty (never used), deleted, being written;
/// anything else is the address of the live block it records (no allocator
/// hands out the first three addresses, so the states never collide).
const EMPTY: usize = 0;
const DELETED: usize = 1;
const WRITING: usize = 2;

/// How far from its home an address may be recorded: bounds every insert
/// and lookup. A sample that finds no free entry within reach is dropped.
const MAX_PROBES: usize = 64;

struct Entry {
    key: AtomicUsize,
    owner: AtomicU64,
    site: AtomicU32,
    size: AtomicU64,
    count: AtomicU64,
    bytes: AtomicU64,
    time: AtomicU64,
}

impl Entry {
    loom_const_fn! {
        fn new() -> Self {
            Self {
                key: AtomicUsize::new(EMPTY),
                owner: AtomicU64::new(0),
                site: AtomicU32::new(0),
                size: AtomicU64::new(0),
                count: AtomicU64::new(0),
                bytes: AtomicU64::new(0),
                time: AtomicU64::new(0),
            }
        }
    }

    fn read(&self) -> Option<SampledBlock> {
        Some(SampledBlock {
            owner: Ticket::from_word(self.owner.load(Ordering::Relaxed))?,
            site: self.site.load(Ordering::Relaxed),
            size: self.size.load(Ordering::Relaxed),
            count: self.count.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            time: self.time.load(Ordering::Relaxed),
        })
    }
}

/// An entry of a [`SampleTable`] claimed for a block's address: others pass
/// it by, as one being written, until it is published. Dropped unpublished,
/// it is given back (marked deleted).
pub struct ClaimedEntry<'t> {
    entry: &'t Entry,
    address: usize,
    /// The count of live blocks at the address's home, which the block
    /// joins when it is published.
    home: Option<&'t AtomicU8>,
}

impl ClaimedEntry<'_> {
    /// Writes `block` into the entry and publishes its address.
    pub fn publish(self, block: SampledBlock) {
        let entry = self.entry;
        entry.owner.store(block.owner.to_word(), Ordering::Relaxed);
        entry.site.store(block.site, Ordering::Relaxed);
        entry.size.store(block.size, Ordering::Relaxed);
        entry.count.store(block.count, Ordering::Relaxed);
        entry.bytes.store(block.bytes, Ordering::Relaxed);
        entry.time.store(block.time, Ordering::Relaxed);
        // Counted at its home before the block is handed out, so that any
        // search for it, which comes after it is handed out, sees the count.
        // A read-modify-write: another task may be counting a block out of
        // the same home.
        if let Some(home) = self.home {
            home.fetch_add(1, Ordering::Relaxed);
        }
        // Release publishes the fields to whoever finds the key.
        entry.key.store(self.address, Ordering::Release);
        core::mem::forget(self);
    }
}

impl Drop for ClaimedEntry<'_> {
    fn drop(&mut self) {
        self.entry.key.store(DELETED, Ordering::Release);
    }
}

/// The live sampled blocks: a fixed table of `S` entries keyed by address,
/// open addressing from the address's hash (its home entry), at most
/// [`MAX_PROBES`] entries from it.
///
/// Lock-free: an insert claims an entry by one swap (from empty or deleted
/// to writing), writes it and publishes the key with Release; a removal
/// swaps the key from the address to writing, reads the entry and marks it
/// deleted. A lookup passes entries being written by: no task waits for
/// another. An entry never becomes empty again, so a lookup may stop at the
/// first empty one: whatever was inserted further on passed it while it was
/// already taken. Only the allocating path inserts an address (its block is
/// not handed out before), and only one free removes it, so an address is
/// never in two entries.
///
/// The cheap negative test: each home keeps a count of the live blocks
/// whose home it is (at most [`MAX_PROBES`], the entries within reach of
/// it), raised before a block is published and lowered after it is
/// removed. A lookup whose home counts none reads nothing else. Without
/// it, a long-running program's table fills with deleted entries (each
/// entry is deleted once any block that took it is freed, and none becomes
/// empty again), and every lookup of an address that is not there, such as
/// each free that only looks like a sampled block's, would read all the
/// entries within reach.
pub struct SampleTable<const S: usize> {
    entries: [Entry; S],
    homes: [AtomicU8; S],
}

impl<const S: usize> Default for SampleTable<S> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const S: usize> SampleTable<S> {
    loom_const_fn! {
        /// An empty table.
        pub fn new() -> Self {
            Self {
                entries: atomic_array![Entry::new(); S],
                homes: atomic_array![AtomicU8::new(0); S],
            }
        }
    }

    /// The home entry of `address`: where a search for it starts.
    pub fn home(address: usize) -> usize {
        crate::hash::reduce(crate::hash::mix(address as u64), S)
    }

    /// The entries a search from `home` may visit, in order.
    fn reach(&self, home: usize) -> impl Iterator<Item = &Entry> {
        let (before, from) = self.entries.split_at(home.min(S));
        from.iter().chain(before).take(MAX_PROBES)
    }

    /// The entry that records `address`, whose home is `home`, if any, its
    /// key loaded with `order`; and how many entries the search read (none
    /// when the home counts no live block).
    fn find(&self, home: usize, address: usize, order: Ordering) -> (Option<&Entry>, usize) {
        let counted = self
            .homes
            .get(home)
            .is_some_and(|live| live.load(Ordering::Relaxed) != 0);
        if !counted {
            return (None, 0);
        }
        let mut read = 0;
        for entry in self.reach(home) {
            read += 1;
            match entry.key.load(order) {
                EMPTY => return (None, read),
                key if key == address => return (Some(entry), read),
                _ => {}
            }
        }
        (None, read)
    }

    /// Records `block` at `address`; `false` when no entry within reach is
    /// free (the caller then drops the sample).
    pub fn insert(&self, address: usize, block: SampledBlock) -> bool {
        self.claim(address)
            .map(|claimed| claimed.publish(block))
            .is_some()
    }

    /// Claims a free entry within reach of `address`, to be written with
    /// [`ClaimedEntry::publish`] once what the block records is known;
    /// `None` when there is none (the caller then drops the sample, before
    /// doing the work a sample needs, such as walking its stack).
    pub fn claim(&self, address: usize) -> Option<ClaimedEntry<'_>> {
        let home = Self::home(address);
        self.reach(home)
            .find(|entry| {
                let key = entry.key.load(Ordering::Relaxed);
                (key == EMPTY || key == DELETED)
                    && entry
                        .key
                        .compare_exchange(key, WRITING, Ordering::Acquire, Ordering::Relaxed)
                        .is_ok()
            })
            .map(|entry| ClaimedEntry {
                entry,
                address,
                home: self.homes.get(home),
            })
    }

    /// Removes the block at `address` and returns what was recorded of it,
    /// or `None` if it is not a sampled block.
    pub fn remove(&self, address: usize) -> Option<SampledBlock> {
        let home = Self::home(address);
        let entry = self.find(home, address, Ordering::Relaxed).0?;
        // Acquire pairs with the Release in `publish`.
        entry
            .key
            .compare_exchange(address, WRITING, Ordering::Acquire, Ordering::Relaxed)
            .ok()?;
        let block = entry.read();
        entry.key.store(DELETED, Ordering::Release);
        if let Some(live) = self.homes.get(home) {
            live.fetch_sub(1, Ordering::Relaxed);
        }
        block
    }

    /// What is recorded of the block at `address`, without removing it.
    pub fn get(&self, address: usize) -> Option<SampledBlock> {
        self.find(Self::home(address), address, Ordering::Acquire)
            .0?
            .read()
    }
}

#[cfg(all(test, not(alloc_track_loom)))]
mod tests {
    use super::*;

    fn block(size: u64) -> SampledBlock {
        SampledBlock {
            // Any owner: the table keeps it as it is given.
            owner: Ticket {
                index: 1,
                generation: 0,
            },
            site: 3,
            size,
            count: SCALE,
            bytes: size * SCALE,
            time: 7,
        }
    }

    #[test]
    fn a_claimed_entry_is_passed_by_until_published_and_given_back_if_dropped() {
        let table = SampleTable::<1>::new();
        let claimed = table.claim(0x1000).expect("a free entry");
        // The only entry is being written: no room, and no block there.
        assert!(table.claim(0x2000).is_none());
        assert_eq!(table.get(0x1000), None);
        drop(claimed);
        // Given back unpublished: free again, and still no block there.
        assert_eq!(table.remove(0x1000), None);
        table
            .claim(0x2000)
            .expect("the entry again")
            .publish(block(48));
        assert_eq!(table.get(0x2000), Some(block(48)));
        assert_eq!(table.remove(0x2000), Some(block(48)));
        assert_eq!(table.remove(0x2000), None);
    }

    /// How many live blocks each home of `table` counts.
    fn home_counts<const S: usize>(table: &SampleTable<S>) -> [u8; S] {
        core::array::from_fn(|home| table.homes[home].load(Ordering::Relaxed))
    }

    #[test]
    fn each_home_counts_the_live_blocks_whose_search_starts_there() {
        const S: usize = 64;
        let table = SampleTable::<S>::new();
        let addresses: [usize; 48] = core::array::from_fn(|k| 0x7000_0010 + k * 0x1000);
        let mut expected = [0u8; S];
        for &address in &addresses {
            assert!(table.insert(address, block(address as u64)));
            expected[SampleTable::<S>::home(address)] += 1;
        }
        assert_eq!(home_counts(&table), expected);
        // A claim given back unpublished counts nothing.
        drop(table.claim(0x5000_0010).expect("a free entry"));
        assert_eq!(home_counts(&table), expected);
        for &address in addresses.iter().step_by(2) {
            assert_eq!(table.remove(address), Some(block(address as u64)));
            expected[SampleTable::<S>::home(address)] -= 1;
        }
        assert_eq!(home_counts(&table), expected);
        for &address in addresses.iter().skip(1).step_by(2) {
            assert_eq!(table.get(address), Some(block(address as u64)));
            assert_eq!(table.remove(address), Some(block(address as u64)));
        }
        assert_eq!(home_counts(&table), [0; S]);
    }

    #[test]
    fn a_search_for_an_absent_address_reads_no_entry_in_a_worn_table() {
        const S: usize = 64;
        let table = SampleTable::<S>::new();
        // Blocks come and go until no entry is empty: a long-running
        // program's table, where a search can no longer stop at an empty
        // entry.
        let mut address = 0x10_0010;
        let mut taken = 0;
        while table
            .entries
            .iter()
            .any(|entry| entry.key.load(Ordering::Relaxed) == EMPTY)
        {
            assert!(table.insert(address, block(8)));
            assert_eq!(table.remove(address), Some(block(8)));
            address += 0x1000;
            taken += 1;
        }
        assert!(taken >= S);
        let absent = |k: usize| 0x9000_0010 + k * 0x1000;
        for k in 0..1000 {
            assert_eq!(
                table
                    .find(
                        SampleTable::<S>::home(absent(k)),
                        absent(k),
                        Ordering::Relaxed
                    )
                    .1,
                0
            );
            assert_eq!(table.remove(absent(k)), None);
        }
        // One live block: a search from its home reads entries (at most
        // those within reach), one from any other home reads none.
        let live = 0x20_0010;
        assert!(table.insert(live, block(64)));
        let home = SampleTable::<S>::home(live);
        let mut shared = 0;
        for k in 0..1000 {
            let (found, read) = table.find(
                SampleTable::<S>::home(absent(k)),
                absent(k),
                Ordering::Relaxed,
            );
            assert!(found.is_none());
            if SampleTable::<S>::home(absent(k)) == home {
                assert!((1..=MAX_PROBES).contains(&read));
                shared += 1;
            } else {
                assert_eq!(read, 0);
            }
        }
        assert!(
            shared > 0,
            "some absent address shares the live block's home"
        );
        assert_eq!(table.remove(live), Some(block(64)));
        assert_eq!(home_counts(&table), [0; S]);
    }

    /// Counts allocations of `sizes` in turn on `countdown` until one is
    /// sampled; how many bytes and allocations came before it, and the
    /// sampled one's size.
    fn until_sampled(countdown: &Countdown, sizes: &[u64]) -> (u64, u64, u64) {
        let (mut bytes, mut count) = (0, 0);
        for &size in sizes.iter().cycle() {
            if countdown.count(size, None) {
                return (bytes, count, size);
            }
            assert!(countdown.left.get() <= COUNTDOWN_PIECE);
            bytes += size;
            count += 1;
        }
        unreachable!("the sizes cycle")
    }

    #[test]
    fn a_long_gap_is_counted_down_in_pieces_and_the_sample_point_stays_where_it_was() {
        const INTERVAL: u64 = 4 << 20;
        let sizes = [48, 70_000, 1, 65_535, 65_536, 4_000, 300_000];
        for seed in 1..40u64 {
            let countdown = Countdown::new();
            countdown.start(seed, INTERVAL);
            // The gap this seed draws, from the same random state.
            let mut random = crate::hash::mix(seed) | 1;
            let drawn = gap(next_random(&mut random), INTERVAL);
            assert_eq!(countdown.left.get(), drawn.min(COUNTDOWN_PIECE));
            assert_eq!(countdown.rest.get(), drawn - drawn.min(COUNTDOWN_PIECE));
            // The sample point falls in the allocation that reaches the gap,
            // as it would counted down in one piece.
            let (bytes, count, size) = until_sampled(&countdown, &sizes);
            assert!(bytes < drawn && drawn <= bytes + size);
            // What was allocated stays exact across the pieces.
            let readers = AtomicUsize::new(0);
            assert_eq!(countdown.exact(&readers), (bytes + size, count + 1));
        }
    }

    #[test]
    fn an_allocation_of_a_piece_or_more_never_fits_in_the_countdown() {
        let countdown = Countdown::new();
        countdown.start(5, 1 << 40);
        assert_eq!(countdown.left.get(), COUNTDOWN_PIECE);
        assert!(!countdown.count_unsampled(COUNTDOWN_PIECE, None));
        assert!(countdown.count_unsampled(COUNTDOWN_PIECE - 1, None));
        // Counted on the slow path instead, it starts the next piece.
        assert!(!countdown.count(COUNTDOWN_PIECE, None));
        assert_eq!(countdown.left.get(), COUNTDOWN_PIECE);
        let readers = AtomicUsize::new(0);
        assert_eq!(countdown.exact(&readers), (2 * COUNTDOWN_PIECE - 1, 2));
        // A refusal taken back leaves the piece as it was and the figures
        // as before the allocation.
        assert!(!countdown.count(200_000, None));
        countdown.uncount(200_000, false, None);
        assert!(countdown.left.get() <= COUNTDOWN_PIECE);
        assert_eq!(countdown.exact(&readers), (2 * COUNTDOWN_PIECE - 1, 2));
    }
}
