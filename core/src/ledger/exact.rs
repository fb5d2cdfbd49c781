//! The exact form's paths: every block carries a header that names the
//! task and callsite it is counted on.

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
    /// [`alloc`](Self::alloc) in the exact form, for an adapter that
    /// chooses its path once, when the form is fixed: with `mode` a
    /// constant, nothing of the other modes is left in the caller.
    ///
    /// Its figures are the ledger's in the exact form
    /// ([`sampling`](Self::sampling) is `None`); an adapter that meets a
    /// ledger of the other form passes [`Mode::Off`], which records nothing.
    ///
    /// # Safety
    /// - The duties of `GlobalAlloc::alloc` for `layout`.
    /// - The block is reallocated and freed only through the exact form's
    ///   paths ([`realloc_exact`](Self::realloc_exact),
    ///   [`dealloc_exact`](Self::dealloc_exact)) with the same `inner`.
    #[inline(always)]
    pub unsafe fn alloc_exact<A: GlobalAlloc>(
        &self,
        inner: &A,
        layout: Layout,
        mode: Mode,
        frame_pointer: usize,
        zeroed: bool,
    ) -> *mut u8 {
        if mode == Mode::Off {
            // SAFETY: forwarded from our caller.
            return unsafe { self.alloc_untracked(inner, layout, zeroed) };
        }
        let Some(placement) = Placement::of(layout) else {
            return null_mut();
        };
        // Written out rather than through `placed`: through its closure the
        // callsite path compiled to 32 more instructions per alloc+free.
        // SAFETY: `placement.inner` has a non-zero size (it includes the
        // header), which is all `GlobalAlloc::alloc` asks.
        let base = unsafe { inner_alloc(inner, placement.inner, zeroed) };
        if base.is_null() {
            return null_mut();
        }
        let header = self.header_for(layout.size(), frame_pointer, mode, self.caller());
        // SAFETY: `base` is a live block of `placement.inner`.
        unsafe { placement.write_header(base, header) };
        // SAFETY: `user_offset + layout.size() <= placement.inner.size()`,
        // so the caller's block lies inside the inner one.
        unsafe { base.add(placement.user_offset) }
    }

    /// [`alloc_exact`](Self::alloc_exact) while tracking is off: the block
    /// and its untracked header. The 8-byte prefix is placed here and
    /// larger alignments out of line, so that the common case keeps few
    /// values across the inner call.
    ///
    /// # Safety
    /// - As for [`alloc_exact`](Self::alloc_exact).
    #[inline(always)]
    unsafe fn alloc_untracked<A: GlobalAlloc>(
        &self,
        inner: &A,
        layout: Layout,
        zeroed: bool,
    ) -> *mut u8 {
        match Placement::prefixed(layout) {
            // SAFETY: forwarded from our caller; the placement is the
            // layout's.
            Some(placement) => unsafe { placed(inner, placement, zeroed, || Header::UNTRACKED) },
            // SAFETY: forwarded from our caller.
            None => unsafe { untracked_out_of_line(inner, layout, zeroed) },
        }
    }

    /// [`alloc_exact`](Self::alloc_exact) in tasks mode by a task that
    /// holds a row, which the context's ticket names: the counters reached
    /// and the header written without the ticket decoded or the header
    /// made. For an adapter that keeps the row beside the ticket (see
    /// [`own_row`](Self::own_row)).
    ///
    /// `row` gives that row, and is asked after the inner allocator made
    /// the block, so that nothing of it is kept across the inner call (in
    /// registers the caller would have to save). Should it give none then,
    /// the block is counted by the context's ticket, as
    /// [`alloc_exact`](Self::alloc_exact) counts it.
    ///
    /// # Safety
    /// - As for [`alloc_exact`](Self::alloc_exact).
    #[inline(always)]
    pub unsafe fn alloc_exact_on_row<'r, A: GlobalAlloc>(
        &self,
        inner: &A,
        layout: Layout,
        row: impl FnOnce() -> Option<OwnRow<'r>>,
        zeroed: bool,
    ) -> *mut u8 {
        // Only the 8-byte prefix is placed here, so that this function keeps
        // few values across the inner call; larger alignments take the
        // general path (the caller's ticket names the same row).
        let Some(placement) = Placement::prefixed(layout) else {
            // SAFETY: forwarded from our caller.
            return unsafe { self.alloc_exact_out_of_line(inner, layout, zeroed) };
        };
        // SAFETY: forwarded from our caller; the placement is the layout's.
        unsafe {
            placed(inner, placement, zeroed, || match row() {
                Some(row) => {
                    let amount = Amount::block(layout.size() as u64);
                    row.record_alloc(amount);
                    self.record_global_alloc(amount);
                    row.header()
                }
                None => self.header_by_ticket(layout.size()),
            })
        }
    }

    /// The header of a new block of `size` bytes in tasks mode, counted by
    /// the context's ticket: for [`alloc_exact_on_row`](Self::alloc_exact_on_row)
    /// when the row is gone.
    #[cold]
    #[inline(never)]
    fn header_by_ticket(&self, size: usize) -> Header {
        self.header_for(size, 0, Mode::Tasks, self.caller())
    }

    /// [`alloc_exact`](Self::alloc_exact) in callsites mode by the task that
    /// holds `row`, which the context's ticket names: the stack captured
    /// from `frame_pointer` as there, and the block counted on `row` and
    /// the callsite row without the ticket decoded or the task row looked
    /// up. For an adapter that keeps the row beside the ticket (see
    /// [`own_row`](Self::own_row)).
    ///
    /// # Safety
    /// - As for [`alloc_exact`](Self::alloc_exact).
    #[inline(always)]
    pub unsafe fn alloc_callsites_on_row<A: GlobalAlloc>(
        &self,
        inner: &A,
        layout: Layout,
        row: OwnRow<'_>,
        frame_pointer: usize,
        zeroed: bool,
    ) -> *mut u8 {
        // Larger alignments take the general path, as in
        // `alloc_exact_on_row`; the walk starts at the same frame pointer.
        let Some(placement) = Placement::prefixed(layout) else {
            // SAFETY: forwarded from our caller.
            return unsafe {
                self.alloc_callsites_out_of_line(inner, layout, frame_pointer, zeroed)
            };
        };
        // Written out rather than through `placed`, as in `alloc_exact`.
        // SAFETY: `placement.inner` has a non-zero size (it includes the
        // header), which is all `GlobalAlloc::alloc` asks.
        let base = unsafe { inner_alloc(inner, placement.inner, zeroed) };
        if base.is_null() {
            return null_mut();
        }
        let site = self.capture_site(frame_pointer);
        let amount = Amount::block(layout.size() as u64);
        let ticket = row.ticket();
        row.record_alloc(amount);
        // The uncaptured site is no row and no bucket: nothing is counted
        // there, so it needs no test of its own.
        self.record_site_alloc(ticket, site, amount);
        self.record_global_alloc(amount);
        // SAFETY: `base` is a live block of `placement.inner`, and the
        // caller's bytes lie inside it from `user_offset` (`user_offset +
        // size <= placement.inner.size()`).
        unsafe {
            placement.write_header(base, Header::new(ticket, site));
            base.add(placement.user_offset)
        }
    }

    /// [`alloc_exact`](Self::alloc_exact) in callsites mode, out of line.
    ///
    /// # Safety
    /// - As for [`alloc_exact`](Self::alloc_exact).
    #[inline(never)]
    unsafe fn alloc_callsites_out_of_line<A: GlobalAlloc>(
        &self,
        inner: &A,
        layout: Layout,
        frame_pointer: usize,
        zeroed: bool,
    ) -> *mut u8 {
        // SAFETY: forwarded from our caller.
        unsafe {
            self.alloc_exact(
                inner,
                layout,
                Mode::TasksAndCallsites,
                frame_pointer,
                zeroed,
            )
        }
    }

    /// [`alloc_exact`](Self::alloc_exact) in tasks mode, out of line.
    ///
    /// # Safety
    /// - As for [`alloc_exact`](Self::alloc_exact).
    #[inline(never)]
    unsafe fn alloc_exact_out_of_line<A: GlobalAlloc>(
        &self,
        inner: &A,
        layout: Layout,
        zeroed: bool,
    ) -> *mut u8 {
        // SAFETY: forwarded from our caller.
        unsafe { self.alloc_exact(inner, layout, Mode::Tasks, 0, zeroed) }
    }

    /// [`dealloc`](Self::dealloc) in the exact form, for an adapter that
    /// knows the form, as for [`alloc_exact`](Self::alloc_exact); the
    /// layout in its parts.
    ///
    /// # Safety
    /// - As for [`dealloc`](Self::dealloc), with the layout of `size` and
    ///   `align`, for a block of the exact form's paths (see
    ///   [`alloc_exact`](Self::alloc_exact)).
    #[inline(always)]
    pub unsafe fn dealloc_exact<A: GlobalAlloc>(
        &self,
        inner: &A,
        ptr: *mut u8,
        size: usize,
        align: usize,
    ) {
        // SAFETY: forwarded from our caller.
        unsafe { self.dealloc_exact_by::<A, false>(inner, ptr, size, align, None) }
    }

    /// [`dealloc_exact`](Self::dealloc_exact) by a task that may hold
    /// `row`, which the context's ticket names: a block that task
    /// allocated in tasks mode is known by its header alone (the header
    /// the row keeps), and counted without the header decoded or the
    /// ticket read. Every other counted free is made out of line.
    ///
    /// # Safety
    /// - As for [`dealloc_exact`](Self::dealloc_exact).
    #[inline(always)]
    pub unsafe fn dealloc_exact_on_row<A: GlobalAlloc>(
        &self,
        inner: &A,
        ptr: *mut u8,
        size: usize,
        align: usize,
        row: Option<OwnRow<'_>>,
    ) {
        // SAFETY: forwarded from our caller.
        unsafe { self.dealloc_exact_by::<A, true>(inner, ptr, size, align, row) }
    }

    /// The exact form's free; with `ROW_KEPT`, for a caller that may keep
    /// its row, whose common case is then the row's own header and all
    /// else out of line.
    ///
    /// # Safety
    /// - As for [`dealloc_exact`](Self::dealloc_exact).
    #[inline(always)]
    unsafe fn dealloc_exact_by<A: GlobalAlloc, const ROW_KEPT: bool>(
        &self,
        inner: &A,
        ptr: *mut u8,
        size: usize,
        align: usize,
        row: Option<OwnRow<'_>>,
    ) {
        // SAFETY: forwarded from our caller.
        let (placement, base, header) = unsafe { exact_block(ptr, size, align) };
        // Counted before the memory goes back, so a block that reuses it at
        // once is never live twice in the global figure. Blocks that were
        // never counted do not even ask who is freeing (nor is their header
        // decoded: an untracked one is a constant). A free by the block's
        // own task is counted here: known by its header alone when the
        // task's row is at hand and the block carries no callsite, else by
        // the decoded header and the ticket. Any other, out of line, so
        // that the common path ends in a jump to the inner free.
        if header == Header::UNTRACKED {
            // SAFETY: `base` was allocated by the inner allocator with
            // exactly `placement.inner`.
            return unsafe { inner.dealloc(base, placement.inner) };
        }
        // The row first, then its header: tested the other way round, the
        // compiler selects the row by the comparison and tests it twice.
        if let Some(row) = row {
            if row.header() == header {
                let amount = Amount::block(size as u64);
                row.record_free(amount);
                self.record_global_free(amount);
                // SAFETY: as above.
                return unsafe { inner.dealloc(base, placement.inner) };
            }
        }
        if ROW_KEPT {
            // The row goes as its header alone (the untracked one for none),
            // so that the call has few enough arguments to be a jump.
            let kept = row.map_or(Header::UNTRACKED, |row| row.header());
            // SAFETY: forwarded from our caller.
            unsafe { self.dealloc_by_header(inner, ptr, size, align, kept) }
        } else {
            // SAFETY: as above.
            unsafe { self.dealloc_decoding(inner, base, placement.inner, header, size) }
        }
    }

    /// The exact form's free of a counted block whose header is not the
    /// kept row's, out of line: first the task's own block with a callsite,
    /// counted on the row and the callsite with nothing looked up again,
    /// else [`dealloc_decoding`](Self::dealloc_decoding). `kept` is the
    /// header of the freeing task's kept row, which names that row; the
    /// untracked header when it keeps none.
    ///
    /// # Safety
    /// - As for [`dealloc_exact`](Self::dealloc_exact), for a block whose
    ///   header is neither the untracked one nor `kept`.
    /// - `kept` is the header of an [`OwnRow`] the calling task holds, or
    ///   [`Header::UNTRACKED`].
    #[inline(never)]
    unsafe fn dealloc_by_header<A: GlobalAlloc>(
        &self,
        inner: &A,
        ptr: *mut u8,
        size: usize,
        align: usize,
        kept: Header,
    ) {
        // SAFETY: forwarded from our caller.
        let (placement, base, header) = unsafe { exact_block(ptr, size, align) };
        // The untracked header names no row (its index is past every row).
        if let Some(row) = self.tasks.own_row(kept.ticket(), kept) {
            if let Some(site) = header.site_if_task_of(kept) {
                let amount = Amount::block(size as u64);
                row.record_free(amount);
                self.record_site_free(site, amount, row.ticket());
                // SAFETY: `base` was allocated by the inner allocator with
                // exactly `placement.inner`.
                return unsafe { inner.dealloc(base, placement.inner) };
            }
        }
        // SAFETY: as above.
        unsafe { self.dealloc_decoding_out_of_line(inner, base, placement.inner, header, size) }
    }

    /// [`dealloc_decoding`](Self::dealloc_decoding), out of line: reached by
    /// a jump, so that [`dealloc_by_header`](Self::dealloc_by_header) keeps
    /// no registers for it.
    ///
    /// # Safety
    /// - As for [`dealloc_decoding`](Self::dealloc_decoding).
    #[inline(never)]
    unsafe fn dealloc_decoding_out_of_line<A: GlobalAlloc>(
        &self,
        inner: &A,
        base: *mut u8,
        inner_layout: Layout,
        header: Header,
        size: usize,
    ) {
        // SAFETY: forwarded from our caller.
        unsafe { self.dealloc_decoding(inner, base, inner_layout, header, size) }
    }

    /// The free of a counted block by its header, decoded: counted here if
    /// its own task frees it, else out of line; then the inner free.
    ///
    /// # Safety
    /// - `base` is a live inner block of `inner_layout`, allocated through
    ///   `inner`, whose header is `header`.
    #[inline(always)]
    unsafe fn dealloc_decoding<A: GlobalAlloc>(
        &self,
        inner: &A,
        base: *mut u8,
        inner_layout: Layout,
        header: Header,
        size: usize,
    ) {
        let decoded = header.decode();
        if self.free_own(decoded, size as u64) {
            // SAFETY: the caller's promise.
            return unsafe { self.inner_free(inner, base, inner_layout) };
        }
        // SAFETY: the caller's promise.
        unsafe { self.dealloc_counted(inner, base, inner_layout, decoded, size as u64) }
    }

    /// Counts the free of a block whose header says `decoded` if its own
    /// task frees it; `false`, with nothing counted, for any other free (or
    /// a damaged header).
    #[inline(always)]
    fn free_own(&self, decoded: Option<(Ticket, u32)>, size: u64) -> bool {
        let Some((owner, site)) = decoded else {
            return false;
        };
        let freer = self.caller();
        let amount = Amount::block(size);
        if !self.tasks.record_own_free(owner, freer, amount) {
            return false;
        }
        self.record_site_free(site, amount, freer);
        true
    }

    /// The free of a block whose header says `decoded` (`None`: damaged),
    /// counted, then the inner free: frees across tasks, by buckets, and
    /// damaged headers.
    ///
    /// # Safety
    /// - `base` is a live inner block of `inner_layout`, allocated through
    ///   `inner`, whose header decodes to `decoded`.
    #[inline(never)]
    unsafe fn dealloc_counted<A: GlobalAlloc>(
        &self,
        inner: &A,
        base: *mut u8,
        inner_layout: Layout,
        decoded: Option<(Ticket, u32)>,
        size: u64,
    ) {
        match decoded {
            Some((owner, site)) if owner != Ticket::UNTRACKED => {
                self.record_free(owner, site, Amount::block(size), self.caller());
            }
            Some(_) => {}
            None => self.damaged_headers.add_shared(1),
        }
        // SAFETY: the caller's promise.
        unsafe { self.inner_free(inner, base, inner_layout) }
    }

    /// The inner free of a block whose header was decoded: the context's,
    /// if it made the block elsewhere ([`Context::free_elsewhere`]), else
    /// `inner`'s.
    ///
    /// # Safety
    /// - `base` is a live inner block of `inner_layout`, allocated through
    ///   `inner` or made by the context elsewhere.
    #[inline(always)]
    unsafe fn inner_free<A: GlobalAlloc>(&self, inner: &A, base: *mut u8, inner_layout: Layout) {
        // SAFETY: the caller's promise.
        unsafe {
            if !self.context.free_elsewhere(base, inner_layout) {
                inner.dealloc(base, inner_layout);
            }
        }
    }

    /// [`realloc`](Self::realloc) in the exact form, for an adapter that
    /// knows the form, as for [`alloc_exact`](Self::alloc_exact).
    ///
    /// # Safety
    /// - As for [`realloc`](Self::realloc), for a block of the exact form's
    ///   paths (see [`alloc_exact`](Self::alloc_exact)).
    #[inline(always)]
    pub unsafe fn realloc_exact<A: GlobalAlloc>(
        &self,
        inner: &A,
        ptr: *mut u8,
        layout: Layout,
        new_size: usize,
        mode: Mode,
        frame_pointer: usize,
    ) -> *mut u8 {
        let Some(new) = Placement::resized(layout, new_size) else {
            return null_mut();
        };
        // SAFETY: as in `dealloc`.
        let old = unsafe { Placement::of_allocated(layout) };
        // SAFETY: as in `dealloc`.
        let base = unsafe { ptr.sub(old.user_offset) };
        // SAFETY: the block is live; its header is read before the inner
        // `realloc`, which may shrink it away.
        let header = unsafe { old.read_header(base) };
        // The user offset depends on the alignment alone, which a realloc
        // keeps, so the inner realloc carries the caller's bytes to the same
        // offset in the new block. It may grow or shrink in place.
        // SAFETY: `base` was allocated with `old.inner`; `new.inner` has the
        // same alignment and a non-zero size that `Placement` checked.
        let new_base = unsafe { inner.realloc(base, old.inner, new.inner.size()) };
        if new_base.is_null() {
            return null_mut(); // the old block, header and figures stand
        }
        // A realloc is counted as the free of the old block (credited to
        // whoever allocated it) and a new allocation by the caller. Who the
        // caller is matters only if either is counted.
        let decoded = header.decode();
        let counted = matches!(decoded, Some((owner, _)) if owner != Ticket::UNTRACKED);
        let header = if counted || mode != Mode::Off {
            let caller = self.caller();
            match decoded {
                Some((owner, site)) if owner != Ticket::UNTRACKED => {
                    let amount = Amount::block(layout.size() as u64);
                    self.record_free(owner, site, amount, caller);
                }
                Some(_) => {}
                None => self.damaged_headers.add_shared(1),
            }
            match mode {
                Mode::Off => Header::UNTRACKED,
                _ => self.header_for(new_size, frame_pointer, mode, caller),
            }
        } else {
            if decoded.is_none() {
                self.damaged_headers.add_shared(1);
            }
            Header::UNTRACKED
        };
        // SAFETY: `new_base` is a live block of `new.inner`.
        unsafe { new.write_header(new_base, header) };
        // SAFETY: as in `alloc`.
        unsafe { new_base.add(new.user_offset) }
    }
}

/// A block placed as `placement` says: the inner block, the header
/// `counted` gives once the block is made (it counts the block: nothing is
/// counted for a refused one), and the caller's pointer into it; null if
/// the inner allocator refuses.
///
/// # Safety
/// - `placement` is the [`Placement`] of the caller's layout, whose inner
///   layout has a non-zero size (it always has: it includes the header).
#[inline(always)]
unsafe fn placed<A: GlobalAlloc>(
    inner: &A,
    placement: Placement,
    zeroed: bool,
    counted: impl FnOnce() -> Header,
) -> *mut u8 {
    // SAFETY: a non-zero size, which is all `GlobalAlloc::alloc` asks.
    let base = unsafe { inner_alloc(inner, placement.inner, zeroed) };
    if base.is_null() {
        return null_mut();
    }
    // SAFETY: `base` is a live block of `placement.inner`, and the caller's
    // bytes lie inside it from `user_offset` (`user_offset + size <=
    // placement.inner.size()`).
    unsafe {
        placement.write_header(base, counted());
        base.add(placement.user_offset)
    }
}

/// The exact form's block that the caller's `ptr` points into: its
/// placement, the inner block's start and its header.
///
/// # Safety
/// - `ptr` came from this ledger's exact form with the layout of `size` and
///   `align` (so `Placement::of` accepted that layout then), and the block
///   is live.
#[inline(always)]
unsafe fn exact_block(ptr: *mut u8, size: usize, align: usize) -> (Placement, *mut u8, Header) {
    // SAFETY: the parts of a `Layout` that `Placement::of` accepted
    // (caller's duty).
    let placement =
        unsafe { Placement::of_allocated(Layout::from_size_align_unchecked(size, align)) };
    // SAFETY: `ptr` came from `alloc` with this layout (caller's duty), so it
    // is `user_offset` into a live inner block of `placement.inner`, whose
    // header is read.
    unsafe {
        let base = ptr.sub(placement.user_offset);
        (placement, base, placement.read_header(base))
    }
}

/// An untracked block of any layout, out of line; null for a layout that
/// has no placement.
///
/// # Safety
/// - The duties of `GlobalAlloc::alloc` for `layout`.
#[inline(never)]
unsafe fn untracked_out_of_line<A: GlobalAlloc>(
    inner: &A,
    layout: Layout,
    zeroed: bool,
) -> *mut u8 {
    match Placement::of(layout) {
        // SAFETY: forwarded from our caller; the placement is the layout's.
        Some(placement) => unsafe { placed(inner, placement, zeroed, || Header::UNTRACKED) },
        None => null_mut(),
    }
}
