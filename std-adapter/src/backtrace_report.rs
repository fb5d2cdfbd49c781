//! The backtrace report: per callsite, what was allocated and freed, with the
//! callsite's stack resolved to functions, files and lines.

use std::fmt::{self, Write as _};

use alloc_track_core::{CallsiteBucket, Figures};

use crate::context::ReportScope;
use crate::size::{Size, SizeF64};
use crate::symbols::{self, BacktraceSymbol};
use crate::{backtrace_mode, BacktraceMode, LEDGER};

/// One return address of a callsite's stack and the functions it lies in.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct BacktraceFrame {
    /// The return address.
    pub address: usize,
    /// The functions, innermost first; empty until resolved, or when the
    /// address has no symbol.
    pub symbols: Vec<BacktraceSymbol>,
}

/// What a report entry stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub enum CallsiteKind {
    /// One stack of return addresses.
    Stack,
    /// Stacks that found the callsite table full.
    Overflow,
    /// Allocations whose stack was not captured (threads-only mode, no frame
    /// pointers, or allocations made inside the allocator).
    Uncaptured,
}

/// A callsite's stack: return addresses, innermost first.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
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
                    symbols: Vec::new(),
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
        for frame in &mut self.frames {
            if frame.symbols.is_empty() {
                frame.symbols = symbols::resolve(frame.address);
            }
        }
    }

    /// The symbols of the frames, innermost first, with the frames that a
    /// short backtrace hides left out (all of them if every frame would be
    /// hidden).
    pub fn short_symbols(&self) -> Vec<&BacktraceSymbol> {
        let all: Vec<&BacktraceSymbol> = self
            .frames
            .iter()
            .flat_map(|frame| &frame.symbols)
            .collect();
        let kept: Vec<&BacktraceSymbol> = all
            .iter()
            .copied()
            .filter(|symbol| !symbol.name.as_deref().is_some_and(symbols::is_internal))
            .collect();
        if kept.is_empty() {
            all
        } else {
            kept
        }
    }

    /// The innermost function of the short stack: the program's function
    /// that allocated, once the allocator's and the library's frames are
    /// left out. `None` until resolved, or without symbols.
    pub fn innermost_function(&self) -> Option<&str> {
        self.short_symbols()
            .first()
            .and_then(|symbol| symbol.name.as_deref())
    }

    /// Writes the stack, one function per line with its file and line
    /// beneath, hiding internal frames when `short`.
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
                    crate::CALLSITE_ROWS
                );
            }
            CallsiteKind::Uncaptured => return writeln!(out, "(stack not captured)"),
            CallsiteKind::Stack => {}
        }
        let cwd = std::env::current_dir().ok();
        let symbols = if short {
            self.short_symbols()
        } else {
            self.frames
                .iter()
                .flat_map(|frame| &frame.symbols)
                .collect()
        };
        if symbols.is_empty() {
            for address in self.addresses() {
                writeln!(out, "  {address:#x}")?;
            }
            return Ok(());
        }
        for symbol in symbols {
            writeln!(out, "  {}", symbol.name.as_deref().unwrap_or("<unknown>"))?;
            if let Some(file) = &symbol.file {
                let file = cwd
                    .as_deref()
                    .and_then(|cwd| file.strip_prefix(cwd).ok())
                    .unwrap_or(file);
                write!(out, "      at {}", file.display())?;
                if let Some(line) = symbol.line {
                    write!(out, ":{line}")?;
                }
                writeln!(out)?;
            }
        }
        Ok(())
    }
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
    /// The most bytes allocated here that were live at once.
    pub peak: u64,
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

impl fmt::Display for BacktraceMetric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "allocated: {}", Size(self.allocated))?;
        writeln!(f, "allocations: {}", self.allocations)?;
        writeln!(f, "avg_allocation: {}", SizeF64(self.avg_allocation()))?;
        writeln!(f, "freed: {}", Size(self.freed))?;
        writeln!(f, "total_used: {}", Size(self.in_use()))?;
        writeln!(f, "peak_used: {}", Size(self.peak))?;
        writeln!(f, "live_allocations: {}", self.live_allocations())?;
        Ok(())
    }
}

/// Callsites and their figures, the most bytes in use first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct BacktraceReport(pub Vec<(Backtrace, BacktraceMetric)>);

impl BacktraceReport {
    fn short(&self) -> bool {
        self.0
            .first()
            .is_none_or(|(_, metric)| metric.mode != BacktraceMode::Full)
    }

    /// One line per callsite: the seed's five figures, the stack (escaped,
    /// in quotes), then frees and peak.
    pub fn csv(&self) -> String {
        let mut out = String::from(
            "allocated,allocations,avg_allocation,freed,total_used,backtrace,frees,peak_used\n",
        );
        for (backtrace, metric) in &self.0 {
            let mut stack = String::new();
            let _ = backtrace.write(&mut stack, self.short());
            let _ = metric.csv_write(&mut out);
            let stack = stack
                .replace('\\', "\\\\")
                .replace('\n', "\\n")
                .replace('"', "\"\"");
            let _ = writeln!(out, ",\"{stack}\",{},{}", metric.frees, metric.peak);
        }
        out
    }

    /// The report as JSON: an array of `[backtrace, metric]` pairs.
    #[cfg(feature = "serde")]
    pub fn to_json(&self) -> serde_json::Result<String> {
        serde_json::to_string_pretty(self)
    }
}

impl fmt::Display for BacktraceReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let short = self.short();
        for (backtrace, metric) in &self.0 {
            backtrace.write(f, short)?;
            writeln!(f, "{metric}")?;
        }
        Ok(())
    }
}

/// Every callsite's stack and figures, not yet resolved.
pub(crate) fn collect() -> Vec<(Backtrace, Figures)> {
    let mut entries = Vec::new();
    LEDGER.for_each_callsite(|row| {
        entries.push((
            Backtrace::new(CallsiteKind::Stack, row.frames()),
            row.figures,
        ));
    });
    for (kind, bucket) in [
        (CallsiteKind::Overflow, CallsiteBucket::Overflow),
        (CallsiteKind::Uncaptured, CallsiteBucket::Uncaptured),
    ] {
        let figures = LEDGER.callsite_bucket(bucket);
        if figures.allocations > 0 {
            entries.push((Backtrace::new(kind, &[]), figures));
        }
    }
    entries
}

/// A report of the callsites for which `filter` returns true, resolved to
/// symbols, the most bytes in use first.
///
/// `filter` sees each callsite's unresolved stack and its figures; callsites
/// it leaves out cost no symbol lookup. Allocations made while only threads
/// were tracked, or whose stack could not be walked, appear as one entry of
/// kind [`CallsiteKind::Uncaptured`].
pub fn backtrace_report(filter: impl Fn(&Backtrace, &BacktraceMetric) -> bool) -> BacktraceReport {
    let _scope = ReportScope::enter();
    let mode = backtrace_mode();
    let mut report: Vec<(Backtrace, BacktraceMetric)> = collect()
        .into_iter()
        .map(|(backtrace, figures)| (backtrace, BacktraceMetric::from_figures(&figures, mode)))
        .filter(|(backtrace, metric)| filter(backtrace, metric))
        .collect();
    for (backtrace, _) in &mut report {
        backtrace.resolve();
    }
    report.sort_by(|a, b| {
        b.1.in_use()
            .cmp(&a.1.in_use())
            .then(b.1.allocated.cmp(&a.1.allocated))
    });
    BacktraceReport(report)
}
