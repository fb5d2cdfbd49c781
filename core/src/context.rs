//! The context hook: how the tracker, which knows no OS, learns who is
//! allocating and where that task's stack lies.

use crate::task::TaskId;
use crate::walker::Stack;

/// The running task as the context names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Task {
    /// The task's id. Two tasks that run at the same time never share one.
    pub id: TaskId,
    /// The table row this task held last time, if the context keeps one (see
    /// [`Context::remember_row`]). Only a hint: the tracker checks it.
    pub row_hint: Option<u32>,
}

impl Task {
    /// A task known by its id alone.
    pub const fn new(id: TaskId) -> Self {
        Self { id, row_hint: None }
    }
}

/// Tells the tracker who is allocating now and where that task's stack is.
///
/// The tracker calls these methods on every allocation and free, from inside
/// the global allocator, so an implementation must:
/// - never allocate through the tracker (no `Vec`, `String`, `Box` unless
///   they use another allocator) and never panic; if it might allocate (for
///   instance while a thread-local is first set up), it must notice that it
///   was re-entered and answer `None` from [`current_task`](Self::current_task);
/// - name each task with an id that no task running at the same time shares:
///   a task's row is written without read-modify-writes, on the promise that
///   only that task writes it. Code that can interrupt a task (an interrupt
///   handler, a signal handler) must get an id of its own.
pub trait Context {
    /// The task that is running, or `None` when it cannot be named; such
    /// allocations are counted in the unknown bucket.
    fn current_task(&self) -> Option<Task>;

    /// Stores the row the tracker found for the current task, to come back as
    /// [`Task::row_hint`] next time. Contexts with per-task storage (a
    /// thread-local, a task control block) save a table search per call.
    #[inline]
    fn remember_row(&self, _row: u32) {}

    /// The bounds of the current task's stack, which the callsite walker
    /// needs to follow frame pointers without leaving it. `None` turns
    /// callsite capture off for this call (the allocation is counted as
    /// uncaptured).
    #[inline]
    fn stack(&self) -> Option<Stack> {
        None
    }
}
