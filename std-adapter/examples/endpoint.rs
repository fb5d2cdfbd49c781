//! The HTTP debug endpoint on a program that works: three threads keep a
//! growing cache and churn through requests while the endpoint serves
//! profiles at Go's paths.
//!
//! ```sh
//! cargo run -p alloc-track --features http --example endpoint -- 120
//! go tool pprof -top http://127.0.0.1:6060/debug/pprof/heap
//! curl http://127.0.0.1:6060/debug/alloc-track/backtraces
//! ```
//!
//! The argument is how many seconds to run (default 60); the address is
//! `ALLOC_TRACK_ADDR` or `127.0.0.1:6060`.

use std::alloc::System;
use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use alloc_track::{AllocTrack, BacktraceMode};

#[global_allocator]
static GLOBAL: AllocTrack<System> = AllocTrack::new(System, BacktraceMode::Short);

/// Keeps every key it is given: the slow leak.
#[inline(never)]
fn remember(cache: &mut HashMap<u64, Vec<u8>>, key: u64) {
    cache.insert(key, vec![0u8; 256]);
}

/// Builds a response and drops it: the churn.
#[inline(never)]
fn respond(request: u64) -> usize {
    let body: Vec<String> = (0..16).map(|line| format!("{request}:{line}")).collect();
    black_box(body).len()
}

fn main() -> std::io::Result<()> {
    let seconds: u64 = std::env::args()
        .nth(1)
        .and_then(|arg| arg.parse().ok())
        .unwrap_or(60);
    let addr = std::env::var("ALLOC_TRACK_ADDR").unwrap_or_else(|_| "127.0.0.1:6060".into());
    let server = alloc_track::http::serve(addr.as_str())?;
    println!("serving http://{}/ for {seconds} s", server.local_addr());

    let until = Instant::now() + Duration::from_secs(seconds);
    let workers: Vec<_> = (0..3u64)
        .map(|worker| {
            std::thread::Builder::new()
                .name(format!("worker-{worker}"))
                .spawn(move || {
                    let mut cache = HashMap::new();
                    let mut request = worker;
                    while Instant::now() < until {
                        request += 3;
                        black_box(respond(request));
                        if request % 64 == worker {
                            remember(&mut cache, request);
                        }
                        if request % 1024 == worker {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                    }
                    cache.len()
                })
        })
        .collect::<Result<_, _>>()?;
    for worker in workers {
        let _ = worker.join();
    }
    server.shutdown();
    Ok(())
}
