//! Reading the ledger: reports, figures of rows and buckets, totals, the
//! tables' memory, all as the rows stand at the moment each is read.

use super::*;

impl<
        C: Context,
        const TASKS: usize,
        const SITES: usize,
        const DEPTH: usize,
        const PAIRS: usize,
        const SAMPLES: usize,
    > Ledger<C, TASKS, SITES, DEPTH, PAIRS, SAMPLES>
{
    /// The `K` task rows that come first in `order`, with the buckets and
    /// totals. Allocates nothing; safe to call while other tasks allocate
    /// (each row is read at its own moment, so the figures are exact only
    /// once allocation pauses).
    pub fn task_report<const K: usize>(&self, order: Order) -> TaskReport<K> {
        let mut top = Vec::new();
        let mut rows_in_use = 0;
        self.for_each_task(|row| {
            rows_in_use += 1;
            insert_ranked(&mut top, row, |a, b| {
                order.ranks_above(&a.figures.figures, &b.figures.figures)
            });
        });
        TaskReport {
            order,
            top,
            rows_in_use,
            capacity: TASKS,
            finished: self.task_bucket(TaskBucket::Finished),
            overflow: self.task_bucket(TaskBucket::Overflow),
            unknown: self.task_bucket(TaskBucket::Unknown),
            tracker: self.task_bucket(TaskBucket::Tracker),
            totals: self.totals(),
        }
    }

    /// The `K` callsites that come first in `order`, with the buckets and
    /// totals. Allocates nothing.
    pub fn callsite_report<const K: usize>(&self, order: Order) -> CallsiteReport<K, DEPTH> {
        let mut top = Vec::new();
        let mut rows_in_use = 0;
        self.for_each_callsite(|row| {
            rows_in_use += 1;
            insert_ranked(&mut top, *row, |a, b| {
                order.ranks_above(&a.figures, &b.figures)
            });
        });
        let uncaptured = self.callsite_bucket(CallsiteBucket::Uncaptured);
        let tracker = self.callsite_bucket(CallsiteBucket::Tracker);
        let mut totals = self.captured_totals();
        totals.accumulate(&uncaptured);
        totals.accumulate(&tracker);
        CallsiteReport {
            order,
            top,
            rows_in_use,
            capacity: self.callsite_limit(),
            overflow: self.callsite_bucket(CallsiteBucket::Overflow),
            uncaptured,
            tracker,
            totals,
        }
    }

    /// Ends task `id`: its figures fold into the finished bucket and its row
    /// is free for the next task. Blocks it allocated and that are freed later
    /// are credited to the finished bucket. Call it from the task itself as
    /// it ends, or after it can no longer allocate; afterwards the context
    /// should name the task no more (a new allocation under `id` claims a new
    /// row). Returns whether the task held a row.
    pub fn task_exit(&self, id: TaskId) -> bool {
        // The task's callsite lanes go back before its row does, so that the
        // row's next task, whose key is the same, finds none of them its own.
        if let Some(ticket) = self.tasks.find(id) {
            if let Some(held) = self.tasks.held_lanes(ticket) {
                let key = lane_key::<TASKS>(ticket);
                held.release_all(|lane| self.sites.release_lane(lane, key));
            }
        }
        self.tasks.retire(id)
    }

    /// The ticket of task `id`: its row, claimed now if it has none, or the
    /// overflow bucket's when the table is full. For a context that names
    /// tasks of its own beside the running ones (a scope that a thread
    /// enters, whose ticket the context then returns from
    /// [`Context::ticket`]): the caller must be the task's one writer, as
    /// for any claim.
    pub fn task_ticket(&self, id: TaskId) -> Ticket {
        self.tasks.find(id).unwrap_or_else(|| {
            self.tasks.claim(
                id,
                self.sampling.load(Ordering::Relaxed),
                self.sampling_seed.load(Ordering::Relaxed),
            )
        })
    }

    /// The task row `ticket` names, as its task writes it, or `None` for a
    /// bucket's ticket: for a context that keeps its ticket, to keep this
    /// beside it and count on it without a lookup
    /// ([`alloc_exact_on_row`](Self::alloc_exact_on_row),
    /// [`dealloc_exact_on_row`](Self::dealloc_exact_on_row)), or attach the
    /// sampling form's hot counters to it ([`OwnRow::attach`]).
    /// It stays the task's while the ticket does.
    #[inline]
    pub fn own_row(&self, ticket: Ticket) -> Option<OwnRow<'_>> {
        self.tasks
            .own_row(ticket, Header::new(ticket, callsite::uncaptured::<SITES>()))
    }

    /// The figures of the task holding `ticket`, if it still holds its row
    /// (as reports give them).
    pub fn ticket_figures(&self, ticket: Ticket) -> Option<TaskFigures> {
        self.tasks
            .ticket_figures(ticket)
            .map(|figures| self.unscaled_task(figures))
    }

    /// The figures of task `id`, if it holds a row (as reports give them):
    /// one row's figures without a report's copies of the others.
    pub fn task_figures(&self, id: TaskId) -> Option<TaskFigures> {
        self.tasks
            .find(id)
            .and_then(|ticket| self.ticket_figures(ticket))
    }

    /// A figure as reports give it: in the sampling form the counters hold
    /// [`SAMPLE_SCALE`](crate::SAMPLE_SCALE) units, rounded here.
    fn unscaled(&self, value: u64) -> u64 {
        if self.sampling.load(Ordering::Relaxed) == 0 {
            value
        } else {
            value.saturating_add(sampling::SCALE / 2) / sampling::SCALE
        }
    }

    fn unscaled_figures(&self, figures: Figures) -> Figures {
        Figures {
            allocated_bytes: self.unscaled(figures.allocated_bytes),
            allocations: self.unscaled(figures.allocations),
            freed_bytes: self.unscaled(figures.freed_bytes),
            frees: self.unscaled(figures.frees),
            peak_live_bytes: self.unscaled(figures.peak_live_bytes),
        }
    }

    fn unscaled_task(&self, figures: TaskFigures) -> TaskFigures {
        TaskFigures {
            figures: self.unscaled_figures(figures.figures),
            freed_by_others_bytes: self.unscaled(figures.freed_by_others_bytes),
            freed_by_others: self.unscaled(figures.freed_by_others),
            freed_of_others_bytes: self.unscaled(figures.freed_of_others_bytes),
            freed_of_others: self.unscaled(figures.freed_of_others),
            exact_allocations: self.sampling().and(figures.exact_allocations),
        }
    }

    /// Calls `visit` with every task row in use.
    pub fn for_each_task(&self, mut visit: impl FnMut(TaskRowView)) {
        self.tasks.for_each_row(|row| {
            visit(TaskRowView {
                figures: self.unscaled_task(row.figures),
                ..row
            })
        });
    }

    /// The figures of a task bucket.
    pub fn task_bucket(&self, which: TaskBucket) -> TaskFigures {
        self.unscaled_task(self.tasks.bucket_figures(which))
    }

    /// Calls `visit` with every callsite row in use.
    pub fn for_each_callsite(&self, mut visit: impl FnMut(&CallsiteRowView<DEPTH>)) {
        self.sites.for_each_row(|row| {
            visit(&CallsiteRowView {
                figures: self.unscaled_figures(row.figures),
                ..*row
            })
        });
    }

    /// The figures of a callsite bucket. The uncaptured bucket is not
    /// counted as blocks come and go but derived: the flows of the totals
    /// beyond those of the callsite rows and the other buckets (exact
    /// whenever no allocation is in progress), with no peak.
    pub fn callsite_bucket(&self, which: CallsiteBucket) -> Figures {
        let raw = match which {
            CallsiteBucket::Overflow => self.sites.overflow_figures(),
            CallsiteBucket::Tracker => self.sites.tracker_figures(),
            CallsiteBucket::Uncaptured => {
                let mut captured = self.raw_captured_totals();
                captured.accumulate(&self.sites.tracker_figures());
                let totals = self.raw_totals().figures;
                Figures {
                    allocated_bytes: totals
                        .allocated_bytes
                        .saturating_sub(captured.allocated_bytes),
                    allocations: totals.allocations.saturating_sub(captured.allocations),
                    freed_bytes: totals.freed_bytes.saturating_sub(captured.freed_bytes),
                    frees: totals.frees.saturating_sub(captured.frees),
                    peak_live_bytes: 0,
                }
            }
        };
        self.unscaled_figures(raw)
    }

    /// How many task rows hold a task now, out of `TASKS`.
    pub fn task_rows_in_use(&self) -> usize {
        self.tasks.rows_in_use()
    }

    /// How many callsite rows hold a stack, out of
    /// [`callsite_limit`](Self::callsite_limit).
    pub fn callsite_rows_in_use(&self) -> usize {
        self.sites.rows_in_use()
    }

    /// How many callsite lanes tasks hold now: at most two per callsite row
    /// and four per task where the target has native 64-bit atomics, none
    /// elsewhere (ARCHITECTURE.md, "A task counts at a callsite in a lane of
    /// its own").
    pub fn callsite_lanes_held(&self) -> usize {
        self.sites.lanes_held()
    }

    /// Lets at most `rows` callsite rows be used (at most `SITES`); stacks
    /// beyond them are counted in the overflow bucket. For a program that
    /// wants to bound the memory its callsites touch below the compile-time
    /// capacity.
    pub fn set_callsite_limit(&self, rows: usize) {
        self.sites.set_limit(rows);
    }

    /// How many callsite rows may be used: `SITES` unless
    /// [`set_callsite_limit`](Self::set_callsite_limit) lowered it.
    pub fn callsite_limit(&self) -> usize {
        self.sites.limit()
    }

    /// The memory of the callsite table: all of it, and the part that rows
    /// in use (and the index, which every lookup may touch) occupy. In a
    /// `static` on a system that maps zero pages on demand, the rest costs
    /// address space only.
    pub fn callsite_memory(&self) -> TableMemory {
        let reserved = core::mem::size_of::<CallsiteTable<SITES, DEPTH>>();
        let per_row = CallsiteTable::<SITES, DEPTH>::ROW_BYTES;
        let rows = self.sites.rows_in_use();
        TableMemory {
            reserved,
            in_use: (reserved - SITES * per_row + rows * per_row).min(reserved),
            per_row,
            rows_in_use: rows,
            limit: self.callsite_limit(),
        }
    }

    /// The figures of all tracked blocks, summed over the task rows and
    /// buckets. Exact whenever no allocation is in progress; while others
    /// allocate, each row is read at a slightly different moment.
    pub fn totals(&self) -> Totals {
        let raw = self.raw_totals();
        Totals {
            figures: self.unscaled_figures(raw.figures),
            exact_allocations: self.sampling().and(raw.exact_allocations),
            dropped_bytes: self.unscaled(raw.dropped_bytes),
            ..raw
        }
    }

    /// The samples dropped so far and the bytes they stood for, what the
    /// estimates miss ([`Totals::dropped_samples`]): two loads, where
    /// [`totals`](Self::totals) sums every row. Zero in the exact form.
    pub fn dropped_samples(&self) -> DroppedSamples {
        DroppedSamples {
            samples: self.dropped_samples.get(),
            bytes: self.unscaled(self.dropped_bytes.get()),
        }
    }

    /// Whether a report is reading some task's hot countdown counters at
    /// this moment: a thread that detached its
    /// [`HotCountdown`](crate::raw::HotCountdown) waits until this says `false`
    /// before the counters' memory goes (see
    /// [`OwnRow::attach`](crate::raw::OwnRow::attach)).
    pub fn hot_reads_in_progress(&self) -> bool {
        self.tasks.hot_reads_in_progress()
    }

    /// For the child of a `fork`, before it starts any thread: forgets the
    /// reports that were reading hot counters at the fork on threads the
    /// child does not have, which would otherwise make a thread's exit in
    /// the child wait for them forever.
    pub fn forget_hot_readers(&self) {
        self.tasks.forget_hot_readers();
    }

    /// Frees whose header failed its check so far
    /// ([`Totals::damaged_headers`]).
    pub fn damaged_headers(&self) -> u64 {
        self.damaged_headers.get()
    }

    /// Whether the ledger keeps the global live bytes and their peak: its
    /// setting, unless the context rules it out.
    #[inline(always)]
    pub(super) fn keeps_global_peak(&self) -> bool {
        C::GLOBAL_PEAK && self.global_peak
    }

    /// [`totals`](Self::totals) in the counters' own units.
    fn raw_totals(&self) -> Totals {
        let mut sum = TaskFigures::default();
        self.tasks.for_each_row(|row| sum.accumulate(&row.figures));
        for bucket in TaskBucket::ALL {
            sum.accumulate(&self.tasks.bucket_figures(bucket));
        }
        let mut figures = sum.figures;
        figures.peak_live_bytes = if self.keeps_global_peak() {
            self.global_peak_bytes.get()
        } else {
            0
        };
        Totals {
            figures,
            global_peak: self.keeps_global_peak(),
            damaged_headers: self.damaged_headers.get(),
            sampling: self.sampling(),
            exact_allocations: sum.exact_allocations,
            dropped_samples: self.dropped_samples.get(),
            dropped_bytes: self.dropped_bytes.get(),
        }
    }

    /// Calls `visit` with every (owner, freer) pair of tasks between which
    /// frees crossed, with what was freed.
    pub fn for_each_cross_free(&self, mut visit: impl FnMut(CrossFree)) {
        self.cross.for_each(|pair| {
            visit(CrossFree {
                bytes: self.unscaled(pair.bytes),
                frees: self.unscaled(pair.frees),
                ..pair
            })
        });
    }

    /// Bytes and blocks freed across tasks whose (owner, freer) pair found no
    /// row; the pairs' figures plus these add up to the tasks'
    /// `freed_by_others` figures.
    pub fn cross_free_overflow(&self) -> (u64, u64) {
        let (bytes, frees) = self.cross.overflow();
        (self.unscaled(bytes), self.unscaled(frees))
    }

    /// The sum over every callsite row and the overflow bucket: what was
    /// captured. The peak is the largest of any callsite.
    pub fn captured_totals(&self) -> Figures {
        self.unscaled_figures(self.raw_captured_totals())
    }

    fn raw_captured_totals(&self) -> Figures {
        let mut sum = self.sites.overflow_figures();
        self.sites.for_each_row(|row| sum.accumulate(&row.figures));
        sum
    }
}
