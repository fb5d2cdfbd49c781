//! The scenario the tracker was first built for: one thread sends 1 KiB
//! buffers to another, which frees every other one and leaks the rest. The
//! reports show which thread holds the memory, who freed what, and the line
//! where the leaked buffers were allocated.
//!
//! Run with `cargo run -p alloc-track --example leak` (frame pointers are on
//! through the workspace's `.cargo/config.toml`).

use std::alloc::System;
use std::sync::mpsc;

use alloc_track::{AllocTrack, BacktraceMode};

#[global_allocator]
static GLOBAL_ALLOC: AllocTrack<System> = AllocTrack::new(System, BacktraceMode::Short);

const BUFFERS: usize = 200;

fn main() {
    let (sender, receiver) = mpsc::channel();
    let consumer = std::thread::Builder::new()
        .name("thread2".to_string())
        .spawn(move || consume(receiver))
        .unwrap();
    for _ in 0..BUFFERS {
        sender.send(produce()).unwrap();
    }
    drop(sender);
    consumer.join().unwrap();

    let threads = alloc_track::thread_report();
    println!("THREADS\n{threads}");
    // Callsites still holding more than 10 KiB: the leak.
    let backtraces = alloc_track::backtrace_report(|_, metric| metric.in_use() > 10 * 1024);
    println!("BACKTRACES\n{backtraces}");
    println!("BACKTRACES CSV\n{}", backtraces.csv());
}

/// Allocates one buffer to send.
#[inline(never)]
fn produce() -> Vec<u8> {
    vec![1u8; 1024]
}

/// Frees every other buffer and leaks the rest.
fn consume(receiver: mpsc::Receiver<Vec<u8>>) {
    let mut flip = false;
    while let Ok(buffer) = receiver.recv() {
        if flip {
            drop(buffer);
        } else {
            std::mem::forget(buffer);
        }
        flip = !flip;
    }
}
