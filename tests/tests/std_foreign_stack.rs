//! Allocating on a stack that is not the thread's own (a coroutine's, as
//! green threads and async runtimes with stackful tasks make): the walker
//! must not follow frame pointers off into memory between that stack and
//! the thread's, which may be unmapped. The allocation is counted, with its
//! stack uncaptured.
#![cfg(all(target_os = "linux", target_env = "gnu", target_arch = "x86_64"))]

use std::alloc::System;
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use alloc_track::{AllocTrack, BacktraceMode};

#[global_allocator]
static GLOBAL: AllocTrack<System> = AllocTrack::new(System, BacktraceMode::Short);

const PAGE: usize = 4096;
const STACK_BYTES: usize = 16 * PAGE;
const BLOCK: usize = 321;

/// An address inside a page that may not be read, set before the switch.
static STRAY: AtomicUsize = AtomicUsize::new(0);
/// The block the coroutine allocated.
static BLOCK_ADDRESS: AtomicUsize = AtomicUsize::new(0);

#[inline(never)]
fn allocate() {
    let block = black_box(Box::new([5u8; BLOCK]));
    BLOCK_ADDRESS.store(Box::into_raw(block) as usize, Relaxed);
}

/// Runs on the coroutine's stack. Its own frame record links to the frame
/// it was entered from; it points that link at the unreadable page while it
/// allocates, as a stray frame pointer in foreign code would.
extern "C" fn coroutine() {
    let record = alloc_track_core::frame_pointer() as *mut usize;
    // SAFETY: `record` is this function's frame record (frame pointers are
    // on for the whole workspace), on the coroutine's stack, which is live;
    // the saved link is put back before returning.
    unsafe {
        let saved = record.read();
        record.write(STRAY.load(Relaxed));
        allocate();
        record.write(saved);
    }
}

/// The bounds of the current thread's stack.
fn thread_stack() -> (usize, usize) {
    // SAFETY: `attr` is initialised by `pthread_getattr_np` before it is read
    // and destroyed once; the out-pointers are locals.
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        assert_eq!(libc::pthread_getattr_np(libc::pthread_self(), &mut attr), 0);
        let mut base: *mut libc::c_void = std::ptr::null_mut();
        let mut size: libc::size_t = 0;
        assert_eq!(libc::pthread_attr_getstack(&attr, &mut base, &mut size), 0);
        libc::pthread_attr_destroy(&mut attr);
        (base as usize, base as usize + size)
    }
}

#[test]
fn a_coroutine_stack_is_not_walked_into_unmapped_memory() {
    let (base, top) = thread_stack();
    // The coroutine's stack with an unreadable page right above it, placed
    // below the thread's stack so that the page lies between the
    // coroutine's stack pointer and the thread's stack top.
    let size = STACK_BYTES + PAGE;
    let hint = (base - 64 * size) as *mut libc::c_void;
    // SAFETY: a fresh anonymous mapping; nothing else refers to it.
    let region = unsafe {
        libc::mmap(
            hint,
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(region, libc::MAP_FAILED);
    let guard = region as usize + STACK_BYTES;
    // SAFETY: the last page of the mapping just made, which nothing uses.
    let protected = unsafe { libc::mprotect(guard as *mut libc::c_void, PAGE, libc::PROT_NONE) };
    assert_eq!(protected, 0);
    assert!(
        guard + PAGE < top,
        "the coroutine's stack must lie below the thread's"
    );
    STRAY.store(guard + 64, Relaxed);

    // Linux keeps 15 bytes of a thread's name.
    let name: String = std::thread::current()
        .name()
        .unwrap()
        .chars()
        .take(15)
        .collect();
    let allocated_before = alloc_track::thread_report().0[&name].total_alloc;

    // SAFETY: the contexts are initialised by `getcontext` before use; the
    // coroutine's stack is the mapping above, which outlives the switch;
    // `uc_link` brings control back here when the coroutine returns.
    unsafe {
        let mut here: libc::ucontext_t = std::mem::zeroed();
        let mut there: libc::ucontext_t = std::mem::zeroed();
        assert_eq!(libc::getcontext(&mut there), 0);
        there.uc_stack.ss_sp = region;
        there.uc_stack.ss_size = STACK_BYTES;
        there.uc_link = &mut here;
        libc::makecontext(&mut there, coroutine, 0);
        assert_eq!(libc::swapcontext(&mut here, &there), 0);
    }

    let block = BLOCK_ADDRESS.load(Relaxed);
    assert_ne!(block, 0, "the coroutine ran");
    let after = alloc_track::thread_report();
    assert_eq!(after.0[&name].total_alloc - allocated_before, BLOCK as u64);
    // Counted, but its stack was not walked.
    let report = alloc_track::backtrace_report(|_, _| true);
    assert!(report.0.iter().all(
        |(backtrace, _)| backtrace.innermost_function() != Some("std_foreign_stack::allocate")
    ));
    // SAFETY: the block is the `Box` leaked by `allocate`.
    drop(unsafe { Box::from_raw(block as *mut [u8; BLOCK]) });
    // SAFETY: the mapping made above, no longer in use.
    unsafe { libc::munmap(region, size) };
}
