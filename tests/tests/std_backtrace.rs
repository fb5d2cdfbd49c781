//! A backtrace report names the function, file and line of a known
//! allocation site, and a short backtrace hides the allocator's frames.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;

use alloc_track::{AllocTrack, BacktraceMode};

#[global_allocator]
static GLOBAL: AllocTrack<System> = AllocTrack::new(System, BacktraceMode::Short);

/// Allocates 777 bytes from a known line, and says which.
#[inline(never)]
fn allocate_here() -> (Vec<u8>, u32) {
    (vec![0u8; 777], line!())
}

/// The block `allocate_directly` makes.
fn direct_layout() -> Layout {
    Layout::from_size_align(555, 8).unwrap()
}

/// Allocates 555 bytes by calling the allocator method itself, as a
/// program may, and says from which line; the block is written after the
/// call, so the call is not the function's last.
#[inline(never)]
fn allocate_directly() -> (*mut u8, u32) {
    // SAFETY: a layout of non-zero size; the block is written within it
    // and freed by the caller with the same layout.
    let (block, line) = (unsafe { GLOBAL.alloc(direct_layout()) }, line!());
    assert!(!block.is_null());
    // SAFETY: the block holds 555 bytes.
    unsafe { block.write_bytes(5, 555) };
    (black_box(block), line)
}

#[test]
fn a_direct_call_of_the_allocator_method_is_its_callers_callsite() {
    let (block, line) = allocate_directly();
    let report = alloc_track::backtrace_report(|_, metric| metric.allocated == 555);
    let (backtrace, metric) = report
        .0
        .iter()
        .find(|(backtrace, _)| {
            backtrace.innermost_function() == Some("std_backtrace::allocate_directly")
        })
        .unwrap_or_else(|| panic!("the callsite of allocate_directly:\n{report:#}"));
    assert_eq!((metric.allocated, metric.allocations), (555, 1));
    let top = backtrace.short_symbols()[0];
    assert!(
        top.file
            .as_ref()
            .unwrap()
            .ends_with("tests/tests/std_backtrace.rs"),
        "{report:#}"
    );
    assert_eq!(top.line, Some(line));
    assert_eq!(
        backtrace.short_symbols()[1].name.as_deref(),
        Some("std_backtrace::a_direct_call_of_the_allocator_method_is_its_callers_callsite")
    );
    // SAFETY: allocated above with this layout, freed once.
    unsafe { GLOBAL.dealloc(block, direct_layout()) };
}

#[test]
fn the_report_names_the_allocating_line() {
    let (kept, line) = allocate_here();
    let report = alloc_track::backtrace_report(|_, metric| metric.allocated == 777);
    let (backtrace, metric) = report
        .0
        .iter()
        .find(|(backtrace, _)| {
            backtrace.innermost_function() == Some("std_backtrace::allocate_here")
        })
        .unwrap_or_else(|| panic!("the callsite of allocate_here:\n{report:#}"));
    assert_eq!(
        (metric.allocated, metric.allocations, metric.in_use()),
        (777, 1, 777)
    );

    let top = backtrace.short_symbols()[0];
    assert!(top
        .file
        .as_ref()
        .unwrap()
        .ends_with("tests/tests/std_backtrace.rs"));
    assert_eq!(top.line, Some(line));
    // The caller comes next.
    assert_eq!(
        backtrace.short_symbols()[1].name.as_deref(),
        Some("std_backtrace::the_report_names_the_allocating_line")
    );

    // Short leaves out the allocator frames that Full shows.
    let mut short = String::new();
    backtrace.write(&mut short, true).unwrap();
    let mut full = String::new();
    backtrace.write(&mut full, false).unwrap();
    let allocator_frame = |line: &str| {
        let function = line.trim_start();
        function.starts_with("alloc::") || function.starts_with("<alloc::")
    };
    assert!(!short.lines().any(allocator_frame), "{short}");
    assert!(full.lines().any(allocator_frame), "{full}");
    assert!(
        short.contains(&format!("std_backtrace.rs:{line}")),
        "{short}"
    );

    let text = report.to_string();
    assert!(text.contains("std_backtrace::allocate_here"));
    assert!(text.contains("allocated: 777 B"));
    let csv = report.csv();
    assert!(csv.starts_with(
        "allocated,allocations,avg_allocation,freed,total_used,backtrace,frees,peak_used,\
         sampling_interval,short_lived_share,dropped_samples,dropped_bytes\n"
    ));
    // Not freed, a peak of 777 bytes, and no sampling columns: exact.
    assert!(
        csv.lines()
            .any(|line| line.starts_with("777,1,777,0,777,") && line.ends_with("\",0,777,,,,")),
        "{csv}"
    );
    black_box(kept);
}
