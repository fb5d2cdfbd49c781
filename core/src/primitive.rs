//! The atomics every table is built from, in one place so that a `loom` build
//! can swap them in.
//!
//! Normal builds take them from `portable-atomic`, which is the native atomic
//! where the target has one and an emulation where it has not (64-bit counters
//! on 32-bit Cortex-M, compare-and-swap on thumbv6m). Builds with
//! `--cfg alloc_track_loom` take loom's, whose constructors are not `const`;
//! [`loom_const_fn!`](crate::primitive::loom_const_fn) writes a constructor that
//! is `const` everywhere but there.

#[cfg(alloc_track_loom)]
pub(crate) use loom::sync::atomic::{
    fence, AtomicPtr, AtomicU32, AtomicU64, AtomicU8, AtomicUsize,
};
#[cfg(not(alloc_track_loom))]
pub(crate) use portable_atomic::{fence, AtomicPtr, AtomicU32, AtomicU64, AtomicU8, AtomicUsize};

pub(crate) use core::sync::atomic::Ordering;

/// Tells the processor (or, under loom, the model's scheduler) that the
/// caller waits on another thread: for the few loops that read again.
#[inline]
pub(crate) fn spin_hint() {
    #[cfg(alloc_track_loom)]
    loom::thread::yield_now();
    #[cfg(not(alloc_track_loom))]
    core::hint::spin_loop();
}

/// Writes a constructor that is `const` in normal builds and a plain `fn`
/// under loom, whose atomics cannot be made in a constant.
macro_rules! loom_const_fn {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($args:tt)*) -> $ret:ty $body:block) => {
        #[cfg(not(alloc_track_loom))]
        $(#[$meta])*
        $vis const fn $name($($args)*) -> $ret $body

        #[cfg(alloc_track_loom)]
        $(#[$meta])*
        $vis fn $name($($args)*) -> $ret $body
    };
}
pub(crate) use loom_const_fn;

/// An array of `N` fresh atomics, in a form that is a constant expression in
/// normal builds.
macro_rules! atomic_array {
    ($make:expr; $n:expr) => {{
        #[cfg(not(alloc_track_loom))]
        let array = [const { $make }; $n];
        #[cfg(alloc_track_loom)]
        let array = core::array::from_fn(|_| $make);
        array
    }};
}
pub(crate) use atomic_array;

/// A 64-bit counter with the two ways of adding to it that the tables use.
///
/// A row written by one task at a time (its owner) is updated with a plain
/// load and store: no read-modify-write, so no bus lock on the hot path. Rows
/// that several tasks write at once use `fetch_add`.
pub(crate) struct Counter(AtomicU64);

impl Counter {
    loom_const_fn! {
        pub(crate) fn new() -> Self {
            Self(AtomicU64::new(0))
        }
    }

    #[inline]
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Adds `n`; only correct while no other task writes this counter.
    #[inline]
    pub(crate) fn add_owned(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    /// Adds `n` with a read-modify-write, for counters several tasks share.
    #[inline]
    pub(crate) fn add_shared(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds `n` and returns the value before, for counters several tasks
    /// share.
    #[inline]
    pub(crate) fn fetch_add(&self, n: u64) -> u64 {
        self.0.fetch_add(n, Ordering::Relaxed)
    }

    /// Subtracts `n` (wrapping), for counters several tasks share.
    #[inline]
    pub(crate) fn fetch_sub(&self, n: u64) {
        self.0.fetch_sub(n, Ordering::Relaxed);
    }

    /// Raises the counter to `value` if it is lower.
    #[inline]
    pub(crate) fn raise(&self, value: u64, writer: Writer) {
        if value > self.get() {
            match writer {
                Writer::Owner => self.0.store(value, Ordering::Relaxed),
                Writer::Shared => {
                    self.0.fetch_max(value, Ordering::Relaxed);
                }
            }
        }
    }

    /// Sets the value; only correct while no other task writes this
    /// counter.
    #[inline]
    pub(crate) fn set(&self, value: u64) {
        self.0.store(value, Ordering::Relaxed);
    }

    /// Takes the value and leaves zero; only for a row no one else writes.
    #[inline]
    pub(crate) fn take(&self) -> u64 {
        self.0.swap(0, Ordering::Relaxed)
    }
}

/// Who may write a row at this moment, which decides how its counters add.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Writer {
    /// Only the task that owns the row writes these counters.
    Owner,
    /// Any task may write them concurrently.
    Shared,
}
