//! Loom models of the tables' lock-free protocols: every interleaving (up to
//! the preemption bound) of the claim, publish, read, cross-task free and
//! fold steps. Run with
//! `RUSTFLAGS="--cfg alloc_track_loom" cargo test -p alloc-track-core --test loom --release`.
#![cfg(alloc_track_loom)]

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;

use alloc_track_core::model::{
    callsite_overflow, Amount, CallsiteTable, CrossTable, LaneKey, SampleTable, SampledBlock,
    TaskTable,
};
use alloc_track_core::raw::{Deferred, HotCountdown};
use alloc_track_core::{Figures, Party, TaskBucket, TaskFigures};

fn model(test: impl Fn() + Sync + Send + 'static) {
    // LOOM_MAX_PREEMPTIONS in the environment overrides the bound.
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    builder.check(test);
}

/// Two tasks register the same stack at once while a reader looks: they
/// share one row, which the reader sees whole or not at all.
#[test]
fn one_stack_claimed_twice_gets_one_row_never_seen_half_written() {
    model(|| {
        let table = Arc::new(CallsiteTable::<2, 3>::new());
        let stack = [0x10, 0x20, 0x30];
        let claimers: Vec<_> = (0..2)
            .map(|_| {
                let table = table.clone();
                thread::spawn(move || {
                    let site = table.find_or_claim(&stack);
                    table.record_alloc(site, Amount::block(8), LaneKey::SHARED);
                    site
                })
            })
            .collect();
        table.for_each_row(|row| assert_eq!(row.frames(), stack));
        let sites: Vec<u32> = claimers.into_iter().map(|c| c.join().unwrap()).collect();
        assert_eq!(sites[0], sites[1], "one stack, one row");
        let mut rows = 0;
        table.for_each_row(|row| {
            rows += 1;
            assert_eq!(row.frames(), stack);
            assert_eq!(row.figures.allocated_bytes, 16);
        });
        assert_eq!(rows, 1);
    });
}

/// Two tasks race to register one stack in a table of two rows: both claim
/// a row, the loser gives its row back, and a second stack registered
/// after them (or racing them) still finds a row. No row is lost to a race.
#[test]
fn a_row_claimed_by_the_loser_of_a_race_is_used_again() {
    model(|| {
        let table = Arc::new(CallsiteTable::<2, 2>::new());
        let racers: Vec<_> = (0..2)
            .map(|_| {
                let table = table.clone();
                thread::spawn(move || table.find_or_claim(&[7, 7]))
            })
            .collect();
        let sites: Vec<u32> = racers.into_iter().map(|r| r.join().unwrap()).collect();
        assert_eq!(sites[0], sites[1]);
        let second = table.find_or_claim(&[8, 8]);
        assert_ne!(second, callsite_overflow::<2>(), "the spare row is taken");
        assert_ne!(second, sites[0]);
    });
}

/// Two different stacks race for rows: each gets its own, whole.
#[test]
fn two_stacks_get_two_whole_rows() {
    model(|| {
        let table = Arc::new(CallsiteTable::<2, 2>::new());
        let stacks = [[1, 2], [3, 4]];
        let claimers: Vec<_> = stacks
            .into_iter()
            .map(|stack| {
                let table = table.clone();
                thread::spawn(move || {
                    let site = table.find_or_claim(&stack);
                    table.record_alloc(site, Amount::block(8), LaneKey::SHARED);
                    site
                })
            })
            .collect();
        let sites: Vec<u32> = claimers.into_iter().map(|c| c.join().unwrap()).collect();
        assert_ne!(sites[0], sites[1]);
        assert!(!sites.contains(&callsite_overflow::<2>()));
        let mut seen = Vec::new();
        table.for_each_row(|row| {
            assert_eq!(row.figures.allocated_bytes, 8);
            seen.push(row.frames().to_vec());
        });
        seen.sort();
        assert_eq!(seen, [vec![1, 2], vec![3, 4]]);
    });
}

/// A table of one row: two stacks race for it, and the loser is counted in
/// the overflow bucket.
#[test]
fn a_full_callsite_table_overflows_exactly() {
    model(|| {
        let table = Arc::new(CallsiteTable::<1, 2>::new());
        let threads: Vec<_> = [[1, 2], [3, 4]]
            .into_iter()
            .map(|stack| {
                let table = table.clone();
                thread::spawn(move || {
                    let site = table.find_or_claim(&stack);
                    table.record_alloc(site, Amount::block(5), LaneKey::SHARED);
                    table.record_free(site, Amount::block(5), LaneKey::SHARED);
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let mut row = Figures::default();
        table.for_each_row(|view| row = view.figures);
        let flows = |f: &Figures| (f.allocated_bytes, f.allocations, f.freed_bytes, f.frees);
        assert_eq!(flows(&row), (5, 1, 5, 1));
        assert_eq!(flows(&table.overflow_figures()), (5, 1, 5, 1));
    });
}

/// A task counts in a lane of a callsite row and gives it back while a
/// second task takes the row's one free lane (that same one, if it is back
/// in time, else it counts on the shared counters) and counts there: every
/// count lands once. The lane's hand-over is what orders the two tasks'
/// plain stores.
#[test]
fn a_callsite_lane_changes_hands_without_losing_a_count() {
    model(|| {
        let table = Arc::new(CallsiteTable::<1, 1>::new());
        let site = table.find_or_claim(&[0x10]);
        // A third task holds the row's other lane throughout.
        assert!(table.claim_lane(site, LaneKey::task(2)).is_some());
        let first = LaneKey::task(0);
        let held = table.claim_lane(site, first).expect("a free lane");
        assert!(table.claim_lane(site, LaneKey::task(1)).is_none());

        let giver = {
            let table = table.clone();
            thread::spawn(move || {
                assert!(!table.record_alloc(site, Amount::block(8), first));
                table.release_lane(held, first);
            })
        };
        let second = LaneKey::task(1);
        let _ = table.claim_lane(site, second);
        table.record_alloc(site, Amount::block(32), second);
        table.record_free(site, Amount::block(32), second);
        giver.join().unwrap();
        let mut rows = 0;
        table.for_each_row(|row| {
            rows += 1;
            let f = row.figures;
            assert_eq!(
                (f.allocated_bytes, f.allocations, f.freed_bytes, f.frees),
                (40, 2, 32, 1)
            );
        });
        assert_eq!(rows, 1);
    });
}

fn sum_all<const N: usize>(table: &TaskTable<N>) -> TaskFigures {
    let mut sum = TaskFigures::default();
    table.for_each_row(|row| sum.accumulate(&row.figures));
    for bucket in TaskBucket::ALL {
        sum.accumulate(&table.bucket_figures(bucket));
    }
    sum
}

/// A task ends while another task frees one of its blocks: the free is
/// counted once, in the row before the fold or in the finished bucket after
/// it, and the row is emptied exactly once.
#[test]
fn a_cross_task_free_racing_the_owners_exit_is_counted_once() {
    model(|| {
        let table = Arc::new(TaskTable::<2>::new());
        let owner = table.claim(1, 0, 0);
        table.record_alloc(owner, Amount::block(100));
        table.record_alloc(owner, Amount::block(40));

        let freer = {
            let table = table.clone();
            thread::spawn(move || {
                let me = table.claim(2, 0, 0);
                table.record_free(owner, me, Amount::block(100));
                me
            })
        };
        assert!(table.retire(1));
        let me = freer.join().unwrap();
        assert_ne!(me, owner);

        let finished = table.bucket_figures(TaskBucket::Finished);
        assert_eq!(finished.figures.allocated_bytes, 140);
        assert_eq!(finished.figures.freed_bytes, 100);
        assert_eq!(
            (finished.freed_by_others_bytes, finished.freed_by_others),
            (100, 1)
        );
        assert_eq!(table.rows_in_use(), 1, "only the freer's row is left");
        assert!(table.find(1).is_none());
        let all = sum_all(&table);
        assert_eq!(all.freed_by_others_bytes, all.freed_of_others_bytes);
        assert_eq!(all.figures.live_bytes(), 40);
    });
}

/// Two cross-task frees race each other and the exit: both are counted, and
/// whichever step comes last folds the row.
#[test]
fn two_cross_task_frees_and_an_exit() {
    model(|| {
        let table = Arc::new(TaskTable::<1>::new());
        let owner = table.claim(1, 0, 0);
        table.record_alloc(owner, Amount::block(10));
        table.record_alloc(owner, Amount::block(20));
        let freers: Vec<_> = [10, 20]
            .into_iter()
            .map(|size| {
                let table = table.clone();
                thread::spawn(move || {
                    let unnamed = TaskTable::<1>::bucket(TaskBucket::Unknown);
                    table.record_free(owner, unnamed, Amount::block(size));
                })
            })
            .collect();
        table.retire(1);
        for freer in freers {
            freer.join().unwrap();
        }
        assert_eq!(table.rows_in_use(), 0);
        let finished = table.bucket_figures(TaskBucket::Finished);
        assert_eq!(finished.figures.allocated_bytes, 30);
        assert_eq!(finished.figures.freed_bytes, 30);
        assert_eq!(finished.figures.frees, 2);
        let unknown = table.bucket_figures(TaskBucket::Unknown);
        assert_eq!(unknown.freed_of_others_bytes, 30);
    });
}

/// A row released by one task and claimed by another: a block of the first
/// task freed afterwards goes to the finished bucket, never to the new
/// occupant, and the row's figures start from zero.
#[test]
fn a_reclaimed_row_starts_clean_and_old_blocks_go_to_finished() {
    model(|| {
        let table = Arc::new(TaskTable::<1>::new());
        let first = table.claim(1, 0, 0);
        table.record_alloc(first, Amount::block(64));
        let exiting = {
            let table = table.clone();
            thread::spawn(move || {
                table.retire(1);
            })
        };
        // Task 2 arrives while task 1 ends: it gets the row or overflows.
        let second = table.claim(2, 0, 0);
        table.record_alloc(second, Amount::block(8));
        exiting.join().unwrap();
        table.record_free(first, second, Amount::block(64));

        let finished = table.bucket_figures(TaskBucket::Finished);
        assert_eq!(finished.figures.allocated_bytes, 64);
        assert_eq!(finished.figures.freed_bytes, 64);
        let mut rows = Vec::new();
        table.for_each_row(|row| rows.push(row));
        if second == first {
            panic!("a reclaimed row must have a new generation");
        }
        for row in &rows {
            assert_eq!(row.id, 2);
            assert_eq!(row.figures.figures.allocated_bytes, 8);
            assert_eq!(row.figures.figures.freed_bytes, 0);
            assert_eq!(row.figures.freed_of_others_bytes, 64);
        }
        let all = sum_all(&table);
        assert_eq!(all.figures.allocated_bytes, 72);
        assert_eq!(all.figures.live_bytes(), 8);
    });
}

/// Two frees of the same (owner, freer) pair race a free of another pair,
/// in a table of two rows: one row per pair, every byte counted. While the
/// first two race, both hold a row, so the third may find none for that
/// moment and count in the overflow bucket; the race's loser gives its row
/// back, and the next free of the third pair finds it.
#[test]
fn cross_free_pairs_are_claimed_once() {
    model(|| {
        let table = Arc::new(CrossTable::<2>::new());
        let other = (
            Party::Bucket(TaskBucket::Finished),
            Party::Bucket(TaskBucket::Unknown),
        );
        let pairs = [
            (Party::Task(1), Party::Task(2)),
            (Party::Task(1), Party::Task(2)),
            other,
        ];
        let threads: Vec<_> = pairs
            .into_iter()
            .map(|(owner, freer)| {
                let table = table.clone();
                thread::spawn(move || table.record(owner, freer, Amount::block(4)))
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        table.record(other.0, other.1, Amount::block(4));
        let mut seen = Vec::new();
        table.for_each(|pair| seen.push((pair.owner, pair.freer, pair.bytes, pair.frees)));
        seen.sort();
        // Both pairs have their row, and a free that found none for that
        // moment is the only one in the overflow bucket.
        let overflowed = table.overflow();
        assert!(
            overflowed == (0, 0) || overflowed == (4, 1),
            "{overflowed:?}"
        );
        assert_eq!(seen.len(), 2);
        assert_eq!((seen[0].0, seen[0].1), (Party::Task(1), Party::Task(2)));
        assert_eq!((seen[1].0, seen[1].1), other);
        let in_rows: u64 = seen.iter().map(|pair| pair.2).sum();
        assert_eq!(in_rows + overflowed.0, 16);
        assert!(seen.iter().all(|pair| pair.2 == 4 * pair.3 && pair.2 >= 4));
    });
}

fn sample(size: u64) -> SampledBlock {
    SampledBlock {
        owner: TaskTable::<1>::bucket(TaskBucket::Unknown),
        site: 0,
        size,
        count: 1,
        bytes: size,
        time: 0,
    }
}

/// Sampled blocks come and go in a table of two entries: two tasks insert
/// blocks while a third removes one inserted before them. Each is found
/// whole by its address and removed once; none is lost or seen half
/// written.
#[test]
fn sampled_blocks_are_recorded_and_removed_whole() {
    model(|| {
        let table = Arc::new(SampleTable::<2>::new());
        assert!(table.insert(0x1000, sample(10)));
        let inserters: Vec<_> = [0x2000usize, 0x3000]
            .into_iter()
            .map(|address| {
                let table = table.clone();
                thread::spawn(move || table.insert(address, sample(address as u64)))
            })
            .collect();
        let remover = {
            let table = table.clone();
            thread::spawn(move || table.remove(0x1000))
        };
        assert_eq!(remover.join().unwrap(), Some(sample(10)));
        let inserted: Vec<bool> = inserters.into_iter().map(|t| t.join().unwrap()).collect();
        // Two entries: at least one insert found room (the other may have
        // raced the removal that freed one).
        assert!(inserted.iter().any(|&done| done));
        for (address, done) in [0x2000usize, 0x3000].into_iter().zip(inserted) {
            if done {
                assert_eq!(table.get(address), Some(sample(address as u64)));
                assert_eq!(table.remove(address), Some(sample(address as u64)));
            }
            assert_eq!(table.get(address), None);
        }
        assert_eq!(table.remove(0x1000), None);
    });
}

/// Two addresses whose searches in a table of `S` entries start at the same
/// home.
fn sharing_a_home<const S: usize>() -> (usize, usize) {
    let first = 0x1010;
    let home = SampleTable::<S>::home(first);
    let second = (1..)
        .map(|k| first + k * 0x1000)
        .find(|&address| SampleTable::<S>::home(address) == home)
        .expect("an address with the same home");
    (first, second)
}

/// A block is counted at its home while another block of the same home is
/// removed: a task handed the new block's address (with the ordering a
/// program hands a pointer on with) finds it, although the removal lowers
/// the same count at the same moment. Fails if the count is raised or
/// lowered with a plain load and store, which can lose the raise.
#[test]
fn a_block_handed_on_is_found_while_its_home_loses_another() {
    model(|| {
        let table = Arc::new(SampleTable::<2>::new());
        let (old, new) = sharing_a_home::<2>();
        assert!(table.insert(old, sample(1)));
        let handed = Arc::new(AtomicUsize::new(0));
        let remover = {
            let table = table.clone();
            thread::spawn(move || table.remove(old))
        };
        let inserter = {
            let (table, handed) = (table.clone(), handed.clone());
            thread::spawn(move || {
                // The other entry is empty: there is room.
                assert!(table.insert(new, sample(2)));
                handed.store(new, Ordering::Release);
            })
        };
        let finder = {
            let (table, handed) = (table.clone(), handed.clone());
            thread::spawn(move || loop {
                match handed.load(Ordering::Acquire) {
                    0 => thread::yield_now(),
                    address => return table.remove(address),
                }
            })
        };
        assert_eq!(remover.join().unwrap(), Some(sample(1)));
        inserter.join().unwrap();
        assert_eq!(finder.join().unwrap(), Some(sample(2)));
        assert_eq!(table.get(old), None);
        assert_eq!(table.get(new), None);
    });
}

/// The interval of the rows whose countdown the hot counters stand in for:
/// long enough that no count below reaches a sample point.
const LONG_INTERVAL: u64 = 1 << 40;

/// What a report reads of the task holding `ticket`: allocated bytes and
/// allocations, exactly.
fn exact_of<const N: usize>(table: &TaskTable<N>, ticket: alloc_track_core::Ticket) -> (u64, u64) {
    let exact = table
        .ticket_figures(ticket)
        .and_then(|figures| figures.exact_allocations)
        .expect("a task row of the sampling form");
    (exact.bytes, exact.count)
}

/// A thread counts on hot counters attached to its row while a report reads
/// the row, then detaches them, waits for the readers as its exit does, and
/// reuses their memory (here, writes counts that belong to no row). The
/// report sees the row's figures exactly, never what the memory holds after
/// the wait.
#[test]
fn a_report_never_reads_hot_counters_after_their_thread_let_them_go() {
    model(|| {
        let table = Arc::new(TaskTable::<1>::new());
        let ticket = table.claim(1, LONG_INTERVAL, 7);
        let hot = Arc::new(HotCountdown::new());
        let row = table.countdown_row(ticket).unwrap();
        // SAFETY: `hot` lives until the end of the model, past the detach
        // and the wait for readers below.
        unsafe { row.attach(&hot) };
        assert!(hot.count_unsampled(10));

        let reader = {
            let table = table.clone();
            thread::spawn(move || exact_of(&table, ticket))
        };
        row.detach(&hot);
        while table.hot_reads_in_progress() {
            thread::yield_now();
        }
        assert!(!hot.count_unsampled(1), "detached counters count nothing");
        // The memory goes to other use.
        hot.model_reuse();
        hot.uncount_unsampled(1 << 30);
        assert_eq!(reader.join().unwrap(), (10, 1));
        assert_eq!(exact_of(&table, ticket), (10, 1));
    });
}

/// A thread's hot counters move from one row to another (a scope entered)
/// while a report reads the first row: the report sees the first row's
/// figures, never the second's counts through the moved counters.
#[test]
fn a_report_reads_a_row_whole_while_its_hot_counters_move_away() {
    model(|| {
        let table = Arc::new(TaskTable::<2>::new());
        let first = table.claim(1, LONG_INTERVAL, 7);
        let second = table.claim(2, LONG_INTERVAL, 9);
        let hot = Arc::new(HotCountdown::new());
        let first_row = table.countdown_row(first).unwrap();
        let second_row = table.countdown_row(second).unwrap();
        // SAFETY: `hot` lives until the end of the model.
        unsafe { first_row.attach(&hot) };
        assert!(hot.count_unsampled(10));

        let reader = {
            let table = table.clone();
            thread::spawn(move || exact_of(&table, first))
        };
        first_row.detach(&hot);
        // SAFETY: as above.
        unsafe { second_row.attach(&hot) };
        assert!(hot.count_unsampled(1000));
        assert!(hot.count_unsampled(1000));
        assert_eq!(reader.join().unwrap(), (10, 1));
        assert_eq!(exact_of(&table, second), (2000, 2));
        second_row.detach(&hot);
        assert_eq!(exact_of(&table, second), (2000, 2));
        assert_eq!(exact_of(&table, first), (10, 1));
    });
}

/// Three threads free one item each into a try-lock's state while the
/// others may hold it: an item is applied at once by the holder, or left on
/// the list and applied by a later holder, exactly once either way; the
/// state is only ever changed by one thread at a time, and the links a
/// deferring thread wrote are seen by the holder that takes its item.
#[test]
fn a_deferred_free_is_applied_once_by_some_holder() {
    use loom::cell::UnsafeCell;

    struct Shared {
        lock: Deferred,
        /// How often each item was applied, changed only under the lock.
        applied: UnsafeCell<[u8; 4]>,
        /// Each item's link to the next deferred one.
        links: [UnsafeCell<usize>; 4],
    }

    // SAFETY: `applied` is only reached under the lock, each link only by
    // its item's deferring thread before the push and by the holder that
    // took the item after: the model checks both.
    unsafe impl Sync for Shared {}

    fn apply_pending(shared: &Shared, first: usize) {
        let mut item = first;
        while item != 0 {
            // SAFETY: the item was taken whole under the lock: its link was
            // written before its push, which the take acquired.
            let next = shared.links[item].with(|link| unsafe { *link });
            // SAFETY: under the lock.
            shared
                .applied
                .with_mut(|applied| unsafe { (*applied)[item] += 1 });
            item = next;
        }
    }

    fn free(shared: &Shared, item: usize) {
        match shared.lock.try_hold() {
            Some(held) => {
                apply_pending(shared, held.take());
                // SAFETY: under the lock.
                shared
                    .applied
                    .with_mut(|applied| unsafe { (*applied)[item] += 1 });
            }
            None => shared.lock.defer(item, |next| {
                // SAFETY: the item is this thread's until its push.
                shared.links[item].with_mut(|link| unsafe { *link = next })
            }),
        }
    }

    model(|| {
        let shared = Arc::new(Shared {
            lock: Deferred::new(),
            applied: UnsafeCell::new([0; 4]),
            links: [0; 4].map(UnsafeCell::new),
        });
        let threads: Vec<_> = (1..3)
            .map(|item| {
                let shared = shared.clone();
                thread::spawn(move || free(&shared, item))
            })
            .collect();
        free(&shared, 3);
        for thread in threads {
            thread.join().unwrap();
        }
        let held = shared.lock.try_hold().expect("no one holds it now");
        apply_pending(&shared, held.take());
        drop(held);
        // SAFETY: every thread has ended.
        let applied = shared.applied.with(|applied| unsafe { *applied });
        assert_eq!(applied, [0, 1, 1, 1]);
    });
}
