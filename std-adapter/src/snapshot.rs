//! Snapshots of the figures at one moment, and what changed between two: the
//! threads and callsites whose bytes in use grew (leaks) and those that
//! allocated most in between (churn).

use std::collections::HashMap;
use std::fmt;

use crate::backtrace_report::{self, Backtrace, CallsiteKind};
use crate::context::ReportScope;
use crate::size::Size;
use crate::thread_report::{thread_report, ThreadReport};
use alloc_track_core::Figures;

/// Every thread's and callsite's figures at one moment. Callsites are kept
/// unresolved, so a snapshot is cheap; symbols are looked up only for what a
/// [`diff`](Snapshot::diff) shows.
#[derive(Clone, Debug)]
pub struct Snapshot {
    threads: ThreadReport,
    callsites: Vec<(Backtrace, Figures)>,
}

/// How one thread's or callsite's figures changed between two snapshots, in
/// the words of [`BacktraceMetric`](crate::BacktraceMetric).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Change {
    /// Bytes allocated in between.
    pub allocated: u64,
    /// Allocations made in between.
    pub allocations: u64,
    /// Bytes of the row's blocks freed in between.
    pub freed: u64,
    /// How much the bytes in use grew (or, below zero, shrank).
    pub in_use_change: i64,
    /// Bytes in use at the later snapshot.
    pub in_use: u64,
}

impl Change {
    /// From the figures at the earlier snapshot to those at the later one.
    fn between(now: &Figures, then: &Figures) -> Self {
        let (now_in_use, then_in_use) = (now.live_bytes(), then.live_bytes());
        Self {
            allocated: now.allocated_bytes.saturating_sub(then.allocated_bytes),
            allocations: now.allocations.saturating_sub(then.allocations),
            freed: now.freed_bytes.saturating_sub(then.freed_bytes),
            in_use_change: (i128::from(now_in_use) - i128::from(then_in_use))
                .clamp(i64::MIN.into(), i64::MAX.into()) as i64,
            in_use: now_in_use,
        }
    }

    /// Whether anything was allocated or freed in between.
    fn is_some(&self) -> bool {
        self.allocated > 0 || self.freed > 0 || self.in_use_change != 0
    }
}

impl fmt::Display for Change {
    /// One line: `in use +4 KB (now 4 KB), allocated 36 KB in 1010
    /// allocations, freed 31 KB`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let size = Size(self.in_use_change.unsigned_abs());
        let sign = if self.in_use_change < 0 { "-" } else { "+" };
        write!(
            f,
            "in use {sign}{size} (now {}), allocated {} in {} allocations, freed {}",
            Size(self.in_use),
            Size(self.allocated),
            self.allocations,
            Size(self.freed)
        )
    }
}

/// How one thread's figures changed between two snapshots.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct ThreadChange {
    /// The thread's key in [`ThreadReport`].
    pub name: String,
    /// What changed.
    #[cfg_attr(feature = "serde", serde(flatten))]
    pub change: Change,
}

/// How one callsite's figures changed between two snapshots.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct CallsiteChange {
    /// The callsite, resolved to symbols.
    pub backtrace: Backtrace,
    /// What changed.
    #[cfg_attr(feature = "serde", serde(flatten))]
    pub change: Change,
}

/// What changed between two snapshots, largest growth of bytes in use
/// first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct SnapshotDiff {
    /// Threads whose figures changed.
    pub threads: Vec<ThreadChange>,
    /// Callsites whose figures changed.
    pub callsites: Vec<CallsiteChange>,
}

/// A thread's figures in the core's words, for [`Change::between`].
fn thread_figures(metric: &crate::ThreadMetric) -> Figures {
    Figures {
        allocated_bytes: metric.total_alloc,
        allocations: metric.allocations,
        freed_bytes: metric.total_freed,
        frees: metric.frees,
        peak_live_bytes: metric.peak_used,
    }
}

impl Snapshot {
    /// The figures of every thread and callsite now.
    pub fn take() -> Self {
        let threads = thread_report();
        let _scope = ReportScope::enter();
        Self {
            threads,
            callsites: backtrace_report::collect(),
        }
    }

    /// The thread report of this snapshot.
    pub fn threads(&self) -> &ThreadReport {
        &self.threads
    }

    /// What changed since `earlier`: every thread and callsite that
    /// allocated or freed in between, those whose live bytes grew most
    /// first.
    pub fn diff(&self, earlier: &Snapshot) -> SnapshotDiff {
        let _scope = ReportScope::enter();
        let mut threads: Vec<ThreadChange> = self
            .threads
            .0
            .iter()
            .filter_map(|(name, now)| {
                let before = earlier.threads.0.get(name).cloned().unwrap_or_default();
                let change = Change::between(&thread_figures(now), &thread_figures(&before));
                change.is_some().then(|| ThreadChange {
                    name: name.clone(),
                    change,
                })
            })
            .collect();
        threads.sort_by(|a, b| {
            b.change
                .in_use_change
                .cmp(&a.change.in_use_change)
                .then(a.name.cmp(&b.name))
        });

        let before: HashMap<(CallsiteKind, Vec<usize>), &Figures> = earlier
            .callsites
            .iter()
            .map(|(backtrace, figures)| {
                ((backtrace.kind, backtrace.addresses().collect()), figures)
            })
            .collect();
        let mut callsites: Vec<CallsiteChange> = self
            .callsites
            .iter()
            .filter_map(|(backtrace, now)| {
                let key = (backtrace.kind, backtrace.addresses().collect::<Vec<_>>());
                let then = before.get(&key).copied().copied().unwrap_or_default();
                let change = Change::between(now, &then);
                if change.allocated == 0 && change.freed == 0 {
                    return None;
                }
                let mut backtrace = backtrace.clone();
                backtrace.resolve();
                Some(CallsiteChange { backtrace, change })
            })
            .collect();
        // The tracker's own memory last, whatever it did.
        callsites.sort_by(|a, b| {
            let own = |change: &CallsiteChange| change.backtrace.kind == CallsiteKind::Tracker;
            own(a)
                .cmp(&own(b))
                .then(b.change.in_use_change.cmp(&a.change.in_use_change))
                .then(b.change.allocations.cmp(&a.change.allocations))
        });
        SnapshotDiff { threads, callsites }
    }
}

impl SnapshotDiff {
    /// The program's callsites whose bytes in use grew, most first:
    /// candidate leaks.
    pub fn grew(&self) -> impl Iterator<Item = &CallsiteChange> {
        self.callsites.iter().filter(|site| {
            site.change.in_use_change > 0 && site.backtrace.kind != CallsiteKind::Tracker
        })
    }

    /// The program's callsites that allocated most often in between, most
    /// first: the churn that fragments a heap.
    pub fn churned(&self) -> Vec<&CallsiteChange> {
        let mut churned: Vec<&CallsiteChange> = self
            .callsites
            .iter()
            .filter(|change| change.backtrace.kind != CallsiteKind::Tracker)
            .collect();
        churned.sort_by_key(|site| std::cmp::Reverse(site.change.allocations));
        churned
    }

    /// The difference as JSON.
    #[cfg(feature = "serde")]
    pub fn to_json(&self) -> serde_json::Result<String> {
        serde_json::to_string_pretty(self)
    }
}

impl fmt::Display for SnapshotDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "threads:")?;
        for thread in &self.threads {
            writeln!(f, "  {}: {}", thread.name, thread.change)?;
        }
        writeln!(f, "callsites:")?;
        for site in &self.callsites {
            writeln!(f, "{}", site.change)?;
            site.backtrace.write(f, true)?;
        }
        Ok(())
    }
}
