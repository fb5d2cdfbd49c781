//! dhat 0.3's heap profiler.

use alloc_track_bench::Variant;

#[global_allocator]
static GLOBAL: dhat::Alloc = dhat::Alloc;

struct Dhat;

impl Variant for Dhat {
    const NAME: &'static str = "dhat";

    fn start() {
        // Profiling lasts while the profiler lives; it is never dropped, so
        // it never writes its file.
        std::mem::forget(dhat::Profiler::new_heap());
    }
}

fn main() {
    alloc_track_bench::main::<Dhat>();
}
