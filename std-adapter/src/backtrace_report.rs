//! The backtrace report: per callsite, what was allocated and freed, with the
//! callsite's stack resolved to functions, files and lines.

use std::fmt::{self, Write as _};
use std::sync::Arc;

use alloc_track_core::{CallsiteBucket, DroppedSamples, Figures, Order};

use crate::config::{backtrace_mode, BacktraceMode};
use crate::context::{ReportScope, LEDGER};
use crate::lifetimes::LifetimeSummary;
use crate::size::{estimated, Size, SizeF64};
use crate::symbol::{BacktraceSymbol, FrameOrigin};
use crate::symbols;
use crate::thread_report::CsvOptional;

/// How many entries a report's text shows unless asked for all (`{:#}`).
pub const SHOWN_ENTRIES: usize = 20;

/// One return address of a callsite's stack and the functions it lies in.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct BacktraceFrame {
    /// The return address.
    pub address: usize,
    /// The functions, innermost first; empty until resolved, or when the
    /// address has no symbol. Shared with every other frame of the same
    /// address.
    pub symbols: Arc<[BacktraceSymbol]>,
}

/// What a report entry stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum CallsiteKind {
    /// One stack of return addresses.
    Stack,
    /// Stacks that found the callsite table full.
    Overflow,
    /// Allocations whose stack was not captured (threads-only mode, no frame
    /// pointers, a stack that is not the thread's own, or allocations made
    /// inside the allocator).
    Uncaptured,
    /// The tracker's own memory: what reports allocated and keep (the
    /// symbol cache). Not the program's; listed last.
    Tracker,
}

/// A callsite's stack: return addresses, innermost first.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Backtrace {
    /// What this entry stands for.
    pub kind: CallsiteKind,
    /// The stack, innermost first.
    pub frames: Vec<BacktraceFrame>,
}

/// The name the seed crate gave its backtrace type.
pub type HashedBacktrace = Backtrace;

impl Backtrace {
    pub(crate) fn new(kind: CallsiteKind, addresses: &[usize]) -> Self {
        Self {
            kind,
            frames: addresses
                .iter()
                .map(|&address| BacktraceFrame {
                    address,
                    symbols: Arc::from([]),
                })
                .collect(),
        }
    }

    /// The return addresses, innermost first.
    pub fn addresses(&self) -> impl Iterator<Item = usize> + '_ {
        self.frames.iter().map(|frame| frame.address)
    }

    /// Looks up the symbols of every frame (cached per address).
    pub fn resolve(&mut self) {
        resolve_all(std::iter::once(self));
    }

    /// The symbols of every frame, innermost first (inlined calls as
    /// several symbols of one frame).
    fn all_symbols(&self) -> impl Iterator<Item = &BacktraceSymbol> {
        self.frames.iter().flat_map(|frame| frame.symbols.iter())
    }

    /// The frames a short backtrace shows, innermost first: the program's
    /// and its dependencies' (not the standard library's or the tracker's),
    /// ending at the program's outermost frame, so that the runtime's frames
    /// above it (thread start, an async executor's loop) are left out. All
    /// frames if every one would be hidden.
    pub fn short_symbols(&self) -> Vec<&BacktraceSymbol> {
        self.short_stack().shown
    }

    fn short_stack(&self) -> ShortStack<'_> {
        let shown: Vec<&BacktraceSymbol> = self.shown_symbols().collect();
        let cut = match self.outermost_program() {
            Some(outermost) => self
                .all_symbols()
                .skip(outermost + 1)
                .filter(shown_origin)
                .collect(),
            None => Vec::new(),
        };
        ShortStack { shown, cut }
    }

    /// Where the program's outermost frame is among all symbols.
    fn outermost_program(&self) -> Option<usize> {
        self.all_symbols()
            .enumerate()
            .filter(|(_, symbol)| symbol.origin() == FrameOrigin::Program)
            .last()
            .map(|(index, _)| index)
    }

    /// The symbols a short backtrace shows ([`short_symbols`]
    /// (Self::short_symbols)), without collecting them.
    fn shown_symbols(&self) -> impl Iterator<Item = &BacktraceSymbol> {
        let any_shown = self.all_symbols().any(|symbol| shown_origin(&symbol));
        let end = self
            .outermost_program()
            .map_or(usize::MAX, |index| index + 1);
        self.all_symbols()
            .take(end)
            .filter(move |symbol| !any_shown || shown_origin(symbol))
    }

    /// The innermost of the program's own functions in the stack: the one
    /// that allocated, once the allocator's, the library's and the tracker's
    /// frames are left out; failing that, the innermost dependency's
    /// function. `None` until resolved, without symbols, or for a stack of
    /// the standard library's frames only.
    pub fn innermost_function(&self) -> Option<&str> {
        let symbols: Vec<&BacktraceSymbol> = self.all_symbols().collect();
        [FrameOrigin::Program, FrameOrigin::Dependency]
            .iter()
            .find_map(|origin| symbols.iter().find(|symbol| symbol.origin() == *origin))
            .and_then(|symbol| symbol.name.as_deref())
    }

    /// Writes the stack, one function per line with its file and line
    /// beneath, as a short backtrace when `short`.
    pub fn write(&self, out: &mut impl fmt::Write, short: bool) -> fmt::Result {
        match self.kind {
            CallsiteKind::Overflow => {
                let memory = crate::callsite_memory();
                return writeln!(
                    out,
                    "(callsite table full: {} of {} rows in use; stacks beyond them are \
                     counted here, raise the limit with AllocTrack::with_callsite_limit, \
                     up to alloc_track::CALLSITE_ROWS = {})",
                    memory.rows_in_use,
                    memory.limit,
                    crate::capacity::CALLSITE_ROWS
                );
            }
            CallsiteKind::Uncaptured => return writeln!(out, "(stack not captured)"),
            CallsiteKind::Tracker => {
                return writeln!(
                    out,
                    "(alloc-track's own memory: reports and the symbol cache, not the program's)"
                )
            }
            CallsiteKind::Stack => {}
        }
        let cwd = std::env::current_dir().ok();
        let stack = if short {
            self.short_stack()
        } else {
            ShortStack {
                shown: self.all_symbols().collect(),
                cut: Vec::new(),
            }
        };
        if stack.shown.is_empty() {
            for address in self.addresses() {
                writeln!(out, "  {address:#x}")?;
            }
            return Ok(());
        }
        for symbol in &stack.shown {
            // Short: without generic arguments, which can run to hundreds of
            // characters in a dependency's frames.
            let name = if short {
                symbol.short_name()
            } else {
                symbol.name.as_deref().map(Into::into)
            };
            writeln!(out, "  {}", name.as_deref().unwrap_or("<unknown>"))?;
            if let Some(file) = &symbol.file {
                let file = cwd
                    .as_deref()
                    .and_then(|cwd| file.strip_prefix(cwd).ok())
                    .unwrap_or(file);
                write!(out, "      at {}", shorter_path(&file.to_string_lossy()))?;
                if let Some(line) = symbol.line {
                    write!(out, ":{line}")?;
                }
                writeln!(out)?;
            }
        }
        if !stack.cut.is_empty() {
            let mut crates: Vec<&str> = Vec::new();
            for symbol in &stack.cut {
                if let Some(name) = symbol.dependency_crate() {
                    if !crates.contains(&name) {
                        crates.push(name);
                    }
                }
            }
            write!(out, "  ... {} outer frames", stack.cut.len())?;
            if !crates.is_empty() {
                write!(out, " ({})", crates.join(", "))?;
            }
            writeln!(out)?;
        }
        Ok(())
    }

    /// A digest of what a short backtrace shows of this stack: equal for
    /// stacks that differ only in frames it hides. Cheap (the lines and the
    /// names' and files' lengths), so stacks with equal digests are then
    /// compared in full ([`Backtrace::shows_same`]).
    fn shown_digest(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut hasher = rustc_hash::FxHasher::default();
        for symbol in self.shown_symbols() {
            symbol.line.hash(&mut hasher);
            symbol.name.as_deref().map(str::len).hash(&mut hasher);
            symbol
                .file
                .as_deref()
                .map(|file| file.as_os_str().len())
                .hash(&mut hasher);
        }
        hasher.finish()
    }

    /// Whether a short backtrace shows the same of both stacks: the same
    /// functions, files and lines. (Names and files from one symbol lookup
    /// are shared, so most comparisons are of pointers.)
    fn shows_same(&self, other: &Backtrace) -> bool {
        self.shown_symbols()
            .map(|symbol| (&symbol.name, &symbol.file, symbol.line))
            .eq(other
                .shown_symbols()
                .map(|symbol| (&symbol.name, &symbol.file, symbol.line)))
    }
}

/// Whether a short backtrace shows frames of this origin: the program's
/// and its dependencies'.
fn shown_origin(symbol: &&BacktraceSymbol) -> bool {
    matches!(
        symbol.origin(),
        FrameOrigin::Program | FrameOrigin::Dependency
    )
}

/// Looks up the symbols of every frame of `backtraces` that has none, in
/// one lookup: each address once, the debug info read once for all.
pub(crate) fn resolve_all<'a>(backtraces: impl Iterator<Item = &'a mut Backtrace>) {
    let mut frames: Vec<&mut BacktraceFrame> = backtraces
        .flat_map(|backtrace| backtrace.frames.iter_mut())
        .filter(|frame| frame.symbols.is_empty())
        .collect();
    let addresses: Vec<usize> = frames.iter().map(|frame| frame.address).collect();
    for (frame, symbols) in frames.iter_mut().zip(symbols::resolve_all(&addresses)) {
        frame.symbols = symbols;
    }
}

/// A source path as a person wants to read it: a dependency's from its
/// package directory (`tokio-1.40.0/src/...`), the standard library's from
/// `library/...`, anything else as it is.
fn shorter_path(path: &str) -> &str {
    if let Some((_, rest)) = path.split_once("/registry/src/") {
        // Past the registry's own directory.
        return rest.split_once('/').map_or(rest, |(_, package)| package);
    }
    if let Some(rest) = path.strip_prefix("/rustc/") {
        // Past the compiler's commit hash.
        return rest.split_once('/').map_or(rest, |(_, library)| library);
    }
    path
}

/// A short backtrace: the frames shown, and the outer ones cut.
struct ShortStack<'a> {
    shown: Vec<&'a BacktraceSymbol>,
    cut: Vec<&'a BacktraceSymbol>,
}

/// What was allocated and freed at one callsite.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct BacktraceMetric {
    /// Number of bytes allocated.
    pub allocated: u64,
    /// Number of bytes allocated here that have since been freed.
    pub freed: u64,
    /// Number of allocations.
    pub allocations: u64,
    /// The tracker's backtrace mode when the report was taken.
    #[cfg_attr(feature = "serde", serde(skip))]
    pub mode: BacktraceMode,
    /// Number of allocations made here that have since been freed.
    pub frees: u64,
    /// The most bytes allocated here that were live at once. For an entry
    /// that merges several stacks, the sum of their peaks (at most that);
    /// not kept for [`CallsiteKind::Uncaptured`] (0).
    pub peak: u64,
    /// How many distinct stacks this entry stands for: more than one when a
    /// report merged stacks that print the same (see
    /// [`BacktraceOptions::merge_same_frames`]).
    pub stacks: u64,
    /// In the sampling form, the mean interval in bytes between samples:
    /// every figure here is then an unbiased estimate. `None` when exact.
    pub sampling_interval: Option<u64>,
    /// In the sampling form, how long the freed blocks lived (estimated
    /// from the samples), when a clock was available.
    pub lifetimes: Option<LifetimeSummary>,
    /// In the sampling form, the samples the process had dropped when the
    /// report was taken, what its estimates miss (the same in every entry
    /// of a report; see [`dropped_samples`](crate::dropped_samples)); in
    /// a snapshot's report, as of the snapshot. `None` when exact, and in
    /// a snapshot whose threads do not say (one made of parts, or written
    /// before the figure existed).
    pub dropped_samples: Option<DroppedSamples>,
}

impl BacktraceMetric {
    pub(crate) fn from_figures(figures: &Figures, mode: BacktraceMode) -> Self {
        Self {
            allocated: figures.allocated_bytes,
            freed: figures.freed_bytes,
            allocations: figures.allocations,
            mode,
            frees: figures.frees,
            peak: figures.peak_live_bytes,
            stacks: 1,
            sampling_interval: crate::sampling_interval(),
            lifetimes: None,
            dropped_samples: None,
        }
    }

    fn absorb(&mut self, other: &BacktraceMetric) {
        self.lifetimes = match (self.lifetimes.take(), &other.lifetimes) {
            (Some(mut mine), Some(theirs)) => {
                mine.absorb(theirs);
                Some(mine)
            }
            (mine, theirs) => mine.or_else(|| theirs.clone()),
        };
        self.dropped_samples = self.dropped_samples.or(other.dropped_samples);
        self.allocated += other.allocated;
        self.freed += other.freed;
        self.allocations += other.allocations;
        self.frees += other.frees;
        self.peak += other.peak;
        self.stacks += other.stacks;
    }

    fn figures(&self) -> Figures {
        Figures {
            allocated_bytes: self.allocated,
            allocations: self.allocations,
            freed_bytes: self.freed,
            frees: self.frees,
            peak_live_bytes: self.peak,
        }
    }

    /// Number of bytes currently allocated and not freed.
    pub fn in_use(&self) -> u64 {
        self.allocated.saturating_sub(self.freed)
    }

    /// Average number of bytes per allocation.
    pub fn avg_allocation(&self) -> f64 {
        if self.allocations == 0 {
            0.0
        } else {
            self.allocated as f64 / self.allocations as f64
        }
    }

    /// Number of allocations made here that are not freed.
    pub fn live_allocations(&self) -> u64 {
        self.allocations.saturating_sub(self.frees)
    }

    /// Writes the five figures of the seed's CSV.
    pub fn csv_write(&self, out: &mut impl fmt::Write) -> fmt::Result {
        write!(
            out,
            "{},{},{},{},{}",
            self.allocated,
            self.allocations,
            self.avg_allocation(),
            self.freed,
            self.in_use()
        )
    }
}

impl BacktraceMetric {
    fn write(&self, f: &mut fmt::Formatter<'_>, peak_known: bool) -> fmt::Result {
        writeln!(f, "allocated: {}", Size(self.allocated))?;
        writeln!(f, "allocations: {}", self.allocations)?;
        writeln!(f, "avg_allocation: {}", SizeF64(self.avg_allocation()))?;
        writeln!(f, "freed: {}", Size(self.freed))?;
        writeln!(f, "total_used: {}", Size(self.in_use()))?;
        if peak_known {
            writeln!(f, "peak_used: {}", Size(self.peak))?;
        }
        writeln!(f, "live_allocations: {}", self.live_allocations())?;
        if self.stacks > 1 {
            writeln!(
                f,
                "stacks: {} (they differ only in hidden frames)",
                self.stacks
            )?;
        }
        if let Some(lifetimes) = &self.lifetimes {
            write!(
                f,
                "lifetimes: {:.0}% of the freed bytes lived under 1 ms",
                100.0 * lifetimes.short_lived_share()
            )?;
            if lifetimes.is_volatile() {
                write!(f, " (volatile: short-lived allocations fragment a heap)")?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

impl fmt::Display for BacktraceMetric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write(f, true)
    }
}

/// Callsites and their figures, the most bytes in use first, the tracker's
/// own memory last.
///
/// Its text (`{}`) shows the first [`SHOWN_ENTRIES`] entries and sums up the
/// rest; `{:#}` shows every entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct BacktraceReport(pub Vec<(Backtrace, BacktraceMetric)>);

impl BacktraceReport {
    fn short(&self) -> bool {
        self.0
            .first()
            .is_none_or(|(_, metric)| metric.mode != BacktraceMode::Full)
    }

    /// Puts the entries in `order` (the first ones are those a person should
    /// look at), the tracker's own memory last whatever its figures.
    pub fn sort(&mut self, order: Order) {
        self.0.sort_by(|(a_trace, a), (b_trace, b)| {
            let (a_own, b_own) = (
                a_trace.kind == CallsiteKind::Tracker,
                b_trace.kind == CallsiteKind::Tracker,
            );
            let (a, b) = (a.figures(), b.figures());
            a_own
                .cmp(&b_own)
                .then_with(|| {
                    if order.ranks_above(&a, &b) {
                        std::cmp::Ordering::Less
                    } else if order.ranks_above(&b, &a) {
                        std::cmp::Ordering::Greater
                    } else {
                        std::cmp::Ordering::Equal
                    }
                })
                .then(b.allocated_bytes.cmp(&a.allocated_bytes))
        });
    }

    /// Merges entries whose short backtraces print the same (their stacks
    /// differ only in hidden frames, such as an async runtime's internals):
    /// their figures are summed and [`BacktraceMetric::stacks`] counts them.
    /// Keeps the first entry's stack, in the first entry's place; sort again
    /// afterwards for an order by figures.
    pub fn merge_same_frames(&mut self) {
        let mut merged: Vec<(Backtrace, BacktraceMetric)> = Vec::with_capacity(self.0.len());
        // Digest to the indices in `merged` of the stacks with it.
        let mut seen: rustc_hash::FxHashMap<u64, Vec<usize>> = Default::default();
        for (backtrace, metric) in std::mem::take(&mut self.0) {
            if backtrace.kind != CallsiteKind::Stack || backtrace.frames.is_empty() {
                merged.push((backtrace, metric));
                continue;
            }
            let candidates = seen.entry(backtrace.shown_digest()).or_default();
            match candidates
                .iter()
                .find(|&&index| merged[index].0.shows_same(&backtrace))
            {
                Some(&index) => merged[index].1.absorb(&metric),
                None => {
                    candidates.push(merged.len());
                    merged.push((backtrace, metric));
                }
            }
        }
        self.0 = merged;
    }

    /// Resolves the stacks (when `resolve`), then merges and sorts as
    /// `options` say.
    pub(crate) fn finish(mut self, resolve: bool, options: BacktraceOptions) -> Self {
        if resolve {
            resolve_all(self.0.iter_mut().map(|(backtrace, _)| backtrace));
        }
        if options.merge_same_frames {
            self.merge_same_frames();
        }
        self.sort(options.order);
        self
    }

    /// The report's text with at most `entries` entries, the rest summed up
    /// in one line.
    pub fn display_top(&self, entries: usize) -> impl fmt::Display + '_ {
        TopEntries {
            report: self,
            entries,
        }
    }

    fn write_top(&self, f: &mut fmt::Formatter<'_>, entries: usize) -> fmt::Result {
        let short = self.short();
        let first = self.0.first();
        if let Some(line) =
            first.and_then(|(_, m)| estimated(m.sampling_interval, m.dropped_samples))
        {
            writeln!(f, "{line}\n")?;
        }
        // The tracker's own entry is always shown, last.
        let (own, program): (Vec<_>, Vec<_>) = self
            .0
            .iter()
            .partition(|(backtrace, _)| backtrace.kind == CallsiteKind::Tracker);
        for (backtrace, metric) in program.iter().take(entries) {
            backtrace.write(f, short)?;
            metric.write(f, backtrace.kind != CallsiteKind::Uncaptured)?;
            writeln!(f)?;
        }
        if program.len() > entries {
            let mut rest = BacktraceMetric::default();
            for (_, metric) in &program[entries..] {
                rest.absorb(metric);
            }
            writeln!(
                f,
                "({} more callsites not shown: allocated {} in {} allocations, {} in use; \
                 `{{:#}}` shows all)\n",
                program.len() - entries,
                Size(rest.allocated),
                rest.allocations,
                Size(rest.in_use())
            )?;
        }
        for (backtrace, metric) in own {
            backtrace.write(f, short)?;
            metric.write(f, true)?;
            writeln!(f)?;
        }
        Ok(())
    }

    /// One line per callsite: the seed's five figures, the stack (escaped,
    /// in quotes), frees and peak, then in the sampling form the interval,
    /// the share of the freed bytes that were short-lived (from 0 to 1,
    /// empty when no lifetime was seen) and the dropped samples' count and
    /// bytes. The sampling columns are empty in the exact form.
    pub fn csv(&self) -> String {
        let mut out = String::from(
            "allocated,allocations,avg_allocation,freed,total_used,backtrace,frees,peak_used,\
             sampling_interval,short_lived_share,dropped_samples,dropped_bytes\n",
        );
        for (backtrace, metric) in &self.0 {
            let mut stack = String::new();
            let _ = backtrace.write(&mut stack, self.short());
            let _ = metric.csv_write(&mut out);
            let stack = stack
                .replace('\\', "\\\\")
                .replace('\n', "\\n")
                .replace('"', "\"\"");
            let share = metric
                .lifetimes
                .as_ref()
                .filter(|lifetimes| lifetimes.freed_bytes > 0)
                .map(|lifetimes| format!("{:.4}", lifetimes.short_lived_share()));
            let dropped = metric.dropped_samples;
            let _ = writeln!(
                out,
                ",\"{stack}\",{},{},{},{},{},{}",
                metric.frees,
                metric.peak,
                CsvOptional(metric.sampling_interval),
                CsvOptional(share),
                CsvOptional(dropped.map(|dropped| dropped.samples)),
                CsvOptional(dropped.map(|dropped| dropped.bytes)),
            );
        }
        out
    }

    /// The report as JSON: an array of `[backtrace, metric]` pairs.
    #[cfg(feature = "serde")]
    pub fn to_json(&self) -> serde_json::Result<String> {
        serde_json::to_string_pretty(self)
    }
}

struct TopEntries<'a> {
    report: &'a BacktraceReport,
    entries: usize,
}

impl fmt::Display for TopEntries<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.report.write_top(f, self.entries)
    }
}

impl fmt::Display for BacktraceReport {
    /// The first [`SHOWN_ENTRIES`] entries and a line for the rest; with
    /// `{:#}`, every entry.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let entries = if f.alternate() {
            usize::MAX
        } else {
            SHOWN_ENTRIES
        };
        self.write_top(f, entries)
    }
}

/// How [`backtrace_report_with`] builds a report: the defaults, changed
/// with the builder methods, so that an option added later breaks no
/// caller.
///
/// ```
/// use alloc_track::{BacktraceOptions, Order};
/// let options = BacktraceOptions::new().order(Order::Churn).merge_same_frames(false);
/// assert_eq!(options.order, Order::Churn);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct BacktraceOptions {
    /// The order of the entries. Default: most bytes in use first.
    pub order: Order,
    /// Merge stacks that print the same in a short backtrace (see
    /// [`BacktraceReport::merge_same_frames`]). Default: on, unless the
    /// backtrace mode is `Full`.
    pub merge_same_frames: bool,
}

impl Default for BacktraceOptions {
    fn default() -> Self {
        Self {
            order: Order::LiveBytes,
            merge_same_frames: backtrace_mode() != BacktraceMode::Full,
        }
    }
}

impl BacktraceOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// The order of the entries.
    #[must_use]
    pub fn order(mut self, order: Order) -> Self {
        self.order = order;
        self
    }

    /// Whether stacks that print the same in a short backtrace are one
    /// entry.
    #[must_use]
    pub fn merge_same_frames(mut self, merge: bool) -> Self {
        self.merge_same_frames = merge;
        self
    }
}

/// Every callsite's stack and figures, not yet resolved, with its row.
pub(crate) fn collect_rows() -> Vec<(Backtrace, Figures, Option<u32>)> {
    // The buckets first, before this thread allocates anything: the
    // uncaptured bucket is derived from the other figures, and what the
    // report itself allocates while they are read would skew it.
    let buckets = [
        (
            CallsiteKind::Overflow,
            LEDGER.callsite_bucket(CallsiteBucket::Overflow),
        ),
        (
            CallsiteKind::Uncaptured,
            LEDGER.callsite_bucket(CallsiteBucket::Uncaptured),
        ),
        (
            CallsiteKind::Tracker,
            crate::context::tracker_callsite_figures(),
        ),
    ];
    let mut entries = Vec::new();
    LEDGER.for_each_callsite(|row| {
        entries.push((
            Backtrace::new(CallsiteKind::Stack, row.frames()),
            row.figures,
            Some(row.row),
        ));
    });
    for (kind, figures) in buckets {
        if figures.allocations > 0 {
            entries.push((Backtrace::new(kind, &[]), figures, None));
        }
    }
    entries
}

/// Every callsite's stack and figures, not yet resolved.
pub(crate) fn collect() -> Vec<(Backtrace, Figures)> {
    collect_rows()
        .into_iter()
        .map(|(backtrace, figures, _)| (backtrace, figures))
        .collect()
}

/// A report of the callsites for which `filter` returns true, resolved to
/// symbols, the most bytes in use first, with the default
/// [`BacktraceOptions`].
///
/// `filter` sees each callsite's unresolved stack and its figures; callsites
/// it leaves out cost no symbol lookup. Allocations made while only threads
/// were tracked, or whose stack could not be walked, appear as one entry of
/// kind [`CallsiteKind::Uncaptured`]; the tracker's own memory as one entry
/// of kind [`CallsiteKind::Tracker`], last.
pub fn backtrace_report(filter: impl Fn(&Backtrace, &BacktraceMetric) -> bool) -> BacktraceReport {
    backtrace_report_with(BacktraceOptions::default(), filter)
}

/// [`backtrace_report`] with other options: another order, or stacks kept
/// apart even where they print the same.
pub fn backtrace_report_with(
    options: BacktraceOptions,
    filter: impl Fn(&Backtrace, &BacktraceMetric) -> bool,
) -> BacktraceReport {
    let _scope = ReportScope::enter();
    let mode = backtrace_mode();
    // Read before the rows: a sample dropped meanwhile is in neither.
    let dropped = crate::global::dropped_so_far();
    let entries: Vec<(Backtrace, BacktraceMetric)> = collect_rows()
        .into_iter()
        .map(|(backtrace, figures, row)| {
            let mut metric = BacktraceMetric::from_figures(&figures, mode);
            if metric.sampling_interval.is_some() {
                metric.lifetimes = row.and_then(crate::lifetimes::summary);
                metric.dropped_samples = Some(dropped);
            }
            (backtrace, metric)
        })
        .filter(|(backtrace, metric)| filter(backtrace, metric))
        .collect();
    BacktraceReport(entries).finish(true, options)
}
