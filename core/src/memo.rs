//! The stack memo: the last stack a task walked and the callsite row it
//! found, so that a task allocating again from the same stack checks its
//! frame records instead of walking, hashing and searching the table.
//!
//! A hit is exact: the memo keeps every frame record the walk read (the
//! caller's frame pointer and the return address), and a stack counts as
//! the same only if the same records are found again from the same frame
//! pointer. The walk is a function of the records it reads and the stack's
//! bounds, so it would write the same frames and find the same row; rows are
//! kept for the life of the program, so that row is still the stack's.
//!
//! A program allocating in a loop hits every time. One that alternates
//! between stacks pays the walk each time, plus a check that fails, usually
//! within the first few records.

use core::cell::Cell;
use core::sync::atomic::{compiler_fence, AtomicBool, Ordering};

use crate::walker::{self, walk_records_seen, FrameRecord, Stack};

/// One kept frame record.
#[derive(Debug)]
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

    fn keep(&self, record: FrameRecord) {
        self.caller.set(record.caller);
        self.return_address.set(record.return_address);
    }

    /// Zero if `record` is the kept one.
    #[inline(always)]
    fn difference(&self, record: FrameRecord) -> usize {
        (record.caller ^ self.caller.get()) | (record.return_address ^ self.return_address.get())
    }
}

/// A task's memo of its last walked stack: one per task, in the task's own
/// storage (a thread-local, a task control block), handed to the tracker by
/// [`Context::with_stack_memo`](crate::Context::with_stack_memo). It needs
/// as many records as the ledger keeps frames (its `DEPTH`); a smaller memo
/// is not used.
///
/// `StackMemo::new()` makes an empty one of `N` records; the tracker sees
/// it as `&StackMemo` (`StackMemo<[MemoRecord]>`), whatever its size.
///
/// A call that arrives while the memo is in use on the same task (a signal
/// handler that allocates) finds it busy, and walks without it: the records
/// are only ever those of one walk.
#[derive(Debug)]
pub struct StackMemo<Records: ?Sized = [MemoRecord]> {
    /// Set while a call reads or fills the memo.
    busy: AtomicBool,
    /// The frame pointer the kept walk started from.
    start: Cell<usize>,
    /// The top of the stack it walked in.
    high: Cell<usize>,
    /// How many records it read; zero while nothing is kept.
    read: Cell<usize>,
    /// The callsite row its frames found.
    site: Cell<u32>,
    records: Records,
}

impl<const N: usize> StackMemo<[MemoRecord; N]> {
    /// An empty memo of `N` records.
    pub const fn new() -> Self {
        Self {
            busy: AtomicBool::new(false),
            start: Cell::new(0),
            high: Cell::new(0),
            read: Cell::new(0),
            site: Cell::new(0),
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
    /// The callsite row of the stack above `frame_pointer` in `stack`: the
    /// kept one if the stack is the kept one, else the row `find` gives for
    /// the frames walked (at most `D`), which is kept if `keep` says so.
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
        if cfg!(miri) || self.records.len() < D || self.busy.load(Ordering::Relaxed) {
            let mut frames = [0; D];
            let depth = walker::walk(frame_pointer, stack, &mut frames);
            return find(frames.get(..depth).unwrap_or(&[]));
        }
        self.busy.store(true, Ordering::Relaxed);
        // Neither the compiler nor the processor moves the memo's reads and
        // writes above the flag, as a signal handler on this thread sees it.
        compiler_fence(Ordering::SeqCst);
        let site = match self.recall(frame_pointer, stack) {
            Some(site) => site,
            None => self.walk_and_keep::<D>(frame_pointer, stack, find, keep),
        };
        compiler_fence(Ordering::SeqCst);
        self.busy.store(false, Ordering::Relaxed);
        site
    }

    /// The kept row, if the records from `frame_pointer` are the kept ones.
    #[inline(always)]
    fn recall(&self, frame_pointer: usize, stack: Stack) -> Option<u32> {
        let read = self.read.get();
        if read == 0
            || frame_pointer != self.start.get()
            || stack.high() != self.high.get()
            || !stack.holds_record(frame_pointer)
        {
            return None;
        }
        // Every record is read at the address the kept walk read it from,
        // so the reads do not wait for one another; the comparison is made
        // once at the end. If every record is the same, the walk from here
        // would follow this very chain.
        let mut at = frame_pointer;
        let mut differ = 0;
        for kept in self.records.get(..read)? {
            // SAFETY: the kept records are those one walk read (the busy
            // flag keeps every other call off them while they are filled or
            // read), from this frame pointer, in a stack with this top: the
            // first at `frame_pointer` and each next one at the caller's
            // frame pointer the one before held. So `at` is an address that
            // walk read: word-aligned, at most two words below the top, and
            // at or above `frame_pointer` (the chain only grows), which is
            // inside the current bounds (`holds_record`, just above). So both
            // words lie inside `stack`, which the context promised is
            // readable.
            let record = unsafe { FrameRecord::read(at) };
            differ |= kept.difference(record);
            at = kept.caller.get();
        }
        if differ != 0 {
            return None;
        }
        Some(self.site.get())
    }

    /// Walks, finds the row, and keeps the walk if `keep` says so. Out of
    /// line: the frames buffer is only this path's.
    #[inline(never)]
    fn walk_and_keep<const D: usize>(
        &self,
        frame_pointer: usize,
        stack: Stack,
        find: impl FnOnce(&[usize]) -> u32,
        keep: impl FnOnce(u32) -> bool,
    ) -> u32 {
        self.read.set(0);
        let mut frames = [0; D];
        let mut read = 0;
        let depth = walk_records_seen(frame_pointer, stack, &mut frames, |position, record| {
            if let Some(kept) = self.records.get(position) {
                kept.keep(record);
                read = position + 1;
            }
        });
        let site = find(frames.get(..depth).unwrap_or(&[]));
        if depth > 0 && keep(site) {
            self.start.set(frame_pointer);
            self.high.set(stack.high());
            self.site.set(site);
            self.read.set(read);
        }
        site
    }
}

// The memo on a fake stack of the test's own memory, as the walker's own
// tests do, so that these run under Miri too.
#[cfg(test)]
mod tests {
    use super::*;

    const WORD: usize = core::mem::size_of::<usize>();

    /// 16 words with frame records at words 2, 6 and 10; the record at 14
    /// has a zero return address, which ends the chain.
    struct FakeStack {
        words: [usize; 16],
    }

    impl FakeStack {
        fn linked(words: &mut [usize; 16]) {
            let base = words.as_ptr() as usize;
            words[2] = base + 6 * WORD;
            words[3] = 0x1111;
            words[6] = base + 10 * WORD;
            words[7] = 0x2222;
            words[10] = base + 14 * WORD;
            words[11] = 0x3333;
        }

        fn address(&self, word: usize) -> usize {
            self.words.as_ptr() as usize + word * WORD
        }

        fn bounds(&self) -> Stack {
            // SAFETY: the array is readable and outlives every walk below.
            unsafe { Stack::new(self.address(0), self.address(16)) }.unwrap()
        }
    }

    /// The memo's answer for the fake stack from word 2, with the frames
    /// `find` was given when it was asked (`None` for a hit).
    fn site_of(
        memo: &StackMemo,
        stack: &FakeStack,
        row: u32,
    ) -> (u32, Option<std::vec::Vec<usize>>) {
        let mut walked = None;
        // Straight to the parts `site` puts together, which run under Miri
        // too (`site` itself walks with the walker's Miri stub there).
        let site = match memo.recall(stack.address(2), stack.bounds()) {
            Some(site) => site,
            None => memo.walk_and_keep::<8>(
                stack.address(2),
                stack.bounds(),
                |frames| {
                    walked = Some(frames.to_vec());
                    row
                },
                |site| site < 100,
            ),
        };
        (site, walked)
    }

    #[test]
    fn the_same_records_give_the_kept_row_without_a_walk() {
        let mut stack = FakeStack { words: [0; 16] };
        FakeStack::linked(&mut stack.words);
        let memo: &StackMemo = &StackMemo::<[MemoRecord; 8]>::new();
        let (site, walked) = site_of(memo, &stack, 7);
        assert_eq!(site, 7);
        assert_eq!(walked, Some(std::vec![0x1111, 0x2222, 0x3333]));
        // Four records read: the last one's zero return address ended it.
        assert_eq!(memo.read.get(), 4);
        assert_eq!(site_of(memo, &stack, 9), (7, None));
    }

    #[test]
    fn a_changed_record_walks_again() {
        let mut stack = FakeStack { words: [0; 16] };
        FakeStack::linked(&mut stack.words);
        let memo: &StackMemo = &StackMemo::<[MemoRecord; 8]>::new();
        site_of(memo, &stack, 7);
        // Another return address in the middle of the chain.
        stack.words[7] = 0x2223;
        let (site, walked) = site_of(memo, &stack, 8);
        assert_eq!(site, 8);
        assert_eq!(walked, Some(std::vec![0x1111, 0x2223, 0x3333]));
        // The terminating record counts too: a chain that now goes on.
        stack.words[15] = 0x4444;
        let (site, walked) = site_of(memo, &stack, 9);
        assert_eq!(site, 9);
        assert_eq!(walked, Some(std::vec![0x1111, 0x2223, 0x3333, 0x4444]));
        assert_eq!(site_of(memo, &stack, 10), (9, None));
    }

    #[test]
    fn a_row_it_may_not_keep_is_not_kept() {
        let mut stack = FakeStack { words: [0; 16] };
        FakeStack::linked(&mut stack.words);
        let memo: &StackMemo = &StackMemo::<[MemoRecord; 8]>::new();
        assert_eq!(site_of(memo, &stack, 100).0, 100);
        assert!(site_of(memo, &stack, 5).1.is_some());
        assert_eq!(site_of(memo, &stack, 6), (5, None));
    }

    #[test]
    fn another_start_or_top_walks_again() {
        let mut stack = FakeStack { words: [0; 16] };
        FakeStack::linked(&mut stack.words);
        let memo: &StackMemo = &StackMemo::<[MemoRecord; 8]>::new();
        site_of(memo, &stack, 7);
        assert_eq!(memo.recall(stack.address(6), stack.bounds()), None);
        // SAFETY: a part of the array, which outlives the call.
        let lower = unsafe { Stack::new(stack.address(0), stack.address(15)) }.unwrap();
        assert_eq!(memo.recall(stack.address(2), lower), None);
        assert_eq!(memo.recall(stack.address(2), stack.bounds()), Some(7));
    }

    #[test]
    fn a_busy_memo_is_left_alone() {
        let mut stack = FakeStack { words: [0; 16] };
        FakeStack::linked(&mut stack.words);
        let memo: &StackMemo = &StackMemo::<[MemoRecord; 8]>::new();
        site_of(memo, &stack, 7);
        memo.busy.store(true, Ordering::Relaxed);
        let site = memo.site::<8>(stack.address(2), stack.bounds(), |_| 3, |_| true);
        assert_eq!(site, 3);
        assert_eq!(memo.site.get(), 7);
    }

    #[test]
    fn a_memo_smaller_than_the_walk_is_not_used() {
        let mut stack = FakeStack { words: [0; 16] };
        FakeStack::linked(&mut stack.words);
        let memo: &StackMemo = &StackMemo::<[MemoRecord; 4]>::new();
        let site = memo.site::<8>(stack.address(2), stack.bounds(), |_| 3, |_| true);
        assert_eq!(site, 3);
        assert_eq!(memo.read.get(), 0);
    }
}
