//! Thread names, captured without allocating: the OS name of each thread
//! (what `std::thread::Builder::name` sets) and its OS thread id, kept in a
//! fixed table so that reports can name threads that have already ended.
//!
//! A thread's name is read when it first allocates and again as it exits
//! (std names a thread just after it starts, so the first read may still see
//! the name it inherited); reports read live threads' names afresh.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use alloc_track_core::TaskId;

/// How many threads' names are kept. Thread `id` uses slot `(id - 1) %
/// CAPACITY`, so a thread started 4096 threads later takes over the slot of
/// one that has most likely ended; a name that was overwritten is shown as
/// `thread <id>`.
const CAPACITY: usize = 4096;
/// Linux keeps 15 bytes of a thread name, plus the terminating zero.
const NAME_BYTES: usize = 16;

struct Entry {
    /// The thread id, 0 while free.
    id: AtomicU64,
    /// The OS thread id, for reading a live thread's current name.
    os_id: AtomicU32,
    /// The name's bytes, zero-padded, in two words.
    name: [AtomicU64; 2],
}

static TABLE: [Entry; CAPACITY] = [const {
    Entry {
        id: AtomicU64::new(0),
        os_id: AtomicU32::new(0),
        name: [AtomicU64::new(0), AtomicU64::new(0)],
    }
}; CAPACITY];

fn slot(id: TaskId) -> Option<&'static Entry> {
    TABLE.get((id as usize).wrapping_sub(1) % CAPACITY)
}

fn entry(id: TaskId) -> Option<&'static Entry> {
    slot(id).filter(|slot| slot.id.load(Ordering::Acquire) == id)
}

/// Records a new thread: its OS id and its name as it stands now.
pub(crate) fn record_start(id: TaskId) {
    let Some(slot) = slot(id) else {
        return;
    };
    // Empty the slot first, so that a reader never pairs the old id with the
    // new name.
    slot.id.store(0, Ordering::Release);
    slot.os_id.store(os_thread_id(), Ordering::Relaxed);
    store_name(slot, &current_os_name());
    slot.id.store(id, Ordering::Release);
}

/// Records a thread's name as it exits.
pub(crate) fn record_exit(id: TaskId) {
    if let Some(slot) = entry(id) {
        store_name(slot, &current_os_name());
        slot.os_id.store(0, Ordering::Relaxed);
    }
}

fn store_name(slot: &Entry, name: &[u8; NAME_BYTES]) {
    for (word, chunk) in slot.name.iter().zip(name.chunks_exact(8)) {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(chunk);
        word.store(u64::from_le_bytes(bytes), Ordering::Relaxed);
    }
}

fn stored_name(slot: &Entry) -> Option<String> {
    let mut bytes = Vec::with_capacity(NAME_BYTES);
    for word in &slot.name {
        bytes.extend_from_slice(&word.load(Ordering::Relaxed).to_le_bytes());
    }
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    (end > 0).then(|| String::from_utf8_lossy(&bytes[..end]).into_owned())
}

/// The names of all known threads, by thread id, read at report time: a live
/// thread's current OS name, else the one recorded last. The main thread is
/// called `main`, as std calls it.
pub(crate) fn snapshot() -> HashMap<TaskId, String> {
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() } as u32;
    let mut names = HashMap::new();
    for slot in &TABLE {
        let id = slot.id.load(Ordering::Acquire);
        if id == 0 {
            continue;
        }
        let os_id = slot.os_id.load(Ordering::Relaxed);
        let name = if os_id != 0 && os_id == pid {
            Some("main".to_owned())
        } else {
            live_name(os_id).or_else(|| stored_name(slot))
        };
        names.insert(id, name.unwrap_or_else(|| format!("thread {id}")));
    }
    names
}

#[cfg(target_os = "linux")]
fn live_name(os_id: u32) -> Option<String> {
    if os_id == 0 {
        return None;
    }
    let name = std::fs::read_to_string(format!("/proc/self/task/{os_id}/comm")).ok()?;
    Some(name.trim_end().to_owned()).filter(|name| !name.is_empty())
}

#[cfg(not(target_os = "linux"))]
fn live_name(_os_id: u32) -> Option<String> {
    None
}

#[cfg(target_os = "linux")]
fn os_thread_id() -> u32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() as u32 }
}

#[cfg(not(target_os = "linux"))]
fn os_thread_id() -> u32 {
    0
}

/// The calling thread's OS name, zero-padded; read into a stack buffer so
/// that nothing is allocated.
#[cfg(any(target_os = "linux", target_os = "macos"))]
fn current_os_name() -> [u8; NAME_BYTES] {
    let mut name = [0u8; NAME_BYTES];
    // SAFETY: the buffer is valid for its whole length, which is passed; the
    // call writes a zero-terminated name into it or fails.
    let result = unsafe {
        libc::pthread_getname_np(
            libc::pthread_self(),
            name.as_mut_ptr().cast::<libc::c_char>(),
            name.len(),
        )
    };
    if result != 0 {
        name = [0; NAME_BYTES];
    }
    name
}

#[cfg(not(any(target_os = "linux", target_os = "macos")))]
fn current_os_name() -> [u8; NAME_BYTES] {
    [0; NAME_BYTES]
}
