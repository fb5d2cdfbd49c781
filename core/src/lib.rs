//! Heap tracking by task and by callsite, for any `GlobalAlloc`, with no heap
//! of its own: fixed-capacity lock-free tables, frame-pointer callsites and
//! reports that allocate nothing. The `no_std` core of `alloc-track`.
//!
//! Wrap an allocator in a [`Tracker`] and every block it hands out is
//! credited to the task that allocated it (who is running is told by a
//! [`Context`] you supply) and to the stack of return addresses it was
//! allocated from. Frees are credited back to the same task and callsite
//! through an 8-byte header carried with the block, wherever and whenever
//! they happen.
//!
//! # Quick start
//!
//! ```
//! use core::alloc::{GlobalAlloc, Layout};
//! use std::alloc::System;
//! use alloc_track_core::{Context, Order, Tracker, Who};
//!
//! /// Names the running task. A real context reads a thread id or the active
//! /// interrupt number; this one has a single task.
//! struct OneTask;
//!
//! impl Context for OneTask {
//!     fn who(&self) -> Who {
//!         Who::Task(1)
//!     }
//! }
//!
//! // 8 task rows, 64 callsite rows of up to 16 frames; in a program this is
//! // the `#[global_allocator]`.
//! static TRACKER: Tracker<System, OneTask, 8, 64, 16> = Tracker::new(System, OneTask);
//!
//! let layout = Layout::from_size_align(100, 8).unwrap();
//! // SAFETY: the layout has a non-zero size; each block is freed once, with
//! // the layout it was allocated with.
//! let kept = unsafe {
//!     let kept = TRACKER.alloc(layout);
//!     let freed = TRACKER.alloc(layout);
//!     TRACKER.dealloc(freed, layout);
//!     kept
//! };
//! assert!(!kept.is_null());
//!
//! let report = TRACKER.task_report::<4>(Order::LiveBytes);
//! let task = &report.top[0];
//! assert_eq!((task.id, task.figures.figures.live_bytes()), (1, 100));
//! assert_eq!(task.figures.figures.allocations, 2);
//! assert_eq!(report.totals.figures.peak_live_bytes, 200);
//! println!("{report}");
//! # // SAFETY: as above.
//! # unsafe { TRACKER.dealloc(kept, layout) };
//! ```
//!
//! # What is recorded
//!
//! For every task row, callsite row and bucket: bytes and counts allocated and
//! freed, live bytes and the peak of live bytes ([`Figures`]). Task rows add the
//! frees that crossed tasks ([`TaskFigures`]): frees of the task's blocks by
//! others, and frees the task made of others' blocks. A free is always
//! credited to the task and callsite that made the block.
//!
//! - **Tasks.** [`Ledger::task_exit`] folds an ended task's figures into the
//!   finished bucket and frees its row for the next task, so tasks may come
//!   and go without limit. A block that outlives its task is credited, when
//!   freed, to the finished bucket and never to the row's next occupant (each
//!   row has a generation, and the header names it). When every row is taken,
//!   new tasks are counted in the overflow bucket.
//! - **Callsites.** With [`Mode::TasksAndCallsites`], each allocation walks
//!   the frame-pointer chain (up to `DEPTH` return addresses, inside the stack
//!   bounds the context gives) and looks the stack up by its hash. Build with
//!   `-C force-frame-pointers=yes`. A full table sends new stacks to the
//!   overflow bucket; stacks that were not walked go to the uncaptured bucket.
//! - **`realloc`** goes to the inner allocator's `realloc`, so growth in place
//!   stays in place. It counts as the free of the old block (credited to its
//!   maker) and a new allocation by the caller.
//!
//! # The sampling form
//!
//! [`Tracker::with_sampling`]`(interval)` records a sample of the
//! allocations instead of all of them, for programs that keep tracking on in
//! production: every byte allocated is a sample point with chance
//! `1/interval`, so an allocation of `s` bytes is sampled with chance
//! `p = 1 - (1 - 1/interval)^s`. Unsampled blocks carry no header; an
//! unsampled allocation costs a countdown in its task's row (or in counters
//! the context keeps in the task's own memory, [`HotCountdown`](raw::HotCountdown)), an
//! unsampled free a mask and a compare of its address. Up to `SAMPLES` live sampled
//! blocks are recorded (the tracker's last const parameter); a sample that
//! finds no room is dropped and counted ([`Totals::dropped_samples`]).
//!
//! In this form every figure is an unbiased estimate (each sample counts for
//! `1/p` allocations and `s/p` bytes), except what each task allocated,
//! which is exact ([`TaskFigures::exact_allocations`]). Reports say which
//! form they come from ([`Totals::sampling`]). A context that keeps a clock
//! ([`Context::now`]) is told each sampled block's lifetime
//! ([`Context::sample_freed`]), for [`Lifetimes`] per callsite.
//!
//! # Guarantees
//!
//! - **Exact** (in the exact form). The figures of all task rows and buckets add up to the totals,
//!   and so do those of all callsite rows and buckets, whenever no allocation
//!   is in progress; overflow is counted, never dropped. Peaks of rows that
//!   one task writes, and the global peak, are exact; the peak of a bucket or
//!   callsite row is exact for the order in which its live counter changed.
//! - **No allocation, no lock, no panic** on the allocation path: tables are
//!   fixed arrays inside the tracker, and every lookup has a bounded number of
//!   steps that ends in a bucket when the table is full.
//! - **Lock-free.** An allocation, and a free by the task that allocated, do
//!   a bounded amount of work; their only loop raises a shared peak
//!   (`fetch_max`), retrying only while other tasks raise the same peak. A free
//!   of another task's block uses a compare-and-swap loop on that task's row
//!   state, which retries only when another task changed that state meanwhile.
//! - **Memory.** [`HEADER_BYTES`] (8) per block with an alignment up to 8,
//!   16 at alignment 16, 8 to 15 bytes for larger alignments. The tables
//!   take `size_of::<Tracker<..>>()` bytes, fixed at compile time.
//!
//! # Features
//!
//! | feature | what it adds |
//! |---|---|
//! | `defmt` | `defmt::Format` for the figures and reports |
//!
//! On targets without native 64-bit atomics or compare-and-swap (thumbv6m,
//! thumbv7m), `portable-atomic` supplies them: enable its `critical-section`
//! feature (or `--cfg portable_atomic_unsafe_assume_single_core`) in the
//! firmware, so that they are made atomic by masking interrupts.
#![no_std]
#![warn(missing_docs)]
#![cfg_attr(
    not(test),
    deny(
        clippy::std_instead_of_core,
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::unreachable,
        clippy::todo
    )
)]

#[cfg(test)]
extern crate std;

mod block;
mod callsite;
mod context;
mod cross;
mod deferred;
#[cfg(feature = "defmt")]
mod defmt;
mod figures;
mod hash;
mod ledger;
mod lifetime;
mod memo;
mod party;
mod primitive;
mod registry;
mod report;
mod sampling;
mod task;
mod tracker;
mod walker;

pub use block::HEADER_BYTES;
pub use callsite::CallsiteRowView;
pub use context::Context;
pub use cross::CrossFree;
pub use figures::{ExactAllocations, Figures, TaskFigures};
pub use ledger::{CallsiteBucket, DroppedSamples, Ledger, Mode, TableMemory};
pub use lifetime::{lifetime_bounds, lifetime_bucket, LifetimeBucket, Lifetimes, LIFETIME_BUCKETS};
pub use memo::{MemoRecord, StackMemo};
pub use party::{Party, SampleFreed, TaskBucket, TaskId, Ticket, Who};
pub use report::{CallsiteReport, Order, TaskReport, Totals};
pub use task::TaskRowView;
pub use tracker::Tracker;
pub use walker::{frame_pointer, stack_pointer, walk, Stack};

/// What an adapter that keeps its own per-thread state uses on its fast
/// paths (as the std adapter does with thread-locals), apart from what a
/// program or a firmware `Context` needs: a task's row kept beside its
/// ticket, the countdown's counters in the thread's own memory, the
/// sampling form's constants, and a lock that never waits for state the
/// adapter keeps beside the tables (its own heap).
pub mod raw {
    pub use crate::deferred::{Deferred, Held};
    pub use crate::sampling::{HotCountdown, COUNTDOWN_PIECE, SCALE as SAMPLE_SCALE};
    pub use crate::task::{OwnRow, TRACKER_SAMPLING_INTERVAL};
}

/// Where the core's library sources were when it was built: frames whose file is
/// under it are the tracker's own, which the std adapter's short backtraces
/// hide.
#[doc(hidden)]
pub const SOURCE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src");

/// The tables themselves, for the loom models in `tests/loom.rs` only.
#[cfg(alloc_track_loom)]
#[doc(hidden)]
pub mod model {
    pub use crate::callsite::{overflow as callsite_overflow, CallsiteTable, HeldLane, LaneKey};
    pub use crate::cross::CrossTable;
    pub use crate::figures::Amount;
    pub use crate::sampling::{SampleTable, SampledBlock};
    pub use crate::task::TaskTable;
}
