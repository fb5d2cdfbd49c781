//! Clones a catalog from a program's own `Clone` impl and prints what a
//! short backtrace report shows of that callsite, one line per frame, for
//! `tests/tests/std_debuginfo.rs` to check under each debug-info level.

use std::alloc::System;
use std::hint::black_box;

use alloc_track::{AllocTrack, BacktraceMode};

#[global_allocator]
static GLOBAL: AllocTrack<System> = AllocTrack::new(System, BacktraceMode::Short);

struct Catalog {
    items: Vec<u64>,
}

/// The line of the allocating call in `clone`.
const CLONE_LINE: u32 = line!() + 5;

impl Clone for Catalog {
    #[inline(never)]
    fn clone(&self) -> Self {
        let items = self.items.clone();
        // Used after the call, so that the optimiser cannot make the call a
        // jump, which would leave no frame of `clone` on the stack to walk.
        Catalog {
            items: black_box(items),
        }
    }
}

/// Ten clones from one call: the count is opaque to the optimiser, which
/// would otherwise unroll the loop into ten calls with ten return addresses
/// (ten stacks that only print alike) when it judges the body small enough.
#[inline(never)]
fn serve(catalog: &Catalog) -> Vec<Catalog> {
    (0..black_box(10))
        .map(|_| black_box(catalog.clone()))
        .collect()
}

fn main() {
    let catalog = Catalog {
        items: vec![1; 1000],
    };
    let kept = black_box(serve(&catalog));
    let report = alloc_track::backtrace_report(|_, metric| metric.allocated == 80_000);
    println!("clone-line {CLONE_LINE}");
    for (backtrace, metric) in &report.0 {
        println!(
            "entry {} {}",
            metric.allocations,
            backtrace.innermost_function().unwrap_or("-")
        );
        for symbol in backtrace.short_symbols() {
            println!(
                "frame {:?}|{}|{}|{}",
                symbol.origin(),
                symbol.name.as_deref().unwrap_or("-"),
                symbol
                    .file
                    .as_deref()
                    .map_or("-".into(), |file| file.to_string_lossy()),
                symbol.line.unwrap_or(0)
            );
        }
    }
    drop(kept);
}
