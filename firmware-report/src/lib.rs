//! Reads the heap report a firmware logs through `defmt` (as `defmt-print`
//! decodes it) and the firmware's ELF, and makes of them a snapshot in the
//! std adapter's terms: tasks as thread report entries, callsites with
//! their return addresses resolved to functions, files and lines (inlined
//! calls included) from the ELF's debug info. The snapshot then prints,
//! and writes pprof profiles and flamegraphs, with the std adapter's own
//! writers.

use std::collections::BTreeMap;
use std::path::Path;

use alloc_track::{
    Backtrace, BacktraceFrame, BacktraceSymbol, CallsiteKind, Snapshot, ThreadMetric, ThreadReport,
};
use alloc_track_core::Figures;

/// One row of the log's figures (`live=.. peak=.. allocated=..`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoggedFigures {
    /// Bytes live.
    pub live: u64,
    /// The most bytes live at once.
    pub peak: u64,
    /// Bytes allocated.
    pub allocated: u64,
    /// Allocations made.
    pub allocations: u64,
    /// Bytes of these allocations freed (by anyone).
    pub freed: u64,
    /// Frees of these allocations.
    pub frees: u64,
    /// Bytes of these allocations other tasks freed.
    pub freed_by_others: u64,
    /// Bytes of other tasks' allocations freed.
    pub freed_of_others: u64,
}

impl LoggedFigures {
    /// Reads `key=value` pairs; unknown keys are skipped.
    fn parse(text: &str) -> Option<Self> {
        let mut figures = LoggedFigures::default();
        let mut any = false;
        for pair in text.split_whitespace() {
            let Some((key, value)) = pair.split_once('=') else {
                continue;
            };
            let Ok(value) = value.trim_end_matches([',', ':']).parse::<u64>() else {
                continue;
            };
            let slot = match key {
                "live" => &mut figures.live,
                "peak" => &mut figures.peak,
                "allocated" => &mut figures.allocated,
                "allocations" => &mut figures.allocations,
                "freed" => &mut figures.freed,
                "frees" => &mut figures.frees,
                "freed_by_others" => &mut figures.freed_by_others,
                "freed_of_others" => &mut figures.freed_of_others,
                _ => continue,
            };
            *slot = value;
            any = true;
        }
        any.then_some(figures)
    }

    fn core(&self) -> Figures {
        Figures {
            allocated_bytes: self.allocated,
            allocations: self.allocations,
            freed_bytes: self.freed,
            frees: self.frees,
            peak_live_bytes: self.peak,
        }
    }
}

/// A task row of the log, or one of its buckets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedTask {
    /// `task 3`, `finished`, `overflow` or `unknown`.
    pub party: String,
    /// The task's id, for a task.
    pub id: Option<u64>,
    /// Its figures.
    pub figures: LoggedFigures,
}

/// A callsite of the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedCallsite {
    /// A stack, or the overflow or uncaptured bucket.
    pub kind: CallsiteKind,
    /// Its figures.
    pub figures: LoggedFigures,
    /// Return addresses, innermost first (a stack only).
    pub frames: Vec<u64>,
}

/// Who freed whose blocks: `freed across tasks: owner=.. freer=.. bytes=..`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedPair {
    /// The party whose blocks were freed.
    pub owner: String,
    /// The party that freed them.
    pub freer: String,
    /// Bytes freed.
    pub bytes: u64,
}

/// Everything the tool reads from one log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Log {
    /// Task rows and buckets, in the log's order.
    pub tasks: Vec<LoggedTask>,
    /// Names the firmware gave its tasks (`task 1 is leaker`).
    pub names: BTreeMap<u64, String>,
    /// Cross-task frees.
    pub pairs: Vec<LoggedPair>,
    /// Callsites and the callsite buckets.
    pub callsites: Vec<LoggedCallsite>,
    /// The sampling form's mean interval, when the log says it is sampled.
    pub sampling_interval: Option<u64>,
}

/// The message of a decoded defmt line: without the level (and a timestamp
/// before it, if any).
fn message(line: &str) -> &str {
    let line = line.trim();
    for level in ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"] {
        if let Some(index) = line.find(level) {
            let rest = &line[index + level.len()..];
            if rest.starts_with(' ') && line[..index].trim().chars().all(|c| !c.is_alphabetic()) {
                return rest.trim_start();
            }
        }
    }
    line
}

impl Log {
    /// Reads a decoded defmt log; lines that are not part of the report
    /// are skipped.
    pub fn parse(text: &str) -> Log {
        let mut log = Log::default();
        for line in text.lines() {
            log.read_line(message(line));
        }
        log
    }

    fn read_line(&mut self, line: &str) {
        if let Some(rest) = line.strip_prefix("task ") {
            // `task 1: figures` or `task 1 is leaker`.
            if let Some((id, name)) = rest.split_once(" is ") {
                if let Ok(id) = id.trim().parse() {
                    self.names.insert(id, name.trim().to_owned());
                }
            } else if let Some((id, figures)) = rest.split_once(':') {
                if let (Ok(id), Some(figures)) = (id.trim().parse(), LoggedFigures::parse(figures))
                {
                    self.tasks.push(LoggedTask {
                        party: format!("task {id}"),
                        id: Some(id),
                        figures,
                    });
                }
            }
            return;
        }
        for bucket in ["finished", "overflow", "unknown"] {
            if let Some(figures) = line
                .strip_prefix(bucket)
                .and_then(|rest| rest.strip_prefix(':'))
                .and_then(LoggedFigures::parse)
            {
                self.tasks.push(LoggedTask {
                    party: bucket.to_owned(),
                    id: None,
                    figures,
                });
                return;
            }
        }
        if let Some(rest) = line.strip_prefix("freed across tasks:") {
            let field = |key: &str, until: &str| {
                let start = rest.find(key)? + key.len();
                let tail = &rest[start..];
                Some(
                    tail[..tail.find(until).unwrap_or(tail.len())]
                        .trim()
                        .to_owned(),
                )
            };
            if let (Some(owner), Some(freer), Some(bytes)) = (
                field("owner=", " freer="),
                field("freer=", " bytes="),
                field("bytes=", " "),
            ) {
                if let Ok(bytes) = bytes.parse() {
                    self.pairs.push(LoggedPair {
                        owner,
                        freer,
                        bytes,
                    });
                }
            }
            return;
        }
        if let Some(rest) = line.strip_prefix("callsite ") {
            for (bucket, kind) in [
                ("overflow:", CallsiteKind::Overflow),
                ("uncaptured:", CallsiteKind::Uncaptured),
            ] {
                if let Some(figures) = rest.strip_prefix(bucket).and_then(LoggedFigures::parse) {
                    self.callsites.push(LoggedCallsite {
                        kind,
                        figures,
                        frames: Vec::new(),
                    });
                    return;
                }
            }
            if let Some((figures, frames)) = rest.split_once("frames=[") {
                let frames = frames
                    .trim_end_matches(']')
                    .split(',')
                    .filter_map(|frame| {
                        let frame = frame.trim().trim_start_matches("0x");
                        u64::from_str_radix(frame, 16).ok()
                    })
                    .collect();
                if let Some(figures) = LoggedFigures::parse(figures) {
                    self.callsites.push(LoggedCallsite {
                        kind: CallsiteKind::Stack,
                        figures,
                        frames,
                    });
                }
            }
            return;
        }
        if let Some(rest) = line.strip_prefix("form: sampled, one sample per ") {
            self.sampling_interval = rest
                .split_whitespace()
                .next()
                .and_then(|interval| interval.parse().ok());
        }
    }

    /// A party's name in the report: the task's name when the firmware
    /// gave one, `task N` otherwise; the buckets as the std adapter names
    /// them.
    fn party_name(&self, party: &str) -> String {
        match party {
            "finished" => alloc_track::FINISHED_THREADS.to_owned(),
            "overflow" => alloc_track::OVERFLOW_THREADS.to_owned(),
            "unknown" => alloc_track::UNKNOWN_THREAD.to_owned(),
            _ => party
                .strip_prefix("task ")
                .and_then(|id| id.parse().ok())
                .and_then(|id| self.names.get(&id))
                .map_or_else(|| party.to_owned(), |name| format!("{name} ({party})")),
        }
    }

    /// The log as a snapshot, its callsites resolved by `symbols`.
    pub fn snapshot(&self, symbols: &mut impl Symbolizer) -> Snapshot {
        let mut threads = BTreeMap::new();
        for task in &self.tasks {
            let f = &task.figures;
            let is_empty = f.allocated == 0 && f.freed == 0 && f.freed_of_others == 0;
            if task.id.is_none() && is_empty {
                continue;
            }
            let name = self.party_name(&task.party);
            threads.insert(
                name.clone(),
                ThreadMetric {
                    name,
                    total_alloc: f.allocated,
                    total_did_free: f.freed.saturating_sub(f.freed_by_others) + f.freed_of_others,
                    total_freed: f.freed,
                    current_used: f.live,
                    allocations: f.allocations,
                    frees: f.frees,
                    peak_used: f.peak,
                    freed_of_others: f.freed_of_others,
                    thread_ids: task.id.into_iter().collect(),
                    sampling_interval: self.sampling_interval,
                    ..ThreadMetric::default()
                },
            );
        }
        for pair in &self.pairs {
            if let Some(metric) = threads.get_mut(&self.party_name(&pair.owner)) {
                *metric
                    .freed_by_others
                    .entry(self.party_name(&pair.freer))
                    .or_default() += pair.bytes;
            }
        }
        let callsites = self
            .callsites
            .iter()
            .filter(|site| site.kind == CallsiteKind::Stack || site.figures.allocations > 0)
            .map(|site| {
                let frames = site
                    .frames
                    .iter()
                    .map(|&address| BacktraceFrame {
                        address: address as usize,
                        symbols: symbols.resolve(address).into(),
                    })
                    .collect();
                (
                    Backtrace {
                        kind: site.kind,
                        frames,
                    },
                    site.figures.core(),
                )
            })
            .collect();
        Snapshot::from_parts(ThreadReport(threads), callsites, self.sampling_interval)
    }
}

/// Turns a return address into the functions it lies in, innermost first.
pub trait Symbolizer {
    /// The symbols of the call that returns to `address`; empty if none.
    fn resolve(&mut self, address: u64) -> Vec<BacktraceSymbol>;
}

/// Resolves return addresses from an ELF's debug info.
pub struct Elf {
    loader: addr2line::Loader,
    thumb: bool,
}

impl Elf {
    /// Opens the ELF at `path`. `thumb`: return addresses carry the Thumb
    /// bit (Cortex-M), which is cleared before the lookup.
    pub fn open(path: &Path, thumb: bool) -> Result<Elf, String> {
        let loader =
            addr2line::Loader::new(path).map_err(|error| format!("{}: {error}", path.display()))?;
        Ok(Elf { loader, thumb })
    }
}

/// A function name without the hash that legacy mangling appends.
fn without_hash(name: &str) -> &str {
    match name.rsplit_once("::h") {
        Some((path, hash)) if hash.len() == 16 && hash.chars().all(|c| c.is_ascii_hexdigit()) => {
            path
        }
        _ => name,
    }
}

impl Symbolizer for Elf {
    fn resolve(&mut self, address: u64) -> Vec<BacktraceSymbol> {
        // Exception returns (EXC_RETURN, 0xFFFFFFxx) are not code.
        if address >= 0xffff_ff00 && self.thumb {
            return vec![BacktraceSymbol::new(
                Some("<exception entry>"),
                None,
                None,
                None,
            )];
        }
        // A return address points after the call; one byte back lies in
        // the call instruction, whose line is the call's.
        let call = if self.thumb { address & !1 } else { address }.saturating_sub(1);
        let mut symbols = Vec::new();
        if let Ok(mut frames) = self.loader.find_frames(call) {
            while let Ok(Some(frame)) = frames.next() {
                let name = frame
                    .function
                    .as_ref()
                    .and_then(|function| function.demangle().ok())
                    .map(|name| without_hash(&name).to_owned());
                let location = frame.location.as_ref();
                symbols.push(BacktraceSymbol::new(
                    name.as_deref(),
                    location.and_then(|l| l.file).map(Path::new),
                    location.and_then(|l| l.line),
                    location.and_then(|l| l.column),
                ));
            }
        }
        if symbols.is_empty() {
            if let Some(name) = self.loader.find_symbol(call) {
                let name = addr2line::demangle_auto(name.into(), None);
                symbols.push(BacktraceSymbol::new(
                    Some(without_hash(&name)),
                    None,
                    None,
                    None,
                ));
            }
        }
        symbols
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "\
INFO  tracker RAM: 6888 bytes of tables; 8 bytes of header per block
INFO  task 1 is leaker
INFO  task 3 is producer
INFO  task 4 is consumer
INFO  task 1: live=1600 peak=1600 allocated=1600 allocations=16 freed=0 frees=0 freed_by_others=0 freed_of_others=0
INFO  task 3: live=0 peak=544 allocated=544 allocations=9 freed=544 frees=9 freed_by_others=544 freed_of_others=0
INFO  task 4: live=0 peak=0 allocated=0 allocations=0 freed=0 frees=0 freed_by_others=0 freed_of_others=544
INFO  finished: live=0 peak=24 allocated=12000 allocations=500 freed=12000 frees=500 freed_by_others=0 freed_of_others=0
INFO  overflow: live=0 peak=0 allocated=0 allocations=0 freed=0 frees=0 freed_by_others=0 freed_of_others=0
INFO  freed across tasks: owner=task 3 freer=task 4 bytes=544 frees=9
INFO  callsite live=1600 peak=1600 allocated=1600 allocations=16 freed=0 frees=0: frames=[0x8d63, 0x75bf]
INFO  callsite overflow: live=0 peak=0 allocated=0 allocations=0 freed=0 frees=0
INFO  callsite uncaptured: live=0 peak=0 allocated=0 allocations=2 freed=0 frees=0
INFO  leaking callsite live=1600 peak=1600 allocated=1600 allocations=16 freed=0 frees=0: frames=[0x8d63, 0x75bf]
INFO  verdict: pass
";

    /// Names every address `f<address>` in `main.rs` at line address % 100.
    struct Fake;

    impl Symbolizer for Fake {
        fn resolve(&mut self, address: u64) -> Vec<BacktraceSymbol> {
            vec![BacktraceSymbol::new(
                Some(&format!("firmware::f{address:x}")),
                Some(Path::new("/src/firmware/src/main.rs")),
                Some((address % 100) as u32),
                None,
            )]
        }
    }

    #[test]
    fn the_log_reads_into_tasks_pairs_and_callsites() {
        let log = Log::parse(LOG);
        assert_eq!(log.tasks.len(), 5);
        assert_eq!(log.tasks[0].figures.live, 1600);
        assert_eq!(log.names[&1], "leaker");
        assert_eq!(
            log.pairs,
            [LoggedPair {
                owner: "task 3".into(),
                freer: "task 4".into(),
                bytes: 544
            }]
        );
        // The leaking callsite's line repeats one already read.
        assert_eq!(log.callsites.len(), 3);
        assert_eq!(log.callsites[0].frames, [0x8d63, 0x75bf]);
        assert_eq!(log.callsites[2].kind, CallsiteKind::Uncaptured);

        let snapshot = log.snapshot(&mut Fake);
        let threads = &snapshot.threads().0;
        let leaker = &threads["leaker (task 1)"];
        assert_eq!((leaker.current_used, leaker.allocations), (1600, 16));
        let producer = &threads["producer (task 3)"];
        assert_eq!(producer.freed_by_others["consumer (task 4)"], 544);
        assert_eq!(threads["consumer (task 4)"].total_did_free, 544);
        assert_eq!(threads[alloc_track::FINISHED_THREADS].total_alloc, 12_000);
        assert!(!threads.contains_key(alloc_track::OVERFLOW_THREADS));

        let text = snapshot.to_string();
        assert!(
            text.contains("firmware::f8d63\n      at /src/firmware/src/main.rs:95"),
            "{text}"
        );
        // The empty overflow bucket is left out; the uncaptured one, with
        // allocations, is kept.
        let report = snapshot.backtrace_report(alloc_track::BacktraceOptions::default());
        assert_eq!(report.0.len(), 2);
    }

    #[test]
    fn level_and_timestamp_are_not_the_message() {
        assert_eq!(message("INFO  task 1 is leaker"), "task 1 is leaker");
        assert_eq!(message("0.000123 WARN  callsite x"), "callsite x");
        assert_eq!(message("task 2 is churner"), "task 2 is churner");
        assert_eq!(
            without_hash("firmware::leaker::h0123456789abcdef"),
            "firmware::leaker"
        );
        assert_eq!(without_hash("firmware::leaker"), "firmware::leaker");
    }
}
