//! A vector pushed one element at a time grows through the inner
//! allocator's `realloc`, and every step is counted exactly.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use alloc_track::{AllocTrack, BacktraceMode};

/// System, counting the calls it gets.
struct CountingSystem {
    allocs: AtomicU64,
    reallocs: AtomicU64,
    deallocs: AtomicU64,
}

// SAFETY: forwards every call to System unchanged.
unsafe impl GlobalAlloc for CountingSystem {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.allocs.fetch_add(1, Relaxed);
        // SAFETY: forwarded from our caller.
        unsafe { System.alloc(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        self.reallocs.fetch_add(1, Relaxed);
        // SAFETY: forwarded from our caller.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        self.deallocs.fetch_add(1, Relaxed);
        // SAFETY: forwarded from our caller.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: AllocTrack<CountingSystem> = AllocTrack::new(
    CountingSystem {
        allocs: AtomicU64::new(0),
        reallocs: AtomicU64::new(0),
        deallocs: AtomicU64::new(0),
    },
    BacktraceMode::Short,
);

fn calls() -> [u64; 3] {
    let inner = GLOBAL.inner();
    [&inner.allocs, &inner.reallocs, &inner.deallocs].map(|count| count.load(Relaxed))
}

#[test]
fn a_vector_grows_by_realloc_and_is_counted_exactly() {
    std::thread::Builder::new()
        .name("pusher".into())
        .spawn(|| {
            let before = alloc_track::thread_report().0.remove("pusher").unwrap();
            let calls_before = calls();
            let mut numbers = Vec::new();
            for n in 0..1000u64 {
                numbers.push(n);
            }
            let calls_after = calls();
            let after = alloc_track::thread_report().0.remove("pusher").unwrap();

            // Capacities 4, 8, ..., 1024: one allocation, then eight
            // reallocations, and no copy through alloc and dealloc.
            assert_eq!(calls_after[0] - calls_before[0], 1);
            assert_eq!(calls_after[1] - calls_before[1], 8);
            assert_eq!(calls_after[2] - calls_before[2], 0);
            // Each realloc counts as the free of the old block and a new
            // allocation.
            let allocated: u64 = (2..=10).map(|power| 8u64 << power).sum();
            assert_eq!(after.total_alloc - before.total_alloc, allocated);
            assert_eq!(after.allocations - before.allocations, 9);
            assert_eq!(after.frees - before.frees, 8);
            assert_eq!(after.total_freed - before.total_freed, allocated - 8192);
            assert_eq!(after.current_used - before.current_used, 8192);
            // The free of the old block is counted before the new one, so
            // growth never counts both at once.
            assert_eq!(
                after.peak_used,
                before.peak_used.max(before.current_used + 8192)
            );
            drop(numbers);
        })
        .unwrap()
        .join()
        .unwrap();
}
