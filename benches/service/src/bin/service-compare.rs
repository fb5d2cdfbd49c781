//! Runs the service with each global allocator in turn under the same
//! loopback load, and measures what users see: CPU per request (as a ratio
//! to the system allocator), the 99th percentile of latency and the
//! resident memory; then, for the tracker's forms, what reading it costs
//! the process: the resident peak of a profile scrape and of a report of
//! every callsite, the anonymous memory a second later, and after a hundred
//! scrapes.
//!
//! ```sh
//! cargo run --release -p alloc-track-service-bench --bin service-compare
//! ```
//!
//! It builds the service itself (profile `service`: optimised, line tables;
//! and `service-full-debug` for the scrapes with full debug info). Options:
//! `--requests N` (per round, default 40,000), `--rounds N` (default 3),
//! `--scrapes N` (default 100), `--write FILE` (replaces the section
//! between this command's markers in FILE with the tables).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use alloc_track_service_bench::sample_order;

/// The variants, by binary, and how many of the round's requests each
/// serves (the seed crate, with a lock per allocation, a tenth).
const VARIANTS: [(&str, &str, usize); 5] = [
    ("system", "service-system", 1),
    ("threads only", "service-threads", 1),
    ("exact callsites", "service-callsites", 1),
    ("sampled, 512 KiB", "service-sampled", 1),
    ("seed, short", "service-seed", 10),
];

/// Connections the load generator keeps open at once.
const CONNECTIONS: usize = 8;

struct Options {
    requests: usize,
    rounds: usize,
    scrapes: usize,
    write: Option<PathBuf>,
}

fn options() -> Options {
    let mut options = Options {
        requests: 40_000,
        rounds: 3,
        scrapes: 100,
        write: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut number = || -> usize {
            args.next()
                .and_then(|value| value.parse().ok())
                .unwrap_or_else(|| panic!("{arg} takes a number"))
        };
        match arg.as_str() {
            "--requests" => options.requests = number(),
            "--rounds" => options.rounds = number(),
            "--scrapes" => options.scrapes = number(),
            "--write" => options.write = args.next().map(PathBuf::from),
            other => panic!("unknown option {other}"),
        }
    }
    options
}

/// Builds the service's binaries with `profile` and returns their directory.
fn build(profile: &str) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--quiet",
            "-p",
            "alloc-track-service-bench",
            "--bins",
            "--profile",
            profile,
        ])
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building the service with {profile}");
    let own = std::env::current_exe().expect("this binary's path");
    // target/<profile>/service-compare: the target directory is two up.
    own.parent()
        .and_then(Path::parent)
        .expect("a target directory")
        .join(profile)
}

/// A running service.
struct Service {
    child: Child,
    addr: SocketAddr,
    debug: Option<SocketAddr>,
}

impl Service {
    fn start(binary: &Path) -> Service {
        Self::start_with(binary, &[])
    }

    /// Starts `binary` with the environment variables `variables` set.
    fn start_with(binary: &Path, variables: &[(&str, &str)]) -> Service {
        let mut child = Command::new(binary)
            .envs(variables.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|error| panic!("{}: {error}", binary.display()));
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("its output"))
            .read_line(&mut line)
            .expect("its address");
        let mut words = line.split_whitespace().skip(1);
        let addr = words
            .next()
            .and_then(|addr| addr.parse().ok())
            .expect("an address");
        let debug = words.next().and_then(|addr| addr.parse().ok());
        Service { child, addr, debug }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// User and system CPU time so far.
    fn cpu(&self) -> Duration {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        // After the command's closing parenthesis: fields 3 on; utime and
        // stime are fields 14 and 15.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map_or("", |(_, rest)| rest)
            .split_whitespace()
            .collect();
        let ticks: u64 = fields.get(11..13).map_or(0, |both| {
            both.iter()
                .filter_map(|field| field.parse::<u64>().ok())
                .sum()
        });
        // SAFETY: sysconf has no preconditions.
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        Duration::from_nanos(ticks * 1_000_000_000 / per_second)
    }

    /// A field of the service's `/proc/<pid>/status`, in bytes.
    fn status(&self, field: &str) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|value| value.trim().strip_suffix(" kB"))
            .and_then(|kb| kb.trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    }

    /// Resets the service's resident peak to its resident size now.
    fn reset_peak(&self) {
        let _ = std::fs::write(format!("/proc/{}/clear_refs", self.pid()), "5");
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One keep-alive connection of the load generator.
struct Client {
    stream: BufReader<TcpStream>,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("a connection");
        stream.set_nodelay(true).expect("no delay");
        Client {
            stream: BufReader::new(stream),
        }
    }

    /// Sends one request and reads its whole answer.
    fn request(&mut self, method: &str, path: &str, body: &str) -> Vec<u8> {
        let request = format!(
            "{method} {path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
             content-length: {}\r\n\r\n{body}",
            body.len()
        );
        self.stream
            .get_mut()
            .write_all(request.as_bytes())
            .expect("the request is sent");
        let mut length = 0;
        loop {
            let mut line = String::new();
            self.stream.read_line(&mut line).expect("an answer");
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut answer = vec![0; length];
        self.stream.read_exact(&mut answer).expect("the body");
        answer
    }
}

/// A whole answer from `addr` on a connection of its own (the debug
/// endpoint closes each connection after one request).
fn fetch(addr: SocketAddr, path: &str) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).expect("a connection");
    write!(stream, "GET {path} HTTP/1.1\r\nhost: localhost\r\n\r\n").expect("sent");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read");
    let body = raw
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .map_or(0, |end| end + 4);
    raw.split_off(body)
}

/// The tracker's own allocations so far (count and bytes), from the thread
/// report the endpoint serves.
fn tracker_allocations(debug: SocketAddr) -> (u64, u64) {
    let json = fetch(debug, "/debug/alloc-track/threads?format=json");
    let report: serde_json::Value = serde_json::from_slice(&json).unwrap_or_default();
    let row = &report["(alloc-track reports)"];
    (
        row["allocations"].as_u64().unwrap_or(0),
        row["total_alloc"].as_u64().unwrap_or(0),
    )
}

/// What one run of the load measured.
struct Load {
    cpu_per_request: Duration,
    p99: Duration,
    resident: u64,
}

/// Sends `requests` requests over [`CONNECTIONS`] connections, orders and
/// catalog reads in turn.
fn load(service: &Service, requests: usize) -> Load {
    let orders: Vec<String> = (0..64).map(sample_order).collect();
    let cpu = service.cpu();
    let per_connection = requests / CONNECTIONS;
    let mut latencies: Vec<Duration> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..CONNECTIONS)
            .map(|connection| {
                let orders = &orders;
                let addr = service.addr;
                scope.spawn(move || {
                    let mut client = Client::connect(addr);
                    let mut latencies = Vec::with_capacity(per_connection);
                    for index in 0..per_connection {
                        let started = Instant::now();
                        if index % 2 == 0 {
                            let order = &orders[(index + connection) % orders.len()];
                            client.request("POST", "/orders", order);
                        } else {
                            client.request("GET", "/catalog", "");
                        }
                        latencies.push(started.elapsed());
                    }
                    latencies
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| worker.join().expect("a load thread"))
            .collect()
    });
    let served = latencies.len().max(1);
    latencies.sort_unstable();
    Load {
        cpu_per_request: (service.cpu() - cpu) / served as u32,
        p99: latencies[(served * 99 / 100).min(served - 1)],
        resident: service.status("VmRSS"),
    }
}

/// What one reading cost: the rise of the resident peak, the anonymous
/// memory a second later less before, the time it took, and the tracker's
/// own allocations it made (count, bytes).
type Measured = (&'static str, u64, i64, Duration, (u64, u64));

/// What reading the tracker cost the service.
#[derive(Default)]
struct Reading {
    callsites: usize,
    readings: Vec<Measured>,
    /// Anonymous memory after the scrapes in a row, less before them.
    after_scrapes: i64,
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

/// The readings of the endpoint measured on a fresh service: name, path.
const READINGS: [(&str, &str); 4] = [
    ("heap profile", "/debug/pprof/heap"),
    ("allocs profile", "/debug/pprof/allocs"),
    ("heap profile, symbolize=0", "/debug/pprof/heap?symbolize=0"),
    (
        "every callsite, text",
        "/debug/alloc-track/backtraces?all=1",
    ),
];

/// The reading measured on a service whose endpoint keeps the symbols it
/// looked up (those of every callsite, looked up when the callsites were
/// counted): a report that looks up nothing.
const READINGS_KEPT: [(&str, &str); 1] = [(
    "every callsite, text, symbols kept",
    "/debug/alloc-track/backtraces?all=1",
)];

fn read_the_tracker(
    service: &Service,
    readings: &[(&'static str, &str)],
    scrapes: usize,
) -> Reading {
    let Some(debug) = service.debug else {
        return Reading::default();
    };
    // A thousand more callsites: each template rendered once.
    let mut client = Client::connect(service.addr);
    for index in 0..alloc_track_service_bench::TEMPLATES_COUNT {
        let page = client.request("GET", &format!("/templates/{index}"), "");
        assert!(page.starts_with(b"<h1>"), "template {index}");
    }
    drop(client);
    let csv = fetch(debug, "/debug/alloc-track/backtraces?format=csv");
    let callsites = csv.split(|&byte| byte == b'\n').count().saturating_sub(2);
    let mut reading = Reading {
        callsites,
        ..Reading::default()
    };
    for &(name, path) in readings {
        std::thread::sleep(Duration::from_millis(500));
        // What reading the tracker's own figures costs, to take away.
        let first = tracker_allocations(debug);
        let second = tracker_allocations(debug);
        let anonymous = service.status("RssAnon");
        service.reset_peak();
        let resident = service.status("VmRSS");
        let started = Instant::now();
        let body = fetch(debug, path);
        let took = started.elapsed();
        assert!(!body.is_empty(), "{path} answered nothing");
        let peak = service.status("VmHWM").saturating_sub(resident);
        std::thread::sleep(Duration::from_secs(1));
        let after = service.status("RssAnon");
        let third = tracker_allocations(debug);
        let allocations = (
            (third.0 - second.0).saturating_sub(second.0 - first.0),
            (third.1 - second.1).saturating_sub(second.1 - first.1),
        );
        reading.readings.push((
            name,
            peak,
            after as i64 - anonymous as i64,
            took,
            allocations,
        ));
    }
    if scrapes == 0 {
        return reading;
    }
    let anonymous = service.status("RssAnon");
    for _ in 0..scrapes {
        fetch(debug, "/debug/pprof/heap");
    }
    std::thread::sleep(Duration::from_secs(1));
    reading.after_scrapes = service.status("RssAnon") as i64 - anonymous as i64;
    reading
}

fn main() {
    let options = options();
    let directory = build("service");
    let mut out = String::new();
    let mut loads: Vec<Vec<Load>> = VARIANTS.iter().map(|_| Vec::new()).collect();
    for round in 0..options.rounds {
        for (index, (name, binary, share)) in VARIANTS.iter().enumerate() {
            let service = Service::start(&directory.join(binary));
            // A warm-up, then the measured load.
            load(&service, (options.requests / share / 10).max(CONNECTIONS));
            let measured = load(&service, (options.requests / share).max(CONNECTIONS));
            eprintln!(
                "round {round}: {name}: {:.1} µs CPU per request, p99 {:.0} µs, {:.1} MiB resident",
                measured.cpu_per_request.as_secs_f64() * 1e6,
                measured.p99.as_secs_f64() * 1e6,
                mib(measured.resident)
            );
            loads[index].push(measured);
        }
    }
    let median = |values: &mut Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let system_cpu = median(
        &mut loads[0]
            .iter()
            .map(|load| load.cpu_per_request.as_secs_f64())
            .collect(),
    );
    out.push_str(&format!(
        "The service under load ({} requests a round over {CONNECTIONS} loopback connections, \
         orders and catalog reads in turn; {} rounds, the variants in turn in each; medians; \
         the seed crate serves a tenth of the requests):\n\n",
        options.requests, options.rounds
    ));
    out.push_str("| allocator | CPU per request | ratio to system | p99 latency | resident after the load |\n|---|---|---|---|---|\n");
    for ((name, _, _), runs) in VARIANTS.iter().zip(&loads) {
        let cpu = median(
            &mut runs
                .iter()
                .map(|load| load.cpu_per_request.as_secs_f64())
                .collect(),
        );
        let p99 = median(&mut runs.iter().map(|load| load.p99.as_secs_f64()).collect());
        let resident = median(&mut runs.iter().map(|load| mib(load.resident)).collect());
        out.push_str(&format!(
            "| {name} | {:.1} µs | {:.2}x | {:.0} µs | {resident:.1} MiB |\n",
            cpu * 1e6,
            cpu / system_cpu,
            p99 * 1e6
        ));
    }

    for (profile, debug_info) in [
        ("service", "line tables"),
        ("service-full-debug", "full debug info"),
    ] {
        let directory = if profile == "service" {
            directory.clone()
        } else {
            build(profile)
        };
        out.push_str(&format!(
            "\nReading the tracker, built with {debug_info} (after a load of {} requests; \
             the resident peak's rise during the request, the anonymous memory a second later \
             less before it; then {} heap scrapes in a row):\n\n",
            options.requests, options.scrapes
        ));
        out.push_str("| form | callsites | reading | peak rise | anonymous after | time | its allocations |\n|---|---|---|---|---|---|---|\n");
        for (index, (name, binary, _)) in VARIANTS.iter().enumerate().take(4).skip(2) {
            let service = Service::start(&directory.join(binary));
            load(&service, options.requests);
            let mut reading = read_the_tracker(&service, &READINGS, options.scrapes);
            drop(service);
            if index == 2 {
                // Exact callsites: a report again, from kept symbols.
                let service =
                    Service::start_with(&directory.join(binary), &[("SERVICE_KEEP_SYMBOLS", "1")]);
                load(&service, options.requests);
                let kept = read_the_tracker(&service, &READINGS_KEPT, 0);
                reading.readings.extend(kept.readings);
            }
            for (what, peak, after, took, (count, bytes)) in &reading.readings {
                out.push_str(&format!(
                    "| {name} | {} | {what} | {:.1} MiB | {:+.1} MiB | {:.0} ms | {count} ({:.1} MiB) |\n",
                    reading.callsites,
                    mib(*peak),
                    *after as f64 / f64::from(1 << 20),
                    took.as_secs_f64() * 1e3,
                    mib(*bytes)
                ));
            }
            out.push_str(&format!(
                "| {name} | {} | {} heap scrapes in a row | | {:+.1} MiB | | |\n",
                reading.callsites,
                options.scrapes,
                reading.after_scrapes as f64 / f64::from(1 << 20)
            ));
        }
    }
    print!("{out}");
    if let Some(path) = options.write {
        alloc_track_bench::write_section(&path, "service-compare", &out)
            .expect("the file is written");
    }
}
