//! Snapshots of the figures at one moment, and what changed between two: the
//! threads and callsites whose bytes in use grew (leaks) and those that
//! allocated most in between (churn). With the `serde` feature, a snapshot
//! is written to a file as JSON, with its stacks resolved, and read back
//! anywhere (by the command-line tool, on another machine).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::backtrace_report::{
    self, Backtrace, BacktraceMetric, BacktraceOptions, BacktraceReport, CallsiteKind,
};
use crate::config::{backtrace_mode, BacktraceMode};
use crate::context::ReportScope;
use crate::size::Size;
use crate::thread_report::{thread_report, ThreadReport};
use alloc_track_core::Figures;

/// Every thread's and callsite's figures at one moment. Callsites are kept
/// unresolved, so a snapshot is cheap; symbols are looked up only for what a
/// [`diff`](Snapshot::diff) shows, or when the snapshot is written out.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Snapshot {
    /// When it was taken, in nanoseconds since the Unix epoch.
    time_unix_nanos: u64,
    /// Which process it was taken in: the same for every snapshot of one
    /// run of a program, and different for another run.
    process: u64,
    /// The backtrace mode in force.
    mode: BacktraceMode,
    /// The sampling form's interval, `None` when exact.
    sampling_interval: Option<u64>,
    threads: ThreadReport,
    /// The scope report (empty in files written before scopes existed).
    #[cfg_attr(feature = "serde", serde(default))]
    scopes: ThreadReport,
    callsites: Vec<Callsite>,
    /// The program's executable mappings, for profile formats that name
    /// them.
    mappings: Vec<Mapping>,
}

/// One callsite of a snapshot: its stack and its figures.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub(crate) struct Callsite {
    pub(crate) backtrace: Backtrace,
    #[cfg_attr(feature = "serde", serde(with = "FiguresDef"))]
    pub(crate) figures: Figures,
}

/// The core's figures, as a snapshot file writes them.
#[cfg(feature = "serde")]
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(remote = "Figures")]
struct FiguresDef {
    allocated_bytes: u64,
    allocations: u64,
    freed_bytes: u64,
    frees: u64,
    peak_live_bytes: u64,
}

/// A file mapped executable into the process: its code's addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub(crate) struct Mapping {
    /// First address.
    pub(crate) start: u64,
    /// One past the last address.
    pub(crate) limit: u64,
    /// Where in the file the mapping starts.
    pub(crate) offset: u64,
    /// The file's path.
    pub(crate) path: String,
    /// The file's GNU build ID, in hex, when it has one: how a profiler
    /// that symbolizes on its side finds the file's debug info.
    #[cfg_attr(feature = "serde", serde(default))]
    pub(crate) build_id: Option<String>,
}

/// The executable mappings of this process, from `/proc/self/maps`; none
/// where it does not exist.
///
/// Where a loaded object's code starts inside a mapping rather than at its
/// first page (the linker put the end of the read-only data on the same
/// page), the mapping is given from the code's first address, its file
/// offset moved by as much: the same correspondence of addresses and file
/// offsets, which tools that take the executable segment's virtual address
/// for the mapping's start (as `go tool pprof` does) then also read right.
fn executable_mappings() -> Vec<Mapping> {
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return Vec::new();
    };
    #[cfg(target_os = "linux")]
    let objects = crate::loaded::loaded_objects();
    #[cfg(target_os = "linux")]
    let code = |start: u64, limit: u64| {
        crate::loaded::code_in(&objects, start as usize, limit as usize)
            .map_or((start, None), |code| (code.start as u64, code.build_id))
    };
    #[cfg(not(target_os = "linux"))]
    let code = |start: u64, _: u64| (start, None);
    maps.lines()
        .filter_map(|line| {
            // `start-limit perms offset device inode path`
            let mut fields = line.split_whitespace();
            let (start, limit) = fields.next()?.split_once('-')?;
            let perms = fields.next()?;
            let offset = fields.next()?;
            let path = fields.nth(2)?;
            if !perms.contains('x') || !path.starts_with('/') {
                return None;
            }
            let start = u64::from_str_radix(start, 16).ok()?;
            let limit = u64::from_str_radix(limit, 16).ok()?;
            let offset = u64::from_str_radix(offset, 16).ok()?;
            let (code_start, build_id) = code(start, limit);
            Some(Mapping {
                start: code_start,
                limit,
                offset: offset + (code_start - start),
                path: path.to_owned(),
                build_id,
            })
        })
        .collect()
}

/// This process's mark for [`Snapshot::process`]: its id and the moment of
/// its first snapshot.
fn process_mark() -> u64 {
    static MARK: OnceLock<u64> = OnceLock::new();
    *MARK.get_or_init(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos() as u64);
        (u64::from(std::process::id()).rotate_left(40) ^ nanos) | 1
    })
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
    /// Scopes whose figures changed (in the words of a thread's change).
    pub scopes: Vec<ThreadChange>,
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
        let scopes = crate::scope_report();
        let _scope = ReportScope::enter();
        let callsites = backtrace_report::collect()
            .into_iter()
            .map(|(backtrace, figures)| Callsite { backtrace, figures })
            .collect();
        Self {
            time_unix_nanos: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |since| since.as_nanos() as u64),
            process: process_mark(),
            mode: backtrace_mode(),
            sampling_interval: crate::sampling_interval(),
            threads,
            scopes,
            callsites,
            mappings: executable_mappings(),
        }
    }

    /// A snapshot of figures gathered elsewhere (a firmware's log, read on
    /// the host): its tasks as thread report entries, its callsites with
    /// their stacks already resolved (or left as addresses). It is never
    /// resolved against this process's symbols, and it writes to files,
    /// profiles and flamegraphs like any other.
    pub fn from_parts(
        threads: ThreadReport,
        callsites: Vec<(Backtrace, Figures)>,
        sampling_interval: Option<u64>,
    ) -> Snapshot {
        Snapshot {
            time_unix_nanos: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |since| since.as_nanos() as u64),
            // Never this process's mark: its addresses are another
            // program's.
            process: 0,
            mode: BacktraceMode::Short,
            sampling_interval,
            threads,
            scopes: ThreadReport::default(),
            callsites: callsites
                .into_iter()
                .map(|(backtrace, figures)| Callsite { backtrace, figures })
                .collect(),
            mappings: Vec::new(),
        }
    }

    /// The thread report of this snapshot.
    pub fn threads(&self) -> &ThreadReport {
        &self.threads
    }

    /// The scope report of this snapshot.
    pub fn scopes(&self) -> &ThreadReport {
        &self.scopes
    }

    /// When the snapshot was taken.
    pub fn time(&self) -> SystemTime {
        UNIX_EPOCH + std::time::Duration::from_nanos(self.time_unix_nanos)
    }

    /// The backtrace mode in force when the snapshot was taken.
    pub fn mode(&self) -> BacktraceMode {
        self.mode
    }

    /// The sampling form's mean interval in bytes when the snapshot was
    /// taken (its callsite figures are then estimates), `None` when exact.
    pub fn sampling_interval(&self) -> Option<u64> {
        self.sampling_interval
    }

    /// Whether `other` was taken in the same run of the same program, so
    /// that the same return address means the same code.
    pub fn same_process(&self, other: &Snapshot) -> bool {
        self.process == other.process
    }

    /// Looks up the symbols of every callsite's stack (once per address for
    /// the life of the process), as a snapshot read elsewhere needs them.
    /// Does nothing for a snapshot read from a file: its stacks were
    /// resolved where it was taken.
    pub fn resolve(&mut self) {
        if self.process != process_mark() {
            return;
        }
        let _scope = ReportScope::enter();
        backtrace_report::resolve_all(
            self.callsites
                .iter_mut()
                .map(|callsite| &mut callsite.backtrace),
        );
    }

    /// The callsites as a backtrace report, resolved, merged and sorted by
    /// `options` (the tracker's own memory last), as
    /// [`backtrace_report_with`](crate::backtrace_report_with) would have
    /// made it when the snapshot was taken (without lifetimes).
    pub fn backtrace_report(&self, options: BacktraceOptions) -> BacktraceReport {
        self.backtrace_report_with(options, |_, _| true)
    }

    /// [`backtrace_report`](Self::backtrace_report) of the callsites that
    /// `filter` keeps, as [`backtrace_report_with`](crate::backtrace_report_with)
    /// filters: before the stacks are resolved, so that what is left out
    /// costs no symbol lookup.
    pub fn backtrace_report_with(
        &self,
        options: BacktraceOptions,
        filter: impl Fn(&Backtrace, &BacktraceMetric) -> bool,
    ) -> BacktraceReport {
        let _scope = ReportScope::enter();
        let report = BacktraceReport(
            self.callsites
                .iter()
                .map(|callsite| (&callsite.backtrace, self.metric(&callsite.figures)))
                .filter(|(backtrace, metric)| filter(backtrace, metric))
                .map(|(backtrace, metric)| (backtrace.clone(), metric))
                .collect(),
        );
        report.finish(self.process == process_mark(), options)
    }

    /// The callsites and their figures in the report's words, the stacks
    /// as the snapshot holds them (resolved or not).
    #[cfg_attr(not(feature = "export"), allow(dead_code))]
    pub(crate) fn callsites(&self) -> impl Iterator<Item = (&Backtrace, BacktraceMetric)> + '_ {
        self.callsites
            .iter()
            .map(|callsite| (&callsite.backtrace, self.metric(&callsite.figures)))
    }

    /// The program's executable mappings when the snapshot was taken.
    #[cfg_attr(not(feature = "export"), allow(dead_code))]
    pub(crate) fn mappings(&self) -> &[Mapping] {
        &self.mappings
    }

    fn metric(&self, figures: &Figures) -> BacktraceMetric {
        let mut metric = BacktraceMetric::from_figures(figures, self.mode);
        metric.sampling_interval = self.sampling_interval;
        if self.sampling_interval.is_some() {
            // As the snapshot's thread report read it, when it was taken.
            metric.dropped_samples = self
                .threads
                .0
                .values()
                .find_map(|thread| thread.dropped_samples);
        }
        metric
    }

    /// The snapshot as JSON, its stacks resolved: what
    /// [`write_to`](Snapshot::write_to) writes.
    #[cfg(feature = "serde")]
    pub fn to_json(&self) -> serde_json::Result<String> {
        let mut resolved = self.clone();
        resolved.resolve();
        let _scope = ReportScope::enter();
        serde_json::to_string(&SnapshotFile {
            format: FILE_FORMAT.into(),
            version: FILE_VERSION,
            snapshot: std::borrow::Cow::Owned(resolved),
        })
    }

    /// A snapshot from its JSON (as [`to_json`](Snapshot::to_json) wrote
    /// it).
    #[cfg(feature = "serde")]
    pub fn from_json(json: &str) -> std::io::Result<Snapshot> {
        let _scope = ReportScope::enter();
        let file: SnapshotFile<'static> = serde_json::from_str(json)?;
        if file.format != FILE_FORMAT || file.version != FILE_VERSION {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "not an alloc-track snapshot of version {FILE_VERSION}: format {:?}, version {}",
                    file.format, file.version
                ),
            ));
        }
        Ok(file.snapshot.into_owned())
    }

    /// Writes the snapshot to a file as JSON, its stacks resolved, so that
    /// it can be read anywhere (the command-line tool shows it, turns it
    /// into a profile or a flamegraph, and compares two).
    #[cfg(feature = "serde")]
    pub fn write_to(&self, path: impl AsRef<std::path::Path>) -> std::io::Result<()> {
        let json = self.to_json()?;
        let _scope = ReportScope::enter();
        std::fs::write(path, json)
    }

    /// Reads a snapshot that [`write_to`](Snapshot::write_to) wrote.
    #[cfg(feature = "serde")]
    pub fn read_from(path: impl AsRef<std::path::Path>) -> std::io::Result<Snapshot> {
        let json = {
            let _scope = ReportScope::enter();
            std::fs::read_to_string(path)?
        };
        Self::from_json(&json)
    }

    /// What changed since `earlier`: every thread and callsite that
    /// allocated or freed in between, those whose live bytes grew most
    /// first.
    ///
    /// Callsites are matched by their return addresses when both snapshots
    /// come from one run of the program; otherwise (snapshots read from
    /// files of two runs) by their functions, files and lines, stacks that
    /// resolve alike counting as one.
    pub fn diff(&self, earlier: &Snapshot) -> SnapshotDiff {
        let _scope = ReportScope::enter();
        let threads = report_changes(&self.threads, &earlier.threads);
        let scopes = report_changes(&self.scopes, &earlier.scopes);

        let by_address = self.same_process(earlier);
        let (mut now, mut then) = (self.clone(), earlier.clone());
        if !by_address {
            now.resolve();
            then.resolve();
        }
        let before = then.figures_by_key(by_address);
        let mut callsites: Vec<CallsiteChange> = now
            .figures_by_key(by_address)
            .into_iter()
            .filter_map(|(key, (backtrace, now))| {
                let then = before
                    .get(&key)
                    .map(|(_, figures)| *figures)
                    .unwrap_or_default();
                let change = Change::between(&now, &then);
                if change.allocated == 0 && change.freed == 0 {
                    return None;
                }
                let mut backtrace = backtrace.clone();
                if by_address {
                    backtrace.resolve();
                }
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
        SnapshotDiff {
            threads,
            scopes,
            callsites,
        }
    }

    /// The callsites' figures by the key a diff matches them on, summed
    /// where several stacks share one.
    fn figures_by_key(&self, by_address: bool) -> HashMap<CallsiteKey, (&Backtrace, Figures)> {
        let mut figures: HashMap<CallsiteKey, (&Backtrace, Figures)> = HashMap::new();
        for callsite in &self.callsites {
            let backtrace = &callsite.backtrace;
            let key = CallsiteKey {
                kind: backtrace.kind,
                frames: backtrace
                    .frames
                    .iter()
                    .map(|frame| {
                        if by_address || frame.symbols.is_empty() {
                            FrameKey::Address(frame.address)
                        } else {
                            FrameKey::Symbols(
                                frame
                                    .symbols
                                    .iter()
                                    .map(|symbol| {
                                        (symbol.name.clone(), symbol.file.clone(), symbol.line)
                                    })
                                    .collect(),
                            )
                        }
                    })
                    .collect(),
            };
            let entry = figures
                .entry(key)
                .or_insert((backtrace, Figures::default()));
            let sum = &mut entry.1;
            let add = &callsite.figures;
            sum.allocated_bytes += add.allocated_bytes;
            sum.allocations += add.allocations;
            sum.freed_bytes += add.freed_bytes;
            sum.frees += add.frees;
            sum.peak_live_bytes += add.peak_live_bytes;
        }
        figures
    }
}

/// The entries of a thread (or scope) report that changed, the largest
/// growth of bytes in use first.
fn report_changes(now: &ThreadReport, earlier: &ThreadReport) -> Vec<ThreadChange> {
    let mut changes: Vec<ThreadChange> = now
        .0
        .iter()
        .filter_map(|(name, now)| {
            let before = earlier.0.get(name).cloned().unwrap_or_default();
            let change = Change::between(&thread_figures(now), &thread_figures(&before));
            change.is_some().then(|| ThreadChange {
                name: name.clone(),
                change,
            })
        })
        .collect();
    changes.sort_by(|a, b| {
        b.change
            .in_use_change
            .cmp(&a.change.in_use_change)
            .then(a.name.cmp(&b.name))
    });
    changes
}

/// What a diff matches callsites on.
#[derive(PartialEq, Eq, Hash)]
struct CallsiteKey {
    kind: CallsiteKind,
    frames: Vec<FrameKey>,
}

/// One frame of a [`CallsiteKey`]: its address within one run, its
/// functions, files and lines across runs.
#[derive(PartialEq, Eq, Hash)]
enum FrameKey {
    Address(usize),
    Symbols(Vec<SymbolKey>),
}

/// A function, file and line of a frame.
type SymbolKey = (Option<Arc<str>>, Option<Arc<std::path::Path>>, Option<u32>);

/// What a snapshot file holds: a mark of its format, and the snapshot.
#[cfg(feature = "serde")]
#[derive(serde::Serialize, serde::Deserialize)]
struct SnapshotFile<'a> {
    format: std::borrow::Cow<'a, str>,
    version: u32,
    #[serde(flatten)]
    snapshot: std::borrow::Cow<'a, Snapshot>,
}

/// The mark of a snapshot file.
#[cfg(feature = "serde")]
const FILE_FORMAT: &str = "alloc-track snapshot";
/// The version of the snapshot file's layout.
#[cfg(feature = "serde")]
const FILE_VERSION: u32 = 1;

impl fmt::Display for Snapshot {
    /// The thread report, then the backtrace report (its first
    /// [`SHOWN_ENTRIES`](crate::SHOWN_ENTRIES) entries; all with `{:#}`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "THREADS\n{}", self.threads)?;
        if !self.scopes.0.is_empty() {
            writeln!(f, "SCOPES\n{}", self.scopes)?;
        }
        let options = BacktraceOptions {
            merge_same_frames: self.mode != BacktraceMode::Full,
            ..BacktraceOptions::default()
        };
        let report = self.backtrace_report(options);
        if f.alternate() {
            write!(f, "BACKTRACES\n{report:#}")
        } else {
            write!(f, "BACKTRACES\n{report}")
        }
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
        if !self.scopes.is_empty() {
            writeln!(f, "scopes:")?;
            for scope in &self.scopes {
                writeln!(f, "  {}: {}", scope.name, scope.change)?;
            }
        }
        writeln!(f, "callsites:")?;
        for site in &self.callsites {
            writeln!(f, "{}", site.change)?;
            site.backtrace.write(f, true)?;
        }
        Ok(())
    }
}
