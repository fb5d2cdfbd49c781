//! Children forked while reports on other threads read the sampling form's
//! hot counters: those threads do not exist in a child, and a report that
//! was counted as reading at the fork never counts itself out there. A
//! thread that ends in the child must not wait for it (the adapter forgets
//! such readers in the child), or the child would hang. A fork lands inside
//! a read's few instructions too seldom for this test to catch that alone;
//! it checks that children forked mid-report start and end threads, and
//! the core's unit test checks the forgetting itself.

use std::alloc::System;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Barrier};

use alloc_track::{AllocTrack, BacktraceMode};

#[global_allocator]
static GLOBAL: AllocTrack<System> =
    AllocTrack::new(System, BacktraceMode::None).with_sampling(1 << 30);

/// Children forked while the reports run.
const FORKS: usize = 400;

/// Threads whose counters stay attached, for the reports to read.
const LIVE_THREADS: usize = 32;

/// The body of the child's thread: it allocates (so that it claims a row,
/// attaches its counters and registers its exit guard), then ends.
extern "C" fn allocate_and_end(_: *mut libc::c_void) -> *mut libc::c_void {
    black_box(vec![7u8; 100]);
    std::ptr::null_mut()
}

/// Starts a thread through the C library and waits for its end: in a forked
/// child, where the standard library's thread start may wait on a lock that
/// a thread of the parent held at the fork, and so is not for this test.
fn start_and_join_a_thread() -> bool {
    let mut thread: libc::pthread_t = 0;
    // SAFETY: `thread` is a valid out-pointer; the start routine takes no
    // argument and returns null; the thread is joined once.
    unsafe {
        libc::pthread_create(
            &mut thread,
            std::ptr::null(),
            allocate_and_end,
            std::ptr::null_mut(),
        ) == 0
            && libc::pthread_join(thread, std::ptr::null_mut()) == 0
    }
}

#[test]
fn threads_end_in_a_child_forked_while_reports_read() {
    let release = Arc::new(Barrier::new(LIVE_THREADS + 1));
    let live: Vec<_> = (0..LIVE_THREADS)
        .map(|_| {
            let release = release.clone();
            std::thread::spawn(move || {
                black_box(Box::new(0u8));
                release.wait();
            })
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Relaxed) {
                black_box(alloc_track::thread_report());
            }
        })
    };
    for _ in 0..FORKS {
        // SAFETY: the child starts a thread that allocates and ends, then
        // leaves without running the parent's exit handlers; the tracker's
        // state it touches is atomics, and glibc's allocator and thread
        // library are made ready for the child by glibc itself.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            // SAFETY: a child that hangs is ended by the alarm's signal,
            // which the parent sees.
            unsafe { libc::alarm(20) };
            let ended = start_and_join_a_thread();
            // SAFETY: ends the child without the parent's exit handlers.
            unsafe { libc::_exit(if ended { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waits for the child just forked.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "a child did not end its thread (status {status:#x})"
        );
    }
    stop.store(true, Relaxed);
    reader.join().unwrap();
    release.wait();
    for thread in live {
        thread.join().unwrap();
    }
}
