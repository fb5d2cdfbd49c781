//! The process's one ledger, its capacities, and what reads and sets it
//! from anywhere: the figures of the whole process and of its tables.

use alloc_track_core::{DroppedSamples, Ledger};

use crate::context::ThreadContext;
use crate::names;

/// Thread rows: threads (and reporting threads' report rows) alive at once.
pub const THREAD_ROWS: usize = 1024;
/// Callsite rows: distinct allocation stacks over the program's life. Rows
/// are used in order and the table lives in a `static`, so the memory that
/// unused rows take is address space only (see [`callsite_memory`]); lower
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

pub(crate) type StdLedger = Ledger<
    ThreadContext,
    THREAD_ROWS,
    CALLSITE_ROWS,
    CALLSITE_DEPTH,
    CROSS_FREE_ROWS,
    SAMPLED_BLOCKS,
>;

/// The one ledger of the process, whatever allocator `AllocTrack` wraps.
pub(crate) static LEDGER: StdLedger = Ledger::new(ThreadContext).with_global_peak(false);

/// The sampling form's mean interval in bytes, or `None` when every
/// allocation is recorded exactly.
pub fn sampling_interval() -> Option<u64> {
    LEDGER.sampling()
}

/// The samples dropped since the program started, in the sampling form;
/// `None` in the exact form. Each report of the sampling form carries the
/// figure as of when it was taken, and its text says it when any was
/// dropped.
pub fn dropped_samples() -> Option<DroppedSamples> {
    sampling_interval().map(|_| dropped_so_far())
}

/// The samples dropped so far (zero in the exact form, and before the first
/// allocation has set the form): what a report reads when it starts.
pub(crate) fn dropped_so_far() -> DroppedSamples {
    LEDGER.dropped_samples()
}

/// Frees since the program started whose block's header failed its check:
/// the program wrote over the bytes just before a block it was given (a
/// heap overflow of the block before it, or a write through a dangling
/// pointer). Each such block was handed back to the inner allocator and
/// left out of every figure. Zero in a program that does not corrupt its
/// heap, and in the sampling form, whose blocks carry no header.
pub fn damaged_headers() -> u64 {
    LEDGER.damaged_headers()
}

/// The memory of the callsite table: what it reserves, what its rows in
/// use take, and how many may be used
/// ([`AllocTrack::with_callsite_limit`](crate::AllocTrack::with_callsite_limit)).
pub type CallsiteMemory = alloc_track_core::TableMemory;

/// The bytes of every table the tracker keeps: thread rows, callsite rows
/// and their index, cross-free pairs, thread names. All of it is zeroed
/// static memory, fixed at compile time, which the system maps as rows are
/// used.
pub fn table_bytes() -> usize {
    std::mem::size_of::<StdLedger>() + names::TABLE_BYTES
}

/// What the callsite table costs now.
pub fn callsite_memory() -> CallsiteMemory {
    LEDGER.callsite_memory()
}
