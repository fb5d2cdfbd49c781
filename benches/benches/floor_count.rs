//! A reference wrapper, not a tracker: a thread-local countdown and count, then a jump to the system allocator
//! (`alloc_track_bench::floor`).

use alloc_track_bench::floor::{Floor, COUNT};
use alloc_track_bench::Variant;

#[global_allocator]
static GLOBAL: Floor<COUNT> = Floor;

struct Least;

impl Variant for Least {
    const NAME: &'static str = "floor-count";
}

fn main() {
    alloc_track_bench::main::<Least>();
}
