//! The thread report: per thread name, what the thread allocated, what it
//! freed, what is still live, and which threads freed its blocks.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use alloc_track_core::{DroppedSamples, Party, TaskBucket, TaskFigures, TaskId};

use crate::context::{ReportScope, LEDGER};
use crate::names;
use crate::size::{estimated, Size};

/// The name under which threads that have exited are reported.
pub const FINISHED_THREADS: &str = "(finished threads)";
/// The name under which threads that found the thread table full are
/// reported.
pub const OVERFLOW_THREADS: &str = "(thread table full)";
/// The name under which allocations are reported whose thread could not be
/// told (nested inside the allocator, or after the thread's exit).
pub const UNKNOWN_THREAD: &str = "(unknown thread)";
/// The name under which the tracker's own allocations are reported: what
/// reports allocate, and what they keep (symbol caches), whichever thread
/// asked for them; and everything the tracker's own threads allocate (the
/// debug endpoint's), from each one's first allocation: a thread whose name
/// starts with `alloc-track/` is taken for one of them. Exact in both forms:
/// in the sampling form its blocks are made in the tracker's own heap and
/// counted there (see
/// [`AllocTrack::with_sampling`](crate::AllocTrack::with_sampling)).
pub const REPORTS: &str = "(alloc-track reports)";
/// The name under which frees made inside `measure` or `assert_no_alloc`
/// are reported as the freeing party.
pub const MEASUREMENTS: &str = "(measurements)";

/// The report name of a bucket.
pub(crate) fn bucket_name(bucket: TaskBucket) -> &'static str {
    match bucket {
        TaskBucket::Finished => FINISHED_THREADS,
        TaskBucket::Overflow => OVERFLOW_THREADS,
        TaskBucket::Unknown => UNKNOWN_THREAD,
        TaskBucket::Tracker => REPORTS,
    }
}

/// What one thread (or a bucket of threads) allocated and freed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ThreadMetric {
    /// The thread's name (the report's key adds ` #<id>` when live threads
    /// share it), or the bucket's.
    pub name: String,
    /// Total bytes allocated in this thread.
    pub total_alloc: u64,
    /// Total bytes freed in this thread (its own blocks and others').
    pub total_did_free: u64,
    /// Total bytes allocated in this thread that have been freed (by anyone).
    pub total_freed: u64,
    /// Total bytes allocated in this thread that are not freed.
    pub current_used: u64,
    /// Total bytes allocated in this thread that have been freed by the given
    /// thread (other threads only), by the freeing thread's report key.
    pub freed_by_others: BTreeMap<String, u64>,
    /// Number of allocations made in this thread.
    pub allocations: u64,
    /// Number of this thread's allocations that have been freed.
    pub frees: u64,
    /// The most bytes this thread had live at once. For
    /// [`FINISHED_THREADS`], the largest peak of any one finished thread, or
    /// the most bytes they left live together if that was ever more.
    pub peak_used: u64,
    /// Bytes this thread freed of other threads' allocations.
    pub freed_of_others: u64,
    /// The thread's id (several in a [`ThreadGroup`]; none for a bucket).
    pub thread_ids: Vec<TaskId>,
    /// In the sampling form, the mean interval in bytes between samples:
    /// then `total_alloc` and `allocations` are exact and the other figures
    /// unbiased estimates. `None` when every figure is exact.
    pub sampling_interval: Option<u64>,
    /// In the sampling form, the samples the process had dropped when the
    /// report was taken, what its estimates miss (the same in every entry
    /// of a report; see [`dropped_samples`](crate::dropped_samples)).
    /// `None` when every figure is exact.
    #[cfg_attr(feature = "serde", serde(default))]
    pub dropped_samples: Option<DroppedSamples>,
}

impl ThreadMetric {
    /// Allocations of this thread that are not freed.
    pub fn live_allocations(&self) -> u64 {
        self.allocations.saturating_sub(self.frees)
    }

    pub(crate) fn add(&mut self, figures: &TaskFigures) {
        let f = &figures.figures;
        self.total_did_free += f.freed_bytes.saturating_sub(figures.freed_by_others_bytes)
            + figures.freed_of_others_bytes;
        self.current_used += f.live_bytes();
        self.peak_used = self.peak_used.max(f.peak_live_bytes);
        self.freed_of_others += figures.freed_of_others_bytes;
        match figures.exact_allocations {
            // The sampling form: what was allocated is exact; what is live
            // is estimated, and what was freed is the difference.
            Some(exact) => {
                self.sampling_interval = crate::sampling_interval();
                self.total_alloc += exact.bytes;
                self.allocations += exact.count;
                self.total_freed += exact.bytes.saturating_sub(f.live_bytes());
                self.frees += exact.count.saturating_sub(f.live_allocations());
                self.peak_used = self.peak_used.max(self.current_used);
            }
            None => {
                self.total_alloc += f.allocated_bytes;
                self.total_freed += f.freed_bytes;
                self.allocations += f.allocations;
                self.frees += f.frees;
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.total_alloc == 0 && self.total_did_free == 0 && self.total_freed == 0
    }
}

impl fmt::Display for ThreadMetric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "total_alloc: {}", Size(self.total_alloc))?;
        writeln!(f, "total_did_free: {}", Size(self.total_did_free))?;
        writeln!(f, "total_freed: {}", Size(self.total_freed))?;
        writeln!(f, "current_used: {}", Size(self.current_used))?;
        writeln!(f, "peak_used: {}", Size(self.peak_used))?;
        writeln!(
            f,
            "allocations: {} ({} live)",
            self.allocations,
            self.live_allocations()
        )?;
        for (name, size) in &self.freed_by_others {
            writeln!(f, "freed by {}: {}", name, Size(*size))?;
        }
        Ok(())
    }
}

/// Every thread's figures, one entry per live thread, keyed by its name, and
/// the buckets ([`FINISHED_THREADS`] and the others). Live threads that share
/// a name each have their own entry, keyed `name #id` (the id is
/// [`ThreadMetric::thread_ids`]); [`by_name`](Self::by_name) adds them up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ThreadReport(pub BTreeMap<String, ThreadMetric>);

/// The threads that share a name, added up ([`ThreadReport::by_name`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct ThreadGroup {
    /// How many threads (report entries) the group covers.
    pub threads: usize,
    /// Their figures added up. `peak_used` is the sum of their peaks: at
    /// least what they held together at any moment, and never below
    /// `current_used`. Frees among them count in `freed_by_others` under
    /// each freer's own key.
    pub metric: ThreadMetric,
    /// The largest peak of any one of them.
    pub largest_thread_peak: u64,
}

impl ThreadReport {
    /// The entries grouped by thread name: all `tokio-rt-worker` threads in
    /// one group, with how many threads it covers.
    pub fn by_name(&self) -> BTreeMap<String, ThreadGroup> {
        let mut groups = BTreeMap::<String, ThreadGroup>::new();
        for (key, metric) in &self.0 {
            let name = if metric.name.is_empty() {
                key
            } else {
                &metric.name
            };
            let group = groups.entry(name.clone()).or_default();
            group.threads += 1;
            group.largest_thread_peak = group.largest_thread_peak.max(metric.peak_used);
            let sum = &mut group.metric;
            sum.name.clone_from(name);
            sum.total_alloc += metric.total_alloc;
            sum.total_did_free += metric.total_did_free;
            sum.total_freed += metric.total_freed;
            sum.current_used += metric.current_used;
            sum.allocations += metric.allocations;
            sum.frees += metric.frees;
            sum.peak_used += metric.peak_used;
            sum.freed_of_others += metric.freed_of_others;
            sum.thread_ids.extend(&metric.thread_ids);
            sum.sampling_interval = sum.sampling_interval.or(metric.sampling_interval);
            sum.dropped_samples = sum.dropped_samples.or(metric.dropped_samples);
            for (freer, bytes) in &metric.freed_by_others {
                *sum.freed_by_others.entry(freer.clone()).or_default() += bytes;
            }
        }
        groups
    }

    /// One line per entry: its key, then the figures in the order of
    /// [`ThreadMetric`]'s fields (`freed_by_others` as `key=bytes` pairs
    /// joined by `;`, the thread ids by `;`), then in the sampling form the
    /// interval and the dropped samples' count and bytes. The sampling
    /// columns are empty in the exact form, so that a sampled report's
    /// estimates are never read as exact figures.
    pub fn csv(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::from(
            "thread,total_alloc,total_did_free,total_freed,current_used,allocations,frees,\
             peak_used,freed_of_others,freed_by_others,thread_ids,sampling_interval,\
             dropped_samples,dropped_bytes\n",
        );
        for (key, metric) in &self.0 {
            let freed_by_others: Vec<String> = metric
                .freed_by_others
                .iter()
                .map(|(freer, bytes)| format!("{freer}={bytes}"))
                .collect();
            let ids: Vec<String> = metric.thread_ids.iter().map(u64::to_string).collect();
            let dropped = metric.dropped_samples;
            let _ = writeln!(
                out,
                "{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
                csv_field(key),
                metric.total_alloc,
                metric.total_did_free,
                metric.total_freed,
                metric.current_used,
                metric.allocations,
                metric.frees,
                metric.peak_used,
                metric.freed_of_others,
                csv_field(&freed_by_others.join(";")),
                ids.join(";"),
                CsvOptional(metric.sampling_interval),
                CsvOptional(dropped.map(|dropped| dropped.samples)),
                CsvOptional(dropped.map(|dropped| dropped.bytes)),
            );
        }
        out
    }
}

/// Puts the samples dropped, read when the report started, into each of its
/// sampled entries.
pub(crate) fn carry_dropped(report: &mut BTreeMap<String, ThreadMetric>, dropped: DroppedSamples) {
    for metric in report.values_mut() {
        if metric.sampling_interval.is_some() {
            metric.dropped_samples = Some(dropped);
        }
    }
}

/// A CSV column that an entry may not have: its figure, or nothing.
pub(crate) struct CsvOptional<T>(pub(crate) Option<T>);

impl<T: fmt::Display> fmt::Display for CsvOptional<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(figure) => figure.fmt(f),
            None => Ok(()),
        }
    }
}

/// A CSV field: quoted, with quotes doubled, when it holds a comma, a quote
/// or a line break.
pub(crate) fn csv_field(field: &str) -> std::borrow::Cow<'_, str> {
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\"")).into()
    } else {
        field.into()
    }
}

impl fmt::Display for ThreadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let line = self
            .0
            .values()
            .find_map(|metric| estimated(metric.sampling_interval, metric.dropped_samples));
        if let Some(line) = line {
            writeln!(f, "{line}\n")?;
        }
        // The program's threads first, then the rows that stand for no one
        // thread (finished threads, overflow), the tracker's own last.
        let rank = |name: &str| match name {
            REPORTS => 2,
            _ if name.starts_with('(') => 1,
            _ => 0,
        };
        let mut rows: Vec<(&String, &ThreadMetric)> = self.0.iter().collect();
        rows.sort_by_key(|(name, _)| rank(name));
        for (name, metric) in rows {
            writeln!(f, "{name}:\n{metric}")?;
        }
        Ok(())
    }
}

#[cfg(feature = "serde")]
impl ThreadReport {
    /// The report as a JSON object keyed by thread name.
    pub fn to_json(&self) -> serde_json::Result<String> {
        serde_json::to_string_pretty(self)
    }
}

/// Names parties of the cross-free table for reports.
pub(crate) struct Namer {
    names: HashMap<TaskId, String>,
    scopes: HashMap<TaskId, String>,
}

impl Namer {
    pub(crate) fn new() -> Self {
        Self {
            names: names::snapshot(),
            scopes: crate::scope::names(),
        }
    }

    /// A party's name: a thread's, a scope's, or what a measurement is.
    pub(crate) fn party(&self, id: TaskId) -> String {
        if crate::scope::is_thread(id) {
            self.thread(id)
        } else {
            self.scopes
                .get(&id)
                .cloned()
                .unwrap_or_else(|| MEASUREMENTS.to_owned())
        }
    }

    pub(crate) fn thread(&self, id: TaskId) -> String {
        self.names
            .get(&id)
            .cloned()
            .unwrap_or_else(|| format!("thread {id}"))
    }
}

/// A report of every thread's allocations, taken while the program runs.
///
/// The figures of each thread are read one after the other without stopping
/// anyone, so while threads allocate the report blends nearby moments; once
/// they pause it is exact. What reports allocate is counted under
/// [`REPORTS`], apart from the calling thread's figures, and a thread's
/// frees of report data are left out of its `total_did_free`.
pub fn thread_report() -> ThreadReport {
    let _scope = ReportScope::enter();
    // Read before the rows: a sample dropped meanwhile is in neither.
    let dropped = crate::global::dropped_so_far();
    let namer = Namer::new();
    let mut rows = Vec::new();
    // Threads only: scopes have their own report.
    LEDGER.for_each_task(|row| {
        if crate::scope::is_thread(row.id) {
            rows.push(row);
        }
    });
    let mut pairs = Vec::new();
    LEDGER.for_each_cross_free(|pair| pairs.push(pair));

    let live: std::collections::HashSet<TaskId> = rows.iter().map(|row| row.id).collect();
    // How many live threads have each name: those that share one are keyed
    // with their ids, and so are finished threads named like a live one.
    let mut live_names = HashMap::<String, usize>::new();
    for row in &rows {
        *live_names.entry(namer.thread(row.id)).or_default() += 1;
    }
    let key_of = |id: TaskId| {
        let name = namer.thread(id);
        let sharing = live_names.get(&name).copied().unwrap_or(0);
        if sharing > 1 || (sharing == 1 && !live.contains(&id)) {
            format!("{name} #{id}")
        } else {
            name
        }
    };
    let party_key = |party: Party| match party {
        Party::Task(id) if crate::scope::is_thread(id) => key_of(id),
        Party::Task(id) => namer.party(id),
        Party::Bucket(bucket) => bucket_name(bucket).to_owned(),
    };
    let mut report = BTreeMap::<String, ThreadMetric>::new();
    for row in rows {
        let metric = report.entry(key_of(row.id)).or_default();
        metric.name = namer.thread(row.id);
        metric.add(&row.figures);
        metric.thread_ids.push(row.id);
    }
    for bucket in TaskBucket::ALL {
        let mut metric = ThreadMetric {
            name: bucket_name(bucket).to_owned(),
            ..ThreadMetric::default()
        };
        metric.add(&match bucket {
            TaskBucket::Tracker => crate::context::tracker_figures(),
            bucket => LEDGER.task_bucket(bucket),
        });
        if !metric.is_empty() {
            report.insert(bucket_name(bucket).to_owned(), metric);
        }
    }
    let owner_key = |party: Party| match party {
        // A scope's figures are in the scope report.
        Party::Task(id) if !crate::scope::is_thread(id) => None,
        // A thread that has exited since has its figures, these frees
        // included, in the finished bucket.
        Party::Task(id) if !live.contains(&id) => Some(FINISHED_THREADS.to_owned()),
        party => Some(party_key(party)),
    };
    for pair in pairs {
        if pair.owner == Party::Bucket(TaskBucket::Tracker) {
            // Dropping a report is not part of the program's work: the
            // freeing thread's figures leave it out.
            if let Some(metric) = owner_key(pair.freer).and_then(|key| report.get_mut(&key)) {
                metric.total_did_free = metric.total_did_free.saturating_sub(pair.bytes);
                metric.freed_of_others = metric.freed_of_others.saturating_sub(pair.bytes);
            }
        }
        if let Some(metric) = owner_key(pair.owner).and_then(|key| report.get_mut(&key)) {
            *metric
                .freed_by_others
                .entry(party_key(pair.freer))
                .or_default() += pair.bytes;
        }
    }
    carry_dropped(&mut report, dropped);
    let (overflow_bytes, _) = LEDGER.cross_free_overflow();
    if overflow_bytes > 0 {
        // Pairs beyond the pair table's capacity: the owners' totals still
        // count them, only who freed them is not known.
        for metric in report.values_mut() {
            let named: u64 = metric.freed_by_others.values().sum();
            let freed_by_others =
                metric.total_freed + metric.freed_of_others - metric.total_did_free;
            if freed_by_others > named {
                metric
                    .freed_by_others
                    .insert("(not recorded)".to_owned(), freed_by_others - named);
            }
        }
    }
    ThreadReport(report)
}

/// Every scope's figures, keyed by its name: what was allocated while
/// threads were inside it, what of that was freed (by anyone), what is
/// still live, and which threads or scopes freed its blocks. The same shape
/// as [`thread_report`](crate::thread_report), from the same table:
/// allocations outside every scope stay in the thread report.
///
/// A scope's `peak_used` is the sum of its rows' peaks (one row per thread
/// that was inside it at once): at least the most it held at any moment.
/// `thread_ids` lists the task ids of its rows.
pub fn scope_report() -> ThreadReport {
    let _scope = ReportScope::enter();
    // Read before the rows, as the thread report does.
    let dropped = crate::global::dropped_so_far();
    let (rows_by_id, overflowed) = crate::scope::rows();
    let namer = Namer::new();
    let mut rows = Vec::new();
    LEDGER.for_each_task(|row| rows.push(row));
    let mut pairs = Vec::new();
    LEDGER.for_each_cross_free(|pair| pairs.push(pair));

    let mut report = BTreeMap::<String, ThreadMetric>::new();
    for row in &rows {
        if let Some(name) = rows_by_id.get(&row.id) {
            let metric = report.entry((*name).to_owned()).or_default();
            metric.name = (*name).to_owned();
            metric.add(&row.figures);
            metric.thread_ids.push(row.id);
        }
    }
    if overflowed > 0 {
        let mut metric = ThreadMetric {
            name: crate::scope::OVERFLOW_SCOPES.to_owned(),
            ..ThreadMetric::default()
        };
        metric.add(&LEDGER.task_bucket(TaskBucket::Overflow));
        report.insert(crate::scope::OVERFLOW_SCOPES.to_owned(), metric);
    }
    let party = |party: Party| match party {
        Party::Task(id) => namer.party(id),
        Party::Bucket(bucket) => bucket_name(bucket).to_owned(),
    };
    for pair in pairs {
        let Party::Task(owner) = pair.owner else {
            continue;
        };
        let Some(owner) = rows_by_id.get(&owner) else {
            continue;
        };
        let freer = party(pair.freer);
        // Frees among one scope's rows are the scope's own.
        if freer == *owner {
            continue;
        }
        if let Some(metric) = report.get_mut(*owner) {
            *metric.freed_by_others.entry(freer).or_default() += pair.bytes;
        }
    }
    carry_dropped(&mut report, dropped);
    ThreadReport(report)
}
