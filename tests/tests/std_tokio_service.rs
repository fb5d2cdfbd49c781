//! The seed's own setting: a service on a two-worker tokio runtime (worker
//! threads of one name), handling requests from 32 concurrent clients, where
//! one handler clones and drops a 64 KiB structure on every request and
//! another leaks slowly. The reports must tell the truth at a glance:
//! the tracker's own memory apart and last, same-named threads apart, one
//! entry per line of code however the runtime's internals differ, and no
//! runtime frames above the program's own.

use std::alloc::System;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use alloc_track::{
    AllocTrack, BacktraceMode, BacktraceOptions, CallsiteKind, FrameOrigin, FINISHED_THREADS,
    REPORTS,
};

#[global_allocator]
static GLOBAL: AllocTrack<System> = AllocTrack::new(System, BacktraceMode::Short);

const CLIENTS: u64 = 32;
const REQUESTS: u64 = 100;
const CATALOG_BYTES: usize = 64 * 1024;

static CLONES: AtomicU64 = AtomicU64::new(0);
static LEAKS: AtomicU64 = AtomicU64::new(0);

struct Catalog {
    data: Box<[u8; CATALOG_BYTES]>,
}

impl Clone for Catalog {
    #[inline(never)]
    fn clone(&self) -> Self {
        CLONES.fetch_add(1, Relaxed);
        Catalog {
            data: self.data.clone(),
        }
    }
}

/// The handler that clones the catalog for every request and drops it.
#[inline(never)]
async fn lookup(catalog: &Catalog, key: u64) -> u8 {
    let snapshot = catalog.clone();
    tokio::task::yield_now().await;
    snapshot.data[key as usize % CATALOG_BYTES]
}

/// The handler that leaks a little now and then.
#[inline(never)]
async fn audit(request: u64) {
    if request % 10 == 0 {
        LEAKS.fetch_add(1, Relaxed);
        std::mem::forget(black_box(vec![0u8; 1000]));
    }
    tokio::task::yield_now().await;
}

async fn client(catalog: std::sync::Arc<Catalog>, id: u64) -> u64 {
    let mut sum = 0;
    for request in 0..REQUESTS {
        sum += u64::from(lookup(&catalog, id * REQUESTS + request).await);
        audit(request).await;
    }
    sum
}

#[test]
fn reports_of_an_async_service_read_right() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("tokio-rt-worker")
        .build()
        .unwrap();
    let catalog = std::sync::Arc::new(Catalog {
        data: Box::new([7u8; CATALOG_BYTES]),
    });
    let base = CLONES.load(Relaxed);
    let total: u64 = runtime.block_on(async {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|id| tokio::spawn(client(catalog.clone(), id)))
            .collect();
        let mut total = 0;
        for client in clients {
            total += client.await.unwrap();
        }
        total
    });
    assert_eq!(total, 7 * CLIENTS * REQUESTS);
    let clones = CLONES.load(Relaxed) - base;
    assert_eq!(clones, CLIENTS * REQUESTS);

    // Reports taken while the workers are alive.
    let first = alloc_track::backtrace_report(|_, _| true);
    let threads = alloc_track::thread_report();
    let report = alloc_track::backtrace_report(|_, _| true);
    black_box(first);

    // One entry for the clone's line, however many ways the runtime reached
    // it, with exactly the clones made.
    let clone_sites: Vec<_> = report
        .0
        .iter()
        .filter(|(backtrace, _)| {
            backtrace.innermost_function()
                == Some("<std_tokio_service::Catalog as core::clone::Clone>::clone")
        })
        .collect();
    assert_eq!(clone_sites.len(), 1, "{report:#}");
    let (clone_trace, clone_site) = clone_sites[0];
    assert_eq!(clone_site.allocations, clones);
    assert_eq!(clone_site.allocated, clones * CATALOG_BYTES as u64);
    assert_eq!(clone_site.in_use(), 0);
    // Kept apart, the same figures spread over one or more stacks.
    let apart = alloc_track::backtrace_report_with(
        BacktraceOptions::new().merge_same_frames(false),
        |_, _| true,
    );
    let apart_sites: Vec<_> = apart
        .0
        .iter()
        .filter(|(backtrace, _)| backtrace.innermost_function() == clone_trace.innermost_function())
        .collect();
    assert_eq!(apart_sites.len() as u64, clone_site.stacks);
    assert_eq!(
        apart_sites.iter().map(|(_, m)| m.allocations).sum::<u64>(),
        clones
    );

    // No runtime frames above the program's own: the short stack ends with
    // a frame of this file, and the text says what was cut.
    let shown = clone_trace.short_symbols();
    assert_eq!(shown.last().unwrap().origin(), FrameOrigin::Program);
    assert!(shown.len() <= 8, "{} frames shown", shown.len());
    let mut text = String::new();
    clone_trace.write(&mut text, true).unwrap();
    assert!(text.contains("outer frames (tokio"), "{text}");
    assert!(!text.contains("tokio::runtime"), "{text}");

    // The leak, exact.
    let leak = report
        .0
        .iter()
        .find(|(backtrace, _)| {
            backtrace
                .innermost_function()
                .is_some_and(|name| name.starts_with("std_tokio_service::audit::"))
        })
        .unwrap_or_else(|| panic!("no leak entry:\n{report:#}"));
    assert_eq!(leak.1.in_use(), LEAKS.load(Relaxed) * 1000);

    // The tracker's own memory: labelled, apart from the program's
    // uncaptured allocations, and last although it holds more than some of
    // the program's entries before it.
    let (last, own) = report.0.last().unwrap();
    assert_eq!(last.kind, CallsiteKind::Tracker);
    assert!(own.in_use() > clone_site.in_use());
    let uncaptured: u64 = report
        .0
        .iter()
        .filter(|(backtrace, _)| backtrace.kind == CallsiteKind::Uncaptured)
        .map(|(_, metric)| metric.in_use())
        .sum();
    assert!(uncaptured < own.in_use() / 100, "uncaptured {uncaptured}");
    let text = format!("{report:#}");
    let own_label = text.find("(alloc-track's own memory").unwrap();
    assert!(own_label > text.find("Catalog").unwrap());
    // By the default order (bytes in use) the text's first entry is the
    // leak; the tracker's memory still comes last.
    let text = report.to_string();
    assert!(text.starts_with("  std_tokio_service::audit::"), "{text}");
    assert!(text.rfind("(alloc-track's own memory").unwrap() > text.find("audit").unwrap());

    // The two workers are two entries, each with its own figures; the
    // grouped view says it covers two threads; no thread freed its own
    // blocks "as another"; no peak is below what is in use.
    let workers: Vec<_> = threads
        .0
        .iter()
        .filter(|(_, metric)| metric.name == "tokio-rt-worker")
        .collect();
    assert_eq!(workers.len(), 2, "{:?}", threads.0.keys());
    for (key, metric) in &workers {
        assert_eq!(metric.thread_ids.len(), 1);
        assert_eq!(**key, format!("tokio-rt-worker #{}", metric.thread_ids[0]));
        assert!(
            !metric.freed_by_others.contains_key(*key),
            "{key} freed its own"
        );
        assert!(metric.total_alloc > 0);
    }
    for (key, metric) in &threads.0 {
        assert!(metric.peak_used >= metric.current_used, "{key}: {metric:?}");
    }
    let groups = threads.by_name();
    let group = &groups["tokio-rt-worker"];
    assert_eq!(group.threads, 2);
    assert_eq!(
        group.metric.total_alloc,
        workers.iter().map(|(_, m)| m.total_alloc).sum::<u64>()
    );
    assert!(group.metric.peak_used >= group.metric.current_used);
    assert!(group.largest_thread_peak <= group.metric.peak_used);
    assert!(threads.0.contains_key(REPORTS));
    drop(runtime);
    let after = alloc_track::thread_report();
    assert!(after.0.contains_key(FINISHED_THREADS));
}
