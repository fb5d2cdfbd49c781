//! The tracker's own heap: where the tracker's allocations (a report's work,
//! the symbols it keeps, everything the endpoint's threads allocate) are
//! made, apart from the program's, on Unix.
//!
//! Two things need it. What a report took goes back to the system when it
//! is freed, whatever allocator the program wraps and whichever thread made
//! the report: glibc, for one, keeps the top of a thread's arena, and once a
//! large block has been freed it keeps even more (its trim threshold grows
//! to twice that block), so a report made on a thread of its own left
//! megabytes behind. And in the sampling form, where the program's blocks
//! carry nothing, a free tells the tracker's block by its address alone, so
//! the tracker's own figures are exact there too.
//!
//! # Layout
//! One reservation of address space, made at the tracker's first allocation
//! (16 GiB, `MAP_NORESERVE`: nothing is committed until touched), in four
//! shards. Each shard has a gigabyte of 64 KiB chunks, each chunk holding
//! blocks of one size class (16 bytes to 32 KiB, four classes to each
//! doubling), and three of spans for larger blocks, a power of two each
//! (64 KiB and up).
//!
//! # Memory goes back
//! A span's pages go back to the system (`MADV_DONTNEED`) when its block is
//! freed. A chunk whose last block is freed is kept aside, up to four a
//! shard, then its pages go back too; [`release`] gives back those kept.
//!
//! # Never waits
//! A shard is changed only under its [`Deferred`] lock, which is only ever
//! tried. An allocation that finds every shard held is the inner
//! allocator's instead, counted there as any of the tracker's (in the
//! sampling form, sampled, and the tracker's row then says it is an
//! estimate); a free that finds its shard held leaves the block on the shard's
//! list for the next holder. After a `fork`, a shard that another thread of
//! the parent held stays held in the child: its frees wait on its list,
//! allocations go to the other shards, nothing blocks.

use std::alloc::Layout;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

/// What the heap holds and has done, in bytes and counts of the callers'
/// layouts (not of the classes that serve them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct OwnHeapFigures {
    pub(crate) allocated_bytes: u64,
    pub(crate) allocations: u64,
    pub(crate) freed_bytes: u64,
    pub(crate) frees: u64,
    /// The most bytes live at once.
    pub(crate) peak_bytes: u64,
}

struct Counters {
    allocated_bytes: AtomicU64,
    allocations: AtomicU64,
    freed_bytes: AtomicU64,
    frees: AtomicU64,
    peak_bytes: AtomicU64,
}

static COUNTERS: Counters = Counters {
    allocated_bytes: AtomicU64::new(0),
    allocations: AtomicU64::new(0),
    freed_bytes: AtomicU64::new(0),
    frees: AtomicU64::new(0),
    peak_bytes: AtomicU64::new(0),
};

/// The heap's figures now.
pub(crate) fn figures() -> OwnHeapFigures {
    // Frees first: read before the allocations they follow, a block is
    // never freed more often than allocated in what is returned.
    let freed_bytes = COUNTERS.freed_bytes.load(Relaxed);
    let frees = COUNTERS.frees.load(Relaxed);
    OwnHeapFigures {
        allocated_bytes: COUNTERS.allocated_bytes.load(Relaxed),
        allocations: COUNTERS.allocations.load(Relaxed),
        freed_bytes,
        frees,
        peak_bytes: COUNTERS.peak_bytes.load(Relaxed),
    }
}

fn count_alloc(size: usize) {
    let size = size as u64;
    COUNTERS.allocations.fetch_add(1, Relaxed);
    let allocated = COUNTERS.allocated_bytes.fetch_add(size, Relaxed) + size;
    let live = allocated.saturating_sub(COUNTERS.freed_bytes.load(Relaxed));
    COUNTERS.peak_bytes.fetch_max(live, Relaxed);
}

/// Counts a block resized in place, from `old` bytes to `new`, as a free and
/// an allocation.
pub(crate) fn count_in_place(old: usize, new: usize) {
    count_free(old);
    count_alloc(new);
}

fn count_free(size: usize) {
    COUNTERS.frees.fetch_add(1, Relaxed);
    COUNTERS.freed_bytes.fetch_add(size as u64, Relaxed);
}

/// The address space the heap takes, all shards together.
const REGION: usize = SHARDS * SHARD_BYTES;
const SHARDS: usize = 4;
const SHARD_BYTES: usize = 4 << 30;
/// The first part of a shard: chunks of small blocks.
const SMALL_BYTES: usize = 1 << 30;
/// A chunk, and the least span; the region is aligned to it, so chunks and
/// spans are page-aligned for any page size up to it.
const CHUNK: usize = 64 << 10;
const CHUNKS: usize = SMALL_BYTES / CHUNK;
/// The largest small block; classes run from 16 bytes to it.
const SMALL_MAX: usize = 32 << 10;
const CLASSES: usize = 40;
const MIN_ORDER: u32 = CHUNK.trailing_zeros();
/// The largest span: the shard's span space, rounded down to a power of two.
const MAX_ORDER: u32 = 31;
const ORDERS: usize = (MAX_ORDER - MIN_ORDER + 1) as usize;
/// Free spans kept for reuse, a shard and an order: beyond them a freed
/// span's address space is let go (its pages went back already).
const KEPT_SPANS: usize = 16;
/// Empty chunks a shard keeps without giving their pages back.
const KEPT_EMPTY: u32 = 4;

/// Where the region starts; until it is reserved, an address no pointer of
/// a program is within `REGION` above (the top of the address space).
static BASE: AtomicUsize = AtomicUsize::new(UNRESERVED);
const UNRESERVED: usize = 0usize.wrapping_sub(REGION);
/// Set when the reservation failed: the heap is not tried again.
static FAILED: AtomicUsize = AtomicUsize::new(0);

/// Whether `pointer` is in the heap's region: a block the heap made.
#[inline(always)]
pub(crate) fn contains(pointer: *const u8) -> bool {
    (pointer as usize).wrapping_sub(BASE.load(Relaxed)) < REGION
}

/// The size class of a small block of `size` bytes (at most [`SMALL_MAX`]):
/// multiples of 16 up to 128, then four classes to each doubling.
const fn class_of(size: usize) -> usize {
    if size <= 128 {
        return (size.saturating_sub(1)) / 16;
    }
    let above = size - 1;
    let log = usize::BITS - 1 - above.leading_zeros();
    8 + (log as usize - 7) * 4 + ((above >> (log - 2)) & 3)
}

/// The block size of class `class`.
const fn class_size(class: usize) -> usize {
    if class < 8 {
        return 16 * (class + 1);
    }
    let base = 128 << ((class - 8) / 4);
    base + ((class - 8) % 4 + 1) * (base / 4)
}

/// What serves a layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Small(usize),
    Span(u32),
}

impl Kind {
    /// A block of `layout`'s size, aligned as it asks: a class whose blocks
    /// are multiples of 16 for the common alignments, a power-of-two class
    /// (whose blocks are aligned to their size in their chunk) for larger
    /// ones; a span above 32 KiB. `None` when no part of the heap can.
    fn of(layout: Layout) -> Option<Kind> {
        let size = layout.size().max(1);
        if layout.align() <= 16 && size <= SMALL_MAX {
            return Some(Kind::Small(class_of(size)));
        }
        if layout.align() > CHUNK {
            return None;
        }
        let need = size.max(layout.align()).checked_next_power_of_two()?;
        if need <= SMALL_MAX {
            return Some(Kind::Small(class_of(need)));
        }
        let order = need.trailing_zeros().max(MIN_ORDER);
        (order <= MAX_ORDER).then_some(Kind::Span(order))
    }
}

#[cfg(unix)]
mod shard;

#[cfg(unix)]
pub(crate) use shard::{alloc, free, release};

/// Without `mmap`, the heap has no region: every allocation falls back to
/// the inner allocator, and [`contains`] is false for every block.
#[cfg(not(unix))]
pub(crate) fn alloc(_layout: Layout, _zeroed: bool) -> Option<*mut u8> {
    None
}

/// Never reached without a region (see [`contains`]).
///
/// # Safety
/// As for the Unix heap's `free`.
#[cfg(not(unix))]
pub(crate) unsafe fn free(_pointer: *mut u8, _layout: Layout) {}

#[cfg(not(unix))]
pub(crate) fn release() {}

/// Whether a block of the heap made for `layout` holds `new_size` bytes as
/// it is, at the same place: the same class or span.
pub(crate) fn fits_in_place(layout: Layout, new_size: usize) -> bool {
    match Layout::from_size_align(new_size, layout.align()) {
        Ok(new) => Kind::of(layout) == Kind::of(new),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    fn pattern(block: *mut u8, size: usize, seed: u8) {
        for at in 0..size {
            // SAFETY: a live block of at least `size` bytes.
            unsafe { block.add(at).write(seed.wrapping_add(at as u8)) };
        }
    }

    #[cfg(unix)]
    fn intact(block: *const u8, size: usize, seed: u8) -> bool {
        // SAFETY: a live block of at least `size` bytes.
        (0..size).all(|at| unsafe { block.add(at).read() } == seed.wrapping_add(at as u8))
    }

    /// Whether the page holding `at` is resident, by `mincore`.
    #[cfg(target_os = "linux")]
    fn resident(at: usize) -> bool {
        let page = at & !4095;
        let mut vector = 0u8;
        // SAFETY: one page of the heap's own mapping; `vector` holds its
        // one byte of answer.
        let answer = unsafe { libc::mincore(page as *mut libc::c_void, 4096, &mut vector) };
        assert_eq!(answer, 0);
        vector & 1 == 1
    }

    #[cfg(unix)]
    #[test]
    fn blocks_are_apart_aligned_and_counted() {
        let before = figures();
        let layouts: Vec<Layout> = (0..3000)
            .map(|k| {
                let size = [1, 8, 24, 100, 129, 1000, 5000, 20_000, 40_000, 300_000][k % 10];
                let align = [1, 8, 16, 64, 4096][k % 5];
                Layout::from_size_align(size + k % 7, align).unwrap()
            })
            .collect();
        let blocks: Vec<*mut u8> = layouts
            .iter()
            .enumerate()
            .map(|(k, layout)| {
                let block = alloc(*layout, k % 3 == 0).expect("the heap serves it");
                assert!(contains(block));
                assert_eq!(block as usize % layout.align(), 0, "{layout:?}");
                if k % 3 == 0 {
                    // SAFETY: a live block of `layout.size()` bytes.
                    let zeroed = unsafe { std::slice::from_raw_parts(block, layout.size()) };
                    assert!(zeroed.iter().all(|&byte| byte == 0), "{layout:?}");
                }
                pattern(block, layout.size(), k as u8);
                block
            })
            .collect();
        for (k, (block, layout)) in blocks.iter().zip(&layouts).enumerate() {
            assert!(
                intact(*block, layout.size(), k as u8),
                "block {k}, {layout:?}"
            );
        }
        let during = figures();
        let bytes: u64 = layouts.iter().map(|layout| layout.size() as u64).sum();
        assert!(during.allocated_bytes - before.allocated_bytes >= bytes);
        for (block, layout) in blocks.into_iter().zip(layouts) {
            // SAFETY: made above for `layout`, freed once.
            unsafe { free(block, layout) };
        }
        let after = figures();
        assert!(after.freed_bytes - before.freed_bytes >= bytes);
        assert!(!contains(std::ptr::null()));
        assert!(!contains(&before as *const OwnHeapFigures as *const u8));
    }

    /// Blocks made on some threads and freed on others while the shards
    /// are busy: every block keeps its bytes until freed, none is handed
    /// out twice.
    #[cfg(unix)]
    #[test]
    fn frees_from_other_threads_while_the_shards_are_busy() {
        let (send, receive) = std::sync::mpsc::channel::<Vec<(usize, usize, u8)>>();
        let makers: Vec<_> = (0..4u8)
            .map(|thread| {
                let send = send.clone();
                std::thread::spawn(move || {
                    for round in 0..50u8 {
                        let seed = thread.wrapping_mul(50).wrapping_add(round);
                        let batch: Vec<(usize, usize, u8)> = (0..100)
                            .map(|k| {
                                let size = 16 + (k * 37 + round as usize) % 3000;
                                let layout = Layout::from_size_align(size, 8).unwrap();
                                let block = alloc(layout, false).expect("served") as usize;
                                pattern(block as *mut u8, size, seed);
                                (block, size, seed)
                            })
                            .collect();
                        send.send(batch).unwrap();
                    }
                })
            })
            .collect();
        drop(send);
        let freer = std::thread::spawn(move || {
            let mut live = std::collections::HashSet::new();
            for batch in receive {
                for &(block, _, _) in &batch {
                    assert!(live.insert(block), "{block:#x} handed out twice");
                }
                for (block, size, seed) in batch {
                    assert!(intact(block as *const u8, size, seed));
                    live.remove(&block);
                    let layout = Layout::from_size_align(size, 8).unwrap();
                    // SAFETY: made by a maker for `layout`, freed once.
                    unsafe { free(block as *mut u8, layout) };
                }
            }
        });
        for maker in makers {
            maker.join().unwrap();
        }
        freer.join().unwrap();
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn freed_memory_goes_back_to_the_system() {
        // A span: its pages go as it is freed.
        let layout = Layout::from_size_align(1 << 20, 8).unwrap();
        let span = alloc(layout, false).unwrap();
        pattern(span, layout.size(), 1);
        assert!(resident(span as usize + (512 << 10)));
        // SAFETY: made above for `layout`.
        unsafe { free(span, layout) };
        assert!(!resident(span as usize + (512 << 10)));

        // Chunks of a class: theirs go when they are empty and released.
        let layout = Layout::from_size_align(2000, 8).unwrap();
        let blocks: Vec<*mut u8> = (0..20 * CHUNK / 2048)
            .map(|_| {
                let block = alloc(layout, false).unwrap();
                pattern(block, layout.size(), 2);
                block
            })
            .collect();
        assert!(blocks.iter().all(|&block| resident(block as usize)));
        for &block in &blocks {
            // SAFETY: made above for `layout`, freed once.
            unsafe { free(block, layout) };
        }
        release();
        let kept = blocks
            .iter()
            .filter(|&&block| resident(block as usize))
            .count();
        // Another test's blocks may share a chunk with these, and a shard
        // another test holds is left as it is: most pages went back.
        assert!(
            kept * 4 < blocks.len(),
            "{kept} of {} resident",
            blocks.len()
        );
    }

    #[test]
    fn every_size_finds_the_smallest_class_that_holds_it() {
        let mut previous = 0;
        for class in 0..CLASSES {
            let size = class_size(class);
            assert!(size > previous, "class {class}");
            assert_eq!(size % 16, 0, "class {class} of {size} bytes");
            assert_eq!(class_of(size), class);
            assert_eq!(class_of(previous + 1), class, "{} bytes", previous + 1);
            previous = size;
        }
        assert_eq!(class_size(CLASSES - 1), SMALL_MAX);
        assert_eq!(class_of(1), 0);
    }

    #[test]
    fn aligned_layouts_take_power_of_two_classes_or_spans() {
        let kind = |size, align| Kind::of(Layout::from_size_align(size, align).unwrap());
        assert_eq!(kind(24, 8), Some(Kind::Small(1)));
        assert_eq!(kind(24, 64), Some(Kind::Small(class_of(64))));
        assert_eq!(class_size(class_of(64)), 64);
        assert_eq!(kind(5000, 4096), Some(Kind::Small(class_of(8192))));
        assert_eq!(kind(SMALL_MAX + 1, 8), Some(Kind::Span(MIN_ORDER)));
        assert_eq!(kind(100 << 10, 8), Some(Kind::Span(17)));
        assert_eq!(kind(16, 1 << 17), None);
        assert_eq!(kind(3 << 30, 8), None);
        assert!(fits_in_place(Layout::from_size_align(100, 8).unwrap(), 110));
        assert!(!fits_in_place(
            Layout::from_size_align(100, 8).unwrap(),
            200
        ));
    }
}
