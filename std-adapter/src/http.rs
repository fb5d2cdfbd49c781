//! An HTTP debug endpoint in the manner of Go's `net/http/pprof`: heap
//! profiles at Go's paths, so that `go tool pprof` and the profilers that
//! scrape Go services (Pyroscope, Parca) read the program as they read a Go
//! service; and the tracker's own reports beside them.
//!
//! ```no_run
//! let server = alloc_track::http::serve("127.0.0.1:6060")?;
//! println!("profiles at http://{}/", server.local_addr());
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! | path | what it serves |
//! |---|---|
//! | `/` | an index of the paths |
//! | `/debug/pprof/heap` | a gzipped pprof heap profile, `inuse_space` first (`?debug=1`: the reports as text; `?symbolize=0`: addresses and mappings only, for the reader to symbolize; `?seconds=N`: the differences over the next `N` seconds) |
//! | `/debug/pprof/allocs` | the same profile, `alloc_space` first (the same parameters) |
//! | `/debug/alloc-track/threads` | the thread report: text, `?format=json`, `?format=csv` |
//! | `/debug/alloc-track/scopes` | the scope report: text, `?format=json`, `?format=csv` |
//! | `/debug/alloc-track/backtraces` | the backtrace report: text (`?all=1`: every entry), `?format=json`, `?format=csv` |
//! | `/debug/alloc-track/flamegraph.svg` | a flamegraph of the bytes in use (`?value=alloc_space` and the other sample types) |
//! | `/debug/alloc-track/snapshot.json` | a snapshot file, for the command-line tool |
//!
//! The server runs on threads of its own: one for connections, and one for
//! each report it builds (two at most at once), so the program's threads
//! never wait for it. What it allocates counts as the tracker's own memory
//! (the [`REPORTS`](crate::REPORTS) entry) from each thread's first
//! allocation, never as the program's. It binds
//! loopback addresses only, unless [`ServeOptions::allow_non_loopback`] says
//! otherwise: the reports show the program's code paths, which are not for
//! everyone. It serves a bounded number of connections, one request each;
//! a client that does not send its request in time gets `408`, one that
//! sends a malformed request `400`, and one beyond the bound `503`, so a
//! slow client cannot starve the others.

use std::convert::Infallible;
use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{oneshot, Semaphore};

use crate::context::ReportScope;
use crate::export::{PprofOptions, SampleType};
use crate::snapshot::Snapshot;

/// How a [`Server`] serves.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServeOptions {
    /// Serve on an address other than a loopback one (reachable from other
    /// machines). Default: no, and [`serve_with`] refuses such an address.
    pub allow_non_loopback: bool,
    /// Connections served at once; one beyond gets `503`. Default: 16.
    pub max_connections: usize,
    /// How long a client has to send its request's head; a slower one gets
    /// `408`. Default: 5 seconds.
    pub request_timeout: Duration,
    /// How long a connection may last in all, report included. Default: 60
    /// seconds.
    pub connection_timeout: Duration,
    /// Keep the symbols of the addresses resolved between requests, for
    /// faster reports (under a kilobyte per address; the program's debug
    /// info is never kept). Default: no; each request that resolves symbols
    /// releases them afterwards ([`release_symbols`](crate::release_symbols)),
    /// so the endpoint costs memory only while it answers.
    pub keep_symbols: bool,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            allow_non_loopback: false,
            max_connections: 16,
            request_timeout: Duration::from_secs(5),
            connection_timeout: Duration::from_secs(60),
            keep_symbols: false,
        }
    }
}

impl ServeOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Serve on an address other than a loopback one too.
    #[must_use]
    pub fn allow_non_loopback(mut self, allow: bool) -> Self {
        self.allow_non_loopback = allow;
        self
    }

    /// Connections served at once.
    #[must_use]
    pub fn max_connections(mut self, connections: usize) -> Self {
        self.max_connections = connections;
        self
    }

    /// How long a client has to send its request's head.
    #[must_use]
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How long a connection may last in all.
    #[must_use]
    pub fn connection_timeout(mut self, timeout: Duration) -> Self {
        self.connection_timeout = timeout;
        self
    }

    /// Keep the symbols of the addresses resolved between requests.
    #[must_use]
    pub fn keep_symbols(mut self, keep: bool) -> Self {
        self.keep_symbols = keep;
        self
    }
}

/// The longest request head read; a longer one gets `431`.
const MAX_HEAD: usize = 16 * 1024;

/// A running debug endpoint. Dropping it leaves the server running for the
/// rest of the process, as Go's endpoint runs; [`shutdown`](Server::shutdown)
/// stops it.
#[derive(Debug)]
pub struct Server {
    local_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// The address the server listens on (with the port the system chose,
    /// when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting connections, closes those in progress and waits for
    /// the server's thread to end.
    pub fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // The server keeps running: forget the way to stop it.
        if let Some(stop) = self.stop.take() {
            std::mem::forget(stop);
        }
    }
}

/// Serves the debug endpoint on `addr` (as for [`TcpListener::bind`]), a
/// loopback address, with the default [`ServeOptions`].
///
/// # Errors
///
/// `addr` does not resolve, or names an address that is not a loopback one
/// ([`io::ErrorKind::PermissionDenied`]: see
/// [`ServeOptions::allow_non_loopback`]), or cannot be bound; or the
/// server's thread cannot be started.
pub fn serve(addr: impl ToSocketAddrs) -> io::Result<Server> {
    serve_with(addr, ServeOptions::default())
}

/// [`serve`] with other options: another address than loopback, other
/// bounds.
///
/// # Errors
///
/// As for [`serve`].
pub fn serve_with(addr: impl ToSocketAddrs, options: ServeOptions) -> io::Result<Server> {
    let _scope = ReportScope::enter();
    let addresses: Vec<SocketAddr> = addr.to_socket_addrs()?.collect();
    if addresses.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the address resolves to nothing",
        ));
    }
    if !options.allow_non_loopback {
        if let Some(open) = addresses.iter().find(|address| !address.ip().is_loopback()) {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "{open} is not a loopback address: the reports show the program's code; \
                     set ServeOptions::allow_non_loopback to serve them there"
                ),
            ));
        }
    }
    let listener = TcpListener::bind(&addresses[..])?;
    listener.set_nonblocking(true)?;
    let local_addr = listener.local_addr()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    let (stop, stopped) = oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("alloc-track/http".into())
        .spawn(move || {
            // Everything this thread allocates is the tracker's own.
            std::mem::forget(ReportScope::enter());
            runtime.block_on(accept(listener, options, stopped));
        })?;
    Ok(Server {
        local_addr,
        stop: Some(stop),
        thread: Some(thread),
    })
}

/// Accepts connections until stopped, each on a task of its own.
async fn accept(listener: TcpListener, options: ServeOptions, mut stopped: oneshot::Receiver<()>) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    let options = Arc::new(options);
    let slots = Arc::new(Semaphore::new(options.max_connections));
    loop {
        let stream = tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // Out of descriptors, or a connection reset before it was
                // accepted: wait a moment rather than spin.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let options = Arc::clone(&options);
        match Arc::clone(&slots).try_acquire_owned() {
            Ok(slot) => {
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(
                        options.connection_timeout,
                        connection(stream, Arc::clone(&options)),
                    )
                    .await;
                    drop(slot);
                    // The response is written and dropped: what it took
                    // goes back to the system, not only to the allocator.
                    crate::release_memory();
                });
            }
            Err(_) => {
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(
                        options.request_timeout,
                        refuse(
                            stream,
                            StatusCode::SERVICE_UNAVAILABLE,
                            "too many connections\n",
                        ),
                    )
                    .await;
                });
            }
        }
    }
}

/// Writes a whole response to a client hyper is not serving, and closes.
async fn refuse(mut stream: tokio::net::TcpStream, status: StatusCode, message: &str) {
    let head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: text/plain; charset=utf-8\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        message.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(message.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Serves one connection: reads the request's head within the request
/// timeout, then lets hyper parse and answer it.
async fn connection(stream: tokio::net::TcpStream, options: Arc<ServeOptions>) {
    let mut stream = stream;
    let mut head = Vec::with_capacity(1024);
    let complete = tokio::time::timeout(options.request_timeout, async {
        let mut chunk = [0u8; 1024];
        loop {
            if head.windows(4).any(|window| window == b"\r\n\r\n") {
                return Ok(true);
            }
            if head.len() > MAX_HEAD {
                return Ok(false);
            }
            match stream.read(&mut chunk).await {
                Ok(0) => return Err(()),
                Ok(read) => head.extend_from_slice(chunk.get(..read).unwrap_or_default()),
                Err(_) => return Err(()),
            }
        }
    })
    .await;
    match complete {
        Err(_elapsed) => {
            return refuse(
                stream,
                StatusCode::REQUEST_TIMEOUT,
                "request head not sent in time\n",
            )
            .await
        }
        Ok(Err(())) => return,
        Ok(Ok(false)) => {
            return refuse(
                stream,
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "request head too large\n",
            )
            .await
        }
        Ok(Ok(true)) => {}
    }
    // hyper reads the head again from what was read, then the stream.
    let (read, write) = stream.into_split();
    let io = tokio::io::join(std::io::Cursor::new(head).chain(read), write);
    let service = hyper::service::service_fn(move |request| {
        let options = Arc::clone(&options);
        async move { Ok::<_, Infallible>(respond(request, options).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .keep_alive(false)
        .header_read_timeout(None)
        .serve_connection(hyper_util::rt::TokioIo::new(io), service)
        .await;
}

/// The response to one request.
async fn respond(
    request: Request<hyper::body::Incoming>,
    options: Arc<ServeOptions>,
) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n".into());
        response.headers_mut().insert(
            hyper::header::ALLOW,
            hyper::header::HeaderValue::from_static("GET, HEAD"),
        );
        return response;
    }
    let path = request.uri().path().to_owned();
    let query = Query::parse(request.uri().query().unwrap_or(""));
    // A profile of what happens over the next `seconds`, as Go serves it:
    // a snapshot now, and the difference from it then.
    let earlier = match profile_seconds(&path, &query, &options) {
        Ok(None) => None,
        Ok(Some(seconds)) => {
            let earlier = Snapshot::take();
            tokio::time::sleep(Duration::from_secs(seconds)).await;
            Some(earlier)
        }
        Err(message) => return text(StatusCode::BAD_REQUEST, message),
    };
    // Reports take milliseconds to seconds (symbols): off the thread that
    // serves connections, on one of at most `REPORT_THREADS` threads of the
    // tracker's own, each counted as the tracker's from its first
    // allocation (see `report_thread`).
    let Ok(_turn) = REPORT_TURNS.acquire().await else {
        return failed();
    };
    let (answer, answered) = oneshot::channel();
    let started = report_thread(move || {
        let response = route(&path, &query, earlier.as_ref());
        if !options.keep_symbols {
            crate::release_symbols();
        }
        let _ = answer.send(response);
    });
    if started.is_err() {
        return failed();
    }
    answered.await.unwrap_or_else(|_| failed())
}

/// Reports built at once; a request beyond them waits for its turn.
const REPORT_THREADS: usize = 2;
static REPORT_TURNS: Semaphore = Semaphore::const_new(REPORT_THREADS);

/// The answer when a report could not be made (its thread could not start,
/// or it panicked).
fn failed() -> Response<Full<Bytes>> {
    text(
        StatusCode::INTERNAL_SERVER_ERROR,
        "the report failed\n".into(),
    )
}

/// Runs `work` on a thread of its own, all of whose allocations are the
/// tracker's: the thread's first act is to enter the tracker's scope, which
/// it never leaves, and std allocates nothing in a new thread before that.
fn report_thread(work: impl FnOnce() + Send + 'static) -> io::Result<()> {
    let _scope = ReportScope::enter();
    std::thread::Builder::new()
        .name("alloc-track/report".into())
        .spawn(move || {
            std::mem::forget(ReportScope::enter());
            work();
        })
        .map(drop)
}

/// A request's query: `key=value` pairs.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(query: &str) -> Self {
        Query(
            query
                .split('&')
                .filter(|pair| !pair.is_empty())
                .map(|pair| {
                    let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                    (key.to_owned(), value.to_owned())
                })
                .collect(),
        )
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.as_str())
    }

    /// Whether a flag is set (`1` or `true`).
    fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("1" | "true"))
    }
}

/// The report formats of the tracker's own paths.
enum Format {
    Text,
    Json,
    Csv,
}

/// The format a request asks for; `None` for one not served.
fn format(query: &Query) -> Option<Format> {
    match query.get("format") {
        None | Some("text") => Some(Format::Text),
        Some("json") => Some(Format::Json),
        Some("csv") => Some(Format::Csv),
        Some(_) => None,
    }
}

fn unknown_format(query: &Query) -> Response<Full<Bytes>> {
    text(
        StatusCode::BAD_REQUEST,
        format!(
            "unknown format {:?}: text, json or csv\n",
            query.get("format").unwrap_or_default()
        ),
    )
}

/// The `seconds` a profile request asks to cover, if any: a whole number
/// from 1, shorter than a connection may last.
fn profile_seconds(
    path: &str,
    query: &Query,
    options: &ServeOptions,
) -> Result<Option<u64>, String> {
    let Some(seconds) = query.get("seconds") else {
        return Ok(None);
    };
    if !matches!(path, "/debug/pprof/heap" | "/debug/pprof/allocs") {
        return Err(format!(
            "seconds: only the heap profiles take it, not {path}\n"
        ));
    }
    match seconds.parse::<u64>() {
        Ok(seconds) if seconds >= 1 && seconds < options.connection_timeout.as_secs() => {
            Ok(Some(seconds))
        }
        _ => Err(format!(
            "seconds: a whole number from 1 to below the connection timeout ({} s), not {seconds:?}\n",
            options.connection_timeout.as_secs()
        )),
    }
}

fn route(path: &str, query: &Query, earlier: Option<&Snapshot>) -> Response<Full<Bytes>> {
    match path {
        "/" | "/debug/pprof" | "/debug/pprof/" => html(INDEX),
        "/debug/pprof/heap" => profile(query, SampleType::InuseSpace, "heap", earlier),
        "/debug/pprof/allocs" => profile(query, SampleType::AllocSpace, "allocs", earlier),
        "/debug/alloc-track/threads" | "/debug/alloc-track/scopes" => {
            let report = if path.ends_with("threads") {
                crate::thread_report()
            } else {
                crate::scope_report()
            };
            match format(query) {
                Some(Format::Text) => text(StatusCode::OK, report.to_string()),
                Some(Format::Json) => json(report.to_json()),
                Some(Format::Csv) => csv(report.csv()),
                None => unknown_format(query),
            }
        }
        "/debug/alloc-track/backtraces" => {
            let Some(format) = format(query) else {
                return unknown_format(query);
            };
            let report = crate::backtrace_report(|_, _| true);
            match format {
                Format::Text if query.flag("all") => text(StatusCode::OK, format!("{report:#}")),
                Format::Text => text(StatusCode::OK, report.to_string()),
                Format::Json => json(report.to_json()),
                Format::Csv => csv(report.csv()),
            }
        }
        "/debug/alloc-track/flamegraph.svg" => {
            let value = match query.get("value").map(str::parse::<SampleType>) {
                None => SampleType::InuseSpace,
                Some(Ok(value)) => value,
                Some(Err(message)) => return text(StatusCode::BAD_REQUEST, message + "\n"),
            };
            let svg = Snapshot::take().flamegraph(value);
            with_type(StatusCode::OK, "image/svg+xml", svg.into_bytes())
        }
        "/debug/alloc-track/snapshot.json" => json(Snapshot::take().to_json()),
        _ => text(
            StatusCode::NOT_FOUND,
            format!("no such path: {path}; the index at / lists what is served\n"),
        ),
    }
}

/// A heap profile, `default` the sample type shown first, as Go serves
/// `/debug/pprof/heap` and `/debug/pprof/allocs`: symbolized unless
/// `symbolize=0`, of the differences since `earlier` when the request gave
/// `seconds`.
fn profile(
    query: &Query,
    default: SampleType,
    name: &str,
    earlier: Option<&Snapshot>,
) -> Response<Full<Bytes>> {
    let snapshot = Snapshot::take();
    if query.flag("debug") {
        return text(StatusCode::OK, format!("{snapshot:#}"));
    }
    let mut options = PprofOptions::new()
        .default_sample_type(default)
        .symbolize(query.get("symbolize") != Some("0"));
    if let Some(earlier) = earlier {
        options = options.since(earlier);
    }
    let mut response = with_type(
        StatusCode::OK,
        "application/octet-stream",
        snapshot.pprof_with(options),
    );
    if let Ok(disposition) =
        hyper::header::HeaderValue::from_str(&format!("attachment; filename=\"{name}\""))
    {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_DISPOSITION, disposition);
    }
    response
}

fn with_type(
    status: StatusCode,
    content_type: &'static str,
    body: Vec<u8>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    with_type(status, "text/plain; charset=utf-8", body.into_bytes())
}

fn html(body: &'static str) -> Response<Full<Bytes>> {
    with_type(
        StatusCode::OK,
        "text/html; charset=utf-8",
        body.as_bytes().to_vec(),
    )
}

fn csv(body: String) -> Response<Full<Bytes>> {
    with_type(StatusCode::OK, "text/csv; charset=utf-8", body.into_bytes())
}

fn json(body: serde_json::Result<String>) -> Response<Full<Bytes>> {
    match body {
        Ok(body) => with_type(StatusCode::OK, "application/json", body.into_bytes()),
        Err(error) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{error}\n")),
    }
}

const INDEX: &str = r#"<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>alloc-track</title></head>
<body>
<h1>alloc-track</h1>
<p>Heap figures of this process, by thread and by callsite.</p>
<ul>
<li><a href="/debug/pprof/heap">/debug/pprof/heap</a>: a pprof heap profile, bytes in use first (<code>go tool pprof http://HOST/debug/pprof/heap</code>); <a href="/debug/pprof/heap?debug=1">as text</a></li>
<li><a href="/debug/pprof/allocs">/debug/pprof/allocs</a>: the same profile, bytes allocated first</li>
<li><a href="/debug/alloc-track/threads">/debug/alloc-track/threads</a>: the thread report (<a href="/debug/alloc-track/threads?format=json">json</a>, <a href="/debug/alloc-track/threads?format=csv">csv</a>)</li>
<li><a href="/debug/alloc-track/scopes">/debug/alloc-track/scopes</a>: the scope report (<a href="/debug/alloc-track/scopes?format=json">json</a>, <a href="/debug/alloc-track/scopes?format=csv">csv</a>)</li>
<li><a href="/debug/alloc-track/backtraces">/debug/alloc-track/backtraces</a>: the backtrace report (<a href="/debug/alloc-track/backtraces?all=1">all entries</a>, <a href="/debug/alloc-track/backtraces?format=json">json</a>, <a href="/debug/alloc-track/backtraces?format=csv">csv</a>)</li>
<li><a href="/debug/alloc-track/flamegraph.svg">/debug/alloc-track/flamegraph.svg</a>: a flamegraph of the bytes in use (<a href="/debug/alloc-track/flamegraph.svg?value=alloc_space">of the bytes allocated</a>)</li>
<li><a href="/debug/alloc-track/snapshot.json">/debug/alloc-track/snapshot.json</a>: a snapshot file, for the command-line tool</li>
</ul>
</body></html>
"#;
