//! Helpers for the integration tests, each of which installs its own tracker
//! as the global allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

thread_local! {
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// Wraps the global allocator and counts the calls that arrive while a call
/// is already in progress on the same thread: the wrapped tracker allocating
/// (or calling something that allocates) from inside the allocator.
///
/// It counts rather than panics, because a panic inside the global allocator
/// aborts the process and would hide which test found the fault.
pub struct ReentryDetector<A> {
    inner: A,
    reentries: AtomicU64,
}

impl<A> ReentryDetector<A> {
    /// Wraps `inner`.
    pub const fn new(inner: A) -> Self {
        Self {
            inner,
            reentries: AtomicU64::new(0),
        }
    }

    /// The wrapped allocator.
    pub const fn inner(&self) -> &A {
        &self.inner
    }

    /// How many calls re-entered the allocator so far.
    pub fn reentries(&self) -> u64 {
        self.reentries.load(Relaxed)
    }

    fn enter<R>(&self, call: impl FnOnce(&A) -> R) -> R {
        // The thread-local is const-initialised and has no destructor, so it
        // is reachable at any point of a thread's life without allocating.
        let depth = DEPTH.with(|depth| {
            let outer = depth.get();
            depth.set(outer + 1);
            outer
        });
        if depth > 0 {
            self.reentries.fetch_add(1, Relaxed);
        }
        let result = call(&self.inner);
        DEPTH.with(|depth| depth.set(depth.get() - 1));
        result
    }
}

// SAFETY: every call is forwarded unchanged to the inner allocator.
unsafe impl<A: GlobalAlloc> GlobalAlloc for ReentryDetector<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded from our caller.
        self.enter(|inner| unsafe { inner.alloc(layout) })
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded from our caller.
        self.enter(|inner| unsafe { inner.alloc_zeroed(layout) })
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded from our caller.
        self.enter(|inner| unsafe { inner.realloc(ptr, layout, new_size) })
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded from our caller.
        self.enter(|inner| unsafe { inner.dealloc(ptr, layout) })
    }
}

/// Work that exercises every path of the std adapter's allocator: threads
/// that start, name themselves, allocate, reallocate, free each other's
/// blocks and exit, and every kind of report while they run.
pub fn std_adapter_workout() {
    use std::hint::black_box;
    use std::sync::mpsc;

    let (sender, receiver) = mpsc::channel::<Vec<u8>>();
    let consumer = std::thread::Builder::new()
        .name("consumer".into())
        .spawn(move || receiver.iter().map(|block| block.len()).sum::<usize>())
        .unwrap();
    let producers: Vec<_> = (0..4)
        .map(|index| {
            let sender = sender.clone();
            std::thread::spawn(move || {
                for round in 0..1000 {
                    let mut block = vec![index as u8; 16 + round % 100];
                    block.reserve(round % 50);
                    sender.send(block).unwrap();
                    black_box(Box::new(round));
                }
            })
        })
        .collect();
    drop(sender);
    for _ in 0..3 {
        black_box(alloc_track::thread_report().to_string());
        black_box(alloc_track::backtrace_report(|_, _| true).to_string());
        let before = alloc_track::Snapshot::take();
        black_box(alloc_track::Snapshot::take().diff(&before).to_string());
    }
    for producer in producers {
        producer.join().unwrap();
    }
    assert!(consumer.join().unwrap() > 0);
}

/// Runs `go tool pprof` with `args` on `profile` and returns what it
/// printed. `None` when Go is not installed and the run is not CI's (which
/// installs it, so there a missing `go` fails the test).
pub fn go_pprof(args: &[&str], profile: &std::path::Path) -> Option<String> {
    let output = std::process::Command::new("go")
        .args(["tool", "pprof"])
        .args(args)
        .arg(profile)
        .output();
    match output {
        Ok(output) => {
            assert!(
                output.status.success(),
                "go tool pprof {args:?} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            Some(String::from_utf8_lossy(&output.stdout).into_owned())
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            assert!(
                std::env::var_os("CI").is_none(),
                "go is not installed; .ci/run installs it"
            );
            eprintln!("go is not installed: the profile is not read by go tool pprof");
            None
        }
        Err(error) => panic!("go tool pprof: {error}"),
    }
}

/// The first line of `go tool pprof -top`'s table, split into its fields:
/// `flat flat% sum% cum cum% function`.
pub fn top_line(top: &str) -> Vec<&str> {
    top.lines()
        .skip_while(|line| !line.trim_start().starts_with("flat"))
        .nth(1)
        .unwrap_or_else(|| panic!("no table in\n{top}"))
        .split_whitespace()
        .collect()
}

thread_local! {
    /// Per thread, so that tests running meanwhile never see their
    /// allocations refused (a panic printing its backtrace would then wait
    /// for itself on the standard library's backtrace lock).
    static FAIL: Cell<bool> = const { Cell::new(false) };
    /// The same, for requests aligned to more than [`PLAIN_ALIGN`] only.
    static FAIL_ALIGNED: Cell<bool> = const { Cell::new(false) };
}

/// The alignment above which [`Fallible::fail_aligned`] refuses: what the
/// system allocator gives any block.
pub const PLAIN_ALIGN: usize = 16;

/// System, or out of memory (every allocation and reallocation refused)
/// while [`Fallible::fail`] has set it on the calling thread, or out of
/// aligned memory (requests aligned to more than [`PLAIN_ALIGN`] refused)
/// while [`Fallible::fail_aligned`] has.
pub struct Fallible;

impl Fallible {
    /// Refuses (`true`) or serves again (`false`) this thread's requests.
    pub fn fail(refuse: bool) {
        FAIL.with(|fail| fail.set(refuse));
    }

    /// Refuses (`true`) or serves again (`false`) this thread's requests
    /// aligned to more than [`PLAIN_ALIGN`], such as the places of the
    /// sampling form's sampled blocks, which are aligned to a page.
    pub fn fail_aligned(refuse: bool) {
        FAIL_ALIGNED.with(|fail| fail.set(refuse));
    }

    fn failing(layout: Layout) -> bool {
        FAIL.try_with(Cell::get).unwrap_or(false)
            || (layout.align() > PLAIN_ALIGN && FAIL_ALIGNED.try_with(Cell::get).unwrap_or(false))
    }
}

// SAFETY: forwards to System, or returns null, which `GlobalAlloc` allows.
unsafe impl GlobalAlloc for Fallible {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if Self::failing(layout) {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded from our caller.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if Self::failing(layout) {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded from our caller.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if Self::failing(layout) {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded from our caller.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded from our caller.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Allocates, writes, grows, shrinks and frees blocks through `allocator`
/// called directly (as a second wrapper beside the global allocator would
/// be): small and large blocks, plain and zeroed, aligned to 8, 64 and a
/// page. Panics if a block does not hold what was written, or holds other
/// than zeros when zeroed. Returns the bytes it asked for, all of which it
/// has freed again.
pub fn exercise_directly(allocator: &impl GlobalAlloc) -> usize {
    let mut asked = 0;
    for (size, align) in [(24, 8), (100, 8), (64, 64), (3000, 4096), (200_000, 8)] {
        let layout = Layout::from_size_align(size, align).unwrap();
        // SAFETY: layouts of non-zero size; every block is checked for null,
        // written and read within its size, and freed once with the layout
        // (or the size) it has at that moment.
        unsafe {
            let zeroed = allocator.alloc_zeroed(layout);
            assert!(!zeroed.is_null());
            assert!(std::slice::from_raw_parts(zeroed, size)
                .iter()
                .all(|&b| b == 0));
            allocator.dealloc(zeroed, layout);

            let block = allocator.alloc(layout);
            assert!(!block.is_null() && block as usize % align == 0);
            std::ptr::write_bytes(block, 0xa5, size);
            let grown = allocator.realloc(block, layout, 2 * size);
            assert!(!grown.is_null() && grown as usize % align == 0);
            assert!(std::slice::from_raw_parts(grown, size)
                .iter()
                .all(|&b| b == 0xa5));
            std::ptr::write_bytes(grown.add(size), 0x5a, size);
            let grown_layout = Layout::from_size_align(2 * size, align).unwrap();
            let shrunk = allocator.realloc(grown, grown_layout, size / 2);
            assert!(!shrunk.is_null());
            assert!(std::slice::from_raw_parts(shrunk, size / 2)
                .iter()
                .all(|&b| b == 0xa5));
            allocator.dealloc(shrunk, Layout::from_size_align(size / 2, align).unwrap());
        }
        asked += size + size + 2 * size + size / 2;
    }
    asked
}

/// The thread report's metric of the thread (or group) named `name`.
pub fn thread_metric(name: &str) -> alloc_track::ThreadMetric {
    alloc_track::thread_report()
        .0
        .remove(name)
        .unwrap_or_else(|| panic!("no thread {name}"))
}

/// Checks, on a new thread named `name`, that `other` (a wrapper of the
/// other form than the global allocator's, called directly) counts
/// nothing: the thread's figures do not move while [`exercise_directly`]
/// runs through it, and the global allocator's own allocations after it
/// count exactly as before.
pub fn check_that_the_other_form_counts_nothing(
    other: &'static (impl GlobalAlloc + Sync),
    name: &'static str,
) {
    let metric = move || thread_metric(name);
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            std::hint::black_box(Box::new(0u8));
            let before = metric();
            let asked = exercise_directly(other);
            assert!(asked > 500_000);
            let after = metric();
            assert_eq!(
                (after.total_alloc, after.allocations),
                (before.total_alloc, before.allocations)
            );
            let kept = std::hint::black_box(vec![1u8; 1000]);
            let after = metric();
            assert_eq!(after.total_alloc - before.total_alloc, 1000);
            assert_eq!(after.allocations - before.allocations, 1);
            drop(kept);
        })
        .unwrap()
        .join()
        .unwrap();
}

/// The source directory of the `syn` the tests are built with, from
/// cargo's metadata: a real parser's sources, for workloads of thousands of
/// distinct stacks.
pub fn syn_sources() -> std::path::PathBuf {
    let output = std::process::Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let syn = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|package| {
            package["name"] == "syn" && package["version"].as_str().unwrap().starts_with("2.")
        })
        .expect("syn 2 among the packages");
    std::path::Path::new(syn["manifest_path"].as_str().unwrap())
        .parent()
        .unwrap()
        .join("src")
}
