//! Faults from outside: the inner allocator running out of memory, a header
//! the program wrote over, a report filter that panics, and a forked child
//! process. The tracker keeps its figures and keeps working.

use std::alloc::Layout;
use std::hint::black_box;

use alloc_track::{AllocTrack, BacktraceMode};
use alloc_track_core::HEADER_BYTES;
use alloc_track_tests::{thread_metric as metric, Fallible};

#[global_allocator]
static GLOBAL: AllocTrack<Fallible> = AllocTrack::new(Fallible, BacktraceMode::Short);

fn named(name: &str, work: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(work)
        .unwrap()
        .join()
        .unwrap();
}

#[test]
fn out_of_memory_changes_nothing_and_keeps_the_old_block() {
    named("oom", || {
        let layout = Layout::from_size_align(256, 8).unwrap();
        // SAFETY: a non-zero layout.
        let block = unsafe { std::alloc::alloc(layout) };
        assert!(!block.is_null());
        // SAFETY: 256 writable bytes.
        unsafe { block.write_bytes(0x77, 256) };
        let before = metric("oom");

        Fallible::fail(true);
        // SAFETY: non-zero layouts; the block came from this allocator.
        let (fresh, grown) = unsafe {
            (
                std::alloc::alloc(layout),
                std::alloc::realloc(block, layout, 4096),
            )
        };
        Fallible::fail(false);
        assert!(fresh.is_null() && grown.is_null());
        assert_eq!(metric("oom"), before, "a failed call records nothing");

        // The old block is whole and still the oom thread's: freed by
        // another thread, it is credited back here.
        // SAFETY: the block is live with 256 initialised bytes.
        assert!(unsafe { std::slice::from_raw_parts(block, 256) }
            .iter()
            .all(|&b| b == 0x77));
        let address = block as usize;
        // A thread started like the freer but freeing nothing shows what
        // std's start-up alone frees of this thread's blocks.
        named("idle", move || {
            black_box((address, layout));
        });
        named("freer", move || {
            // SAFETY: the block came from this allocator with `layout`.
            unsafe { std::alloc::dealloc(address as *mut u8, layout) };
        });
        let after = metric("oom");
        let start_up = after.freed_by_others["idle"];
        assert_eq!(after.freed_by_others["freer"], 256 + start_up);
        assert!(after.total_freed - before.total_freed >= 256 + 2 * start_up);
    });
}

#[test]
fn a_damaged_header_is_counted_and_the_block_still_freed() {
    named("overwriter", || {
        let layout = Layout::from_size_align(64, 8).unwrap();
        // SAFETY: a layout of non-zero size.
        let block = unsafe { std::alloc::alloc(layout) };
        assert!(!block.is_null());
        let before = metric("overwriter");
        let damaged = alloc_track::damaged_headers();
        // SAFETY: the header is the bytes just before the block, inside the
        // inner block the tracker asked for; writing over them stands for a
        // buffer underflow in the program.
        unsafe { block.sub(HEADER_BYTES).write_bytes(0x55, HEADER_BYTES) };
        // SAFETY: allocated above with `layout`.
        unsafe { std::alloc::dealloc(block, layout) };
        let after = metric("overwriter");
        assert_eq!(alloc_track::damaged_headers(), damaged + 1);
        // Left out of every figure: the block stays live in its thread's.
        assert_eq!(after.current_used, before.current_used);
        assert_eq!(after.frees, before.frees);
        // The exact form: no samples, none dropped.
        assert_eq!(alloc_track::dropped_samples(), None);
        assert_eq!(after.dropped_samples, None);
    });
}

#[test]
fn a_panicking_filter_leaves_the_tracker_working() {
    named("filter", || {
        let outcome = std::panic::catch_unwind(|| {
            alloc_track::backtrace_report(|_, _| panic!("a filter that fails"))
        });
        assert!(outcome.is_err());
        // The report scope ended with the panic: this thread's allocations
        // are its own again, and reports still work.
        let before = metric("filter");
        let kept = black_box(vec![0u8; 1234]);
        let after = metric("filter");
        assert_eq!(after.total_alloc - before.total_alloc, 1234);
        assert!(!alloc_track::backtrace_report(|_, m| m.allocated >= 1234)
            .0
            .is_empty());
        drop(kept);
    });
}

#[test]
fn a_forked_child_can_allocate_and_report() {
    named("parent", || {
        // SAFETY: the child only allocates, reports and exits; no lock held
        // by another thread at the fork is taken by the thread report.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let before = alloc_track::thread_report()
                .0
                .remove("parent")
                .map(|m| m.total_alloc);
            let kept = black_box(vec![1u8; 4321]);
            let after = alloc_track::thread_report()
                .0
                .remove("parent")
                .map(|m| m.total_alloc);
            let ok = matches!((before, after), (Some(b), Some(a)) if a - b == 4321);
            drop(kept);
            // SAFETY: ends the child without running the parent's exit
            // handlers.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waits for the child just forked.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "child status {status}"
        );
    });
}
