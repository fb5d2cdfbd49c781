//! The countdowns to each task's next sample point: on the task's row,
//! in the thread's own memory (the hot counters), and for the buckets.

use crate::figures::Amount;
use crate::primitive::{
    fence, loom_const_fn, spin_hint, AtomicPtr, AtomicU32, AtomicUsize, Counter, Ordering,
};

use super::policy::{gap, next_random};
use super::SCALE;

use super::COUNTDOWN_PIECE;

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
/// [`OwnRow::attach`]: crate::raw::OwnRow::attach
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

#[cfg(all(test, not(alloc_track_loom)))]
mod tests {
    use super::*;

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
