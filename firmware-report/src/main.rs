//! `alloc-track-firmware-report`: reads a firmware's decoded defmt log
//! (stdin, or a file) and its ELF, and prints the heap report with every
//! callsite resolved to function, file and line; writes it as a pprof
//! profile and a flamegraph on request.
//!
//! ```sh
//! qemu-system-arm ... | defmt-print -e firmware.elf \
//!   | alloc-track-firmware-report --elf firmware.elf --echo
//! ```

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use alloc_track::export::SampleType;
use alloc_track_firmware_report::{Elf, Log};
use clap::Parser;

/// Resolves the callsites of a firmware's alloc-track heap report.
#[derive(Parser)]
#[command(name = "alloc-track-firmware-report", version)]
struct Cli {
    /// The firmware's ELF, with its debug info.
    #[arg(long)]
    elf: PathBuf,
    /// The decoded defmt log; stdin when not given.
    log: Option<PathBuf>,
    /// Copy every line of the log to stdout as it is read, before the
    /// report (for a runner that pipes the firmware's log through).
    #[arg(long)]
    echo: bool,
    /// Every callsite rather than the first 20.
    #[arg(long)]
    all: bool,
    /// Also write the report as a pprof heap profile.
    #[arg(long)]
    pprof: Option<PathBuf>,
    /// Also write the report as a flamegraph SVG.
    #[arg(long)]
    flamegraph: Option<PathBuf>,
    /// Also write the tasks' figures, exact to the byte, as CSV (the
    /// thread report's columns).
    #[arg(long)]
    tasks_csv: Option<PathBuf>,
    /// The flamegraph's value, and the profile's default sample type.
    #[arg(long, default_value = "inuse_space")]
    value: SampleType,
}

/// Whether the ELF is for Arm (Cortex-M): its return addresses carry the
/// Thumb bit. `e_machine` is the 16-bit field at offset 18 (40 is Arm).
fn is_arm(elf: &Path) -> Result<bool, String> {
    let bytes = std::fs::read(elf).map_err(|error| format!("{}: {error}", elf.display()))?;
    match bytes.get(..20) {
        Some(header) if header.starts_with(b"\x7fELF") => {
            let machine = if header.get(5) == Some(&2) {
                u16::from_be_bytes([header[18], header[19]])
            } else {
                u16::from_le_bytes([header[18], header[19]])
            };
            Ok(machine == 40)
        }
        _ => Err(format!("{}: not an ELF file", elf.display())),
    }
}

fn run(cli: Cli) -> Result<(), String> {
    let mut text = String::new();
    let input: Box<dyn BufRead> = match &cli.log {
        Some(path) => Box::new(std::io::BufReader::new(
            std::fs::File::open(path).map_err(|error| format!("{}: {error}", path.display()))?,
        )),
        None => Box::new(std::io::stdin().lock()),
    };
    let mut out = std::io::stdout().lock();
    for line in input.lines() {
        let line = line.map_err(|error| format!("reading the log: {error}"))?;
        if cli.echo {
            let _ = writeln!(out, "{line}");
        }
        text.push_str(&line);
        text.push('\n');
    }
    let log = Log::parse(&text);
    if log.tasks.is_empty() && log.callsites.is_empty() {
        return Err("no alloc-track report in the log".into());
    }
    let mut elf = Elf::open(&cli.elf, is_arm(&cli.elf)?)?;
    let snapshot = log.snapshot(&mut elf);
    let _ = writeln!(
        out,
        "\nHEAP REPORT (callsites resolved from {})\n",
        cli.elf.display()
    );
    let _ = if cli.all {
        write!(out, "{snapshot:#}")
    } else {
        write!(out, "{snapshot}")
    };
    if let Some(path) = &cli.pprof {
        std::fs::write(path, snapshot.pprof(cli.value))
            .map_err(|error| format!("{}: {error}", path.display()))?;
    }
    if let Some(path) = &cli.flamegraph {
        std::fs::write(path, snapshot.flamegraph(cli.value))
            .map_err(|error| format!("{}: {error}", path.display()))?;
    }
    if let Some(path) = &cli.tasks_csv {
        std::fs::write(path, snapshot.threads().csv())
            .map_err(|error| format!("{}: {error}", path.display()))?;
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("alloc-track-firmware-report: {message}");
            ExitCode::FAILURE
        }
    }
}
