//! Scopes: what a piece of work allocates, whichever thread runs it. A
//! scope is a task of the core's table beside the threads: entering one
//! points the thread's ticket at a row of the scope, leaving it points the
//! ticket back, and the header of every block names the row, so frees are
//! credited to the scope that allocated, whoever frees and whenever.
//!
//! A row has one writer at a time, as the core requires: each thread that
//! enters a scope holds a row of its own for it, kept in a small per-thread
//! cache; when the thread exits (or the cache needs the slot), the row is
//! parked with its scope, and the next thread to enter the scope takes it
//! over with its history. A scope's figures are the sum of its rows, so
//! they survive the threads that made them. The hand-over goes through the
//! registry's lock, which orders the old writer's stores before the new
//! writer's.

use std::cell::Cell;
use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context as TaskContext, Poll};

use alloc_track_core::TaskId;

use crate::context::{enter_ticket, leave_ticket, ReportScope, LEDGER};

/// Task ids of scope rows: above every thread's (threads count up from 1).
const SCOPE_IDS: TaskId = 1 << 63;
/// Task ids of measurements' rows (`measure`, `assert_no_alloc`).
pub(crate) const MEASURE_IDS: TaskId = 1 << 62;

/// Whether a task id is a thread's (not a scope's or a measurement's).
pub(crate) fn is_thread(id: TaskId) -> bool {
    id < MEASURE_IDS
}

/// Distinct scope names kept: beyond them, entering a new scope counts its
/// allocations in the overflow bucket, as a full table does.
pub const SCOPE_NAMES: usize = 1024;

/// The name under which scopes' allocations are reported that found the
/// task table (or the list of scope names) full.
pub const OVERFLOW_SCOPES: &str = "(scope table full)";

/// Scopes a thread can hold rows of at once (the slots of its cache).
const SLOTS: usize = 32;

/// One scope in a thread's cache: its name, its row's task id and ticket,
/// and how many times the thread is inside it now.
#[derive(Clone, Copy)]
struct Held {
    name: &'static str,
    id: TaskId,
    word: u64,
    depth: u32,
}

thread_local! {
    /// This thread's scope rows. Plain `Copy` cells: no destructor, so the
    /// exit guard can read them while the thread's locals are destroyed.
    static HELD: [Cell<Option<Held>>; SLOTS] = const { [const { Cell::new(None) }; SLOTS] };
}

/// Every scope ever entered: its name, its parked rows; and which scope
/// each row belongs to.
#[derive(Default)]
struct Registry {
    by_name: HashMap<&'static str, Vec<TaskId>>,
    rows: HashMap<TaskId, &'static str>,
    next: TaskId,
    /// Entries into a scope that found no row (table or names full).
    overflowed: u64,
}

static REGISTRY: Mutex<Option<Registry>> = Mutex::new(None);

fn registry<R>(work: impl FnOnce(&mut Registry) -> R) -> R {
    // The registry holds plain data: a panic elsewhere cannot leave it
    // half-updated, so a poisoned lock is taken over.
    let mut registry = REGISTRY
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    work(registry.get_or_insert_with(Registry::default))
}

/// While alive, the current thread's allocations count for a scope (see
/// [`scope`]). Not `Send`: it is dropped on the thread that entered.
#[must_use = "the scope ends when the guard is dropped"]
pub struct ScopeGuard {
    /// The ticket word to put back, and the cache slot to leave; `None`
    /// when entering changed nothing.
    entered: Option<(u64, usize)>,
    _not_send: PhantomData<*const ()>,
}

/// Attributes the current thread's allocations to the scope `name` until
/// the guard drops; nested scopes restore the outer one. Frees are credited
/// to the scope that allocated, whoever frees and whenever.
///
/// ```
/// let _guard = alloc_track::scope("ingest");
/// let batch = vec![0u8; 4096]; // counted for "ingest"
/// # drop(batch);
/// ```
///
/// Inside a report or a [`measure`](crate::measure)ment a scope changes
/// nothing (their attribution wins). Entering a scope the thread has entered
/// before costs a search of a 32-slot per-thread cache and a thread-local
/// store; the first entry on a thread takes a lock. Scopes share the task
/// table with threads ([`THREAD_ROWS`](crate::THREAD_ROWS) rows): a scope
/// that finds it full counts under [`OVERFLOW_SCOPES`], as do scopes beyond
/// [`SCOPE_NAMES`] distinct names.
pub fn scope(name: &str) -> ScopeGuard {
    let inert = ScopeGuard {
        entered: None,
        _not_send: PhantomData,
    };
    let Some((slot, word)) = hold(name) else {
        return inert;
    };
    let Some(previous) = enter_ticket(word) else {
        return inert;
    };
    let _ = HELD.try_with(|held| {
        if let Some(cell) = held.get(slot) {
            if let Some(mut entry) = cell.get() {
                entry.depth += 1;
                cell.set(Some(entry));
            }
        }
    });
    ScopeGuard {
        entered: Some((previous, slot)),
        _not_send: PhantomData,
    }
}

impl Drop for ScopeGuard {
    fn drop(&mut self) {
        let Some((previous, slot)) = self.entered else {
            return;
        };
        leave_ticket(previous);
        let _ = HELD.try_with(|held| {
            if let Some(cell) = held.get(slot) {
                if let Some(mut entry) = cell.get() {
                    entry.depth = entry.depth.saturating_sub(1);
                    cell.set(Some(entry));
                }
            }
        });
    }
}

/// This thread's cache slot and ticket word for scope `name`: found in the
/// cache, or a row taken from the scope's parked ones or claimed, into a
/// free slot (parking a row the thread is not inside, if none is free).
fn hold(name: &str) -> Option<(usize, u64)> {
    let found = HELD
        .try_with(|held| {
            held.iter().enumerate().find_map(|(slot, cell)| {
                cell.get()
                    .filter(|entry| entry.name == name)
                    .map(|entry| (slot, entry.word))
            })
        })
        .ok()?;
    if found.is_some() {
        return found;
    }
    // A slot: a free one, else one whose scope the thread is not inside.
    let slot = HELD
        .try_with(|held| {
            held.iter()
                .position(|cell| cell.get().is_none())
                .or_else(|| {
                    held.iter()
                        .position(|cell| cell.get().is_some_and(|e| e.depth == 0))
                })
        })
        .ok()??;
    // What the registry allocates (names, lists) is the tracker's own.
    let _scope = ReportScope::enter();
    let evicted = HELD
        .try_with(|held| held.get(slot).and_then(Cell::take))
        .ok()
        .flatten();
    let (name, id) = registry(|registry| {
        if let Some(evicted) = evicted {
            park(registry, evicted);
        }
        let known = registry.by_name.get_key_value(name).map(|(name, _)| *name);
        let name: &'static str = match known {
            Some(name) => name,
            None if registry.by_name.len() < SCOPE_NAMES => {
                let name: &'static str = Box::leak(name.to_owned().into_boxed_str());
                registry.by_name.insert(name, Vec::new());
                name
            }
            None => {
                registry.overflowed += 1;
                return None;
            }
        };
        let parked = registry.by_name.get_mut(name).and_then(Vec::pop);
        let id = parked.unwrap_or_else(|| {
            registry.next += 1;
            let id = SCOPE_IDS | registry.next;
            registry.rows.insert(id, name);
            id
        });
        Some((name, id))
    })?;
    let ticket = LEDGER.task_ticket(id);
    if ticket.index() as usize >= crate::capacity::THREAD_ROWS {
        // The table is full: this entry counts in the overflow bucket, and
        // the row id waits for a later entry to claim.
        registry(|registry| {
            registry.overflowed += 1;
            if let Some(parked) = registry.by_name.get_mut(name) {
                parked.push(id);
            }
        });
        return None;
    }
    let word = ticket.to_word();
    // At the thread's exit, its rows go back to their scopes.
    crate::context::at_thread_exit(thread_exit);
    HELD.try_with(|held| {
        if let Some(cell) = held.get(slot) {
            cell.set(Some(Held {
                name,
                id,
                word,
                depth: 0,
            }));
        }
    })
    .ok()?;
    Some((slot, word))
}

/// Gives a row back to its scope, for the next thread that enters it.
fn park(registry: &mut Registry, held: Held) {
    if let Some(parked) = registry.by_name.get_mut(held.name) {
        parked.push(held.id);
    }
}

/// Parks every scope row the exiting thread holds.
fn thread_exit() {
    let held: Vec<Held> = HELD
        .try_with(|held| held.iter().filter_map(Cell::take).collect())
        .unwrap_or_default();
    if held.is_empty() {
        return;
    }
    let _scope = ReportScope::enter();
    registry(|registry| {
        for entry in held {
            park(registry, entry);
        }
    });
}

/// The scope names of scope rows, for naming the parties of cross frees.
pub(crate) fn names() -> HashMap<TaskId, String> {
    registry(|registry| {
        registry
            .rows
            .iter()
            .map(|(&id, &name)| (id, name.to_owned()))
            .collect()
    })
}

/// The scope rows by task id, and how many entries found the table (or
/// the list of names) full: what the scope report reads.
pub(crate) fn rows() -> (HashMap<TaskId, &'static str>, u64) {
    registry(|registry| (registry.rows.clone(), registry.overflowed))
}

/// A future that enters a scope around every poll of the future it wraps
/// (see [`ScopeFutureExt::in_scope`]).
#[must_use = "futures do nothing unless polled"]
pub struct InScope<F> {
    future: F,
    name: std::borrow::Cow<'static, str>,
}

impl<F: Future> Future for InScope<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<F::Output> {
        // SAFETY: `future` is structurally pinned: it is never moved out of
        // `self`, `InScope` has no `Drop` of its own and is `Unpin` only
        // when `F` is (the auto trait follows the field). `name` is not
        // pinned and only read.
        let (future, name) = unsafe {
            let this = self.get_unchecked_mut();
            (Pin::new_unchecked(&mut this.future), &this.name)
        };
        let _guard = scope(name);
        future.poll(cx)
    }
}

/// Scopes for futures: `fut.in_scope("ingest")`.
pub trait ScopeFutureExt: Future + Sized {
    /// Enters the scope `name` around every poll of this future, so that
    /// what it allocates is attributed to the scope on whichever thread
    /// (an async runtime's worker) polls it.
    ///
    /// ```
    /// use alloc_track::ScopeFutureExt;
    ///
    /// async fn ingest() -> Vec<u8> {
    ///     vec![0u8; 1024]
    /// }
    /// let in_scope = ingest().in_scope("ingest");
    /// # drop(in_scope);
    /// ```
    fn in_scope(self, name: impl Into<std::borrow::Cow<'static, str>>) -> InScope<Self> {
        InScope {
            future: self,
            name: name.into(),
        }
    }
}

impl<F: Future> ScopeFutureExt for F {}
