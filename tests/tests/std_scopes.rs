//! Scopes: allocations attributed to a piece of work rather than to a
//! thread. Exact figures on a plain thread with nested scopes, and under a
//! multi-threaded tokio runtime, where tasks in scopes keep, churn and free
//! each other's blocks on whichever worker polls them.

use std::alloc::System;
use std::hint::black_box;
use std::sync::{Arc, Mutex};

use alloc_track::{AllocTrack, BacktraceMode, ScopeFutureExt, ThreadMetric};
use alloc_track_tests::thread_metric;

#[global_allocator]
static GLOBAL: AllocTrack<System> = AllocTrack::new(System, BacktraceMode::Short);

fn scope_metric(name: &str) -> ThreadMetric {
    alloc_track::scope_report()
        .0
        .remove(name)
        .unwrap_or_else(|| panic!("no scope {name}"))
}

#[test]
fn nested_scopes_on_a_thread() {
    std::thread::Builder::new()
        .name("scoped".into())
        .spawn(|| {
            let before = thread_metric("scoped");
            let outer_block;
            let inner_block;
            {
                let _outer = alloc_track::scope("outer");
                outer_block = black_box(vec![1u8; 1000]);
                {
                    let _inner = alloc_track::scope("inner");
                    inner_block = black_box(vec![2u8; 300]);
                    // Freed inside the inner scope, allocated in the outer:
                    // the inner scope freed the outer's block.
                    drop(outer_block);
                }
                // Back in the outer scope.
                black_box(vec![3u8; 50]);
            }
            let after = thread_metric("scoped");
            // The thread's own figures leave the scopes out (the reports
            // allocate as the tracker, not as the thread).
            assert_eq!(after.total_alloc, before.total_alloc);

            let outer = scope_metric("outer");
            assert_eq!((outer.total_alloc, outer.allocations), (1050, 2));
            assert_eq!((outer.total_freed, outer.current_used), (1050, 0));
            assert_eq!(outer.freed_by_others["inner"], 1000);
            let inner = scope_metric("inner");
            assert_eq!((inner.total_alloc, inner.current_used), (300, 300));
            assert_eq!(inner.freed_of_others, 1000);

            // Freed by the thread outside every scope: credited to "inner".
            drop(inner_block);
            let inner = scope_metric("inner");
            assert_eq!((inner.total_freed, inner.current_used), (300, 0));
            assert_eq!(inner.freed_by_others["scoped"], 300);

            // Entered again, the scope goes on from its figures.
            let again = {
                let _inner = alloc_track::scope("inner");
                black_box(vec![4u8; 7])
            };
            assert_eq!(scope_metric("inner").total_alloc, 307);
            drop(again);
        })
        .unwrap()
        .join()
        .unwrap();
}

const BUFFER: usize = 64 * 1024;

/// Gives the worker back to the runtime once. Unlike tokio's `yield_now`,
/// whose list of deferred wakers grows on a worker's first use (inside the
/// scope of whichever task yields first), this allocates nothing.
async fn yield_once() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            std::task::Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    })
    .await
}

/// Keeps 16 buffers of 64 KiB (1 MiB) and hands 8 more to the freer.
async fn keep(kept: Arc<Mutex<Vec<Vec<u8>>>>, handed: Arc<Mutex<Vec<Vec<u8>>>>) {
    for index in 0..24 {
        let buffer = black_box(vec![index as u8; BUFFER]);
        // The vectors have room already: pushing allocates nothing.
        if index % 3 == 2 {
            handed.lock().unwrap().push(buffer);
        } else {
            kept.lock().unwrap().push(buffer);
        }
        yield_once().await;
    }
}

/// Allocates and frees 10,000 blocks of 100 bytes.
async fn churn() {
    for round in 0..10_000 {
        black_box(vec![round as u8; 100]);
        if round % 100 == 0 {
            yield_once().await;
        }
    }
}

/// Frees the buffers the keeper handed over.
async fn free(handed: Arc<Mutex<Vec<Vec<u8>>>>) {
    let mut handed = handed.lock().unwrap();
    while let Some(buffer) = handed.pop() {
        drop(buffer);
    }
}

#[test]
fn async_tasks_in_scopes_on_a_multi_threaded_runtime() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let kept = Arc::new(Mutex::new(Vec::with_capacity(16)));
    let handed = Arc::new(Mutex::new(Vec::with_capacity(8)));
    runtime.block_on(async {
        let keeper = tokio::spawn(keep(Arc::clone(&kept), Arc::clone(&handed)).in_scope("keeper"));
        let churner = tokio::spawn(churn().in_scope("churner"));
        keeper.await.unwrap();
        churner.await.unwrap();
        tokio::spawn(free(Arc::clone(&handed)).in_scope("freer"))
            .await
            .unwrap();
    });

    let keeper = scope_metric("keeper");
    assert_eq!(
        (keeper.total_alloc, keeper.allocations),
        (24 * BUFFER as u64, 24)
    );
    assert_eq!(keeper.current_used, 1 << 20, "1 MiB kept");
    assert_eq!((keeper.total_freed, keeper.frees), (8 * BUFFER as u64, 8));
    assert_eq!(
        keeper.freed_by_others.get("freer").copied(),
        Some(8 * BUFFER as u64),
        "{keeper:?}"
    );
    assert_eq!(keeper.total_did_free, 0);

    let churner = scope_metric("churner");
    assert_eq!(
        (churner.total_alloc, churner.allocations),
        (1_000_000, 10_000)
    );
    assert_eq!((churner.total_freed, churner.current_used), (1_000_000, 0));
    assert_eq!(churner.total_did_free, 1_000_000);

    let freer = scope_metric("freer");
    assert_eq!((freer.total_alloc, freer.allocations), (0, 0));
    assert_eq!(freer.freed_of_others, 8 * BUFFER as u64);
    assert_eq!(freer.total_did_free, 8 * BUFFER as u64);

    // The report's text and JSON, as the thread report's.
    let report = alloc_track::scope_report();
    assert!(
        report
            .to_string()
            .contains("keeper:\ntotal_alloc: 1 MB\ntotal_did_free: 0 B\ntotal_freed: 512 KB"),
        "{report}"
    );
    let json: serde_json::Value = serde_json::from_str(&report.to_json().unwrap()).unwrap();
    assert_eq!(json["churner"]["allocations"], 10_000);
    drop(runtime);
    drop(kept);
}
