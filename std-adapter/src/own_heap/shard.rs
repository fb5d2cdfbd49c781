//! The heap's shards on Unix: the region reserved with `mmap`, each shard's
//! chunks and spans, changed only under the shard's lock.

use std::alloc::Layout;
use std::cell::{Cell, UnsafeCell};
use std::sync::atomic::{AtomicUsize, Ordering::AcqRel, Ordering::Acquire, Ordering::Relaxed};

use alloc_track_core::raw::Deferred;

use super::{
    class_size, count_alloc, count_free, Kind, BASE, CHUNK, CHUNKS, CLASSES, FAILED, KEPT_EMPTY,
    KEPT_SPANS, MIN_ORDER, ORDERS, REGION, SHARDS, SHARD_BYTES, SMALL_BYTES, UNRESERVED,
};

/// One shard: its lock, and what it changes.
struct Shard {
    lock: Deferred,
    state: UnsafeCell<ShardState>,
}

// SAFETY: `state` is only reached by the thread that holds `lock` (every
// access below is inside a `try_hold`), so it is never shared.
unsafe impl Sync for Shard {}

static SHARD: [Shard; SHARDS] = [const {
    Shard {
        lock: Deferred::new(),
        state: UnsafeCell::new(ShardState::new()),
    }
}; SHARDS];

/// A chunk's bookkeeping, kept apart from it (so that a chunk whose pages
/// went back keeps none). Indices are stored plus one: zero is none, and a
/// shard's state starts all zeros.
#[derive(Clone, Copy)]
struct ChunkInfo {
    class: u8,
    /// Blocks handed out and not freed.
    live: u16,
    /// Blocks carved from the chunk so far, from its start.
    carved: u16,
    /// The first free block (plus one); each free block's first two bytes
    /// hold the next one's.
    free: u16,
    /// Neighbours in the class's list of chunks with a free block, or the
    /// next chunk in the empty or released list.
    prev: u32,
    next: u32,
}

impl ChunkInfo {
    const NONE: ChunkInfo = ChunkInfo {
        class: 0,
        live: 0,
        carved: 0,
        free: 0,
        prev: 0,
        next: 0,
    };
}

struct ShardState {
    /// Chunks carved from the shard's small part so far.
    carved: u32,
    /// Chunks whose pages went back, linked through `next`.
    released: u32,
    /// Empty chunks whose pages are kept, linked through `next`.
    empty: u32,
    empty_len: u32,
    /// For each class, its chunks with a free block.
    available: [u32; CLASSES],
    info: [ChunkInfo; CHUNKS],
    /// Bytes of the span part used so far.
    span_top: usize,
    /// Free spans by order, in chunks from the span part's start.
    spans: [[u32; KEPT_SPANS]; ORDERS],
    spans_len: [u8; ORDERS],
}

impl ShardState {
    const fn new() -> Self {
        Self {
            carved: 0,
            released: 0,
            empty: 0,
            empty_len: 0,
            available: [0; CLASSES],
            info: [ChunkInfo::NONE; CHUNKS],
            span_top: 0,
            spans: [[0; KEPT_SPANS]; ORDERS],
            spans_len: [0; ORDERS],
        }
    }

    /// A block of `kind`, as its offset in the shard at `base`.
    fn alloc(&mut self, kind: Kind, base: usize) -> Option<usize> {
        match kind {
            Kind::Small(class) => self.alloc_small(class, base),
            Kind::Span(order) => self.alloc_span(order),
        }
    }

    fn alloc_small(&mut self, class: usize, base: usize) -> Option<usize> {
        let chunk = match self.available[class] {
            0 => self.new_chunk(class)?,
            head => head as usize - 1,
        };
        let size = class_size(class);
        let per_chunk = CHUNK / size;
        let info = &mut self.info[chunk];
        let block = if info.free != 0 {
            let block = info.free as usize - 1;
            // SAFETY: a free block of this chunk, inside the region's
            // mapping, whose first two bytes hold the next free block's
            // index; blocks are at least 16 bytes and aligned to 16.
            info.free = unsafe { ((base + chunk * CHUNK + block * size) as *const u16).read() };
            block
        } else {
            info.carved += 1;
            info.carved as usize - 1
        };
        info.live += 1;
        if info.free == 0 && info.carved as usize == per_chunk {
            self.unlink(class, chunk);
        }
        Some(chunk * CHUNK + block * size)
    }

    /// A chunk for `class`, in its list: an empty one kept, one whose
    /// pages went back, or a new one.
    fn new_chunk(&mut self, class: usize) -> Option<usize> {
        let chunk = if self.empty != 0 {
            let chunk = self.empty as usize - 1;
            self.empty = self.info[chunk].next;
            self.empty_len -= 1;
            chunk
        } else if self.released != 0 {
            let chunk = self.released as usize - 1;
            self.released = self.info[chunk].next;
            chunk
        } else if (self.carved as usize) < CHUNKS {
            self.carved += 1;
            self.carved as usize - 1
        } else {
            return None;
        };
        self.info[chunk] = ChunkInfo {
            class: class as u8,
            ..ChunkInfo::NONE
        };
        self.link(class, chunk);
        Some(chunk)
    }

    fn link(&mut self, class: usize, chunk: usize) {
        let head = self.available[class];
        self.info[chunk].prev = 0;
        self.info[chunk].next = head;
        if head != 0 {
            self.info[head as usize - 1].prev = chunk as u32 + 1;
        }
        self.available[class] = chunk as u32 + 1;
    }

    fn unlink(&mut self, class: usize, chunk: usize) {
        let ChunkInfo { prev, next, .. } = self.info[chunk];
        match prev {
            0 => self.available[class] = next,
            prev => self.info[prev as usize - 1].next = next,
        }
        if next != 0 {
            self.info[next as usize - 1].prev = prev;
        }
    }

    /// Frees the block at `offset` in the shard at `base`: `order` is its
    /// span's when it is one (the block's offset says which).
    fn free(&mut self, offset: usize, order: u32, base: usize) {
        if offset >= SMALL_BYTES {
            self.free_span(offset, order, base);
            return;
        }
        let chunk = offset / CHUNK;
        let class = self.info[chunk].class as usize;
        let size = class_size(class);
        let per_chunk = CHUNK / size;
        let block = offset % CHUNK / size;
        let info = &mut self.info[chunk];
        let was_full = info.free == 0 && info.carved as usize == per_chunk;
        // SAFETY: the block being freed, inside the region's mapping: its
        // first two bytes are the heap's again.
        unsafe { ((base + offset) as *mut u16).write(info.free) };
        info.free = block as u16 + 1;
        info.live -= 1;
        let empty = info.live == 0;
        if was_full {
            self.link(class, chunk);
        }
        if empty {
            self.unlink(class, chunk);
            if self.empty_len < KEPT_EMPTY {
                self.info[chunk].next = self.empty;
                self.empty = chunk as u32 + 1;
                self.empty_len += 1;
            } else {
                self.release_chunk(chunk, base);
            }
        }
    }

    fn release_chunk(&mut self, chunk: usize, base: usize) {
        give_back(base + chunk * CHUNK, CHUNK);
        self.info[chunk].next = self.released;
        self.released = chunk as u32 + 1;
    }

    /// Gives back the pages of every empty chunk kept.
    fn release_empty(&mut self, base: usize) {
        while self.empty != 0 {
            let chunk = self.empty as usize - 1;
            self.empty = self.info[chunk].next;
            self.release_chunk(chunk, base);
        }
        self.empty_len = 0;
    }

    fn alloc_span(&mut self, order: u32) -> Option<usize> {
        let index = (order - MIN_ORDER) as usize;
        if self.spans_len[index] > 0 {
            self.spans_len[index] -= 1;
            let at = self.spans[index][self.spans_len[index] as usize] as usize;
            return Some(SMALL_BYTES + at * CHUNK);
        }
        let size = 1usize << order;
        if self.span_top + size > SHARD_BYTES - SMALL_BYTES {
            return None;
        }
        let at = SMALL_BYTES + self.span_top;
        self.span_top += size;
        Some(at)
    }

    /// A span's pages go back at once; its place is kept for the next
    /// span of its order, while there is room to keep it.
    fn free_span(&mut self, offset: usize, order: u32, base: usize) {
        give_back(base + offset, 1 << order);
        let index = (order - MIN_ORDER) as usize;
        let kept = self.spans_len[index] as usize;
        if kept < KEPT_SPANS {
            self.spans[index][kept] = ((offset - SMALL_BYTES) / CHUNK) as u32;
            self.spans_len[index] += 1;
        }
    }

    /// Frees the blocks other threads left on the list whose first is
    /// `first` (see [`free`]).
    fn settle(&mut self, mut first: usize, base: usize) {
        while first != 0 {
            // SAFETY: a block left on the list by `free`, which wrote its
            // successor in its first word and, for a span, its order in
            // the second; the take that returned the list acquired both.
            let (next, order) = unsafe {
                let words = first as *const usize;
                (words.read(), words.add(1).read() as u32)
            };
            self.free(first - base, order, base);
            first = next;
        }
    }
}

/// Gives the pages of `length` bytes at `at` (page-aligned, in the region)
/// back to the system; they read as zeros when touched again.
fn give_back(at: usize, length: usize) {
    // SAFETY: a range inside the heap's own private anonymous mapping,
    // whose blocks are all free (the caller holds the shard): dropping its
    // pages loses nothing anyone reads.
    unsafe {
        libc::madvise(at as *mut libc::c_void, length, libc::MADV_DONTNEED);
    }
}

/// The region's start, reserving it at the first call.
#[inline]
fn region() -> Option<usize> {
    match BASE.load(Acquire) {
        UNRESERVED if FAILED.load(Relaxed) != 0 => None,
        UNRESERVED => reserve(),
        base => Some(base),
    }
}

#[cold]
#[inline(never)]
fn reserve() -> Option<usize> {
    // SAFETY: a new private anonymous mapping, which touches no memory of
    // anyone's; `MAP_NORESERVE` commits nothing until a page is touched.
    let mapped = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            REGION + CHUNK,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if mapped == libc::MAP_FAILED {
        FAILED.store(1, Relaxed);
        return None;
    }
    let base = (mapped as usize).next_multiple_of(CHUNK);
    match BASE.compare_exchange(UNRESERVED, base, AcqRel, Acquire) {
        Ok(_) => Some(base),
        Err(won) => {
            // SAFETY: the mapping made above, which no one else has seen.
            unsafe { libc::munmap(mapped, REGION + CHUNK) };
            Some(won)
        }
    }
}

thread_local! {
    /// The shard this thread tries first, spread over the threads.
    static FIRST: Cell<usize> = const { Cell::new(usize::MAX) };
}

static NEXT_FIRST: AtomicUsize = AtomicUsize::new(0);

fn first_shard() -> usize {
    FIRST
        .try_with(|first| {
            if first.get() == usize::MAX {
                first.set(NEXT_FIRST.fetch_add(1, Relaxed) % SHARDS);
            }
            first.get()
        })
        .unwrap_or(0)
}

/// A block of `layout` from the heap (zeroed if `zeroed`), counted; `None`
/// when the heap cannot serve it (every shard held, its space used up, an
/// alignment beyond 64 KiB, no reservation), for the caller to take from
/// the inner allocator.
pub(crate) fn alloc(layout: Layout, zeroed: bool) -> Option<*mut u8> {
    let made = Kind::of(layout).and_then(|kind| {
        let base = region()?;
        let first = first_shard();
        (0..SHARDS).find_map(|step| {
            let index = (first + step) % SHARDS;
            let shard = &SHARD[index];
            let held = shard.lock.try_hold()?;
            let shard_base = base + index * SHARD_BYTES;
            // SAFETY: held (see `Shard`).
            let state = unsafe { &mut *shard.state.get() };
            state.settle(held.take(), shard_base);
            let offset = state.alloc(kind, shard_base)?;
            let block = (shard_base + offset) as *mut u8;
            if zeroed && matches!(kind, Kind::Small(_)) {
                // SAFETY: the block just taken, at least `layout.size()`
                // bytes inside the mapping. (A span's pages are fresh or
                // were given back, so they read as zeros already.)
                unsafe { block.write_bytes(0, layout.size()) };
            }
            Some(block)
        })
    });
    if made.is_some() {
        count_alloc(layout.size());
    }
    made
}

/// Frees `pointer`, a block the heap made for `layout`, counted at once; its
/// memory is the shard's again now, or when the shard's holder takes it.
///
/// # Safety
/// `pointer` was returned by [`alloc`] for `layout` and is not freed yet.
pub(crate) unsafe fn free(pointer: *mut u8, layout: Layout) {
    count_free(layout.size());
    let base = BASE.load(Relaxed);
    let offset = pointer as usize - base;
    let index = offset / SHARD_BYTES;
    let shard_base = base + index * SHARD_BYTES;
    let order = match Kind::of(layout) {
        Some(Kind::Span(order)) => order,
        _ => 0,
    };
    let shard = &SHARD[index];
    if let Some(held) = shard.lock.try_hold() {
        // SAFETY: held (see `Shard`).
        let state = unsafe { &mut *shard.state.get() };
        state.settle(held.take(), shard_base);
        state.free(offset - index * SHARD_BYTES, order, shard_base);
        return;
    }
    let words = pointer.cast::<usize>();
    // SAFETY: the caller's block, of at least 16 bytes aligned to 16, is the
    // heap's again: its first two words carry the list's link and its order
    // to the holder that frees it.
    unsafe { words.add(1).write(order as usize) };
    shard.lock.defer(pointer as usize, |next| {
        // SAFETY: as above.
        unsafe { words.write(next) }
    });
}

/// Frees what other threads left on the shards' lists, and gives back the
/// pages of every empty chunk kept: for the end of a report. A shard that is
/// held meanwhile is left as it is.
pub(crate) fn release() {
    let base = BASE.load(Acquire);
    if base == UNRESERVED {
        return;
    }
    for (index, shard) in SHARD.iter().enumerate() {
        if let Some(held) = shard.lock.try_hold() {
            let shard_base = base + index * SHARD_BYTES;
            // SAFETY: held (see `Shard`).
            let state = unsafe { &mut *shard.state.get() };
            state.settle(held.take(), shard_base);
            state.release_empty(shard_base);
        }
    }
}
