//! An async service as the original `alloc-track` users ran it: a two-worker
//! tokio runtime answering 32 concurrent clients, where one handler clones
//! a 64 KiB catalog for every request (volatile allocations, the cause of
//! heap fragmentation) and another leaks a little now and then. The reports
//! name both lines, keep the tracker's own memory apart, and keep the two
//! same-named worker threads apart.
//!
//! Run with `cargo run -p alloc-track --example service`.

use std::alloc::System;
use std::hint::black_box;
use std::sync::Arc;

use alloc_track::{AllocTrack, BacktraceMode, BacktraceOptions, Order};

#[global_allocator]
static GLOBAL: AllocTrack<System> = AllocTrack::new(System, BacktraceMode::Short);

struct Catalog {
    data: Box<[u8; 64 * 1024]>,
}

impl Clone for Catalog {
    #[inline(never)]
    fn clone(&self) -> Self {
        Catalog {
            data: self.data.clone(),
        }
    }
}

/// Copies the whole catalog to answer one lookup.
#[inline(never)]
async fn lookup(catalog: &Catalog, key: usize) -> u8 {
    let snapshot = catalog.clone();
    tokio::task::yield_now().await;
    snapshot.data[key % snapshot.data.len()]
}

/// Keeps a record of every tenth request, forever.
#[inline(never)]
async fn audit(request: usize) {
    if request % 10 == 0 {
        std::mem::forget(black_box(format!("request {request} audited")));
    }
    tokio::task::yield_now().await;
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("tokio-rt-worker")
        .build()
        .unwrap();
    let catalog = Arc::new(Catalog {
        data: Box::new([7; 64 * 1024]),
    });
    runtime.block_on(async {
        let clients: Vec<_> = (0..32)
            .map(|client| {
                let catalog = catalog.clone();
                tokio::spawn(async move {
                    for request in 0..200 {
                        black_box(lookup(&catalog, client * 200 + request).await);
                        audit(request).await;
                    }
                })
            })
            .collect();
        for client in clients {
            client.await.unwrap();
        }
    });

    println!("THREADS\n{}", alloc_track::thread_report());
    // Volatile allocations: what allocated most, however little it keeps.
    let options = BacktraceOptions::new().order(Order::AllocatedBytes);
    let busiest = alloc_track::backtrace_report_with(options, |_, m| m.allocated > 1 << 20);
    println!("BUSIEST CALLSITES\n{busiest}");
    // Leaks: what still holds memory.
    let holding = alloc_track::backtrace_report(|_, m| m.in_use() > 1 << 10);
    println!("HOLDING MEMORY\n{holding}");
}
