//! Allocating on a stack that is not the thread's own (a coroutine's, as
//! green threads and async runtimes with stackful tasks make): the walker
//! must not follow frame pointers off into memory between that stack and
//! the thread's, which may be unmapped. The allocation is counted, with its
//! stack uncaptured.
//!
//! The test lays the memory out itself, whatever the system's mapper does:
//! one mapping holds the coroutine's stack, an unreadable page above it and,
//! above that, the stack of a thread it starts, on which the coroutine runs.
//!
//! A test binary of its own without the test harness: the uncaptured bucket
//! is derived from the totals, so an allocation that the harness's main
//! thread has in progress while the bucket is read would skew the figures.

#[cfg(all(target_os = "linux", target_env = "gnu", target_arch = "x86_64"))]
mod coroutine {
    use std::alloc::System;
    use std::hint::black_box;
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

    use alloc_track::{AllocTrack, BacktraceMode, CallsiteKind};

    #[global_allocator]
    static GLOBAL: AllocTrack<System> = AllocTrack::new(System, BacktraceMode::Short);

    const PAGE: usize = 4096;
    const COROUTINE_STACK: usize = 64 * PAGE;
    const THREAD_STACK: usize = 2048 * PAGE;
    const BLOCK: usize = 321;

    /// The mapping's address, for the thread.
    static REGION: AtomicUsize = AtomicUsize::new(0);
    /// The block the coroutine allocated.
    static BLOCK_ADDRESS: AtomicUsize = AtomicUsize::new(0);

    fn guard_page() -> usize {
        REGION.load(Relaxed) + COROUTINE_STACK
    }

    #[inline(never)]
    fn allocate() {
        let block = black_box(Box::new([5u8; BLOCK]));
        BLOCK_ADDRESS.store(Box::into_raw(block) as usize, Relaxed);
    }

    /// Runs on the coroutine's stack. Its own frame record links to the frame
    /// it was entered from; it points that link into the unreadable page while
    /// it allocates, as a stray frame pointer in foreign code would.
    extern "C" fn coroutine() {
        let record = alloc_track_core::frame_pointer() as *mut usize;
        // SAFETY: `record` is this function's frame record (frame pointers are
        // on for the whole workspace), on the coroutine's stack, which is live;
        // the saved link is put back before returning.
        unsafe {
            let saved = record.read();
            record.write(guard_page() + 64);
            allocate();
            record.write(saved);
        }
    }

    /// The thread's body: switches to the coroutine and back.
    extern "C" fn thread(_: *mut libc::c_void) -> *mut libc::c_void {
        // SAFETY: the contexts are initialised by `getcontext` before use; the
        // coroutine's stack is the bottom of the mapping, which outlives the
        // switch; `uc_link` brings control back here when the coroutine returns.
        unsafe {
            let mut here: libc::ucontext_t = std::mem::zeroed();
            let mut there: libc::ucontext_t = std::mem::zeroed();
            if libc::getcontext(&mut there) != 0 {
                return std::ptr::null_mut();
            }
            there.uc_stack.ss_sp = REGION.load(Relaxed) as *mut libc::c_void;
            there.uc_stack.ss_size = COROUTINE_STACK;
            there.uc_link = &mut here;
            libc::makecontext(&mut there, coroutine, 0);
            libc::swapcontext(&mut here, &there);
        }
        std::ptr::null_mut()
    }

    fn uncaptured() -> (u64, u64) {
        alloc_track::backtrace_report(|backtrace, _| backtrace.kind == CallsiteKind::Uncaptured)
            .0
            .first()
            .map_or((0, 0), |(_, metric)| (metric.allocations, metric.allocated))
    }

    pub fn a_coroutine_stack_is_not_walked_into_unmapped_memory() {
        let size = COROUTINE_STACK + PAGE + THREAD_STACK;
        // SAFETY: a fresh anonymous mapping; nothing else refers to it.
        let region = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(region, libc::MAP_FAILED);
        REGION.store(region as usize, Relaxed);
        // SAFETY: a page of the mapping just made, which nothing uses.
        let protected =
            unsafe { libc::mprotect(guard_page() as *mut libc::c_void, PAGE, libc::PROT_NONE) };
        assert_eq!(protected, 0);

        let before = uncaptured();
        // SAFETY: `attr` is initialised before use and destroyed once; the
        // thread's stack is the top of the mapping, which outlives the thread
        // (it is joined before the mapping is unmapped).
        unsafe {
            let mut attr: libc::pthread_attr_t = std::mem::zeroed();
            assert_eq!(libc::pthread_attr_init(&mut attr), 0);
            let stack = (guard_page() + PAGE) as *mut libc::c_void;
            assert_eq!(
                libc::pthread_attr_setstack(&mut attr, stack, THREAD_STACK),
                0
            );
            let mut handle: libc::pthread_t = std::mem::zeroed();
            assert_eq!(
                libc::pthread_create(&mut handle, &attr, thread, std::ptr::null_mut()),
                0
            );
            libc::pthread_attr_destroy(&mut attr);
            assert_eq!(libc::pthread_join(handle, std::ptr::null_mut()), 0);
        }

        let block = BLOCK_ADDRESS.load(Relaxed);
        assert_ne!(block, 0, "the coroutine ran");
        // Counted, but its stack was not walked.
        let after = uncaptured();
        assert_eq!((after.0 - before.0, after.1 - before.1), (1, BLOCK as u64));
        let report = alloc_track::backtrace_report(|_, _| true);
        assert!(report
            .0
            .iter()
            .all(|(backtrace, _)| backtrace.innermost_function()
                != Some("std_foreign_stack::allocate")));
        // SAFETY: the block is the `Box` leaked by `allocate`.
        drop(unsafe { Box::from_raw(block as *mut [u8; BLOCK]) });
        // SAFETY: the mapping made above, no longer in use.
        unsafe { libc::munmap(region, size) };
    }
}

fn main() {
    #[cfg(all(target_os = "linux", target_env = "gnu", target_arch = "x86_64"))]
    {
        coroutine::a_coroutine_stack_is_not_walked_into_unmapped_memory();
        println!("std_foreign_stack: the coroutine's allocation counted, its stack not walked");
    }
}
