//! A try-lock whose losers leave their work behind instead of waiting.
//!
//! For state that one thread at a time changes (an adapter's own heap, say)
//! and that is reached from the allocation path, where nothing may wait:
//! whoever takes the lock changes the state at once; whoever finds it taken
//! pushes an item (a freed block's address) onto a list, and the next holder
//! takes the whole list and applies it. The list is pushed by any number of
//! threads and only ever taken whole, so a push cannot meet the ABA problem
//! of a popping stack.

use crate::primitive::{loom_const_fn, AtomicU8, AtomicUsize, Ordering};

/// A try-lock with a list of items deferred while it was held.
///
/// Items are non-zero words (addresses); each one's link to the next is kept
/// by the caller where the item lives (in a freed block's first word), as
/// [`defer`](Self::defer) and [`Held::take`] say.
pub struct Deferred {
    held: AtomicU8,
    pending: AtomicUsize,
}

impl Default for Deferred {
    fn default() -> Self {
        Self::new()
    }
}

impl Deferred {
    loom_const_fn! {
        /// Not held, nothing deferred.
        pub fn new() -> Self {
            Self {
                held: AtomicU8::new(0),
                pending: AtomicUsize::new(0),
            }
        }
    }

    /// Takes the lock if no one holds it; never waits.
    #[inline]
    pub fn try_hold(&self) -> Option<Held<'_>> {
        self.held
            .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .ok()
            .map(|_| Held { lock: self })
    }

    /// Leaves `item` (non-zero) for the next holder. `link` is told the
    /// item that was first in the list before this one (0 for none) and
    /// must store it where the holder will read it back for this item; it
    /// may be called more than once, the last call's value being the one
    /// that counts. Everything written before the last call is seen by the
    /// holder that takes the item.
    #[inline]
    pub fn defer(&self, item: usize, mut link: impl FnMut(usize)) {
        debug_assert_ne!(item, 0, "a deferred item is a non-zero word");
        let mut head = self.pending.load(Ordering::Relaxed);
        loop {
            link(head);
            match self.pending.compare_exchange_weak(
                head,
                item,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(now) => head = now,
            }
        }
    }

    /// Whether any item waits for the next holder (a hint: one may arrive
    /// at once after).
    #[inline]
    pub fn has_pending(&self) -> bool {
        self.pending.load(Ordering::Relaxed) != 0
    }
}

/// The lock of a [`Deferred`], held until dropped.
pub struct Held<'a> {
    lock: &'a Deferred,
}

impl Held<'_> {
    /// Takes every item deferred so far: the first one, 0 for none; each
    /// one's successor is what its `link` stored last, down to 0.
    #[inline]
    pub fn take(&self) -> usize {
        // Acquire: the links written before each push are seen here.
        self.lock.pending.swap(0, Ordering::Acquire)
    }
}

impl Drop for Held<'_> {
    #[inline]
    fn drop(&mut self) {
        self.lock.held.store(0, Ordering::Release);
    }
}

#[cfg(all(test, not(alloc_track_loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_refuses_and_the_deferred_items_come_back_in_a_list() {
        let lock = Deferred::new();
        let links = [const { core::cell::Cell::new(0usize) }; 4];
        let held = lock.try_hold().expect("free at first");
        assert!(lock.try_hold().is_none());
        for (item, link) in links.iter().enumerate().skip(1) {
            lock.defer(item, |next| link.set(next));
        }
        assert!(lock.has_pending());
        let mut item = held.take();
        let mut seen = [false; 4];
        while item != 0 {
            assert!(!seen[item], "item {item} twice");
            seen[item] = true;
            item = links[item].get();
        }
        assert_eq!(seen, [false, true, true, true]);
        assert_eq!(held.take(), 0);
        drop(held);
        assert!(lock.try_hold().is_some());
    }
}
