//! A reference wrapper, not a tracker: an 8-byte header naming the thread, and the thread's counts
//! (`alloc_track_bench::floor`).

use alloc_track_bench::floor::{Floor, HEADER};
use alloc_track_bench::Variant;

#[global_allocator]
static GLOBAL: Floor<HEADER> = Floor;

struct Least;

impl Variant for Least {
    const NAME: &'static str = "floor-header";
}

fn main() {
    alloc_track_bench::main::<Least>();
}
