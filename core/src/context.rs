//! Who is allocating: the context hook through which the tracker, which knows
//! no OS, learns the running task and where its stack lies, and the names of
//! the rows that stand in for tasks (the buckets).

use crate::walker::{self, Stack};

/// What the context says the running task is called. Any value is allowed;
/// two tasks that run at the same time must not share one.
pub type TaskId = u64;

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

/// Who is calling the allocator, as the context tells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Who {
    /// A task of the program.
    Task(Task),
    /// The tracker's own work (reports, symbol caches, diagnostics): counted
    /// in [`TaskBucket::Tracker`] and the callsite table's tracker bucket,
    /// whichever task runs it, and never walked. Its blocks stay there when
    /// that task ends, so the program's figures never hold them.
    Tracker,
    /// Nobody the context can name (too early in a thread's life, or nested
    /// inside the context's own work): counted in [`TaskBucket::Unknown`].
    Unknown,
}

/// The rows of the task table that stand in for tasks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum TaskBucket {
    /// Tasks that have ended ([`Ledger::task_exit`](crate::Ledger::task_exit)),
    /// with the frees of their blocks that came afterwards.
    Finished = 0,
    /// Tasks that found every row taken.
    Overflow = 1,
    /// Allocations and frees while the context could not name the task.
    Unknown = 2,
    /// The tracker's own allocations ([`Who::Tracker`]).
    Tracker = 3,
}

impl TaskBucket {
    /// Every bucket, in the order reports list them.
    pub const ALL: [TaskBucket; 4] = [
        TaskBucket::Finished,
        TaskBucket::Overflow,
        TaskBucket::Unknown,
        TaskBucket::Tracker,
    ];

    /// The bucket at position `index` of [`ALL`](Self::ALL).
    pub(crate) const fn from_index(index: usize) -> Option<Self> {
        match index {
            0 => Some(TaskBucket::Finished),
            1 => Some(TaskBucket::Overflow),
            2 => Some(TaskBucket::Unknown),
            3 => Some(TaskBucket::Tracker),
            _ => None,
        }
    }
}

/// Whose row a block or a free is credited to: a task, or a bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Party {
    /// A task the context named.
    Task(TaskId),
    /// A bucket. As the owner of a block: the block's task had ended, had
    /// found the table full, could not be named, or was the tracker itself.
    Bucket(TaskBucket),
}

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
pub trait Context {
    /// Who is running.
    fn who(&self) -> Who;

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
