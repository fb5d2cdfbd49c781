//! `defmt::Format` for the figures and reports, for firmware that logs over
//! defmt. Callsites print as raw return addresses, which the host resolves
//! against the firmware's ELF.

use defmt::{write, Format, Formatter};

use crate::callsite::CallsiteRowView;
use crate::figures::{Figures, TaskFigures};
use crate::ledger::Mode;
use crate::party::{Party, TaskBucket};
use crate::report::Totals;
use crate::report::{CallsiteReport, Order, TaskReport};
use crate::task::TaskRowView;

impl Format for Figures {
    fn format(&self, f: Formatter<'_>) {
        write!(
            f,
            "live={=u64} peak={=u64} allocated={=u64} allocations={=u64} freed={=u64} frees={=u64}",
            self.live_bytes(),
            self.peak_live_bytes,
            self.allocated_bytes,
            self.allocations,
            self.freed_bytes,
            self.frees
        );
    }
}

impl Format for TaskFigures {
    fn format(&self, f: Formatter<'_>) {
        write!(
            f,
            "{} freed_by_others={=u64} freed_of_others={=u64}",
            self.figures, self.freed_by_others_bytes, self.freed_of_others_bytes
        );
    }
}

impl Format for TaskRowView {
    fn format(&self, f: Formatter<'_>) {
        write!(f, "task {=u64}: {}", self.id, self.figures);
    }
}

impl<const D: usize> Format for CallsiteRowView<D> {
    fn format(&self, f: Formatter<'_>) {
        write!(
            f,
            "callsite {}: frames={=[?]:#x}",
            self.figures,
            self.frames()
        );
    }
}

impl Format for Totals {
    fn format(&self, f: Formatter<'_>) {
        write!(
            f,
            "total: {} damaged_headers={=u64}",
            self.figures, self.damaged_headers
        );
    }
}

impl Format for Party {
    fn format(&self, f: Formatter<'_>) {
        match self {
            Party::Task(id) => write!(f, "task {=u64}", id),
            Party::Bucket(bucket) => write!(f, "{}", bucket),
        }
    }
}

impl Format for TaskBucket {
    fn format(&self, f: Formatter<'_>) {
        match self {
            TaskBucket::Finished => write!(f, "finished"),
            TaskBucket::Overflow => write!(f, "overflow"),
            TaskBucket::Unknown => write!(f, "unknown"),
            TaskBucket::Tracker => write!(f, "tracker"),
        }
    }
}

impl Format for Order {
    fn format(&self, f: Formatter<'_>) {
        match self {
            Order::LiveBytes => write!(f, "live bytes"),
            Order::AllocatedBytes => write!(f, "allocated bytes"),
            Order::Churn => write!(f, "churn"),
        }
    }
}

impl Format for Mode {
    fn format(&self, f: Formatter<'_>) {
        match self {
            Mode::Off => write!(f, "off"),
            Mode::Tasks => write!(f, "tasks"),
            Mode::TasksAndCallsites => write!(f, "tasks and callsites"),
        }
    }
}

impl<const K: usize> Format for TaskReport<K> {
    fn format(&self, f: Formatter<'_>) {
        write!(
            f,
            "tasks by {} ({=usize} of {=usize} rows in use)",
            self.order, self.rows_in_use, self.capacity
        );
        for row in &self.top {
            write!(f, "\n  {}", row);
        }
        write!(
            f,
            "\n  finished: {}\n  overflow: {}\n  unknown: {}",
            self.finished, self.overflow, self.unknown
        );
        if self.tracker.figures.allocations > 0 {
            write!(f, "\n  tracker: {}", self.tracker);
        }
        write!(f, "\n  {}", self.totals);
    }
}

impl<const K: usize, const D: usize> Format for CallsiteReport<K, D> {
    fn format(&self, f: Formatter<'_>) {
        write!(
            f,
            "callsites by {} ({=usize} of {=usize} rows in use)",
            self.order, self.rows_in_use, self.capacity
        );
        for row in &self.top {
            write!(f, "\n  {}", row);
        }
        write!(
            f,
            "\n  overflow: {}\n  uncaptured: {}",
            self.overflow, self.uncaptured
        );
        if self.tracker.allocations > 0 {
            write!(f, "\n  tracker: {}", self.tracker);
        }
        write!(f, "\n  total: {}", self.totals);
    }
}
