//! The stack memo: the last two stacks a task walked and the callsite rows
//! they found, so that a task allocating again from one of them checks its
//! frame records instead of walking, hashing and searching the table.
//!
//! A hit is exact: the memo keeps every frame record a walk read (the
//! caller's frame pointer and the return address), and a stack counts as
//! a kept one only if the same records are found again from the same frame
//! pointer. The walk is a function of the records it reads and the stack's
//! bounds, so it would write the same frames and find the same row; rows are
//! kept for the life of the program, so that row is still the stack's.
//!
//! A program allocating in a loop from one or two stacks hits every time.
//! One that goes round more stacks pays the walk each time, plus two checks
//! that fail, usually within their first two records.

use core::cell::Cell;
use core::sync::atomic::{compiler_fence, AtomicBool, Ordering};

use crate::walker::{self, walk_records_seen, FrameRecord, Stack};

/// The innermost records, compared before the rest. A walk of fewer is
/// not kept (a stack that shallow is rare, and the check is shorter for
/// knowing that every kept walk has these).
const NEAR_RECORDS: usize = 2;

/// How many stacks a memo keeps: the last two walked, so that a loop that
/// allocates from two stacks in turn walks neither again.
const KEPT_STACKS: usize = 2;

/// One kept frame record: the same two words, in the same order, as a
/// record on the stack, so that on x86-64 a record and its kept copy are
/// compared as one 16-byte vector each (aligned for it there).
#[derive(Debug)]
#[repr(C)]
#[cfg_attr(target_arch = "x86_64", repr(align(16)))]
pub struct MemoRecord {
    caller: Cell<usize>,
    return_address: Cell<usize>,
}

impl MemoRecord {
    const fn new() -> Self {
        Self {
            caller: Cell::new(0),
            return_address: Cell::new(0),
        }
    }

    #[inline(always)]
    fn keep(&self, record: FrameRecord) {
        self.caller.set(record.caller);
        self.return_address.set(record.return_address);
    }

    /// Zero if `record` is the kept one.
    #[cfg(not(all(target_arch = "x86_64", not(miri))))]
    #[inline(always)]
    fn difference(&self, record: FrameRecord) -> usize {
        (record.caller ^ self.caller.get()) | (record.return_address ^ self.return_address.get())
    }
}

/// What a memo keeps of one walk besides its records.
#[derive(Debug)]
struct KeptWalk {
    /// The frame pointer the walk started from.
    start: Cell<usize>,
    /// The top of the stack it walked in.
    high: Cell<usize>,
    /// How many records it read; zero while nothing is kept.
    read: Cell<usize>,
    /// The callsite row its frames found.
    site: Cell<u32>,
}

impl KeptWalk {
    const fn new() -> Self {
        Self {
            start: Cell::new(0),
            high: Cell::new(0),
            read: Cell::new(0),
            site: Cell::new(0),
        }
    }
}

/// A task's memo of the last two stacks it walked, with the callsite row
/// each found: one per task, in the task's own storage (a thread-local, a
/// task control block), handed to the tracker by
/// [`Context::with_stack_memo`](crate::Context::with_stack_memo).
///
/// `StackMemo::new()` makes an empty one of `N` records, `N / 2` for each
/// stack; the tracker sees it as `&StackMemo` (`StackMemo<[MemoRecord]>`),
/// whatever its size. Each half needs as many records as the ledger keeps
/// frames (its `DEPTH`): a smaller memo is not used. So a memo for a ledger
/// of 16 frames is a `StackMemo<[MemoRecord; 32]>`.
///
/// A call that arrives while the memo is in use on the same task (a signal
/// handler that allocates) finds it busy, and walks without it: the records
/// are only ever those of one walk.
#[derive(Debug)]
pub struct StackMemo<Records: ?Sized = [MemoRecord]> {
    /// Set while a call reads or fills the memo.
    busy: AtomicBool,
    /// Which of the kept walks is the latest.
    latest: Cell<usize>,
    walks: [KeptWalk; KEPT_STACKS],
    /// The records of each kept walk, one half each.
    records: Records,
}

impl<const N: usize> StackMemo<[MemoRecord; N]> {
    /// An empty memo of `N` records.
    pub const fn new() -> Self {
        Self {
            busy: AtomicBool::new(false),
            latest: Cell::new(0),
            walks: [const { KeptWalk::new() }; KEPT_STACKS],
            records: [const { MemoRecord::new() }; N],
        }
    }
}

impl<const N: usize> Default for StackMemo<[MemoRecord; N]> {
    fn default() -> Self {
        Self::new()
    }
}

impl StackMemo {
    /// The callsite row of the stack above `frame_pointer` in `stack`: a
    /// kept one if the stack is a kept one, else the row `find` gives for
    /// the frames walked (at most `D`), which is kept, in place of the
    /// older kept walk, if `keep` says so.
    #[inline(always)]
    pub(crate) fn site<const D: usize>(
        &self,
        frame_pointer: usize,
        stack: Stack,
        find: impl FnOnce(&[usize]) -> u32,
        keep: impl FnOnce(u32) -> bool,
    ) -> u32 {
        // Under Miri the walker is a stub that reads no frames, so there is
        // nothing to check again.
        if cfg!(miri) {
            return walked::<D>(frame_pointer, stack, find);
        }
        self.site_by_records::<D>(frame_pointer, stack, find, keep)
    }

    /// [`site`](Self::site) past its Miri stand-in.
    #[inline(always)]
    fn site_by_records<const D: usize>(
        &self,
        frame_pointer: usize,
        stack: Stack,
        find: impl FnOnce(&[usize]) -> u32,
        keep: impl FnOnce(u32) -> bool,
    ) -> u32 {
        if self.capacity() < D || self.busy.load(Ordering::Relaxed) {
            return walked::<D>(frame_pointer, stack, find);
        }
        self.busy.store(true, Ordering::Relaxed);
        // The compiler does not move the memo's reads and writes above the
        // flag (a signal handler runs on this thread, which sees its own
        // writes in program order, so the compiler is all there is to stop).
        compiler_fence(Ordering::SeqCst);
        let latest = self.latest.get() % KEPT_STACKS;
        let older = (latest + 1) % KEPT_STACKS;
        let site = match self.recall(latest, frame_pointer, stack) {
            Some(site) => site,
            None => match self.recall(older, frame_pointer, stack) {
                Some(site) => {
                    self.latest.set(older);
                    site
                }
                None => self.walk_and_keep::<D>(older, frame_pointer, stack, find, keep),
            },
        };
        compiler_fence(Ordering::SeqCst);
        self.busy.store(false, Ordering::Relaxed);
        site
    }

    /// The records each kept walk may have.
    #[inline(always)]
    fn capacity(&self) -> usize {
        self.records.len() / KEPT_STACKS
    }

    /// The records of kept walk `which`: all it may have.
    #[inline(always)]
    fn records_of(&self, which: usize) -> Option<&[MemoRecord]> {
        let capacity = self.capacity();
        self.records
            .get(which * capacity..)
            .and_then(|records| records.get(..capacity))
    }

    /// The row of kept walk `which`, if the records from `frame_pointer`
    /// are its records.
    #[inline(always)]
    fn recall(&self, which: usize, frame_pointer: usize, stack: Stack) -> Option<u32> {
        let walk = self.walks.get(which)?;
        // The start was word-aligned and a whole record below the same top
        // when it was kept; the current bounds must still hold it from below.
        if frame_pointer != walk.start.get()
            || stack.high() != walk.high.get()
            || frame_pointer < stack.low()
        {
            return None;
        }
        // Every record is read at the address the kept walk read it from,
        // so the reads do not wait for one another, and compared in two
        // groups: the innermost few first, where two stacks that differ
        // usually do (then a miss costs a few reads, not all), then the
        // rest. If every record is the same, the walk from here would
        // follow this very chain. A kept walk has read at least the near
        // records; an empty one has read none, which `split_at_checked`
        // refuses.
        let kept = self.records_of(which)?.get(..walk.read.get())?;
        let (near, far) = kept.split_at_checked(NEAR_RECORDS)?;
        let mut at = frame_pointer;
        for group in [near, far] {
            // SAFETY: the kept records are those one walk read (the busy
            // flag keeps every other call off them while they are filled or
            // read), from this frame pointer, in a stack with this top: the
            // first at `frame_pointer` and each next one at the caller's
            // frame pointer the one before held. So every address the group
            // is read at is one that walk read: word-aligned, at most two
            // words below the top, and at or above `frame_pointer` (the
            // chain only grows), which is inside the current bounds (checked
            // just above). So both words of each record lie inside `stack`,
            // which the context promised is readable.
            if unsafe { differs(&mut at, group) } {
                return None;
            }
        }
        Some(walk.site.get())
    }

    /// Walks, finds the row, and keeps the walk as kept walk `which` if
    /// `keep` says so (and it read the near records at least). Out of line:
    /// the frames buffer is only this path's.
    #[inline(never)]
    fn walk_and_keep<const D: usize>(
        &self,
        which: usize,
        frame_pointer: usize,
        stack: Stack,
        find: impl FnOnce(&[usize]) -> u32,
        keep: impl FnOnce(u32) -> bool,
    ) -> u32 {
        let (Some(walk), Some(records)) = (self.walks.get(which), self.records_of(which)) else {
            return walked::<D>(frame_pointer, stack, find);
        };
        walk.read.set(0);
        walk.start.set(0);
        // `records` has at least `D` records (`site` checked), so the walk is
        // not cut short by them.
        let mut frames = [0; D];
        let (depth, read) = walk_records_seen(
            frame_pointer,
            stack,
            &mut frames,
            records.iter(),
            MemoRecord::keep,
        );
        let site = find(frames.get(..depth).unwrap_or(&[]));
        if read >= NEAR_RECORDS && keep(site) {
            walk.start.set(frame_pointer);
            walk.high.set(stack.high());
            walk.site.set(site);
            walk.read.set(read);
            self.latest.set(which);
        }
        site
    }
}

/// Whether the frame records from `at` differ from the kept `group`, each
/// read at the address the kept record before it names (the first at
/// `at`); `at` is left at the address the last kept record names. One
/// verdict for the group, so the reads do not wait for one another or for
/// a branch.
///
/// # Safety
/// - The two words at each of those addresses are readable: `group` is a
///   run of records one walk read from `at` in a stack that is still
///   readable at each of them.
#[inline(always)]
unsafe fn differs(at: &mut usize, group: &[MemoRecord]) -> bool {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    {
        use core::arch::x86_64::{
            __m128i, _mm_cmpeq_epi8, _mm_load_si128, _mm_loadu_si128, _mm_movemask_epi8,
            _mm_or_si128, _mm_setzero_si128, _mm_xor_si128,
        };
        // SAFETY: SSE2 is part of every x86-64 machine, so its intrinsics
        // may run here. The loads: by the caller's promise, the 16 bytes at
        // each `*at` (word-aligned, so read unaligned) are readable, and
        // they are read as integers only; a kept record is 16 bytes aligned
        // to 16 (`repr(align(16))`), its two words in the stack's order
        // (`repr(C)`), and nothing writes it while the memo is busy.
        unsafe {
            let mut differ = _mm_setzero_si128();
            let mut one = |kept: &MemoRecord| {
                let record = _mm_loadu_si128(*at as *const __m128i);
                let kept_record = _mm_load_si128(kept as *const MemoRecord as *const __m128i);
                differ = _mm_or_si128(differ, _mm_xor_si128(record, kept_record));
                *at = kept.caller.get();
            };
            // Two records a turn: the loop's own instructions are a third
            // of a record's.
            let pairs = group.chunks_exact(2);
            let last = pairs.remainder();
            for pair in pairs {
                pair.iter().for_each(&mut one);
            }
            last.iter().for_each(one);
            _mm_movemask_epi8(_mm_cmpeq_epi8(differ, _mm_setzero_si128())) != 0xffff
        }
    }
    #[cfg(not(all(target_arch = "x86_64", not(miri))))]
    {
        let mut differ = 0;
        for kept in group {
            // SAFETY: the caller's promise: `*at` is word-aligned and the
            // two words from it are readable.
            let record = unsafe { FrameRecord::read(*at) };
            differ |= kept.difference(record);
            *at = kept.caller.get();
        }
        differ != 0
    }
}

/// The row `find` gives for the stack above `frame_pointer`, walked without
/// the memo.
#[inline(never)]
fn walked<const D: usize>(
    frame_pointer: usize,
    stack: Stack,
    find: impl FnOnce(&[usize]) -> u32,
) -> u32 {
    let mut frames = [0; D];
    let depth = walker::walk(frame_pointer, stack, &mut frames);
    find(frames.get(..depth).unwrap_or(&[]))
}

// The memo on a fake stack of the test's own memory, as the walker's own
// tests do, so that these run under Miri too.
#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    const WORD: usize = core::mem::size_of::<usize>();

    /// 32 words with two chains of frame records: A at words 2, 6 and 10,
    /// B at 18, 22 and 26; the records at 14 and 30 have a zero return
    /// address, which ends each chain after four records.
    struct FakeStack {
        words: [usize; 32],
    }

    impl FakeStack {
        fn new() -> std::boxed::Box<Self> {
            let mut stack = std::boxed::Box::new(FakeStack { words: [0; 32] });
            for (first, returns) in [(2, 0x1000), (18, 0x2000)] {
                for record in 0..3 {
                    let word = first + 4 * record;
                    stack.words[word] = stack.address(word + 4);
                    stack.words[word + 1] = returns + record;
                }
            }
            stack
        }

        fn address(&self, word: usize) -> usize {
            self.words.as_ptr() as usize + word * WORD
        }

        fn bounds(&self) -> Stack {
            // SAFETY: the array is readable and outlives every walk below.
            unsafe { Stack::new(self.address(0), self.address(32)) }.unwrap()
        }
    }

    /// The memo's row for the stack from `word`, and the frames `find` was
    /// given (`None` for a hit); a row of 100 or more is not kept.
    fn site_of(
        memo: &StackMemo,
        stack: &FakeStack,
        word: usize,
        row: u32,
    ) -> (u32, Option<Vec<usize>>) {
        let mut walked = None;
        let site = memo.site_by_records::<8>(
            stack.address(word),
            stack.bounds(),
            |frames| {
                walked = Some(frames.to_vec());
                row
            },
            |site| site < 100,
        );
        (site, walked)
    }

    fn memo() -> StackMemo<[MemoRecord; 16]> {
        StackMemo::new()
    }

    #[test]
    fn the_same_records_give_the_kept_row_without_a_walk() {
        let stack = FakeStack::new();
        let memo: &StackMemo = &memo();
        assert_eq!(
            site_of(memo, &stack, 2, 7),
            (7, Some(std::vec![0x1000, 0x1001, 0x1002]))
        );
        assert_eq!(site_of(memo, &stack, 2, 9), (7, None));
    }

    #[test]
    fn two_stacks_in_turn_are_both_kept_and_a_third_replaces_the_older() {
        let mut stack = FakeStack::new();
        let memo: &StackMemo = &memo();
        assert_eq!(site_of(memo, &stack, 2, 7).0, 7);
        assert_eq!(site_of(memo, &stack, 18, 8).0, 8);
        for _ in 0..3 {
            assert_eq!(site_of(memo, &stack, 2, 0), (7, None));
            assert_eq!(site_of(memo, &stack, 18, 0), (8, None));
        }
        // A third stack (chain A with another return address) takes the
        // place of the walk used less lately: A's, since B's was used last.
        stack.words[7] = 0x1abc;
        assert_eq!(
            site_of(memo, &stack, 2, 9),
            (9, Some(std::vec![0x1000, 0x1abc, 0x1002]))
        );
        assert_eq!(site_of(memo, &stack, 2, 0), (9, None));
        assert_eq!(site_of(memo, &stack, 18, 0), (8, None));
        stack.words[7] = 0x1001;
        assert!(site_of(memo, &stack, 2, 10).1.is_some());
    }

    #[test]
    fn a_changed_record_near_or_far_walks_again() {
        let mut stack = FakeStack::new();
        let memo: &StackMemo = &memo();
        site_of(memo, &stack, 2, 7);
        // The terminating record counts too: a chain that now goes on.
        stack.words[15] = 0x4444;
        assert_eq!(
            site_of(memo, &stack, 2, 8),
            (8, Some(std::vec![0x1000, 0x1001, 0x1002, 0x4444]))
        );
        assert_eq!(site_of(memo, &stack, 2, 0), (8, None));
        // A record past the near ones (the fourth, which ended the walk),
        // by its caller's frame pointer: now it points at itself, which
        // ends the walk after the same frames.
        stack.words[14] = stack.address(14);
        assert_eq!(
            site_of(memo, &stack, 2, 9),
            (9, Some(std::vec![0x1000, 0x1001, 0x1002, 0x4444]))
        );
        stack.words[14] = 0;
        assert_eq!(site_of(memo, &stack, 2, 0), (8, None));
    }

    #[test]
    fn a_change_in_the_last_of_an_odd_run_of_far_records_walks_again() {
        let mut stack = FakeStack::new();
        // Chain A goes on into chain B and ends at B's third record: seven
        // records read, five past the near ones, so the check's last turn
        // has one record.
        stack.words[14] = stack.address(18);
        stack.words[15] = 0x4444;
        stack.words[27] = 0;
        let frames = std::vec![0x1000, 0x1001, 0x1002, 0x4444, 0x2000, 0x2001];
        let memo: &StackMemo = &memo();
        assert_eq!(site_of(memo, &stack, 2, 7), (7, Some(frames.clone())));
        assert_eq!(site_of(memo, &stack, 2, 0), (7, None));
        // The last record's caller, which the walk does not follow (its
        // return address ends the chain), is compared all the same.
        stack.words[26] = stack.address(28);
        assert_eq!(site_of(memo, &stack, 2, 8), (8, Some(frames.clone())));
        assert_eq!(site_of(memo, &stack, 2, 0), (8, None));
        // And so is its return address, in any bit.
        stack.words[27] = 1 << (usize::BITS - 1);
        assert!(site_of(memo, &stack, 2, 9).1.is_some());
    }

    #[test]
    fn a_row_it_may_not_keep_and_a_short_walk_are_not_kept() {
        let mut stack = FakeStack::new();
        let memo: &StackMemo = &memo();
        assert_eq!(site_of(memo, &stack, 2, 100).0, 100);
        assert!(site_of(memo, &stack, 2, 5).1.is_some());
        assert_eq!(site_of(memo, &stack, 2, 6), (5, None));
        // One record read, fewer than the near ones: its caller's frame
        // pointer goes down the stack, which ends the walk.
        stack.words[18] = stack.address(2);
        assert!(site_of(memo, &stack, 18, 11).1.is_some());
        assert!(site_of(memo, &stack, 18, 12).1.is_some());
    }

    #[test]
    fn another_start_or_top_walks_again() {
        let stack = FakeStack::new();
        let memo: &StackMemo = &memo();
        site_of(memo, &stack, 2, 7);
        let kept = memo.latest.get();
        assert_eq!(memo.recall(kept, stack.address(6), stack.bounds()), None);
        // SAFETY: a part of the array, which outlives the call.
        let lower = unsafe { Stack::new(stack.address(0), stack.address(31)) }.unwrap();
        assert_eq!(memo.recall(kept, stack.address(2), lower), None);
        assert_eq!(memo.recall(kept, stack.address(2), stack.bounds()), Some(7));
    }

    #[test]
    fn a_busy_memo_is_left_alone() {
        let stack = FakeStack::new();
        let memo: &StackMemo = &memo();
        site_of(memo, &stack, 2, 7);
        memo.busy.store(true, Ordering::Relaxed);
        assert_eq!(site_of(memo, &stack, 2, 3).0, 3);
        memo.busy.store(false, Ordering::Relaxed);
        assert_eq!(site_of(memo, &stack, 2, 0), (7, None));
    }

    #[test]
    fn a_memo_smaller_than_the_walk_is_not_used() {
        let stack = FakeStack::new();
        let memo: &StackMemo = &StackMemo::<[MemoRecord; 8]>::new();
        assert_eq!(site_of(memo, &stack, 2, 3).0, 3);
        assert!(site_of(memo, &stack, 2, 4).1.is_some());
    }
}
