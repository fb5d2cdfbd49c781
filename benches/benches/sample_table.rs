//! The table of live sampled blocks, looked up for an address it does not
//! hold: what the sampling form's free costs for a block that only sits at
//! the mark (about one small block in 256, by chance), and for every block
//! of 64 KiB or more. Measured in a fresh table and in one that 300,000
//! samples have passed through, where nearly no entry is empty any more.
//!
//! `cargo bench -p alloc-track-bench --bench sample_table`

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::hint::black_box;
use std::time::Duration;

use alloc_track_core::{Context, Ledger, Mode, Who};
use criterion::Criterion;

/// Every allocation counts in the unknown bucket, which at an interval of
/// one byte samples every allocation.
struct Anyone;

impl Context for Anyone {
    fn who(&self) -> Who {
        Who::Unknown
    }
}

/// A table of as many live samples as the std adapter's.
type SampledLedger = Ledger<Anyone, 1, 1, 1, 1, { alloc_track::SAMPLED_BLOCKS }>;

static FRESH: SampledLedger = Ledger::new(Anyone).with_sampling(1);
static WORN: SampledLedger = Ledger::new(Anyone).with_sampling(1);

/// The samples that wear the table, and those a program keeps live.
const WEAR: usize = 300_000;
const LIVE: usize = 200;

const PAGE: usize = 4096;

const BLOCK: Layout = match Layout::from_size_align(64, 8) {
    Ok(layout) => layout,
    Err(_) => panic!("a valid layout"),
};

/// An allocator of one block a page, from a region of `pages` pages, in
/// turn: a block aligned to at most 16 bytes sits 16 bytes past the page's
/// start (at the mark), one aligned to a page at its start. Its free does
/// nothing, so that the table is all that is measured, and no memory of
/// the region is touched, so that its pages cost address space only.
struct Pages {
    region: usize,
    pages: usize,
    next: Cell<usize>,
}

impl Pages {
    fn new(pages: usize) -> Self {
        let region = vec![0u8; (pages + 1) * PAGE].leak();
        Self {
            region: (region.as_mut_ptr() as usize).next_multiple_of(PAGE),
            pages,
            next: Cell::new(0),
        }
    }
}

// SAFETY: a block lies within one page of the region, aligned as asked
// (16 bytes past a page's start, or at its start for a page's alignment);
// a page is handed out again only after every other page, by which time
// each use below has freed it.
unsafe impl GlobalAlloc for Pages {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let offset = if layout.align() <= 16 { 16 } else { 0 };
        if layout.size() > PAGE - offset || layout.align() > PAGE {
            return std::ptr::null_mut();
        }
        let page = self.next.get();
        self.next.set((page + 1) % self.pages);
        (self.region + page * PAGE + offset) as *mut u8
    }

    unsafe fn dealloc(&self, _ptr: *mut u8, _layout: Layout) {}
}

/// `count` samples taken and freed through `ledger`, each at an address
/// of its own, as a long-running program's are.
fn sample(ledger: &SampledLedger, count: usize) {
    let pages = Pages::new(count);
    for _ in 0..count {
        // SAFETY: the block is freed at once through the sampling form's
        // free, with the same inner allocator and layout.
        unsafe {
            let block = ledger.alloc_sampling(&pages, BLOCK, Mode::Tasks, 0, false);
            assert!(!block.is_null());
            ledger.dealloc_sampling(&pages, block, BLOCK);
        }
    }
}

/// `count` samples taken through `ledger` from `pages`, and kept.
fn keep(ledger: &SampledLedger, pages: &Pages, count: usize) {
    for _ in 0..count {
        // SAFETY: the blocks are kept for the program's life.
        let block = unsafe { ledger.alloc_sampling(pages, BLOCK, Mode::Tasks, 0, false) };
        assert!(!block.is_null());
    }
}

fn main() {
    // Wearing the table: after 300,000 samples at addresses of their own,
    // nearly every entry has been taken and deleted.
    sample(&WORN, WEAR);
    // A program's live samples, in both tables.
    let kept = Pages::new(2 * LIVE);
    keep(&FRESH, &kept, LIVE);
    keep(&WORN, &kept, LIVE);
    // Unsampled blocks at the mark, each freed as soon as it is made.
    let blocks = Pages::new(4096);

    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    let mut group = criterion.benchmark_group("absent-lookup");
    for (name, ledger) in [("fresh-table", &FRESH), ("worn-table", &WORN)] {
        group.bench_function(name, |bencher| {
            bencher.iter(|| {
                // SAFETY: a valid layout; the block is the inner allocator's
                // own, unsampled, freed at once through the sampling form's
                // free with that allocator.
                unsafe {
                    let block = blocks.alloc(BLOCK);
                    ledger.dealloc_maybe_sampled(&blocks, black_box(block), BLOCK);
                }
            })
        });
    }
    group.finish();
    criterion.final_summary();
}
