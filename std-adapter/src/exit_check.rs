//! The leak check at exit: a report of what is still live, by callsite,
//! printed to stderr as the process exits, as LeakSanitizer prints its
//! leaks; and a failing exit code when more than a given amount is live.

use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Once;

use crate::backtrace_report::{backtrace_report, BacktraceReport, CallsiteKind};
use crate::size::{estimated, Size};

/// The exit code of a process whose leak check failed (LeakSanitizer's).
pub const LEAK_EXIT_CODE: i32 = 23;

/// The bytes allowed live at exit; `u64::MAX` for no limit.
static FAIL_ABOVE: AtomicU64 = AtomicU64::new(u64::MAX);
static REGISTERED: Once = Once::new();

/// Registers a report, printed to stderr as the process exits (when `main`
/// returns or `std::process::exit` is called), of what is still live by
/// callsite; with `Some(bytes)`, the process then exits with
/// [`LEAK_EXIT_CODE`] when more than `bytes` are live.
///
/// ```no_run
/// // Early in `main`: fail the run if more than 64 KiB are left live at exit.
/// alloc_track::leak_check_at_exit(Some(64 * 1024));
/// ```
///
/// What counts: the program's blocks still live at exit, by callsite (the
/// tracker's own memory never does). With callsites recorded
/// ([`BacktraceMode::Short`](crate::BacktraceMode) or `Full`), blocks
/// whose stack holds none of the program's or its dependencies' frames
/// (the standard library's own: the main thread's name, stdout's buffer)
/// are listed apart and not counted; with threads only, every live block
/// is uncaptured and counts. Blocks that other threads still running at
/// exit hold count too. Calling it again changes the limit; the report is
/// registered once.
pub fn leak_check_at_exit(fail_above: Option<u64>) {
    FAIL_ABOVE.store(fail_above.unwrap_or(u64::MAX), Relaxed);
    REGISTERED.call_once(|| {
        // SAFETY: `check_at_exit` is an `extern "C" fn()` that never
        // unwinds (it catches panics), as `atexit` requires.
        unsafe {
            libc::atexit(check_at_exit);
        }
    });
}

extern "C" fn check_at_exit() {
    let limit = FAIL_ABOVE.load(Relaxed);
    let live = std::panic::catch_unwind(|| {
        let report = backtrace_report(|backtrace, metric| {
            metric.in_use() > 0 && backtrace.kind != CallsiteKind::Tracker
        });
        let mut text = String::new();
        let live = write_report(&report, limit, &mut text);
        let mut stderr = std::io::stderr().lock();
        let _ = stderr.write_all(text.as_bytes());
        let _ = stderr.flush();
        live
    });
    let Ok(live) = live else {
        return;
    };
    if live > limit {
        let _ = std::io::stdout().flush();
        // SAFETY: ends the process at once, as `exit` would but without
        // running the other exit handlers again (calling `exit` from one is
        // undefined); both standard streams are flushed above.
        unsafe { libc::_exit(LEAK_EXIT_CODE) };
    }
}

/// Whether an entry counts as the program's: anything but a stack of the
/// standard library's frames alone.
fn counts(backtrace: &crate::Backtrace) -> bool {
    backtrace.kind != CallsiteKind::Stack
        || backtrace
            .frames
            .iter()
            .all(|frame| frame.symbols.is_empty())
        || backtrace.innermost_function().is_some()
}

/// Writes the leak report; returns the bytes that count.
fn write_report(report: &BacktraceReport, limit: u64, out: &mut String) -> u64 {
    use std::fmt::Write as _;
    let (program, library): (Vec<_>, Vec<_>) = report
        .0
        .iter()
        .partition(|(backtrace, _)| counts(backtrace));
    let live: u64 = program.iter().map(|(_, metric)| metric.in_use()).sum();
    let blocks: u64 = program
        .iter()
        .map(|(_, metric)| metric.live_allocations())
        .sum();
    let _ = writeln!(
        out,
        "alloc-track: {live} bytes ({}) in {blocks} blocks still live at exit{}",
        Size(live),
        if program.is_empty() {
            ""
        } else {
            ", by callsite:"
        }
    );
    let first = program.first();
    if let Some(line) = first.and_then(|(_, m)| estimated(m.sampling_interval, m.dropped_samples)) {
        let _ = writeln!(out, "{line}");
    }
    for (backtrace, metric) in program.iter().take(crate::SHOWN_ENTRIES) {
        let _ = writeln!(out);
        let _ = backtrace.write(out, true);
        let _ = writeln!(
            out,
            "live: {} bytes ({}) in {} blocks",
            metric.in_use(),
            Size(metric.in_use()),
            metric.live_allocations()
        );
    }
    if program.len() > crate::SHOWN_ENTRIES {
        let _ = writeln!(
            out,
            "\n({} more callsites)",
            program.len() - crate::SHOWN_ENTRIES
        );
    }
    if !library.is_empty() {
        let bytes: u64 = library.iter().map(|(_, metric)| metric.in_use()).sum();
        let blocks: u64 = library.iter().map(|(_, m)| m.live_allocations()).sum();
        let _ = writeln!(
            out,
            "\n(not counted: {bytes} bytes in {blocks} blocks of the standard library's own)"
        );
    }
    if limit != u64::MAX {
        if live > limit {
            let _ = writeln!(
                out,
                "alloc-track: more than the allowed {limit} bytes live at exit: exit code \
                 {LEAK_EXIT_CODE}"
            );
        } else {
            let _ = writeln!(out, "alloc-track: within the allowed {limit} bytes");
        }
    }
    live
}
