//! The context hook: how the tracker, which knows no OS, learns who is
//! allocating and where that task's stack lies.

use crate::task::TaskId;
use crate::walker::{self, Stack};

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
}
