//! The callsite table: one row per distinct stack of return addresses, keyed
//! by a hash of the stack, claimed lock-free and kept for the life of the
//! program.
//!
//! Rows are registered by the protocol in `registry.rs`: every row can be
//! used before the table counts as full, a reader never sees a half-written
//! row, and no task waits for another.

use crate::figures::{Amount, Figures, SharedCounters};
use crate::primitive::{atomic_array, loom_const_fn, AtomicU32, AtomicUsize, Ordering};
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

struct SiteRow<const D: usize> {
    depth: AtomicU32,
    frames: [AtomicUsize; D],
    counters: SharedCounters,
}

impl<const D: usize> SiteRow<D> {
    loom_const_fn! {
        fn new() -> Self {
            Self {
                depth: AtomicU32::new(0),
                frames: atomic_array![AtomicUsize::new(0); D],
                counters: SharedCounters::new(),
            }
        }
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

    /// The counters of `site`: none for an uncaptured or untracked block.
    fn counters(&self, site: u32) -> Option<&SharedCounters> {
        match site {
            NO_SITE => None,
            _ if site == overflow::<M>() => Some(&self.overflow),
            _ if site == tracker::<M>() => Some(&self.tracker),
            _ => self.rows.payload(site as usize).map(|row| &row.counters),
        }
    }

    /// Records an allocation at `site`.
    #[inline]
    pub fn record_alloc(&self, site: u32, amount: Amount) {
        if let Some(counters) = self.counters(site) {
            counters.record_alloc(amount);
        }
    }

    /// Records the free of a block allocated at `site`.
    #[inline]
    pub fn record_free(&self, site: u32, amount: Amount) {
        if let Some(counters) = self.counters(site) {
            counters.record_free(amount);
        }
    }

    /// Calls `visit` with every published row.
    pub fn for_each_row(&self, mut visit: impl FnMut(&CallsiteRowView<D>)) {
        self.rows.for_each(|index, row| {
            let mut view = CallsiteRowView {
                row: index as u32,
                frames: [0; D],
                depth: 0,
                figures: row.counters.load(),
            };
            view.depth = row.copy_frames(&mut view.frames);
            visit(&view);
        });
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
