//! Giving memory back to the system: what reports allocated and freed stays
//! with the allocator unless it is asked to return it, and glibc's keeps
//! it (the top of its heaps, and whole free pages inside them) until
//! `malloc_trim` is called.

/// Gives the memory the allocator holds free back to the system: the empty
/// chunks the tracker's own heap keeps, and glibc's `malloc_trim`, which
/// returns the top of the main arena and the whole free pages inside every
/// arena. Reports do this themselves when they end, once they
/// allocated a megabyte or more, and the debug endpoint after each
/// response; call it after dropping a large report of your own (the
/// report's memory is yours until then).
///
/// It holds each of glibc's arenas while it walks that arena's free blocks,
/// so an allocation from that arena meanwhile waits for it, as it would for
/// another thread's allocation there. With another allocator underneath (jemalloc,
/// mimalloc) or another C library, it does nothing: those allocators give
/// memory back on their own schedule.
pub fn release_memory() {
    crate::own_heap::release();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` has no preconditions; it takes glibc's own
    // locks, and allocates nothing through the Rust allocator.
    unsafe {
        libc::malloc_trim(0);
    }
}
