//! Model-based property tests: random sequences of alloc, alloc_zeroed,
//! realloc (grow, shrink, same size), dealloc and task exits, across several
//! tasks and callsites with random alignments, checked after every step
//! against a plain reference model: every task row, bucket, callsite row and
//! global figure exactly equal. Allocations and frees go through the
//! tracker's `GlobalAlloc`, or through the paths an adapter that keeps its
//! task's row takes (tasks mode, no callsite).
//!
//! The same sequences run in the sampling form with an interval of one
//! byte, where every allocation is sampled with a weight of one, so that
//! its estimates must equal the model's figures exactly too, beside the
//! exact allocation counts it keeps for each task: once with room for every
//! live sample, and once with a table of 8 entries, where an allocation
//! that finds all 8 taken is a dropped sample, counted as such and in its
//! task's exact counts but in no estimate.
#![cfg(not(alloc_track_loom))] // uses `const` constructors, which loom builds lack

mod support;

use std::alloc::{GlobalAlloc, Layout};
use std::collections::BTreeMap;
use std::hint::black_box;

use alloc_track_core::{ExactAllocations, Figures, TaskBucket, TaskFigures, Tracker};
use proptest::prelude::*;
use support::*;

/// The tracker under test: the exact form, or with `N` samples' room the
/// sampling form.
type Tracked<const N: usize = 0> = Tallied<TestTrackerOf<8, 16, 16, 16, N>>;
/// Room for every block a sequence can hold live (fewer than 80) with the
/// table at most a third full, so that no sample is dropped: an insertion
/// finds no room only after 64 taken entries in a row, which would take
/// most of the live blocks hashing into one stretch of the table.
const SAMPLES: usize = 256;
/// A table of samples that fills up: a search reaches all 8 entries, so
/// a sample is dropped exactly when 8 sampled blocks are live.
const FEW_SAMPLES: usize = 8;

const TASK_IDS: u64 = 4;
const SITES: usize = 3;
/// Callsites as the tracker sees them: each call instruction is one, so an
/// `alloc_at_k` function has two (alloc and alloc_zeroed), a `realloc_at_k`
/// and an `alloc_on_row_at_k` one each.
const STACKS: usize = 4 * SITES;
/// The model's callsite of blocks allocated through a kept row, which
/// record none: not a callsite row of the tracker's.
const UNCAPTURED: usize = STACKS;

fn alloc_stack(site: usize, zeroed: bool) -> usize {
    site * 2 + usize::from(zeroed)
}

fn realloc_stack(site: usize) -> usize {
    2 * SITES + site
}

fn on_row_stack(site: usize) -> usize {
    3 * SITES + site
}

/// How an allocation is made.
#[derive(Clone, Copy, Debug)]
enum Path {
    /// Through the tracker's allocator methods, at `site`.
    Methods,
    /// Through the task's kept row in tasks mode: no callsite.
    OnRow,
    /// Through the task's kept row in callsites mode, at `site`.
    CallsitesOnRow,
}

#[derive(Clone, Debug)]
enum Op {
    Alloc {
        task: u64,
        site: usize,
        size: usize,
        align_log: u32,
        zeroed: bool,
        path: Path,
    },
    Realloc {
        task: u64,
        site: usize,
        block: usize,
        new_size: usize,
    },
    Free {
        task: u64,
        block: usize,
        /// With the freeing task's kept row at hand.
        on_row: bool,
    },
    Exit {
        task: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..TASK_IDS, 0..SITES, 1usize..300, 0u32..13, any::<bool>(), prop_oneof![Just(Path::Methods), Just(Path::OnRow), Just(Path::CallsitesOnRow)])
            .prop_map(|(task, site, size, align_log, zeroed, path)| Op::Alloc { task, site, size, align_log, zeroed, path }),
        2 => (0..TASK_IDS, 0..SITES, any::<usize>(), 1usize..600)
            .prop_map(|(task, site, block, new_size)| Op::Realloc { task, site, block, new_size }),
        5 => (0..TASK_IDS, any::<usize>(), prop::bool::weighted(0.4))
            .prop_map(|(task, block, on_row)| Op::Free { task, block, on_row }),
        1 => (0..TASK_IDS).prop_map(|task| Op::Exit { task }),
    ]
}

// One function per callsite, so that each has its own stack. Written out
// rather than made by a macro: under Miri the walker's stub tells callsites
// apart by source location, and calls expanded from one macro share one.
// Each passes its own number to `black_box` first, so that an optimised
// build does not merge their identical bodies into one function.
#[inline(never)]
fn alloc_at_0<const N: usize>(t: &Tracked<N>, layout: Layout, zeroed: bool) -> *mut u8 {
    black_box(0);
    // SAFETY: non-zero sizes only.
    black_box(unsafe {
        if zeroed {
            t.alloc_zeroed(layout)
        } else {
            t.alloc(layout)
        }
    })
}
#[inline(never)]
fn alloc_at_1<const N: usize>(t: &Tracked<N>, layout: Layout, zeroed: bool) -> *mut u8 {
    black_box(1);
    // SAFETY: non-zero sizes only.
    black_box(unsafe {
        if zeroed {
            t.alloc_zeroed(layout)
        } else {
            t.alloc(layout)
        }
    })
}
#[inline(never)]
fn alloc_at_2<const N: usize>(t: &Tracked<N>, layout: Layout, zeroed: bool) -> *mut u8 {
    black_box(2);
    // SAFETY: non-zero sizes only.
    black_box(unsafe {
        if zeroed {
            t.alloc_zeroed(layout)
        } else {
            t.alloc(layout)
        }
    })
}
#[inline(never)]
fn alloc_on_row_at_0(t: &Tracked, layout: Layout, zeroed: bool) -> *mut u8 {
    black_box(0);
    // SAFETY: non-zero sizes only.
    black_box(unsafe { t.alloc_callsites_on_row(layout, zeroed) })
}
#[inline(never)]
fn alloc_on_row_at_1(t: &Tracked, layout: Layout, zeroed: bool) -> *mut u8 {
    black_box(1);
    // SAFETY: non-zero sizes only.
    black_box(unsafe { t.alloc_callsites_on_row(layout, zeroed) })
}
#[inline(never)]
fn alloc_on_row_at_2(t: &Tracked, layout: Layout, zeroed: bool) -> *mut u8 {
    black_box(2);
    // SAFETY: non-zero sizes only.
    black_box(unsafe { t.alloc_callsites_on_row(layout, zeroed) })
}
#[inline(never)]
fn realloc_at_0<const N: usize>(
    t: &Tracked<N>,
    block: *mut u8,
    layout: Layout,
    size: usize,
) -> *mut u8 {
    black_box(0);
    // SAFETY: the block came from `t` with `layout`.
    black_box(unsafe { t.realloc(block, layout, size) })
}
#[inline(never)]
fn realloc_at_1<const N: usize>(
    t: &Tracked<N>,
    block: *mut u8,
    layout: Layout,
    size: usize,
) -> *mut u8 {
    black_box(1);
    // SAFETY: the block came from `t` with `layout`.
    black_box(unsafe { t.realloc(block, layout, size) })
}
#[inline(never)]
fn realloc_at_2<const N: usize>(
    t: &Tracked<N>,
    block: *mut u8,
    layout: Layout,
    size: usize,
) -> *mut u8 {
    black_box(2);
    // SAFETY: the block came from `t` with `layout`.
    black_box(unsafe { t.realloc(block, layout, size) })
}

/// What the forms under test do differently.
trait Form {
    /// How many recorded blocks may be live at once: a block allocated
    /// when that many are is not recorded (a dropped sample).
    const ROOM: usize = usize::MAX;

    /// An empty tracker of the form.
    fn empty() -> Box<Self>;

    /// Allocates by `path` at `site`, giving the block and the model's
    /// stack it counts at.
    fn alloc_by(&self, path: Path, site: usize, layout: Layout, zeroed: bool) -> (*mut u8, usize);

    /// Frees a block, with the freeing task's kept row at hand if
    /// `on_row`.
    ///
    /// # Safety
    /// The block came from this tracker with `layout`, and is freed once.
    unsafe fn dealloc_by(&self, on_row: bool, pointer: *mut u8, layout: Layout);

    /// The figures the tracker gives for a row the model holds as `task`.
    fn figures(task: &TaskModel) -> TaskFigures;
}

impl Form for Tracked {
    fn empty() -> Box<Self> {
        Box::new(Tallied::new(Tracker::new(TestAlloc::new(), TestContext)))
    }

    fn alloc_by(&self, path: Path, site: usize, layout: Layout, zeroed: bool) -> (*mut u8, usize) {
        match path {
            // SAFETY: a non-zero size.
            Path::OnRow => (unsafe { self.alloc_on_row(layout, zeroed) }, UNCAPTURED),
            Path::Methods => {
                let alloc_at = [alloc_at_0, alloc_at_1, alloc_at_2][site];
                (alloc_at(self, layout, zeroed), alloc_stack(site, zeroed))
            }
            Path::CallsitesOnRow => {
                let alloc_at = [alloc_on_row_at_0, alloc_on_row_at_1, alloc_on_row_at_2][site];
                (alloc_at(self, layout, zeroed), on_row_stack(site))
            }
        }
    }

    unsafe fn dealloc_by(&self, on_row: bool, pointer: *mut u8, layout: Layout) {
        // SAFETY: forwarded from our caller.
        unsafe {
            if on_row {
                self.dealloc_on_row(pointer, layout);
            } else {
                self.dealloc(pointer, layout);
            }
        }
    }

    fn figures(task: &TaskModel) -> TaskFigures {
        task.figures()
    }
}

/// The sampling forms under test, by the recorded blocks that may be live
/// at once.
trait SampledRoom {
    const ROOM: usize;
}

impl SampledRoom for Tracked<SAMPLES> {
    const ROOM: usize = usize::MAX;
}

impl SampledRoom for Tracked<FEW_SAMPLES> {
    const ROOM: usize = FEW_SAMPLES;
}

/// The sampling form with every allocation sampled: its adapter's kept row
/// only counts unsampled allocations down, so all go through the tracker's
/// own methods; every task's allocations are also counted exactly.
impl<const N: usize> Form for Tracked<N>
where
    Tracked<N>: SampledRoom,
{
    const ROOM: usize = <Self as SampledRoom>::ROOM;

    fn empty() -> Box<Self> {
        let tracker = Tracker::new(TestAlloc::new(), TestContext).with_sampling(1);
        tracker.ledger().set_sampling(1, 7);
        Box::new(Tallied::new(tracker))
    }

    fn alloc_by(&self, _: Path, site: usize, layout: Layout, zeroed: bool) -> (*mut u8, usize) {
        let alloc_at = [alloc_at_0, alloc_at_1, alloc_at_2][site];
        (alloc_at(self, layout, zeroed), alloc_stack(site, zeroed))
    }

    unsafe fn dealloc_by(&self, _: bool, pointer: *mut u8, layout: Layout) {
        // SAFETY: forwarded from our caller.
        unsafe { self.dealloc(pointer, layout) }
    }

    fn figures(task: &TaskModel) -> TaskFigures {
        TaskFigures {
            exact_allocations: Some(ExactAllocations {
                bytes: task.exact_bytes,
                count: task.exact_count,
            }),
            ..task.figures()
        }
    }
}

/// What the model expects of one task row, finished bucket included.
#[derive(Clone, Copy, Debug, Default)]
struct TaskModel {
    allocated: u64,
    allocations: u64,
    freed: u64,
    frees: u64,
    peak: u64,
    by_others_bytes: u64,
    by_others: u64,
    of_others_bytes: u64,
    of_others: u64,
    /// Every allocation, recorded or not (the sampling form's exact
    /// counts).
    exact_bytes: u64,
    exact_count: u64,
}

impl TaskModel {
    fn live(&self) -> u64 {
        self.allocated - self.freed
    }

    fn figures(&self) -> TaskFigures {
        TaskFigures {
            figures: Figures {
                allocated_bytes: self.allocated,
                allocations: self.allocations,
                freed_bytes: self.freed,
                frees: self.frees,
                peak_live_bytes: self.peak,
            },
            freed_by_others_bytes: self.by_others_bytes,
            freed_by_others: self.by_others,
            freed_of_others_bytes: self.of_others_bytes,
            freed_of_others: self.of_others,
            exact_allocations: None,
        }
    }
}

/// Which incarnation of a task made a block: tasks that exit and allocate
/// again are new tasks to the tracker.
type Incarnation = (u64, u32);

struct Block {
    pointer: *mut u8,
    layout: Layout,
    owner: Incarnation,
    /// The model's callsite (see `STACKS`).
    site: usize,
    /// Whether the tracker recorded it (else a dropped sample).
    recorded: bool,
}

#[derive(Default)]
struct Model {
    /// Live task rows by task id, with their incarnation number.
    tasks: BTreeMap<u64, (u32, TaskModel)>,
    incarnations: BTreeMap<u64, u32>,
    finished: TaskModel,
    sites: [Figures; STACKS + 1],
    live: u64,
    peak: u64,
    /// Recorded blocks live.
    recorded: usize,
    dropped: u64,
    dropped_bytes: u64,
}

impl Model {
    /// The task's row, claimed on first use (allocating or freeing).
    fn row(&mut self, task: u64) -> &mut (u32, TaskModel) {
        let incarnations = &mut self.incarnations;
        self.tasks.entry(task).or_insert_with(|| {
            let next = incarnations.entry(task).or_insert(0);
            *next += 1;
            (*next, TaskModel::default())
        })
    }

    /// An allocation by `task` at `site`, recorded if there is room for
    /// one more recorded block (`room`, counted before the allocation,
    /// and for a realloc before its old block's free: the new sample is
    /// kept before the old one goes), else a dropped sample. Returns who
    /// made it and whether it was recorded.
    fn alloc(&mut self, task: u64, site: usize, size: u64, room: bool) -> (Incarnation, bool) {
        let (incarnation, row) = self.row(task);
        let incarnation = *incarnation;
        row.exact_bytes += size;
        row.exact_count += 1;
        if !room {
            self.dropped += 1;
            self.dropped_bytes += size;
            return ((task, incarnation), false);
        }
        row.allocated += size;
        row.allocations += 1;
        row.peak = row.peak.max(row.live());
        self.recorded += 1;
        let s = &mut self.sites[site];
        s.allocated_bytes += size;
        s.allocations += 1;
        s.peak_live_bytes = s.peak_live_bytes.max(s.allocated_bytes - s.freed_bytes);
        self.live += size;
        self.peak = self.peak.max(self.live);
        ((task, incarnation), true)
    }

    /// Whether a recorded block may be added, with at most `room` live.
    fn has_room(&self, room: usize) -> bool {
        self.recorded < room
    }

    /// The free by `freer` of a block; one that was not recorded is the
    /// inner allocator's own, and its free touches nothing.
    fn free(&mut self, freer: u64, block: &Block) {
        if !block.recorded {
            return;
        }
        let (owner, site, size) = (block.owner, block.site, block.layout.size() as u64);
        self.recorded -= 1;
        let freer_incarnation = self.row(freer).0;
        let owner_alive = self
            .tasks
            .get(&owner.0)
            .is_some_and(|(inc, _)| *inc == owner.1);
        if owner_alive && owner == (freer, freer_incarnation) {
            let row = &mut self.tasks.get_mut(&freer).unwrap().1;
            row.freed += size;
            row.frees += 1;
        } else {
            let freer_row = &mut self.tasks.get_mut(&freer).unwrap().1;
            freer_row.of_others_bytes += size;
            freer_row.of_others += 1;
            let owner_row = if owner_alive {
                &mut self.tasks.get_mut(&owner.0).unwrap().1
            } else {
                &mut self.finished
            };
            owner_row.freed += size;
            owner_row.frees += 1;
            owner_row.by_others_bytes += size;
            owner_row.by_others += 1;
        }
        let s = &mut self.sites[site];
        s.freed_bytes += size;
        s.frees += 1;
        self.live -= size;
    }

    fn exit(&mut self, task: u64) -> bool {
        let Some((_, row)) = self.tasks.remove(&task) else {
            return false;
        };
        let f = &mut self.finished;
        f.allocated += row.allocated;
        f.allocations += row.allocations;
        f.freed += row.freed;
        f.frees += row.frees;
        f.by_others_bytes += row.by_others_bytes;
        f.by_others += row.by_others;
        f.of_others_bytes += row.of_others_bytes;
        f.of_others += row.of_others;
        f.exact_bytes += row.exact_bytes;
        f.exact_count += row.exact_count;
        // The bucket's peak: what the finished tasks left live together at
        // most, or the largest peak of any one of them.
        f.peak = f.peak.max(f.live()).max(row.peak);
        true
    }
}

fn check<const N: usize>(tracker: &Tracked<N>, model: &Model)
where
    Tracked<N>: Form,
{
    for (id, (_, expected)) in &model.tasks {
        assert_eq!(
            task_row(tracker, *id),
            Some(Tracked::<N>::figures(expected)),
            "task {id}"
        );
    }
    assert_eq!(tracker.task_rows_in_use(), model.tasks.len());
    assert_eq!(
        tracker.task_bucket(TaskBucket::Finished),
        Tracked::<N>::figures(&model.finished),
        "finished"
    );
    assert_eq!(
        tracker.task_bucket(TaskBucket::Overflow),
        Tracked::<N>::figures(&TaskModel::default())
    );
    let mut rows = Vec::new();
    tracker.for_each_callsite(|row| rows.push(row.figures));
    let mut expected: Vec<Figures> = model.sites[..STACKS]
        .iter()
        .copied()
        .filter(|site| site.allocations > 0)
        .collect();
    rows.sort_by_key(|f| {
        (
            f.allocated_bytes,
            f.allocations,
            f.freed_bytes,
            f.frees,
            f.peak_live_bytes,
        )
    });
    expected.sort_by_key(|f| {
        (
            f.allocated_bytes,
            f.allocations,
            f.freed_bytes,
            f.frees,
            f.peak_live_bytes,
        )
    });
    assert_eq!(rows, expected, "callsites");
    let totals = tracker.totals();
    assert_eq!(
        (
            totals.figures.allocated_bytes - totals.figures.freed_bytes,
            totals.figures.peak_live_bytes
        ),
        (model.live, model.peak)
    );
    assert_eq!(
        (totals.dropped_samples, totals.dropped_bytes),
        (model.dropped, model.dropped_bytes),
        "dropped samples"
    );
    // The test's tally counts every block, so it is the figures' account
    // only while every block was recorded.
    if model.dropped == 0 {
        assert_consistent(tracker);
    }
}

fn run<const N: usize>(ops: Vec<Op>)
where
    Tracked<N>: Form,
{
    let tracker = Tracked::<N>::empty();
    let mut model = Model::default();
    let mut blocks: Vec<Block> = Vec::new();
    for op in ops {
        match op {
            Op::Alloc {
                task,
                site,
                size,
                align_log,
                zeroed,
                path,
            } => {
                set_task(Some(task));
                let layout = Layout::from_size_align(size, 1 << align_log).unwrap();
                let (pointer, stack) = tracker.alloc_by(path, site, layout, zeroed);
                assert!(!pointer.is_null());
                assert_eq!(pointer as usize % layout.align(), 0);
                if zeroed {
                    // SAFETY: `size` initialised bytes.
                    let bytes = unsafe { std::slice::from_raw_parts(pointer, size) };
                    assert!(bytes.iter().all(|&b| b == 0));
                }
                // SAFETY: the block has `size` bytes; mark it to check that
                // realloc carries them.
                unsafe { pointer.write(size as u8) };
                let room = model.has_room(Tracked::<N>::ROOM);
                let (owner, recorded) = model.alloc(task, stack, size as u64, room);
                blocks.push(Block {
                    pointer,
                    layout,
                    owner,
                    site: stack,
                    recorded,
                });
            }
            Op::Realloc {
                task,
                site,
                block,
                new_size,
            } => {
                if blocks.is_empty() {
                    continue;
                }
                set_task(Some(task));
                let index = block % blocks.len();
                let old = &blocks[index];
                let pointer = [realloc_at_0::<N>, realloc_at_1::<N>, realloc_at_2::<N>][site](
                    &tracker,
                    old.pointer,
                    old.layout,
                    new_size,
                );
                assert!(!pointer.is_null());
                assert_eq!(pointer as usize % old.layout.align(), 0);
                // SAFETY: the first byte was carried over.
                assert_eq!(unsafe { pointer.read() }, old.layout.size() as u8);
                // SAFETY: the new block has at least one byte.
                unsafe { pointer.write(new_size as u8) };
                let room = model.has_room(Tracked::<N>::ROOM);
                model.free(task, old);
                let stack = realloc_stack(site);
                let (owner, recorded) = model.alloc(task, stack, new_size as u64, room);
                let layout = Layout::from_size_align(new_size, old.layout.align()).unwrap();
                blocks[index] = Block {
                    pointer,
                    layout,
                    owner,
                    site: stack,
                    recorded,
                };
            }
            Op::Free {
                task,
                block,
                on_row,
            } => {
                if blocks.is_empty() {
                    continue;
                }
                set_task(Some(task));
                let old = blocks.swap_remove(block % blocks.len());
                // SAFETY: the block came from the tracker with this layout.
                unsafe { tracker.dealloc_by(on_row, old.pointer, old.layout) };
                model.free(task, &old);
            }
            Op::Exit { task } => {
                assert_eq!(tracker.task_exit(task), model.exit(task), "exit {task}");
            }
        }
        check(&tracker, &model);
    }
    for block in blocks {
        set_task(Some(0));
        // SAFETY: as above.
        unsafe { tracker.dealloc(block.pointer, block.layout) };
        model.free(0, &block);
    }
    check(&tracker, &model);
    assert_eq!(tracker.totals().figures.live_bytes(), 0);
}

/// How many random sequences the model runs: 256, `PROPTEST_CASES` for a
/// longer search, and `under_miri` under Miri (it is slow).
fn cases(under_miri: u32) -> u32 {
    if cfg!(miri) {
        return under_miri;
    }
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(256)
}

/// The proptest configuration, with `under_miri` cases under Miri and no
/// failure file there (Miri isolates the test from the file system).
fn config(under_miri: u32) -> ProptestConfig {
    ProptestConfig {
        cases: cases(under_miri),
        failure_persistence: if cfg!(miri) {
            None
        } else {
            ProptestConfig::default().failure_persistence
        },
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(4))]

    #[test]
    fn every_figure_matches_the_model(ops in prop::collection::vec(op(), 1..80)) {
        run::<0>(ops);
    }
}

// The sampling form's paths are mostly the exact form's (rows, callsites,
// buckets) behind a table lookup, so under Miri one sequence of each.
proptest! {
    #![proptest_config(config(1))]

    #[test]
    fn every_estimate_matches_the_model_when_every_allocation_is_sampled(
        ops in prop::collection::vec(op(), 1..80)
    ) {
        run::<SAMPLES>(ops);
    }

    #[test]
    fn samples_that_find_the_table_full_are_dropped_and_counted(
        ops in prop::collection::vec(op(), 1..80)
    ) {
        run::<FEW_SAMPLES>(ops);
    }
}
