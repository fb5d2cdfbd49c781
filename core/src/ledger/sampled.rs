//! The sampling form's paths: unsampled blocks are the inner allocator's,
//! untouched; sampled ones are placed at the mark and held in the table of
//! live samples.

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
    /// [`alloc`](Self::alloc) in the sampling form: the inner allocator's
    /// block as it is, unless a sample point falls in it. For an adapter
    /// that chooses its path once, as for [`alloc_exact`](Self::alloc_exact).
    ///
    /// Its figures are the ledger's in the sampling form
    /// ([`sampling`](Self::sampling) is `Some`).
    ///
    /// # Safety
    /// - The duties of `GlobalAlloc::alloc` for `layout`.
    /// - The block is reallocated and freed only through the sampling form's
    ///   paths ([`realloc_sampling`](Self::realloc_sampling),
    ///   [`dealloc_sampling`](Self::dealloc_sampling)) with the same
    ///   `inner`.
    #[inline(always)]
    pub unsafe fn alloc_sampling<A: GlobalAlloc>(
        &self,
        inner: &A,
        layout: Layout,
        mode: Mode,
        frame_pointer: usize,
        zeroed: bool,
    ) -> *mut u8 {
        if mode == Mode::Off {
            // SAFETY: forwarded from our caller.
            return unsafe { inner_alloc(inner, layout, zeroed) };
        }
        // The fast half: a task that keeps its ticket, far from its sample
        // point, counts down in its own row and calls the inner allocator,
        // and nothing else. Anything else (a ticket to find, a sample, a
        // bucket) is the slow half's, out of line so that this one needs
        // next to no registers.
        let size = layout.size() as u64;
        match self.context.ticket() {
            Some(ticket) if self.tasks.count_unsampled(ticket, size, self.context.hot()) => {
                // SAFETY: forwarded from our caller.
                let block = unsafe { inner_alloc(inner, layout, zeroed) };
                if block.is_null() {
                    // Not the ticket read above, which would have to be kept
                    // across the call: the same one, read again (the inner
                    // allocator does not run the tracker, so nothing has
                    // changed it).
                    self.uncount_refused_by_caller(size);
                }
                block
            }
            // SAFETY: forwarded from our caller.
            _ => unsafe { self.alloc_sampling_slow(inner, layout, mode, frame_pointer, zeroed) },
        }
    }

    /// [`alloc_sampling`](Self::alloc_sampling)'s slow half: the ticket
    /// found or claimed, the countdown counted, the sample taken.
    ///
    /// # Safety
    /// - As for [`alloc`](Self::alloc).
    #[inline(never)]
    unsafe fn alloc_sampling_slow<A: GlobalAlloc>(
        &self,
        inner: &A,
        layout: Layout,
        mode: Mode,
        frame_pointer: usize,
        zeroed: bool,
    ) -> *mut u8 {
        // Counted before the block is made, so that a sampled one is made
        // in its place at once, and an unsampled one needs nothing after
        // the inner call but a check that it was made.
        let ticket = self.caller();
        let interval = self.sampling.load(Ordering::Relaxed);
        match self
            .tasks
            .count_down(ticket, layout.size() as u64, interval, self.context.hot())
        {
            // SAFETY: forwarded from our caller.
            None => unsafe { self.alloc_unsampled(inner, layout, zeroed, ticket) },
            // SAFETY: forwarded from our caller.
            Some(amount) => unsafe {
                self.alloc_sample(
                    inner,
                    layout,
                    zeroed,
                    Drawn { ticket, amount },
                    move || self.site_of(mode, ticket, frame_pointer),
                    || {},
                )
            },
        }
    }

    /// An allocation that was counted as unsampled: the inner allocator's
    /// block, or the count taken back if it refuses.
    ///
    /// # Safety
    /// - `layout` has a non-zero size.
    #[inline(always)]
    unsafe fn alloc_unsampled<A: GlobalAlloc>(
        &self,
        inner: &A,
        layout: Layout,
        zeroed: bool,
        ticket: Ticket,
    ) -> *mut u8 {
        // SAFETY: the caller's promise.
        let block = unsafe { inner_alloc(inner, layout, zeroed) };
        if block.is_null() {
            self.uncount_refused(ticket, layout.size() as u64);
        }
        block
    }

    /// Takes back the count of an unsampled allocation the inner allocator
    /// refused.
    #[cold]
    #[inline(never)]
    fn uncount_refused(&self, ticket: Ticket, size: u64) {
        self.tasks.uncount(ticket, size, false, self.context.hot());
    }

    /// [`uncount_refused`](Self::uncount_refused) for the caller, whose
    /// ticket its context holds.
    #[cold]
    #[inline(never)]
    fn uncount_refused_by_caller(&self, size: u64) {
        if let Some(ticket) = self.context.ticket() {
            self.uncount_refused(ticket, size);
        }
    }

    /// An allocation that was counted as sampled: made in a sampled block's
    /// place and recorded, or, when that cannot be (no memory for the
    /// place, no free entry), made as asked and counted as a dropped sample.
    /// Null, with the count taken back, when the inner allocator refuses.
    /// `counted_first` runs once the block is made, before it is counted
    /// (exactly once when the result is not null, never when it is):
    /// a realloc that moves credits the old block's free there, so that
    /// the figures see the free before the allocation, as in the exact form.
    ///
    /// # Safety
    /// - `layout` has a non-zero size.
    #[cold]
    #[inline(never)]
    unsafe fn alloc_sample<A: GlobalAlloc>(
        &self,
        inner: &A,
        layout: Layout,
        zeroed: bool,
        Drawn { ticket, amount }: Drawn,
        site: impl FnOnce() -> u32,
        counted_first: impl FnOnce(),
    ) -> *mut u8 {
        if let Some(placement) = SampledPlacement::of(layout) {
            // SAFETY: `placement.inner` has a non-zero size.
            let base = unsafe { inner_alloc(inner, placement.inner, zeroed) };
            if !base.is_null() {
                // SAFETY: the caller's bytes start `user_offset` into the
                // inner block and fit in it.
                let block = unsafe { base.add(placement.user_offset) };
                // The entry first: a sample that finds none is dropped with
                // no walk, and leaves no callsite row behind.
                if let Some(claimed) = self.samples.claim(block as usize) {
                    let site = site();
                    claimed.publish(self.sample_entry(layout, ticket, amount, site));
                    counted_first();
                    self.record_alloc(ticket, site, amount);
                    return block;
                }
                // SAFETY: allocated just above with `placement.inner`.
                unsafe { inner.dealloc(base, placement.inner) };
            }
        }
        // SAFETY: the caller's promise.
        let block = unsafe { inner_alloc(inner, layout, zeroed) };
        if block.is_null() {
            self.tasks
                .uncount(ticket, layout.size() as u64, true, self.context.hot());
        } else {
            counted_first();
            self.drop_sample(amount);
        }
        block
    }

    /// Records the sampled block at `block`, in the table and in the
    /// figures of its task and callsite; `false` when the table has no room
    /// for it (nothing is recorded then).
    fn record_sample(
        &self,
        block: *mut u8,
        layout: Layout,
        ticket: Ticket,
        amount: Amount,
        site: u32,
    ) -> bool {
        let entry = self.sample_entry(layout, ticket, amount, site);
        if !self.samples.insert(block as usize, entry) {
            return false;
        }
        self.record_alloc(ticket, site, amount);
        true
    }

    /// What the table keeps of a sampled block of `layout`, taken now.
    fn sample_entry(
        &self,
        layout: Layout,
        ticket: Ticket,
        amount: Amount,
        site: u32,
    ) -> SampledBlock {
        SampledBlock {
            owner: ticket,
            site,
            size: layout.size() as u64,
            count: amount.count,
            bytes: amount.bytes,
            time: self.context.now(),
        }
    }

    /// Counts a sample that could not be taken.
    #[cold]
    fn drop_sample(&self, amount: Amount) {
        self.dropped_samples.add_shared(1);
        self.dropped_bytes.add_shared(amount.bytes);
    }

    /// [`dealloc`](Self::dealloc) in the sampling form: a sampled block is
    /// credited back to its task and callsite; any other goes straight
    /// back. For an adapter that knows the form.
    ///
    /// # Safety
    /// - As for [`dealloc`](Self::dealloc), for a block of the sampling
    ///   form's paths (see [`alloc_sampling`](Self::alloc_sampling)), or one
    ///   that `inner` itself allocated with `layout`.
    #[inline(always)]
    pub unsafe fn dealloc_sampling<A: GlobalAlloc>(&self, inner: &A, ptr: *mut u8, layout: Layout) {
        if Self::may_be_sampled(ptr, layout) {
            // SAFETY: forwarded from our caller.
            unsafe { self.dealloc_maybe_sampled(inner, ptr, layout) }
        } else {
            // SAFETY: an unsampled block is the inner allocator's own, with
            // the caller's layout.
            unsafe { inner.dealloc(ptr, layout) }
        }
    }

    /// The sampling form's cheap test of a free: whether the block at `ptr`
    /// with `layout` may be a sampled one, so that its free must look in the
    /// table ([`dealloc_maybe_sampled`](Self::dealloc_maybe_sampled)); if
    /// not, it is the inner allocator's own. What
    /// [`dealloc_sampling`](Self::dealloc_sampling) asks first, for an
    /// adapter that calls its two halves itself.
    #[inline(always)]
    pub fn may_be_sampled(ptr: *mut u8, layout: Layout) -> bool {
        sampling::may_be_sampled(ptr, layout)
    }

    /// A free of a block that may be sampled (it passed the cheap test,
    /// [`may_be_sampled`](Self::may_be_sampled)): looked up in the table of
    /// sampled blocks. Out of line: most frees never get here.
    ///
    /// # Safety
    /// - As for [`dealloc_sampling`](Self::dealloc_sampling).
    #[inline(never)]
    pub unsafe fn dealloc_maybe_sampled<A: GlobalAlloc>(
        &self,
        inner: &A,
        ptr: *mut u8,
        layout: Layout,
    ) {
        let sample = self.samples.remove(ptr as usize);
        let sampled = sample.is_some();
        if let Some(block) = sample {
            self.free_sample(block);
        }
        // SAFETY: forwarded from our caller; `sampled` says whether the
        // table held the block.
        unsafe { sampled_dealloc(inner, ptr, layout, sampled) }
    }

    /// Credits a sampled block's free to its task and callsite, and tells
    /// the context how long it lived.
    #[cold]
    #[inline(never)]
    fn free_sample(&self, block: SampledBlock) {
        let amount = Amount {
            bytes: block.bytes,
            count: block.count,
        };
        self.record_free(block.owner, block.site, amount, self.caller());
        self.context.sample_freed(SampleFreed {
            site: block.site,
            lifetime: self.context.now().saturating_sub(block.time),
            bytes: block.bytes,
            count: block.count,
        });
    }

    /// The sampling form's `realloc`, counted as the free of the old block
    /// (if it was sampled) and an allocation of the new size (which may be
    /// sampled). Through the inner `realloc`, in place where it can, unless
    /// either block sits at the mark: such a block's place is the
    /// tracker's, so it moves (allocation, copy, free). For an adapter that
    /// knows the form, as for [`alloc_sampling`](Self::alloc_sampling).
    ///
    /// # Safety
    /// - As for [`realloc`](Self::realloc), for a block of the sampling
    ///   form's paths (see [`alloc_sampling`](Self::alloc_sampling)).
    #[inline(always)]
    pub unsafe fn realloc_sampling<A: GlobalAlloc>(
        &self,
        inner: &A,
        ptr: *mut u8,
        layout: Layout,
        new_size: usize,
        mode: Mode,
        frame_pointer: usize,
    ) -> *mut u8 {
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return null_mut();
        };
        let old_sampled =
            sampling::may_be_sampled(ptr, layout) && self.samples.get(ptr as usize).is_some();
        // The new size is counted first, as in `alloc_sampling`.
        let counted = (mode != Mode::Off).then(|| {
            let ticket = self.caller();
            let interval = self.sampling.load(Ordering::Relaxed);
            (
                ticket,
                self.tasks
                    .count_down(ticket, new_size as u64, interval, self.context.hot()),
            )
        });
        let new_sampled = matches!(counted, Some((_, Some(_))));
        if (old_sampled && !sampling::sampled_in_place(layout))
            || (new_sampled && !sampling::sampled_in_place(new_layout))
        {
            // The old block's free is counted before the new block's
            // allocation, as in the exact form (a realloc is a free and an
            // allocation), and only once the new block is made: a refused
            // one leaves the old block as it was. A new sample runs this
            // between the two; an unsampled block is not counted, so it runs
            // after.
            let count_old = || {
                if old_sampled {
                    if let Some(old) = self.samples.remove(ptr as usize) {
                        self.free_sample(old);
                    }
                }
            };
            // SAFETY: `new_layout` has the size `GlobalAlloc::realloc` was
            // given, which is non-zero.
            let moved = unsafe {
                match counted {
                    Some((ticket, Some(amount))) => self.alloc_sample(
                        inner,
                        new_layout,
                        false,
                        Drawn { ticket, amount },
                        || self.site_of(mode, ticket, frame_pointer),
                        count_old,
                    ),
                    Some((ticket, None)) => self.alloc_unsampled(inner, new_layout, false, ticket),
                    None => inner.alloc(new_layout),
                }
            };
            if moved.is_null() {
                return null_mut(); // the old block stands
            }
            if !new_sampled {
                count_old();
            }
            // SAFETY: both blocks are live and distinct and hold the bytes
            // copied; then the old one is freed where it was placed, as
            // `realloc` does (`old_sampled` says whether it was a sample:
            // the block is the caller's, so no other call freed it since).
            unsafe {
                core::ptr::copy_nonoverlapping(ptr, moved, layout.size().min(new_size));
                sampled_dealloc(inner, ptr, layout, old_sampled);
            }
            return moved;
        }
        // Neither block is at the mark: an unsampled block, or a large
        // sampled one, is the inner allocator's own with the caller's
        // layout, and so is what its `realloc` makes.
        // SAFETY: the new size was checked to form a layout.
        let block = unsafe { inner.realloc(ptr, layout, new_size) };
        if block.is_null() {
            if let Some((ticket, amount)) = counted {
                self.tasks.uncount(
                    ticket,
                    new_size as u64,
                    amount.is_some(),
                    self.context.hot(),
                );
            }
            return null_mut(); // the old block stands
        }
        if old_sampled {
            if let Some(old) = self.samples.remove(ptr as usize) {
                self.free_sample(old);
            }
        }
        if let Some((ticket, Some(amount))) = counted {
            // Large (else it would have moved above): sampled where it is.
            let site = self.site_of(mode, ticket, frame_pointer);
            if !self.record_sample(block, new_layout, ticket, amount, site) {
                self.drop_sample(amount);
            }
        }
        block
    }
}

/// A sample drawn for an allocation: the task that makes it, and what the
/// sample stands for.
#[derive(Clone, Copy)]
struct Drawn {
    ticket: Ticket,
    amount: Amount,
}

/// Gives a block of the sampling form back to the inner allocator where it
/// was placed: a sampled block (`sampled`) as its placement says, any other
/// as the caller's layout.
///
/// # Safety
/// - `ptr` is a live block of the sampling form with `layout`, sampled
///   exactly when `sampled`, and no longer in the table of samples.
#[inline(always)]
unsafe fn sampled_dealloc<A: GlobalAlloc>(inner: &A, ptr: *mut u8, layout: Layout, sampled: bool) {
    if !sampled {
        // SAFETY: an unsampled block is the inner allocator's own, with the
        // caller's layout.
        unsafe { inner.dealloc(ptr, layout) };
    } else if let Some(placement) = SampledPlacement::of(layout) {
        // SAFETY: a sampled block was placed `user_offset` into an inner
        // block of `placement.inner` (`alloc_sample`).
        unsafe { inner.dealloc(ptr.sub(placement.user_offset), placement.inner) };
    }
}
