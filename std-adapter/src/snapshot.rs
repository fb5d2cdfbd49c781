//! Snapshots of the figures at one moment, and what changed between two: the
//! threads and callsites whose live bytes grew (leaks) and those that
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

/// How one thread's figures changed between two snapshots.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct ThreadChange {
    /// The thread's name, as in [`ThreadReport`].
    pub name: String,
    /// Bytes allocated in between.
    pub allocated: u64,
    /// Allocations made in between.
    pub allocations: u64,
    /// Bytes of the thread's blocks freed in between.
    pub freed: u64,
    /// Change of live bytes.
    pub live_change: i64,
    /// Live bytes at the later snapshot.
    pub live: u64,
}

/// How one callsite's figures changed between two snapshots.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct CallsiteChange {
    /// The callsite, resolved to symbols.
    pub backtrace: Backtrace,
    /// Bytes allocated in between.
    pub allocated: u64,
    /// Allocations made in between.
    pub allocations: u64,
    /// Bytes freed in between.
    pub freed: u64,
    /// Change of live bytes.
    pub live_change: i64,
    /// Live bytes at the later snapshot.
    pub live: u64,
}

/// What changed between two snapshots, largest growth of live bytes first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct SnapshotDiff {
    /// Threads whose figures changed.
    pub threads: Vec<ThreadChange>,
    /// Callsites whose figures changed.
    pub callsites: Vec<CallsiteChange>,
}

fn live_change(now: u64, before: u64) -> i64 {
    (i128::from(now) - i128::from(before)).clamp(i64::MIN.into(), i64::MAX.into()) as i64
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
                let change = ThreadChange {
                    name: name.clone(),
                    allocated: now.total_alloc.saturating_sub(before.total_alloc),
                    allocations: now.allocations.saturating_sub(before.allocations),
                    freed: now.total_freed.saturating_sub(before.total_freed),
                    live_change: live_change(now.current_used, before.current_used),
                    live: now.current_used,
                };
                (change.allocated > 0 || change.freed > 0 || change.live_change != 0)
                    .then_some(change)
            })
            .collect();
        threads.sort_by(|a, b| b.live_change.cmp(&a.live_change).then(a.name.cmp(&b.name)));

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
                let allocated = now.allocated_bytes.saturating_sub(then.allocated_bytes);
                let freed = now.freed_bytes.saturating_sub(then.freed_bytes);
                if allocated == 0 && freed == 0 {
                    return None;
                }
                let mut backtrace = backtrace.clone();
                backtrace.resolve();
                Some(CallsiteChange {
                    backtrace,
                    allocated,
                    allocations: now.allocations.saturating_sub(then.allocations),
                    freed,
                    live_change: live_change(now.live_bytes(), then.live_bytes()),
                    live: now.live_bytes(),
                })
            })
            .collect();
        // The tracker's own memory last, whatever it did.
        callsites.sort_by(|a, b| {
            let own = |change: &CallsiteChange| change.backtrace.kind == CallsiteKind::Tracker;
            own(a)
                .cmp(&own(b))
                .then(b.live_change.cmp(&a.live_change))
                .then(b.allocations.cmp(&a.allocations))
        });
        SnapshotDiff { threads, callsites }
    }
}

impl SnapshotDiff {
    /// The program's callsites whose live bytes grew, most first: candidate
    /// leaks.
    pub fn grew(&self) -> impl Iterator<Item = &CallsiteChange> {
        self.callsites.iter().filter(|change| {
            change.live_change > 0 && change.backtrace.kind != CallsiteKind::Tracker
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
        churned.sort_by_key(|change| std::cmp::Reverse(change.allocations));
        churned
    }

    /// The difference as JSON.
    #[cfg(feature = "serde")]
    pub fn to_json(&self) -> serde_json::Result<String> {
        serde_json::to_string_pretty(self)
    }
}

fn signed(change: i64) -> String {
    let size = Size(change.unsigned_abs());
    if change < 0 {
        format!("-{size}")
    } else {
        format!("+{size}")
    }
}

/// The figures both kinds of change share, in one line.
fn write_flows(
    f: &mut fmt::Formatter<'_>,
    live_change: i64,
    live: u64,
    allocated: u64,
    allocations: u64,
    freed: u64,
) -> fmt::Result {
    writeln!(
        f,
        "live {} (now {}), allocated {} in {} allocations, freed {}",
        signed(live_change),
        Size(live),
        Size(allocated),
        allocations,
        Size(freed)
    )
}

impl fmt::Display for SnapshotDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "threads:")?;
        for c in &self.threads {
            write!(f, "  {}: ", c.name)?;
            write_flows(
                f,
                c.live_change,
                c.live,
                c.allocated,
                c.allocations,
                c.freed,
            )?;
        }
        writeln!(f, "callsites:")?;
        for c in &self.callsites {
            write_flows(
                f,
                c.live_change,
                c.live,
                c.allocated,
                c.allocations,
                c.freed,
            )?;
            c.backtrace.write(f, true)?;
        }
        Ok(())
    }
}
