//! Reports that allocate nothing: the top rows of each table by a chosen
//! order, copied into fixed-capacity `heapless` vectors, with the buckets and
//! totals beside them, printable with `Display` (and `defmt` with that
//! feature).

use core::fmt;

use heapless::Vec;

use crate::callsite::CallsiteRowView;
use crate::figures::{ExactAllocations, Figures, TaskFigures};
use crate::task::TaskRowView;

/// The figures of all tracked blocks together.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Totals {
    /// The sum over every task row and bucket. The peak is the exact peak of
    /// all live bytes when [`global_peak`](Self::global_peak) is on, else 0.
    pub figures: Figures,
    /// Whether the ledger keeps the global peak (see
    /// [`Ledger::with_global_peak`](crate::Ledger::with_global_peak)).
    pub global_peak: bool,
    /// Frees whose header failed its check (the heap was overwritten by the
    /// program); they were passed to the inner allocator but not counted.
    pub damaged_headers: u64,
    /// The sampling form's mean interval in bytes, `None` in the exact form:
    /// when set, the figures are estimates.
    pub sampling: Option<u64>,
    /// In the sampling form, what was allocated, counted exactly.
    pub exact_allocations: Option<ExactAllocations>,
    /// Samples that could not be taken (no free entry for the live sampled
    /// blocks, or no memory), and the bytes they stood for: what the
    /// estimates miss.
    pub dropped_samples: u64,
    /// See [`dropped_samples`](Self::dropped_samples).
    pub dropped_bytes: u64,
}

/// Which rows a report keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Order {
    /// Most bytes live now: what holds memory, and what leaks.
    LiveBytes,
    /// Most bytes allocated over all time: the busiest allocators.
    AllocatedBytes,
    /// Most allocations per live byte (allocations divided by live bytes plus
    /// one): volatile sites that allocate often and keep little, the usual
    /// cause of heap fragmentation.
    Churn,
}

impl Order {
    /// Whether `a` comes before `b` in this order.
    pub fn ranks_above(self, a: &Figures, b: &Figures) -> bool {
        match self {
            Order::LiveBytes => a.live_bytes() > b.live_bytes(),
            Order::AllocatedBytes => a.allocated_bytes > b.allocated_bytes,
            Order::Churn => {
                let weight = |f: &Figures| u128::from(f.live_bytes()).wrapping_add(1);
                u128::from(a.allocations).wrapping_mul(weight(b))
                    > u128::from(b.allocations).wrapping_mul(weight(a))
            }
        }
    }

    fn name(self) -> &'static str {
        match self {
            Order::LiveBytes => "live bytes",
            Order::AllocatedBytes => "allocated bytes",
            Order::Churn => "churn",
        }
    }
}

/// Puts `item` into `top`, which is kept sorted with the best first and at
/// most `K` long; an item no better than the last of a full `top` is dropped.
pub(crate) fn insert_ranked<T, const K: usize>(
    top: &mut Vec<T, K>,
    item: T,
    above: impl Fn(&T, &T) -> bool,
) {
    if top.is_full() {
        match top.last() {
            Some(last) if above(&item, last) => {
                top.pop();
            }
            _ => return,
        }
    }
    if top.push(item).is_err() {
        return; // only when K is zero
    }
    let slice = top.as_mut_slice();
    let mut index = slice.len().saturating_sub(1);
    while index > 0 {
        let (before, from) = slice.split_at_mut(index);
        match (before.last_mut(), from.first_mut()) {
            (Some(previous), Some(current)) if above(current, previous) => {
                core::mem::swap(previous, current);
            }
            _ => break,
        }
        index -= 1;
    }
}

/// The top `K` task rows in some order, with the buckets and totals.
#[derive(Clone, Debug)]
pub struct TaskReport<const K: usize> {
    /// How `top` is ordered.
    pub order: Order,
    /// The first `K` task rows in `order`, best first.
    pub top: Vec<TaskRowView, K>,
    /// How many rows hold a task.
    pub rows_in_use: usize,
    /// How many rows the table has.
    pub capacity: usize,
    /// Tasks that have ended.
    pub finished: TaskFigures,
    /// Tasks that found the table full.
    pub overflow: TaskFigures,
    /// Allocations while the context could not name the task.
    pub unknown: TaskFigures,
    /// The tracker's own allocations.
    pub tracker: TaskFigures,
    /// All tracked blocks together.
    pub totals: Totals,
}

/// The top `K` callsites in some order, with the buckets and totals.
#[derive(Clone, Debug)]
pub struct CallsiteReport<const K: usize, const D: usize> {
    /// How `top` is ordered.
    pub order: Order,
    /// The first `K` callsites in `order`, best first.
    pub top: Vec<CallsiteRowView<D>, K>,
    /// How many rows hold a callsite.
    pub rows_in_use: usize,
    /// How many rows the table has.
    pub capacity: usize,
    /// Stacks that found no free row.
    pub overflow: Figures,
    /// Blocks whose stack was not captured (derived: see
    /// [`Ledger::callsite_bucket`](crate::Ledger::callsite_bucket)).
    pub uncaptured: Figures,
    /// The tracker's own blocks.
    pub tracker: Figures,
    /// The sum over all callsite rows and buckets; its flows are those of the
    /// task totals.
    pub totals: Figures,
}

const FIGURES_HEADING: &str =
    "        live        peak   allocated  allocations       freed       frees";

impl fmt::Display for Figures {
    /// One line of right-aligned columns, as under the reports' headings.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:>12}{:>12}{:>12}{:>13}{:>12}{:>12}",
            self.live_bytes(),
            self.peak_live_bytes,
            self.allocated_bytes,
            self.allocations,
            self.freed_bytes,
            self.frees
        )
    }
}

impl fmt::Display for TaskFigures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{:>16}{:>16}",
            self.figures, self.freed_by_others_bytes, self.freed_of_others_bytes
        )
    }
}

impl<const K: usize> fmt::Display for TaskReport<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "tasks by {} ({} of {} rows in use)",
            self.order.name(),
            self.rows_in_use,
            self.capacity
        )?;
        writeln!(
            f,
            "{:>20}{}{:>16}{:>16}",
            "task", FIGURES_HEADING, "freed by others", "freed of others"
        )?;
        for row in &self.top {
            writeln!(f, "{:>20}{}", row.id, row.figures)?;
        }
        writeln!(f, "{:>20}{}", "(finished)", self.finished)?;
        writeln!(f, "{:>20}{}", "(overflow)", self.overflow)?;
        writeln!(f, "{:>20}{}", "(unknown)", self.unknown)?;
        if self.tracker.figures.allocations > 0 {
            writeln!(f, "{:>20}{}", "(tracker)", self.tracker)?;
        }
        write!(f, "{:>20}{}", "(total)", self.totals.figures)?;
        if self.totals.damaged_headers > 0 {
            write!(
                f,
                "\n{} frees had damaged headers",
                self.totals.damaged_headers
            )?;
        }
        Ok(())
    }
}

impl<const K: usize, const D: usize> fmt::Display for CallsiteReport<K, D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "callsites by {} ({} of {} rows in use)",
            self.order.name(),
            self.rows_in_use,
            self.capacity
        )?;
        writeln!(f, "{:>12}{}", "callsite", FIGURES_HEADING)?;
        for (rank, row) in self.top.iter().enumerate() {
            writeln!(f, "{:>12}{}", rank + 1, row.figures)?;
            for frame in row.frames() {
                writeln!(f, "{:>14}{:#x}", "at ", frame)?;
            }
        }
        writeln!(f, "{:>12}{}", "(overflow)", self.overflow)?;
        writeln!(f, "{:>12}{}", "(uncaptured)", self.uncaptured)?;
        if self.tracker.allocations > 0 {
            writeln!(f, "{:>12}{}", "(tracker)", self.tracker)?;
        }
        write!(f, "{:>12}{}", "(total)", self.totals)
    }
}
