//! The capacities of the process's tables, in one place: fixed at compile
//! time, since the tables are static memory.

/// Thread rows: threads (and reporting threads' report rows) alive at once.
pub const THREAD_ROWS: usize = 1024;
/// Callsite rows: distinct allocation stacks over the program's life. Rows
/// are used in order and the table lives in a `static`, so the memory that
/// unused rows take is address space only (see [`callsite_memory`](crate::callsite_memory)); lower
/// the limit with [`AllocTrack::with_callsite_limit`](crate::AllocTrack::with_callsite_limit).
pub const CALLSITE_ROWS: usize = 65_536;
/// Return addresses kept per callsite.
pub const CALLSITE_DEPTH: usize = 16;
/// Rows for (allocating thread, freeing thread) pairs of cross-thread frees.
pub const CROSS_FREE_ROWS: usize = 1024;
/// Live sampled blocks the sampling form can record at once
/// ([`AllocTrack::with_sampling`](crate::AllocTrack::with_sampling)); a sample beyond them is dropped and
/// counted.
pub const SAMPLED_BLOCKS: usize = 65_536;
