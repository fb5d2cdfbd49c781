//! The table of live sampled blocks: a lock-free open-addressed table keyed
//! by address, with a count of live samples per home.

use crate::party::Ticket;
use crate::primitive::{
    atomic_array, loom_const_fn, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering,
};

/// A live sampled block as its entry records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SampledBlock {
    /// Where its allocation was counted.
    pub owner: Ticket,
    /// Its callsite row.
    pub site: u32,
    /// The caller's size.
    pub size: u64,
    /// What it stands for, in [`SCALE`] units: allocations, and bytes.
    pub count: u64,
    /// See `count`.
    pub bytes: u64,
    /// When it was allocated, by the context's clock.
    pub time: u64,
}

/// Key states of an entry: empty (never used), deleted, being written;
/// anything else is the address of the live block it records (no allocator
/// hands out the first three addresses, so the states never collide).
const EMPTY: usize = 0;
const DELETED: usize = 1;
const WRITING: usize = 2;

/// How far from its home an address may be recorded: bounds every insert
/// and lookup. A sample that finds no free entry within reach is dropped.
const MAX_PROBES: usize = 64;

struct Entry {
    key: AtomicUsize,
    owner: AtomicU64,
    site: AtomicU32,
    size: AtomicU64,
    count: AtomicU64,
    bytes: AtomicU64,
    time: AtomicU64,
}

impl Entry {
    loom_const_fn! {
        fn new() -> Self {
            Self {
                key: AtomicUsize::new(EMPTY),
                owner: AtomicU64::new(0),
                site: AtomicU32::new(0),
                size: AtomicU64::new(0),
                count: AtomicU64::new(0),
                bytes: AtomicU64::new(0),
                time: AtomicU64::new(0),
            }
        }
    }

    fn read(&self) -> Option<SampledBlock> {
        Some(SampledBlock {
            owner: Ticket::from_word(self.owner.load(Ordering::Relaxed))?,
            site: self.site.load(Ordering::Relaxed),
            size: self.size.load(Ordering::Relaxed),
            count: self.count.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            time: self.time.load(Ordering::Relaxed),
        })
    }
}

/// An entry of a [`SampleTable`] claimed for a block's address: others pass
/// it by, as one being written, until it is published. Dropped unpublished,
/// it is given back (marked deleted).
pub struct ClaimedEntry<'t> {
    entry: &'t Entry,
    address: usize,
    /// The count of live blocks at the address's home, which the block
    /// joins when it is published.
    home: Option<&'t AtomicU8>,
}

impl ClaimedEntry<'_> {
    /// Writes `block` into the entry and publishes its address.
    pub fn publish(self, block: SampledBlock) {
        let entry = self.entry;
        entry.owner.store(block.owner.to_word(), Ordering::Relaxed);
        entry.site.store(block.site, Ordering::Relaxed);
        entry.size.store(block.size, Ordering::Relaxed);
        entry.count.store(block.count, Ordering::Relaxed);
        entry.bytes.store(block.bytes, Ordering::Relaxed);
        entry.time.store(block.time, Ordering::Relaxed);
        // Counted at its home before the block is handed out, so that any
        // search for it, which comes after it is handed out, sees the count.
        // A read-modify-write: another task may be counting a block out of
        // the same home.
        if let Some(home) = self.home {
            home.fetch_add(1, Ordering::Relaxed);
        }
        // Release publishes the fields to whoever finds the key.
        entry.key.store(self.address, Ordering::Release);
        core::mem::forget(self);
    }
}

impl Drop for ClaimedEntry<'_> {
    fn drop(&mut self) {
        self.entry.key.store(DELETED, Ordering::Release);
    }
}

/// The live sampled blocks: a fixed table of `S` entries keyed by address,
/// open addressing from the address's hash (its home entry), at most
/// [`MAX_PROBES`] entries from it.
///
/// Lock-free: an insert claims an entry by one swap (from empty or deleted
/// to writing), writes it and publishes the key with Release; a removal
/// swaps the key from the address to writing, reads the entry and marks it
/// deleted. A lookup passes entries being written by: no task waits for
/// another. An entry never becomes empty again, so a lookup may stop at the
/// first empty one: whatever was inserted further on passed it while it was
/// already taken. Only the allocating path inserts an address (its block is
/// not handed out before), and only one free removes it, so an address is
/// never in two entries.
///
/// The cheap negative test: each home keeps a count of the live blocks
/// whose home it is (at most [`MAX_PROBES`], the entries within reach of
/// it), raised before a block is published and lowered after it is
/// removed. A lookup whose home counts none reads nothing else. Without
/// it, a long-running program's table fills with deleted entries (each
/// entry is deleted once any block that took it is freed, and none becomes
/// empty again), and every lookup of an address that is not there, such as
/// each free that only looks like a sampled block's, would read all the
/// entries within reach.
pub struct SampleTable<const S: usize> {
    entries: [Entry; S],
    homes: [AtomicU8; S],
}

impl<const S: usize> Default for SampleTable<S> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const S: usize> SampleTable<S> {
    loom_const_fn! {
        /// An empty table.
        pub fn new() -> Self {
            Self {
                entries: atomic_array![Entry::new(); S],
                homes: atomic_array![AtomicU8::new(0); S],
            }
        }
    }

    /// The home entry of `address`: where a search for it starts.
    pub fn home(address: usize) -> usize {
        crate::hash::reduce(crate::hash::mix(address as u64), S)
    }

    /// The entries a search from `home` may visit, in order.
    fn reach(&self, home: usize) -> impl Iterator<Item = &Entry> {
        let (before, from) = self.entries.split_at(home.min(S));
        from.iter().chain(before).take(MAX_PROBES)
    }

    /// The entry that records `address`, whose home is `home`, if any, its
    /// key loaded with `order`; and how many entries the search read (none
    /// when the home counts no live block).
    fn find(&self, home: usize, address: usize, order: Ordering) -> (Option<&Entry>, usize) {
        let counted = self
            .homes
            .get(home)
            .is_some_and(|live| live.load(Ordering::Relaxed) != 0);
        if !counted {
            return (None, 0);
        }
        let mut read = 0;
        for entry in self.reach(home) {
            read += 1;
            match entry.key.load(order) {
                EMPTY => return (None, read),
                key if key == address => return (Some(entry), read),
                _ => {}
            }
        }
        (None, read)
    }

    /// Records `block` at `address`; `false` when no entry within reach is
    /// free (the caller then drops the sample).
    pub fn insert(&self, address: usize, block: SampledBlock) -> bool {
        self.claim(address)
            .map(|claimed| claimed.publish(block))
            .is_some()
    }

    /// Claims a free entry within reach of `address`, to be written with
    /// [`ClaimedEntry::publish`] once what the block records is known;
    /// `None` when there is none (the caller then drops the sample, before
    /// doing the work a sample needs, such as walking its stack).
    pub fn claim(&self, address: usize) -> Option<ClaimedEntry<'_>> {
        let home = Self::home(address);
        self.reach(home)
            .find(|entry| {
                let key = entry.key.load(Ordering::Relaxed);
                (key == EMPTY || key == DELETED)
                    && entry
                        .key
                        .compare_exchange(key, WRITING, Ordering::Acquire, Ordering::Relaxed)
                        .is_ok()
            })
            .map(|entry| ClaimedEntry {
                entry,
                address,
                home: self.homes.get(home),
            })
    }

    /// Removes the block at `address` and returns what was recorded of it,
    /// or `None` if it is not a sampled block.
    pub fn remove(&self, address: usize) -> Option<SampledBlock> {
        let home = Self::home(address);
        let entry = self.find(home, address, Ordering::Relaxed).0?;
        // Acquire pairs with the Release in `publish`.
        entry
            .key
            .compare_exchange(address, WRITING, Ordering::Acquire, Ordering::Relaxed)
            .ok()?;
        let block = entry.read();
        entry.key.store(DELETED, Ordering::Release);
        if let Some(live) = self.homes.get(home) {
            live.fetch_sub(1, Ordering::Relaxed);
        }
        block
    }

    /// What is recorded of the block at `address`, without removing it.
    pub fn get(&self, address: usize) -> Option<SampledBlock> {
        self.find(Self::home(address), address, Ordering::Acquire)
            .0?
            .read()
    }
}

#[cfg(all(test, not(alloc_track_loom)))]
mod tests {
    use super::*;
    use crate::sampling::SCALE;

    fn block(size: u64) -> SampledBlock {
        SampledBlock {
            // Any owner: the table keeps it as it is given.
            owner: Ticket {
                index: 1,
                generation: 0,
            },
            site: 3,
            size,
            count: SCALE,
            bytes: size * SCALE,
            time: 7,
        }
    }

    #[test]
    fn a_claimed_entry_is_passed_by_until_published_and_given_back_if_dropped() {
        let table = SampleTable::<1>::new();
        let claimed = table.claim(0x1000).expect("a free entry");
        // The only entry is being written: no room, and no block there.
        assert!(table.claim(0x2000).is_none());
        assert_eq!(table.get(0x1000), None);
        drop(claimed);
        // Given back unpublished: free again, and still no block there.
        assert_eq!(table.remove(0x1000), None);
        table
            .claim(0x2000)
            .expect("the entry again")
            .publish(block(48));
        assert_eq!(table.get(0x2000), Some(block(48)));
        assert_eq!(table.remove(0x2000), Some(block(48)));
        assert_eq!(table.remove(0x2000), None);
    }

    /// How many live blocks each home of `table` counts.
    fn home_counts<const S: usize>(table: &SampleTable<S>) -> [u8; S] {
        core::array::from_fn(|home| table.homes[home].load(Ordering::Relaxed))
    }

    #[test]
    fn each_home_counts_the_live_blocks_whose_search_starts_there() {
        const S: usize = 64;
        let table = SampleTable::<S>::new();
        let addresses: [usize; 48] = core::array::from_fn(|k| 0x7000_0010 + k * 0x1000);
        let mut expected = [0u8; S];
        for &address in &addresses {
            assert!(table.insert(address, block(address as u64)));
            expected[SampleTable::<S>::home(address)] += 1;
        }
        assert_eq!(home_counts(&table), expected);
        // A claim given back unpublished counts nothing.
        drop(table.claim(0x5000_0010).expect("a free entry"));
        assert_eq!(home_counts(&table), expected);
        for &address in addresses.iter().step_by(2) {
            assert_eq!(table.remove(address), Some(block(address as u64)));
            expected[SampleTable::<S>::home(address)] -= 1;
        }
        assert_eq!(home_counts(&table), expected);
        for &address in addresses.iter().skip(1).step_by(2) {
            assert_eq!(table.get(address), Some(block(address as u64)));
            assert_eq!(table.remove(address), Some(block(address as u64)));
        }
        assert_eq!(home_counts(&table), [0; S]);
    }

    #[test]
    fn a_search_for_an_absent_address_reads_no_entry_in_a_worn_table() {
        const S: usize = 64;
        let table = SampleTable::<S>::new();
        // Blocks come and go until no entry is empty: a long-running
        // program's table, where a search can no longer stop at an empty
        // entry.
        let mut address = 0x10_0010;
        let mut taken = 0;
        while table
            .entries
            .iter()
            .any(|entry| entry.key.load(Ordering::Relaxed) == EMPTY)
        {
            assert!(table.insert(address, block(8)));
            assert_eq!(table.remove(address), Some(block(8)));
            address += 0x1000;
            taken += 1;
        }
        assert!(taken >= S);
        let absent = |k: usize| 0x9000_0010 + k * 0x1000;
        for k in 0..1000 {
            assert_eq!(
                table
                    .find(
                        SampleTable::<S>::home(absent(k)),
                        absent(k),
                        Ordering::Relaxed
                    )
                    .1,
                0
            );
            assert_eq!(table.remove(absent(k)), None);
        }
        // One live block: a search from its home reads entries (at most
        // those within reach), one from any other home reads none.
        let live = 0x20_0010;
        assert!(table.insert(live, block(64)));
        let home = SampleTable::<S>::home(live);
        let mut shared = 0;
        for k in 0..1000 {
            let (found, read) = table.find(
                SampleTable::<S>::home(absent(k)),
                absent(k),
                Ordering::Relaxed,
            );
            assert!(found.is_none());
            if SampleTable::<S>::home(absent(k)) == home {
                assert!((1..=MAX_PROBES).contains(&read));
                shared += 1;
            } else {
                assert_eq!(read, 0);
            }
        }
        assert!(
            shared > 0,
            "some absent address shares the live block's home"
        );
        assert_eq!(table.remove(live), Some(block(64)));
        assert_eq!(home_counts(&table), [0; S]);
    }
}
