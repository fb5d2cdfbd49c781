//! `alloc-track`: reads snapshot files written by `Snapshot::write_to` (or
//! served at `/debug/alloc-track/snapshot.json`), shows them as text, turns
//! them into pprof profiles, folded stacks and flamegraphs, and compares
//! two: what grew, what churned.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use alloc_track::export::SampleType;
use alloc_track::{BacktraceOptions, CallsiteChange, Order, Size, Snapshot, SnapshotDiff};
use clap::{Parser, Subcommand, ValueEnum};

/// Reads alloc-track snapshot files.
#[derive(Parser)]
#[command(name = "alloc-track", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Shows a snapshot: the thread report, then the callsites.
    Show {
        /// The snapshot file.
        snapshot: PathBuf,
        /// Every callsite rather than the first 20.
        #[arg(long)]
        all: bool,
        /// The order of the callsites.
        #[arg(long, value_enum, default_value = "live")]
        order: OrderArg,
        /// Keep apart stacks that differ only in frames the text hides.
        #[arg(long)]
        no_merge: bool,
    },
    /// Writes a snapshot as a pprof heap profile (gzipped profile.proto),
    /// for `go tool pprof` and the profilers that read Go's.
    Pprof {
        /// The snapshot file.
        snapshot: PathBuf,
        /// Where to write the profile.
        #[arg(short, long)]
        output: PathBuf,
        /// The sample type viewers show first.
        #[arg(long, default_value = "inuse_space")]
        sample_index: SampleType,
    },
    /// Writes a snapshot as a flamegraph SVG.
    Flamegraph {
        /// The snapshot file.
        snapshot: PathBuf,
        /// Where to write the SVG.
        #[arg(short, long)]
        output: PathBuf,
        /// What the widths show.
        #[arg(long, default_value = "inuse_space")]
        value: SampleType,
    },
    /// Prints a snapshot as folded stacks (`frame;frame;frame value`).
    Folded {
        /// The snapshot file.
        snapshot: PathBuf,
        /// The value of each stack.
        #[arg(long, default_value = "inuse_space")]
        value: SampleType,
    },
    /// Compares two snapshots: the callsites whose bytes in use grew
    /// (leaks), those that allocated most in between (churn), and the
    /// threads.
    Diff {
        /// The earlier snapshot file.
        earlier: PathBuf,
        /// The later snapshot file.
        later: PathBuf,
        /// Callsites shown in each list.
        #[arg(long, default_value_t = 10)]
        top: usize,
        /// The whole difference as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum OrderArg {
    /// Most bytes in use first.
    Live,
    /// Most bytes allocated first.
    Allocated,
    /// Most allocations per byte in use first.
    Churn,
}

impl From<OrderArg> for Order {
    fn from(order: OrderArg) -> Order {
        match order {
            OrderArg::Live => Order::LiveBytes,
            OrderArg::Allocated => Order::AllocatedBytes,
            OrderArg::Churn => Order::Churn,
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("alloc-track: {message}");
            ExitCode::FAILURE
        }
    }
}

fn read(path: &Path) -> Result<Snapshot, String> {
    Snapshot::read_from(path).map_err(|error| format!("{}: {error}", path.display()))
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), String> {
    std::fs::write(path, bytes).map_err(|error| format!("{}: {error}", path.display()))
}

fn run(cli: Cli) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    let printed = match cli.command {
        Command::Show {
            snapshot,
            all,
            order,
            no_merge,
        } => {
            let snapshot = read(&snapshot)?;
            let report = snapshot.backtrace_report(
                BacktraceOptions::new()
                    .order(order.into())
                    .merge_same_frames(!no_merge),
            );
            let entries = if all {
                usize::MAX
            } else {
                alloc_track::SHOWN_ENTRIES
            };
            let scopes = if snapshot.scopes().0.is_empty() {
                String::new()
            } else {
                format!("SCOPES\n{}", snapshot.scopes())
            };
            let printed = write!(
                out,
                "THREADS\n{}{scopes}BACKTRACES\n{}",
                snapshot.threads(),
                report.display_top(entries)
            );
            printed
        }
        Command::Pprof {
            snapshot,
            output,
            sample_index,
        } => return write(&output, &read(&snapshot)?.pprof(sample_index)),
        Command::Flamegraph {
            snapshot,
            output,
            value,
        } => return write(&output, read(&snapshot)?.flamegraph(value).as_bytes()),
        Command::Folded { snapshot, value } => write!(out, "{}", read(&snapshot)?.folded(value)),
        Command::Diff {
            earlier,
            later,
            top,
            json,
        } => {
            let diff = read(&later)?.diff(&read(&earlier)?);
            if json {
                let json = diff.to_json().map_err(|error| error.to_string())?;
                writeln!(out, "{json}")
            } else {
                write!(out, "{}", DiffText { diff: &diff, top })
            }
        }
    };
    match printed {
        // A reader that stopped early (`| head`) is not an error.
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        printed => printed.map_err(|error| format!("writing the output: {error}")),
    }
}

/// A diff as a person reads it: what grew, what churned, the threads.
struct DiffText<'a> {
    diff: &'a SnapshotDiff,
    top: usize,
}

impl std::fmt::Display for DiffText<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let write_sites = |f: &mut std::fmt::Formatter<'_>,
                           sites: &mut dyn Iterator<Item = &CallsiteChange>|
         -> std::fmt::Result {
            let mut any = false;
            for site in sites.take(self.top) {
                any = true;
                writeln!(f, "{}", site.change)?;
                site.backtrace.write(f, true)?;
                writeln!(f)?;
            }
            if !any {
                writeln!(f, "(none)\n")?;
            }
            Ok(())
        };
        let grown: u64 = self
            .diff
            .grew()
            .map(|site| site.change.in_use_change.unsigned_abs())
            .sum();
        writeln!(
            f,
            "GREW: callsites whose bytes in use grew ({} in all), most first\n",
            Size(grown)
        )?;
        write_sites(f, &mut self.diff.grew())?;
        writeln!(f, "CHURNED: callsites that allocated most in between\n")?;
        write_sites(
            f,
            &mut self
                .diff
                .churned()
                .into_iter()
                .filter(|site| site.change.allocations > 0),
        )?;
        writeln!(f, "THREADS")?;
        for thread in &self.diff.threads {
            writeln!(f, "  {}: {}", thread.name, thread.change)?;
        }
        if !self.diff.scopes.is_empty() {
            writeln!(f, "SCOPES")?;
            for scope in &self.diff.scopes {
                writeln!(f, "  {}: {}", scope.name, scope.change)?;
            }
        }
        Ok(())
    }
}
