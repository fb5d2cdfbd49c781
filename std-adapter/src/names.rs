//! Thread names, captured without allocating: the OS name of each thread
//! (what `std::thread::Builder::name` sets) and its OS thread id, kept in
//! fixed tables so that reports can name threads, including some that have
//! already ended.
//!
//! A live thread's name sits beside its row of the task table (the same
//! index), so it lasts as long as the thread holds the row, however many
//! other threads come and go. It is recorded when the thread takes its row
//! and again as the thread exits (std names a thread just after it starts,
//! so the first read may still see the name it inherited); reports read live
//! threads' names afresh. Exiting threads' names also go to a ring of the
//! most recent exits, where they age out.

use std::collections::HashMap;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use alloc_track_core::TaskId;

/// How many finished threads' names are kept, newest first.
const RECENT_EXITS: usize = 1024;
/// Linux keeps 15 bytes of a thread name, plus the terminating zero.
const NAME_BYTES: usize = 16;

struct Entry {
    /// The thread id, 0 while free or being written.
    id: AtomicU64,
    /// The OS thread id while the thread lives (for reading its current
    /// name), else 0.
    os_id: AtomicU32,
    /// The name's bytes, zero-padded, in two words.
    name: [AtomicU64; 2],
}

/// By task row.
static LIVE: [Entry; crate::capacity::THREAD_ROWS] =
    [const { Entry::new() }; crate::capacity::THREAD_ROWS];
/// The latest exits, written round-robin.
static EXITED: [Entry; RECENT_EXITS] = [const { Entry::new() }; RECENT_EXITS];
static NEXT_EXIT: AtomicUsize = AtomicUsize::new(0);

/// The bytes of the name tables.
pub(crate) const TABLE_BYTES: usize = std::mem::size_of::<[Entry; crate::capacity::THREAD_ROWS]>()
    + std::mem::size_of::<[Entry; RECENT_EXITS]>();

impl Entry {
    const fn new() -> Self {
        Self {
            id: AtomicU64::new(0),
            os_id: AtomicU32::new(0),
            name: [AtomicU64::new(0), AtomicU64::new(0)],
        }
    }

    /// Writes the entry. Readers never pair the old id with the new name:
    /// the id is cleared first and set last.
    fn store(&self, id: TaskId, os_id: u32, name: &[u8; NAME_BYTES]) {
        self.id.store(0, Ordering::Relaxed);
        // The clearing must be visible before any of the new fields.
        fence(Ordering::Release);
        self.os_id.store(os_id, Ordering::Relaxed);
        for (word, chunk) in self.name.iter().zip(name.chunks_exact(8)) {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(chunk);
            word.store(u64::from_le_bytes(bytes), Ordering::Relaxed);
        }
        self.id.store(id, Ordering::Release);
    }

    /// The entry's id, OS id and name, unless it is empty or being written.
    fn load(&self) -> Option<(TaskId, u32, [u8; NAME_BYTES])> {
        let id = self.id.load(Ordering::Acquire);
        if id == 0 {
            return None;
        }
        let os_id = self.os_id.load(Ordering::Relaxed);
        let mut name = [0u8; NAME_BYTES];
        for (chunk, word) in name.chunks_exact_mut(8).zip(&self.name) {
            chunk.copy_from_slice(&word.load(Ordering::Relaxed).to_le_bytes());
        }
        // The fields were read before the id is checked again.
        fence(Ordering::Acquire);
        (self.id.load(Ordering::Relaxed) == id).then_some((id, os_id, name))
    }
}

/// Records that thread `id` (the calling thread) holds task row `row`.
pub(crate) fn record_row(row: u32, id: TaskId) {
    if let Some(entry) = LIVE.get(row as usize) {
        if entry.id.load(Ordering::Relaxed) != id {
            entry.store(id, os_thread_id(), &current_os_name());
        }
    }
}

/// The prefix of the names of the tracker's own threads (the debug
/// endpoint's): a thread named so counts as the tracker's from its first
/// allocation, before any code of its own has run. With a slash, which no
/// file name holds: a program's main thread, which Linux names after the
/// executable, never has it.
pub(crate) const TRACKER_THREAD_PREFIX: &[u8] = b"alloc-track/";

/// Whether the calling thread is one of the tracker's own, by its name
/// (std names a thread before anything of it allocates).
pub(crate) fn is_trackers_thread() -> bool {
    current_os_name().starts_with(TRACKER_THREAD_PREFIX)
}

/// Records the calling thread's name as it exits; `row` is the task row it
/// held, if any.
pub(crate) fn record_exit(id: TaskId, row: Option<u32>) {
    let name = current_os_name();
    if let Some(entry) = row.and_then(|row| LIVE.get(row as usize)) {
        if entry.id.load(Ordering::Relaxed) == id {
            // The OS id may be given to another thread from now on.
            entry.store(id, 0, &name);
        }
    }
    let slot = NEXT_EXIT.fetch_add(1, Ordering::Relaxed) % RECENT_EXITS;
    if let Some(entry) = EXITED.get(slot) {
        entry.store(id, 0, &name);
    }
}

fn text(name: &[u8; NAME_BYTES]) -> Option<String> {
    let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    (end > 0).then(|| String::from_utf8_lossy(&name[..end]).into_owned())
}

/// The names of all known threads, by thread id, read at report time: a live
/// thread's current OS name, else the one recorded last. The main thread is
/// called `main`, as std calls it.
pub(crate) fn snapshot() -> HashMap<TaskId, String> {
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() } as u32;
    let mut names = HashMap::new();
    // Live rows last, so that they win over an older record of the same id.
    for (id, os_id, name) in EXITED.iter().chain(&LIVE).filter_map(Entry::load) {
        let name = if os_id != 0 && os_id == pid {
            Some("main".to_owned())
        } else {
            live_name(os_id).or_else(|| text(&name))
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
