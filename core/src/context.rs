//! Who is allocating: the context hook through which the tracker, which knows
//! no OS, learns the running task and where its stack lies, and the names of
//! the rows that stand in for tasks (the buckets).

use crate::memo::StackMemo;
use crate::party::{SampleFreed, Ticket, Who};
use crate::sampling::HotCountdown;
use crate::walker::{self, Stack};

/// Tells the tracker who is allocating now and where that task's stack is.
///
/// The tracker calls these methods on every allocation and free, from inside
/// the global allocator, so an implementation must:
/// - never allocate through the tracker (no `Vec`, `String`, `Box` unless
///   they use another allocator) and never panic; if it might allocate (for
///   instance while a thread-local is first set up), it must notice that it
///   was re-entered and answer [`Who::Unknown`] from [`who`](Self::who);
/// - name each task with an id that no task running at the same time shares:
///   a task's row is written without read-modify-writes, on the promise that
///   only that task writes it. Code that can interrupt a task (an interrupt
///   handler, a signal handler) must get an id of its own.
///
/// The fast path: a context with per-task storage (a thread-local, a task
/// control block) keeps the ticket that [`remember`](Self::remember) hands
/// it and returns it from [`ticket`](Self::ticket), which the tracker then
/// trusts without a table search. Only the task itself may be told its
/// ticket, and the context must stop returning it once the task has ended
/// ([`Ledger::task_exit`](crate::Ledger::task_exit)): the row may by then
/// belong to another task. A ticket of [`Ledger::bucket_ticket`](crate::Ledger::bucket_ticket)
/// may be returned at any time (for instance while the task does the
/// tracker's own work).
pub trait Context {
    /// Whether a ledger over this context may keep the exact peak of all
    /// live bytes together ([`Ledger::with_global_peak`](crate::Ledger::with_global_peak)).
    /// A context whose ledger is always built without it says `false`: the
    /// allocation paths then do not read the ledger's setting at all, and
    /// the ledger keeps no global peak whatever that setting says.
    const GLOBAL_PEAK: bool = true;

    /// The ticket kept for who is running now, if any: the whole lookup on
    /// the fast path. `None` sends the tracker to [`who`](Self::who).
    #[inline]
    fn ticket(&self) -> Option<Ticket> {
        None
    }

    /// Who is running, when [`ticket`](Self::ticket) has no answer.
    fn who(&self) -> Who;

    /// Keeps the ticket the tracker found (or claimed) for the task that
    /// [`who`](Self::who) just named, to be returned by
    /// [`ticket`](Self::ticket) from now on.
    #[inline]
    fn remember(&self, _ticket: Ticket) {}

    /// The bounds of the current task's stack, which the callsite walker
    /// needs to follow frame pointers without leaving it. `None` turns
    /// callsite capture off for this call (the allocation is counted as
    /// uncaptured).
    #[inline]
    fn stack(&self) -> Option<Stack> {
        None
    }

    /// The sampling form: the running task's hot countdown counters, if
    /// the context keeps them in memory of the task's own and attached them
    /// to the row its ticket names (see
    /// [`OwnRow::attach`](crate::raw::OwnRow::attach)); `None`, the default,
    /// where it keeps none. The ledger counts on them only where they are
    /// the ones attached to the row it counts on.
    #[inline]
    fn hot(&self) -> Option<&HotCountdown> {
        None
    }

    /// A clock for the sampling form's lifetimes (the std adapter counts
    /// nanoseconds); 0, the default, where there is none. Read when a sample
    /// is taken and when it is freed.
    #[inline]
    fn now(&self) -> u64 {
        0
    }

    /// Takes back a block of the exact form that the adapter's inner
    /// allocator did not make: `base` and `layout` are the inner block's
    /// (header included). Asked by the exact form's frees that decode the
    /// header (a block of another task or of a bucket), never by the fast
    /// frees of a task's own block or of an untracked one; `false`, the
    /// default, leaves the block to the inner allocator. The std adapter
    /// makes the tracker's own blocks in a heap of its own and takes them
    /// back here.
    ///
    /// # Safety
    /// `base` is a live inner block of `layout` that the caller frees: if
    /// this returns `true`, the block is gone.
    #[inline]
    unsafe fn free_elsewhere(&self, _base: *mut u8, _layout: core::alloc::Layout) -> bool {
        false
    }

    /// Called in the sampling form when a sampled block is freed, with how
    /// long it lived: for a context that keeps lifetimes per callsite. Under
    /// the same rules as every method here: no allocation, no panic.
    #[inline]
    fn sample_freed(&self, _freed: SampleFreed) {}

    /// Captures the current stack's return addresses into `out`, innermost
    /// first, and returns how many it wrote. `frame_pointer` is that of the
    /// allocator method the program called. By default this walks the
    /// frame-pointer chain inside [`stack`](Self::stack); a context may
    /// capture another way (an unwinder, for code built without frame
    /// pointers), under the same rules: no allocation through the tracker,
    /// no panic.
    #[inline]
    fn capture(&self, frame_pointer: usize, out: &mut [usize]) -> usize {
        self.stack()
            .map_or(0, |stack| walker::walk(frame_pointer, stack, out))
    }

    /// Calls `visit` with the running task's [`StackMemo`] and its stack's
    /// bounds, for a context that keeps a memo per task and captures by
    /// walking frame pointers: a task that allocates again from one of the
    /// last two stacks it walked is then spared the walk and the table
    /// search.
    /// `visit(None)`, the default, sends every capture to
    /// [`capture`](Self::capture).
    ///
    /// Only the running task's own memo may be handed over, with the bounds
    /// [`stack`](Self::stack) gives now: the memo's records are read again
    /// at the addresses its walk read them. A memo serves one ledger: the
    /// rows it keeps are that ledger's.
    #[inline]
    fn with_stack_memo<R>(&self, visit: impl FnOnce(Option<(&StackMemo, Stack)>) -> R) -> R {
        visit(None)
    }
}
