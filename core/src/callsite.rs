//! The callsite table: one row per distinct stack of return addresses, keyed
//! by a hash of the stack, claimed lock-free and kept for the life of the
//! program.
//!
//! Rows are registered by the protocol in `registry.rs`: every row can be
//! used before the table counts as full, a reader never sees a half-written
//! row, and no task waits for another.

use crate::figures::{Amount, Figures, SharedCounters};
use crate::primitive::{atomic_array, loom_const_fn, AtomicU32, AtomicUsize, Counter, Ordering};
use crate::registry::{Entry, Registry};

/// The index used for a block whose stack was not captured.
pub(crate) const fn uncaptured<const M: usize>() -> u32 {
    (M as u32).wrapping_add(1)
}

/// The index used for a block whose stack found no free row.
pub const fn overflow<const M: usize>() -> u32 {
    M as u32
}

/// The index used for the tracker's own blocks, which are never walked.
pub(crate) const fn tracker<const M: usize>() -> u32 {
    (M as u32).wrapping_add(2)
}

/// The site index of a block allocated while tracking was off.
pub(crate) const NO_SITE: u32 = crate::block::Header::NO_SITE;

/// How many tasks at a time may count on a callsite row with plain stores,
/// each in a lane of its own. Only where the target has native 64-bit
/// atomics: elsewhere a 64-bit counter's every access is emulated (a
/// critical section on a single core), and a plain load and store cost two
/// where a read-modify-write costs one, so lanes would only add RAM and
/// time.
pub(crate) const LANES: usize = if cfg!(target_has_atomic = "64") { 2 } else { 0 };

/// How many lanes a task holds at most, across all callsites.
pub(crate) const HELD: usize = 2 * LANES;

/// Who counts on a callsite row: a task that may hold a lane there, or
/// anyone (a bucket, the tracker, a task without a row), who counts on the
/// row's shared counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaneKey(u32);

impl LaneKey {
    /// Anyone: the shared counters, always.
    pub const SHARED: Self = Self(0);

    /// The task in task row `index`. At most one task holds a row at a
    /// time, and it gives back its lanes before it gives back the row.
    pub const fn task(index: u32) -> Self {
        Self(index.wrapping_add(1))
    }
}

/// A task's share of a callsite row's counts: only the task whose key is in
/// `owner` adds to it, with plain loads and stores, so an allocation counts
/// without a bus-locked instruction on these counters. What a lane holds
/// stays the callsite's when its task gives it back; the next task to take
/// it adds on top.
struct Lane {
    /// The holder's [`LaneKey`], or 0 when the lane is free. Taken by a
    /// compare-and-swap from 0 (acquire) and given back by a store of 0
    /// (release), so each holder's counts happen before the next holder's.
    owner: AtomicU32,
    allocated_bytes: Counter,
    allocations: Counter,
    frees: Counter,
}

impl Lane {
    loom_const_fn! {
        fn new() -> Self {
            Self {
                owner: AtomicU32::new(0),
                allocated_bytes: Counter::new(),
                allocations: Counter::new(),
                frees: Counter::new(),
            }
        }
    }
}

struct SiteRow<const D: usize> {
    depth: AtomicU32,
    frames: [AtomicUsize; D],
    counters: SharedCounters,
    lanes: [Lane; LANES],
}

impl<const D: usize> SiteRow<D> {
    loom_const_fn! {
        fn new() -> Self {
            Self {
                depth: AtomicU32::new(0),
                frames: atomic_array![AtomicUsize::new(0); D],
                counters: SharedCounters::new(),
                lanes: atomic_array![Lane::new(); LANES],
            }
        }
    }

    /// The lane `key` holds, if any. A task reads its own key back from a
    /// lane it holds (it wrote it), and no other writer puts its key there.
    #[inline(always)]
    fn lane_of(&self, key: LaneKey) -> Option<&Lane> {
        if key == LaneKey::SHARED {
            return None;
        }
        self.lanes
            .iter()
            .find(|lane| lane.owner.load(Ordering::Relaxed) == key.0)
    }

    /// Counts an allocation, in `key`'s lane if it holds one. Returns
    /// whether it counted on the shared counters while a lane was free
    /// (worth taking for the next allocation).
    #[inline(always)]
    fn record_alloc(&self, amount: Amount, key: LaneKey) -> bool {
        let lane_free = match self.lane_of(key) {
            Some(lane) => {
                lane.allocated_bytes.add_owned(amount.bytes);
                lane.allocations.add_owned(amount.count);
                false
            }
            None => {
                self.counters.add_allocated(amount);
                key != LaneKey::SHARED
                    && self
                        .lanes
                        .iter()
                        .any(|lane| lane.owner.load(Ordering::Relaxed) == 0)
            }
        };
        // After the allocated figures: a report, which reads live bytes
        // first, never sees a block live that it does not see allocated.
        self.counters.add_live(amount.bytes);
        lane_free
    }

    /// Counts a free, in `key`'s lane if it holds one.
    #[inline(always)]
    fn record_free(&self, amount: Amount, key: LaneKey) {
        self.counters.sub_live(amount.bytes);
        match self.lane_of(key) {
            Some(lane) => lane.frees.add_owned(amount.count),
            None => self.counters.add_frees(amount.count),
        }
    }

    /// The row's figures: the shared counters and every lane.
    fn load(&self) -> Figures {
        self.counters.load_with(|| {
            let mut extra = Figures::default();
            for lane in &self.lanes {
                extra.allocated_bytes = extra
                    .allocated_bytes
                    .wrapping_add(lane.allocated_bytes.get());
                extra.allocations = extra.allocations.wrapping_add(lane.allocations.get());
                extra.frees = extra.frees.wrapping_add(lane.frees.get());
            }
            extra
        })
    }

    /// Copies the frames into `out` and returns how many there are; only
    /// for a published row.
    fn copy_frames(&self, out: &mut [usize; D]) -> usize {
        let depth = (self.depth.load(Ordering::Relaxed) as usize).min(D);
        for (slot, frame) in out.iter_mut().zip(&self.frames).take(depth) {
            *slot = frame.load(Ordering::Relaxed);
        }
        depth
    }
}

/// A fixed-capacity table of `M` callsites of up to `D` frames each, plus the
/// overflow bucket and the tracker's own bucket. Blocks whose stack was not
/// captured are not counted here at all: their figures are what the task
/// totals hold beyond the callsite rows and buckets (see
/// `Ledger::callsite_bucket`), which keeps a counter that every thread would
/// share off the threads-only path.
pub struct CallsiteTable<const M: usize, const D: usize> {
    rows: Registry<SiteRow<D>, M>,
    overflow: SharedCounters,
    tracker: SharedCounters,
}

/// A callsite row as a report sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallsiteRowView<const D: usize> {
    /// The row's index in the table.
    pub row: u32,
    /// Return addresses, innermost first; only the first `depth` are set.
    pub frames: [usize; D],
    /// How many of `frames` are set.
    pub depth: usize,
    /// What was allocated and freed from this callsite.
    pub figures: Figures,
}

impl<const D: usize> CallsiteRowView<D> {
    /// The return addresses, innermost first.
    pub fn frames(&self) -> &[usize] {
        self.frames.get(..self.depth).unwrap_or(&[])
    }
}

impl<const M: usize, const D: usize> CallsiteTable<M, D> {
    /// The bytes of one row.
    pub(crate) const ROW_BYTES: usize = core::mem::size_of::<Entry<SiteRow<D>>>();

    loom_const_fn! {
        /// An empty table.
        pub fn new() -> Self {
            Self {
                rows: Registry::new(atomic_array![Entry::new(SiteRow::new()); M]),
                overflow: SharedCounters::new(),
                tracker: SharedCounters::new(),
            }
        }
    }

    /// The row of the stack `frames`, claiming one if the stack is new;
    /// the overflow index when no row is left.
    pub fn find_or_claim(&self, frames: &[usize]) -> u32 {
        if frames.is_empty() {
            return uncaptured::<M>();
        }
        let publish = |row: &SiteRow<D>| {
            for (slot, &frame) in row.frames.iter().zip(frames) {
                slot.store(frame, Ordering::Relaxed);
            }
            row.depth
                .store(frames.len().min(D) as u32, Ordering::Relaxed);
        };
        self.rows
            .find_or_claim(crate::hash::stack(frames), publish)
            .map_or(overflow::<M>(), |index| index as u32)
    }

    /// The shared counters of a bucket `site` (overflow or the tracker's);
    /// none for a row, an uncaptured or an untracked block.
    fn bucket(&self, site: u32) -> Option<&SharedCounters> {
        match site {
            NO_SITE => None,
            _ if site == overflow::<M>() => Some(&self.overflow),
            _ if site == tracker::<M>() => Some(&self.tracker),
            _ => None,
        }
    }

    /// Records an allocation at `site` by `key`: in its lane of the row if
    /// it holds one. Returns whether a lane of the row was free while `key`
    /// held none, so that the caller may [`claim_lane`](Self::claim_lane)
    /// for its next allocation there.
    #[inline]
    pub fn record_alloc(&self, site: u32, amount: Amount, key: LaneKey) -> bool {
        match self.rows.payload(site as usize) {
            Some(row) => row.record_alloc(amount, key),
            None => {
                if let Some(counters) = self.bucket(site) {
                    counters.record_alloc(amount);
                }
                false
            }
        }
    }

    /// Records the free of a block allocated at `site`, by `key`.
    #[inline]
    pub fn record_free(&self, site: u32, amount: Amount, key: LaneKey) {
        match self.rows.payload(site as usize) {
            Some(row) => row.record_free(amount, key),
            None => {
                if let Some(counters) = self.bucket(site) {
                    counters.record_free(amount);
                }
            }
        }
    }

    /// Takes a free lane of row `site` for `key`, which must be a task's and
    /// hold none there; `None` if no lane is free (or `site` is no row).
    pub fn claim_lane(&self, site: u32, key: LaneKey) -> Option<HeldLane> {
        if key == LaneKey::SHARED {
            return None;
        }
        let row = self.rows.payload(site as usize)?;
        let lane = row.lanes.iter().position(|lane| {
            lane.owner
                .compare_exchange(0, key.0, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        })?;
        Some(HeldLane::new(site, lane))
    }

    /// Gives back a lane that [`claim_lane`](Self::claim_lane) gave `key`.
    /// Its counts stay the callsite's.
    pub fn release_lane(&self, held: HeldLane, key: LaneKey) {
        let Some(lane) = held
            .site_and_lane()
            .and_then(|(site, lane)| self.rows.payload(site as usize)?.lanes.get(lane))
        else {
            return;
        };
        // Only the holder writes its key, so the check cannot race; it keeps
        // a stale or damaged record from freeing another task's lane.
        if lane.owner.load(Ordering::Relaxed) == key.0 {
            lane.owner.store(0, Ordering::Release);
        }
    }

    /// Calls `visit` with every published row.
    pub fn for_each_row(&self, mut visit: impl FnMut(&CallsiteRowView<D>)) {
        self.rows.for_each(|index, row| {
            let mut view = CallsiteRowView {
                row: index as u32,
                frames: [0; D],
                depth: 0,
                figures: row.load(),
            };
            view.depth = row.copy_frames(&mut view.frames);
            visit(&view);
        });
    }

    /// How many lanes of the rows tasks hold now.
    pub fn lanes_held(&self) -> usize {
        let mut held = 0;
        self.rows.for_each(|_, row| {
            held += row
                .lanes
                .iter()
                .filter(|lane| lane.owner.load(Ordering::Relaxed) != 0)
                .count();
        });
        held
    }

    /// How many rows hold a callsite.
    pub fn rows_in_use(&self) -> usize {
        self.rows.rows_in_use()
    }

    /// Sets how many rows may hold callsites, at most `M`.
    pub fn set_limit(&self, rows: usize) {
        self.rows.set_limit(rows);
    }

    /// How many rows may hold callsites.
    pub fn limit(&self) -> usize {
        self.rows.limit()
    }

    /// The figures of stacks that found no row.
    pub fn overflow_figures(&self) -> Figures {
        self.overflow.load()
    }

    /// The figures of the tracker's own blocks.
    pub fn tracker_figures(&self) -> Figures {
        self.tracker.load()
    }
}

impl<const M: usize, const D: usize> Default for CallsiteTable<M, D> {
    fn default() -> Self {
        Self::new()
    }
}

/// A lane a task holds: its row and which of the row's lanes, as one word
/// (0 for none) that a task row keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeldLane(u32);

impl HeldLane {
    const NONE: Self = Self(0);

    fn new(site: u32, lane: usize) -> Self {
        Self(
            site.wrapping_mul(LANES as u32)
                .wrapping_add(lane as u32)
                .wrapping_add(1),
        )
    }

    fn site_and_lane(self) -> Option<(u32, usize)> {
        let index = self.0.checked_sub(1)?;
        let lanes = LANES as u32;
        Some((
            index.checked_div(lanes)?,
            index.checked_rem(lanes)? as usize,
        ))
    }
}

/// The lanes one task holds, at most [`HELD`], kept in its task row so that
/// they are given back when the task ends. Only the task writes it.
pub(crate) struct HeldLanes {
    slots: [AtomicU32; HELD],
}

impl HeldLanes {
    loom_const_fn! {
        pub(crate) fn new() -> Self {
            Self {
                slots: atomic_array![AtomicU32::new(0); HELD],
            }
        }
    }

    /// Makes room for a lane at row `site`: an empty slot, or else the slot
    /// the row's index picks, whose lane `release` gives back (a task that
    /// goes round more callsites than it may hold lanes keeps some of them,
    /// rather than none as giving back the oldest would). Returns the slot;
    /// none where a task holds no lanes.
    pub(crate) fn make_room(&self, site: u32, release: impl FnOnce(HeldLane)) -> Option<usize> {
        if let Some(empty) = self
            .slots
            .iter()
            .position(|slot| slot.load(Ordering::Relaxed) == HeldLane::NONE.0)
        {
            return Some(empty);
        }
        let slot = (site as usize).checked_rem(HELD)?;
        let held = self.slots.get(slot)?;
        release(HeldLane(held.load(Ordering::Relaxed)));
        held.store(HeldLane::NONE.0, Ordering::Relaxed);
        Some(slot)
    }

    /// Keeps `held` in `slot`, which [`make_room`](Self::make_room) gave.
    pub(crate) fn keep(&self, slot: usize, held: HeldLane) {
        if let Some(slot) = self.slots.get(slot) {
            slot.store(held.0, Ordering::Relaxed);
        }
    }

    /// Gives back every lane held, as the task ends.
    pub(crate) fn release_all(&self, mut release: impl FnMut(HeldLane)) {
        for slot in &self.slots {
            let held = HeldLane(slot.load(Ordering::Relaxed));
            if held != HeldLane::NONE {
                slot.store(HeldLane::NONE.0, Ordering::Relaxed);
                release(held);
            }
        }
    }
}

#[cfg(all(test, not(alloc_track_loom), target_has_atomic = "64"))]
mod tests {
    use super::*;

    fn flows(figures: Figures) -> (u64, u64, u64, u64) {
        (
            figures.allocated_bytes,
            figures.allocations,
            figures.freed_bytes,
            figures.frees,
        )
    }

    fn row_figures<const M: usize>(table: &CallsiteTable<M, 2>, site: u32) -> Figures {
        let mut found = Figures::default();
        table.for_each_row(|row| {
            if row.row == site {
                found = row.figures;
            }
        });
        found
    }

    #[test]
    fn counts_in_lanes_and_shared_add_up() {
        let table = CallsiteTable::<4, 2>::new();
        let site = table.find_or_claim(&[1, 2]);
        let (a, b, c) = (LaneKey::task(0), LaneKey::task(1), LaneKey::task(2));
        // Without a lane: shared, and the answer says a lane is free.
        assert!(table.record_alloc(site, Amount::block(10), a));
        assert!(table.claim_lane(site, a).is_some());
        assert!(!table.record_alloc(site, Amount::block(20), a));
        assert!(table.claim_lane(site, b).is_some());
        assert_eq!(table.lanes_held(), 2);
        // Both lanes taken: a third task counts shared and is told so.
        assert!(!table.record_alloc(site, Amount::block(40), c));
        assert!(table.claim_lane(site, c).is_none());
        // A bucket never asks for a lane.
        assert!(!table.record_alloc(site, Amount::block(80), LaneKey::SHARED));
        table.record_free(site, Amount::block(10), b);
        table.record_free(site, Amount::block(20), c);
        table.record_free(site, Amount::block(40), a);
        let figures = row_figures(&table, site);
        assert_eq!(flows(figures), (150, 4, 70, 3));
        assert_eq!(figures.peak_live_bytes, 150);
    }

    #[test]
    fn a_lane_given_back_keeps_its_counts_for_the_callsite() {
        let table = CallsiteTable::<4, 2>::new();
        let site = table.find_or_claim(&[1, 2]);
        let (a, b) = (LaneKey::task(0), LaneKey::task(1));
        let held = table.claim_lane(site, a).unwrap();
        assert!(table.claim_lane(site, LaneKey::task(5)).is_some());
        table.record_alloc(site, Amount::block(16), a);
        // Another task cannot give back a lane that is not its own.
        table.release_lane(held, b);
        assert_eq!(table.lanes_held(), 2);
        table.release_lane(held, a);
        assert_eq!(table.lanes_held(), 1);
        assert_eq!(table.claim_lane(site, b), Some(held));
        table.record_alloc(site, Amount::block(16), b);
        table.record_free(site, Amount::block(16), b);
        assert_eq!(flows(row_figures(&table, site)), (32, 2, 16, 1));
    }

    #[test]
    fn a_task_holds_at_most_held_lanes_and_gives_one_back_for_a_new_one() {
        let table = CallsiteTable::<8, 2>::new();
        let key = LaneKey::task(3);
        let held = HeldLanes::new();
        let sites: [u32; HELD + 2] = core::array::from_fn(|n| table.find_or_claim(&[n + 1]));
        for &site in &sites {
            let lane = table.claim_lane(site, key).unwrap();
            let slot = held.make_room(site, |old| table.release_lane(old, key));
            held.keep(slot.unwrap(), lane);
            assert!(table.lanes_held() <= HELD);
        }
        assert_eq!(table.lanes_held(), HELD);
        // Rows 4 and 5 took the slots of rows 0 and 1, whose lanes went
        // back; the rest are held.
        for (n, &site) in sites.iter().enumerate() {
            let mine = table.record_alloc(site, Amount::block(1), key);
            assert_eq!(mine, n < 2, "site {n}");
        }
        held.release_all(|lane| table.release_lane(lane, key));
        assert_eq!(table.lanes_held(), 0);
    }

    #[test]
    fn a_held_lane_is_one_word_that_is_never_zero() {
        for site in [0, 1, 7, 1 << 20] {
            for lane in 0..LANES {
                let held = HeldLane::new(site, lane);
                assert_ne!(held, HeldLane::NONE);
                assert_eq!(held.site_and_lane(), Some((site, lane)));
            }
        }
        assert_eq!(HeldLane::NONE.site_and_lane(), None);
    }
}
