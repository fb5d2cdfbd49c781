//! A reference wrapper, not a tracker: a thread-local countdown and count, with refused allocations taken back
//! (`alloc_track_bench::floor`).

use alloc_track_bench::floor::{Floor, REFUSALS};
use alloc_track_bench::Variant;

#[global_allocator]
static GLOBAL: Floor<REFUSALS> = Floor;

struct Least;

impl Variant for Least {
    const NAME: &'static str = "floor-refusals";
}

fn main() {
    alloc_track_bench::main::<Least>();
}
