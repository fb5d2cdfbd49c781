//! The figures of the whole process and of its tables, read from its one
//! ledger.

use alloc_track_core::DroppedSamples;

use crate::context::{StdLedger, LEDGER};
use crate::names;

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
