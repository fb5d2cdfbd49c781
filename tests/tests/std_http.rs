//! The HTTP debug endpoint over a real loopback socket: every path answers
//! while the program's threads allocate, Go's pprof tool reads its profiles,
//! unknown paths and bad requests get clear 4xx answers without stopping the
//! server, a slow client cannot starve the others, and addresses other than
//! loopback are refused unless allowed.

use std::alloc::System;
use std::hint::black_box;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alloc_track::http::{serve, serve_with, ServeOptions};
use alloc_track::{AllocTrack, BacktraceMode, Snapshot};
use alloc_track_tests::go_pprof;

#[global_allocator]
static GLOBAL: AllocTrack<System> = AllocTrack::new(System, BacktraceMode::Short);

/// A response: status, headers (lower-case names) and body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends `request` as it is and reads the whole answer (the server closes
/// every connection after one request).
fn exchange(addr: SocketAddr, request: &[u8]) -> Answer {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    parse(&raw)
}

fn parse(raw: &[u8]) -> Answer {
    let end = raw
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no head in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(key, value)| (key.trim().to_lowercase(), value.trim().to_owned()))
        .collect();
    Answer {
        status,
        headers,
        body: raw[end + 4..].to_vec(),
    }
}

fn get(addr: SocketAddr, path: &str) -> Answer {
    exchange(
        addr,
        format!("GET {path} HTTP/1.1\r\nhost: localhost\r\n\r\n").as_bytes(),
    )
}

/// The program's work while the endpoint answers: allocate and free.
#[inline(never)]
fn churn(round: usize) -> usize {
    let blocks: Vec<Vec<u8>> = (0..64).map(|i| vec![i as u8; 100 + round % 900]).collect();
    black_box(blocks).len()
}

#[test]
fn every_path_answers_while_the_program_allocates() {
    let server = serve("127.0.0.1:0").unwrap();
    let addr = server.local_addr();
    assert!(addr.ip().is_loopback() && addr.port() != 0);

    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..3)
        .map(|index| {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name(format!("worker-{index}"))
                .spawn(move || {
                    let mut round = 0;
                    while !stop.load(Relaxed) {
                        round += churn(round);
                    }
                })
                .unwrap()
        })
        .collect();
    std::thread::sleep(Duration::from_millis(50));

    let index = get(addr, "/");
    assert_eq!(index.status, 200);
    assert!(index
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    for path in [
        "/debug/pprof/heap",
        "/debug/pprof/allocs",
        "/debug/alloc-track/threads",
        "/debug/alloc-track/scopes",
        "/debug/alloc-track/backtraces",
        "/debug/alloc-track/flamegraph.svg",
        "/debug/alloc-track/snapshot.json",
    ] {
        assert!(index.text().contains(&format!("href=\"{path}\"")), "{path}");
    }

    // The heap profiles, as Go serves them, read by Go's tool.
    for (path, default) in [
        ("/debug/pprof/heap", "inuse_space"),
        ("/debug/pprof/allocs", "alloc_space"),
    ] {
        let answer = get(addr, path);
        assert_eq!(answer.status, 200, "{path}: {}", answer.text());
        assert_eq!(
            answer.header("content-type"),
            Some("application/octet-stream")
        );
        assert_eq!(&answer.body[..2], [0x1f, 0x8b], "gzip");
        let file = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("http-{default}.pb.gz"));
        std::fs::write(&file, &answer.body).unwrap();
        if let Some(top) = go_pprof(&["-top"], &file) {
            assert!(top.contains(&format!("Type: {default}")), "{top}");
            assert!(top.contains("std_http::churn"), "{top}");
        }
    }
    let debug = get(addr, "/debug/pprof/heap?debug=1");
    assert_eq!(debug.status, 200);
    assert!(debug.text().contains("THREADS") && debug.text().contains("BACKTRACES"));

    // The reports in each format.
    let threads = get(addr, "/debug/alloc-track/threads");
    assert_eq!(threads.status, 200);
    assert!(threads.text().contains("worker-0"), "{}", threads.text());
    let json: serde_json::Value =
        serde_json::from_slice(&get(addr, "/debug/alloc-track/threads?format=json").body).unwrap();
    assert!(json["worker-1"]["total_alloc"].as_u64().unwrap() > 0);
    let csv = get(addr, "/debug/alloc-track/threads?format=csv");
    assert_eq!(csv.header("content-type"), Some("text/csv; charset=utf-8"));
    assert!(csv.text().starts_with("thread,total_alloc,"));
    assert!(csv.text().lines().any(|line| line.starts_with("worker-2,")));

    {
        let _scope = alloc_track::scope("http-test");
        black_box(vec![0u8; 100]);
    }
    let scopes = get(addr, "/debug/alloc-track/scopes");
    assert!(
        scopes.text().contains("http-test:\ntotal_alloc: 100 B"),
        "{}",
        scopes.text()
    );
    let json: serde_json::Value =
        serde_json::from_slice(&get(addr, "/debug/alloc-track/scopes?format=json").body).unwrap();
    assert_eq!(json["http-test"]["total_freed"], 100);
    let csv = get(addr, "/debug/alloc-track/scopes?format=csv").text();
    assert!(
        csv.lines().any(|line| line.starts_with("http-test,100,")),
        "{csv}"
    );

    let backtraces = get(addr, "/debug/alloc-track/backtraces");
    assert_eq!(backtraces.status, 200);
    assert!(backtraces.text().contains("std_http::churn"));
    let all = get(addr, "/debug/alloc-track/backtraces?all=1");
    assert!(!all.text().contains("more callsites not shown"));
    let json: serde_json::Value =
        serde_json::from_slice(&get(addr, "/debug/alloc-track/backtraces?format=json").body)
            .unwrap();
    assert!(!json.as_array().unwrap().is_empty());
    let csv = get(addr, "/debug/alloc-track/backtraces?format=csv");
    assert!(csv.text().starts_with("allocated,allocations,"));

    let svg = get(addr, "/debug/alloc-track/flamegraph.svg?value=alloc_space");
    assert_eq!(svg.header("content-type"), Some("image/svg+xml"));
    let svg = svg.text();
    let options = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..roxmltree::ParsingOptions::default()
    };
    roxmltree::Document::parse_with_options(&svg, options).expect("well-formed XML");
    assert!(svg.contains("std_http::churn"));

    let snapshot = get(addr, "/debug/alloc-track/snapshot.json");
    let snapshot = Snapshot::from_json(&snapshot.text()).unwrap();
    assert!(snapshot.threads().0.contains_key("worker-0"));

    // The server's own allocations are the tracker's, not the program's:
    // none of its threads has a row (Linux keeps 15 bytes of a name, so
    // theirs read `alloc-track/htt` and the like).
    let report = alloc_track::thread_report();
    assert!(
        report
            .0
            .keys()
            .all(|name| !name.starts_with("alloc-track/")),
        "{:?}",
        report.0.keys()
    );
    assert!(report.0[alloc_track::REPORTS].total_alloc > 0);

    stop.store(true, Relaxed);
    for worker in workers {
        worker.join().unwrap();
    }
    server.shutdown();
}

/// Blocks kept from before a delta profile's window.
#[inline(never)]
fn kept_before_the_window() -> Vec<Vec<u8>> {
    (0..100).map(|i| vec![i as u8; 1000]).collect()
}

/// Blocks allocated during a delta profile's window.
#[inline(never)]
fn allocated_in_the_window() -> Vec<Vec<u8>> {
    (0..100).map(|i| vec![i as u8; 3000]).collect()
}

/// The decompressed bytes of a gzipped profile.
fn gunzip(body: &[u8]) -> Vec<u8> {
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(body)
        .read_to_end(&mut raw)
        .unwrap();
    raw
}

#[test]
fn profiles_a_backend_symbolizes_and_profiles_over_seconds() {
    let server = serve("127.0.0.1:0").unwrap();
    let addr = server.local_addr();
    let kept = black_box(kept_before_the_window());

    // No symbol lookup in the process: addresses and mappings, the
    // executable's with its path and build ID, and nothing of the names.
    let answer = get(addr, "/debug/pprof/heap?symbolize=0");
    assert_eq!(answer.status, 200, "{}", answer.text());
    let raw = gunzip(&answer.body);
    let contains = |needle: &[u8]| raw.windows(needle.len()).any(|window| window == needle);
    assert!(!contains(b"kept_before_the_window"));
    let executable = std::fs::read_link("/proc/self/exe").unwrap();
    assert!(contains(executable.to_string_lossy().as_bytes()));
    // The profile's drop_frames names the tracker's functions, for the
    // reader to leave out once it has symbolized.
    assert!(contains(b"alloc_track|alloc_track_core"));
    // Go's tool reads it: the executable's mapping with its build ID, and
    // every location an address in a mapping, with no function of its own.
    let file =
        std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("http-unsymbolized.pb.gz");
    std::fs::write(&file, &answer.body).unwrap();
    if let Some(raw) = go_pprof(&["-raw", "-symbolize=none"], &file) {
        let mappings = raw.split("Mappings").nth(1).unwrap_or_default();
        let executable = mappings
            .lines()
            .find(|line| line.contains(&*executable.to_string_lossy()))
            .unwrap_or_else(|| panic!("{raw}"));
        let id = executable.split_whitespace().nth(3).unwrap_or_default();
        assert!(
            id.len() >= 16 && id.bytes().all(|byte| byte.is_ascii_hexdigit()),
            "{executable}"
        );
        let locations = raw.split("Locations").nth(1).unwrap_or_default();
        let locations = locations.split("Mappings").next().unwrap_or_default();
        assert!(
            locations
                .lines()
                .skip(1)
                .all(|line| line.trim_end().ends_with("M=1")
                    || line.trim_end().ends_with("M=2")
                    || !line.contains("M=")),
            "{locations}"
        );
    }
    // And symbolizes it from the executable on disk: every byte of what
    // `kept_before_the_window` allocated (100 vectors of 1,000 bytes and
    // the vector of them, 24 bytes each) is under its name. Addresses
    // read a page or a few bytes off would name other functions.
    if let Some(raw) = go_pprof(&["-raw", "-sample_index=inuse_space"], &file) {
        let locations = raw.split("Locations").nth(1).unwrap_or_default();
        // `id: address M=n function file:line`, then a line per frame
        // inlined into it: `function file:line`.
        let mut id = "";
        let mut kept_at: Vec<&str> = Vec::new();
        for line in locations.lines() {
            let mut fields: Vec<&str> = line.split_whitespace().collect();
            if fields.first().is_some_and(|first| first.ends_with(':')) {
                id = fields[0].trim_end_matches(':');
                fields.drain(..3.min(fields.len()));
            }
            // The function itself, or one of its closures, named in a
            // generic function's arguments (the recorded stacks of the
            // inner vectors stop before the function's own frame).
            if fields
                .iter()
                .any(|field| field.contains("kept_before_the_window"))
            {
                kept_at.push(id);
            }
        }
        assert!(!kept_at.is_empty(), "{raw}");
        let samples = raw.split("Samples:").nth(1).unwrap_or_default();
        let samples = samples.split("Locations").next().unwrap_or_default();
        // `values: location ids`, the ids going on over further lines.
        let mut stacks: Vec<(u64, Vec<&str>)> = Vec::new();
        for line in samples.lines().skip(1) {
            match line.split_once(':') {
                Some((values, ids)) => {
                    // alloc_objects alloc_space inuse_objects inuse_space
                    let in_use = values.split_whitespace().nth(3).unwrap();
                    stacks.push((in_use.parse().unwrap(), ids.split_whitespace().collect()));
                }
                None => {
                    if let Some((_, stack)) = stacks.last_mut() {
                        stack.extend(line.split_whitespace());
                    }
                }
            }
        }
        let kept_bytes: u64 = stacks
            .iter()
            .filter(|(_, stack)| stack.iter().any(|id| kept_at.contains(id)))
            .map(|&(bytes, _)| bytes)
            .sum();
        assert_eq!(kept_bytes, 100 * 1000 + 100 * 24, "{raw}");
    }

    // Over one second: what was allocated meanwhile, and nothing of what
    // was allocated before.
    let in_the_window = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        black_box(allocated_in_the_window())
    });
    let answer = get(addr, "/debug/pprof/allocs?seconds=1");
    let during = in_the_window.join().unwrap();
    assert_eq!(answer.status, 200, "{}", answer.text());
    let file = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("http-seconds.pb.gz");
    std::fs::write(&file, &answer.body).unwrap();
    if let Some(top) = go_pprof(
        &[
            "-top",
            "-nodecount=1000",
            "-nodefraction=0",
            "-sample_index=alloc_space",
        ],
        &file,
    ) {
        assert!(top.contains("std_http::allocated_in_the_window"), "{top}");
        assert!(!top.contains("kept_before_the_window"), "{top}");
        assert!(top.contains("Duration: 1"), "{top}");
    }
    drop((kept, during));
    server.shutdown();
}

#[test]
fn bad_requests_get_clear_answers_and_the_server_keeps_serving() {
    let server = serve("localhost:0").unwrap();
    let addr = server.local_addr();

    let missing = get(addr, "/debug/pprof/goroutine");
    assert_eq!(missing.status, 404);
    assert!(missing.text().contains("the index at /"));
    assert_eq!(
        get(addr, "/debug/alloc-track/threads?format=xml").status,
        400
    );
    assert_eq!(
        get(addr, "/debug/alloc-track/flamegraph.svg?value=bytes").status,
        400
    );
    for bad in ["0", "-1", "many", "600"] {
        let answer = get(addr, &format!("/debug/pprof/heap?seconds={bad}"));
        assert_eq!(answer.status, 400, "seconds={bad}");
        assert!(answer.text().contains("seconds"), "{}", answer.text());
    }
    assert_eq!(
        get(addr, "/debug/alloc-track/threads?seconds=1").status,
        400
    );
    let post = exchange(
        addr,
        b"POST /debug/pprof/heap HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n",
    );
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));

    // Not HTTP at all, then a request line with a broken method.
    for garbage in [
        &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n"[..],
        b"G\x00T / HTTP/1.1\r\n\r\n",
    ] {
        let answer = exchange(addr, garbage);
        assert_eq!(answer.status, 400, "{garbage:?}");
        assert_eq!(get(addr, "/").status, 200, "still serving");
    }
    // A head too large to be a request.
    let huge = format!(
        "GET / HTTP/1.1\r\nx-padding: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    assert_eq!(exchange(addr, huge.as_bytes()).status, 431);
    assert_eq!(get(addr, "/").status, 200);
    server.shutdown();
}

#[test]
fn a_slow_client_cannot_starve_the_others() {
    let options = ServeOptions::new()
        .max_connections(1)
        .request_timeout(Duration::from_millis(500));
    let server = serve_with("127.0.0.1:0", options).unwrap();
    let addr = server.local_addr();

    // A client that connects and sends half a request, then nothing.
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.write_all(b"GET / HTT").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    // Meanwhile the one slot is taken: a clear 503, at once.
    let started = Instant::now();
    assert_eq!(get(addr, "/").status, 503);
    assert!(started.elapsed() < Duration::from_millis(400));
    // The slow client gets 408 when its time is up, and its slot is free.
    let mut raw = Vec::new();
    slow.read_to_end(&mut raw).unwrap();
    assert_eq!(parse(&raw).status, 408);
    assert_eq!(get(addr, "/").status, 200);
    server.shutdown();
}

#[test]
fn only_loopback_unless_allowed() {
    let refused = serve("0.0.0.0:0").unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::PermissionDenied);
    assert!(refused.to_string().contains("allow_non_loopback"));
    let refused = serve(("::", 0)).unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::PermissionDenied);

    let open = serve_with("0.0.0.0:0", ServeOptions::new().allow_non_loopback(true)).unwrap();
    let port = open.local_addr().port();
    assert_eq!(
        get(SocketAddr::from(([127, 0, 0, 1], port)), "/").status,
        200
    );
    open.shutdown();
}
