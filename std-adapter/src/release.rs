//! Giving memory back to the system: the empty chunks the tracker's own heap
//! keeps, and what the program freed that glibc keeps (the top of its main
//! heap, and whole free pages inside its heaps) until `malloc_trim` is
//! called.

/// Gives memory held free back to the system: the empty chunks the
/// tracker's own heap keeps (its other free pages went back as they were
/// freed), and what glibc holds of the program's frees (`malloc_trim`,
/// which returns the top of the main arena and the whole free pages inside
/// every arena). Reports do this themselves when they end, once they
/// allocated a megabyte or more, and the debug endpoint after each
/// response; call it after your program freed a lot that it will not
/// allocate again soon.
///
/// `malloc_trim` holds each of glibc's arenas while it walks that arena's
/// free blocks, so an allocation from that arena meanwhile waits for it, as
/// it would for another thread's allocation there. With another allocator
/// underneath (jemalloc, mimalloc) or another C library, only the tracker's
/// heap gives memory back here: those allocators do it on their own
/// schedule.
pub fn release_memory() {
    crate::own_heap::release();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` has no preconditions; it takes glibc's own
    // locks, and allocates nothing through the Rust allocator.
    unsafe {
        libc::malloc_trim(0);
    }
}
