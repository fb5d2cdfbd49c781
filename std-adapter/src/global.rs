//! The process's one ledger, its capacities, and what reads and sets it
//! from anywhere: the figures of the whole process and of its tables.

use alloc_track_core::Ledger;

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

/// Samples the sampling form could not take, and the bytes they stood for:
/// what its estimates miss. A sample is dropped when the table of
/// [`SAMPLED_BLOCKS`] live sampled blocks has no free entry within a
/// search's reach, or when there is no memory for the block's sampled
/// place; the allocation is still made, and counted in its thread's exact
/// allocated bytes and allocations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct DroppedSamples {
    /// How many samples were dropped.
    pub samples: u64,
    /// The bytes they stood for (their weights), missing from the estimates
    /// of allocated and live bytes.
    pub bytes: u64,
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
    let dropped = LEDGER.dropped_samples();
    DroppedSamples {
        samples: dropped.samples,
        bytes: dropped.bytes,
    }
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

/// The memory of the callsite table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CallsiteMemory {
    /// Bytes of the whole table: address space, fixed at compile time.
    pub reserved: usize,
    /// Bytes of the rows in use and of the table's index: at most what the
    /// table occupies in memory.
    pub in_use: usize,
    /// Bytes each further callsite adds.
    pub per_row: usize,
    /// Rows holding a callsite.
    pub rows_in_use: usize,
    /// Rows that may hold one ([`AllocTrack::with_callsite_limit`](crate::AllocTrack::with_callsite_limit)).
    pub limit: usize,
}

/// The bytes of every table the tracker keeps: thread rows, callsite rows
/// and their index, cross-free pairs, thread names. All of it is zeroed
/// static memory, fixed at compile time, which the system maps as rows are
/// used.
pub fn table_bytes() -> usize {
    std::mem::size_of::<StdLedger>() + names::TABLE_BYTES
}

/// What the callsite table costs now.
pub fn callsite_memory() -> CallsiteMemory {
    let memory = LEDGER.callsite_memory();
    CallsiteMemory {
        reserved: memory.reserved,
        in_use: memory.in_use,
        per_row: memory.per_row,
        rows_in_use: LEDGER.callsite_rows_in_use(),
        limit: LEDGER.callsite_limit(),
    }
}
