//! Who is counted: tasks by their ids, the buckets that stand in for them,
//! the parties a block can be counted on, and the tickets that name their
//! rows.

/// What the context says the running task is called. Any value is allowed;
/// two tasks that run at the same time must not share one.
pub type TaskId = u64;

/// Where a task's allocations are counted: a row of the task table (or a
/// bucket) and the row's generation, as the tracker hands it out. A context
/// may keep it ([`Context::remember`](crate::Context::remember)) and give it back
/// ([`Context::ticket`](crate::Context::ticket)) to spare the tracker a table search on every call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ticket {
    pub(crate) index: u32,
    pub(crate) generation: u32,
}

impl Ticket {
    /// The ticket of a block that was allocated while tracking was off.
    pub(crate) const UNTRACKED: Ticket = Ticket {
        index: u32::MAX,
        generation: u32::MAX,
    };

    /// The ticket as one word that is never zero, so that a context can
    /// keep "no ticket" as zero in a single thread-local.
    #[inline]
    pub const fn to_word(self) -> u64 {
        (self.generation as u64) << 32 | self.index.wrapping_add(1) as u64
    }

    /// The row of the task table the ticket names: below the table's
    /// capacity for a task's row, at or past it for a bucket.
    #[inline]
    pub const fn index(self) -> u32 {
        self.index
    }

    /// The ticket that [`to_word`](Self::to_word) made, or `None` for zero.
    #[inline]
    pub const fn from_word(word: u64) -> Option<Ticket> {
        if word == 0 {
            return None;
        }
        Some(Ticket {
            index: (word as u32).wrapping_sub(1),
            generation: (word >> 32) as u32,
        })
    }
}

/// Who is calling the allocator, as the context tells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Who {
    /// A task of the program, by its id. Two tasks that run at the same time
    /// never share one.
    Task(TaskId),
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
    #[inline]
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

/// A sampled block's free, as the tracker tells the context in the sampling
/// form ([`Context::sample_freed`](crate::Context::sample_freed)), so that the context can keep how long
/// blocks live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SampleFreed {
    /// The block's callsite row (as in [`CallsiteRowView::row`](crate::CallsiteRowView::row)),
    /// or past the rows for a block that was not walked.
    pub site: u32,
    /// How long the block lived, in the units of [`Context::now`](crate::Context::now).
    pub lifetime: u64,
    /// The bytes the sample stands for, in [`SAMPLE_SCALE`](crate::raw::SAMPLE_SCALE)
    /// units.
    pub bytes: u64,
    /// The allocations the sample stands for, in the same units.
    pub count: u64,
}
