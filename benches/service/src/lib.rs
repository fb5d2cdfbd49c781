//! A service as the tracker's users run one: hyper on a tokio runtime of two
//! workers, whose handlers allocate as real ones do (JSON decoded and
//! encoded, a 64 KiB catalog cloned for each request that reads it, a slow
//! leak, and a thousand templates, each rendered by its own code path and
//! kept, as a large service has many callsites), so that what a tracker costs is measured where it is paid.
//!
//! Each binary of this package is the service with another global
//! allocator; `service-compare` runs them in turn under the same load.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Mutex, OnceLock};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use serde::{Deserialize, Serialize};

/// One line of an order.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Line {
    /// What is ordered.
    pub sku: String,
    /// How many.
    pub quantity: u32,
    /// The price of one.
    pub price: f64,
}

/// An order, as clients post it.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Order {
    /// Who orders.
    pub customer: String,
    /// What.
    pub lines: Vec<Line>,
    /// Free text.
    pub note: String,
}

/// What the service answers to an order.
#[derive(Debug, Deserialize, Serialize)]
struct Receipt {
    customer: String,
    lines: usize,
    total: f64,
    skus: Vec<String>,
}

/// A product of the catalog.
#[derive(Clone, Debug)]
struct Product {
    name: String,
    price: f64,
    tags: Vec<String>,
}

/// The catalog every `/catalog` request clones: about 64 KiB.
fn catalog() -> &'static Vec<Product> {
    static CATALOG: OnceLock<Vec<Product>> = OnceLock::new();
    CATALOG.get_or_init(|| {
        (0..400)
            .map(|index| Product {
                name: format!("product-{index:05}-{}", "x".repeat(40)),
                price: f64::from(index) * 1.25,
                tags: vec![
                    format!("tag-{}", index % 7),
                    format!("shelf-{}", index % 13),
                ],
            })
            .collect()
    })
}

/// What the service keeps and never frees: one block every 100 requests.
static LEAK: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// A sample order for the load generator, about a kilobyte of JSON.
pub fn sample_order(index: usize) -> String {
    let order = Order {
        customer: format!("customer-{index}"),
        lines: (0..8)
            .map(|line| Line {
                sku: format!("sku-{:06}", (index * 8 + line) % 10_000),
                quantity: (line + 1) as u32,
                price: 9.5 + line as f64,
            })
            .collect(),
        note: "deliver to the side door, after nine".repeat(3),
    };
    serde_json::to_string(&order).unwrap_or_default()
}

#[inline(never)]
fn place_order(body: &[u8]) -> Option<Vec<u8>> {
    let order: Order = serde_json::from_slice(body).ok()?;
    let receipt = Receipt {
        customer: order.customer.clone(),
        lines: order.lines.len(),
        total: order
            .lines
            .iter()
            .map(|line| f64::from(line.quantity) * line.price)
            .sum(),
        skus: order.lines.iter().map(|line| line.sku.clone()).collect(),
    };
    serde_json::to_vec(&receipt).ok()
}

#[inline(never)]
fn read_catalog() -> Vec<u8> {
    let copy: Vec<Product> = catalog().clone();
    let cheapest = copy
        .iter()
        .filter(|product| product.tags.iter().any(|tag| tag == "tag-3"))
        .map(|product| product.price)
        .fold(f64::MAX, f64::min);
    let names: usize = copy.iter().map(|product| product.name.len()).sum();
    format!(
        "{{\"products\":{},\"cheapest\":{cheapest},\"names\":{names}}}",
        copy.len()
    )
    .into_bytes()
}

/// The templates the service has rendered, kept: what `/templates/N`
/// answers from once it has rendered `N`.
static TEMPLATES: Mutex<Vec<(usize, Vec<u8>)>> = Mutex::new(Vec::new());

/// How many templates the service has, each rendered by its own code path
/// (three calls deep): a service with as many callsites as a large one.
pub const TEMPLATES_COUNT: usize = 1000;

/// Template `index`, rendered once and kept.
fn template(index: usize) -> Option<Vec<u8>> {
    if index >= TEMPLATES_COUNT {
        return None;
    }
    let mut templates = TEMPLATES.lock().ok()?;
    if let Some((_, page)) = templates.iter().find(|(at, _)| *at == index) {
        return Some(page.clone());
    }
    let page = render_hundreds(index);
    templates.push((index, page.clone()));
    Some(page)
}

#[inline(never)]
fn render_hundreds(index: usize) -> Vec<u8> {
    // Not a tail call: each level keeps its frame, so that every
    // template is a stack of its own.
    let page = match index / 100 % 10 {
        0 => render_tens::<0>(index),
        1 => render_tens::<1>(index),
        2 => render_tens::<2>(index),
        3 => render_tens::<3>(index),
        4 => render_tens::<4>(index),
        5 => render_tens::<5>(index),
        6 => render_tens::<6>(index),
        7 => render_tens::<7>(index),
        8 => render_tens::<8>(index),
        9 => render_tens::<9>(index),
        _ => Vec::new(),
    };
    std::hint::black_box(page)
}

#[inline(never)]
fn render_tens<const A: usize>(index: usize) -> Vec<u8> {
    let page = match index / 10 % 10 {
        0 => render_units::<A, 0>(index),
        1 => render_units::<A, 1>(index),
        2 => render_units::<A, 2>(index),
        3 => render_units::<A, 3>(index),
        4 => render_units::<A, 4>(index),
        5 => render_units::<A, 5>(index),
        6 => render_units::<A, 6>(index),
        7 => render_units::<A, 7>(index),
        8 => render_units::<A, 8>(index),
        9 => render_units::<A, 9>(index),
        _ => Vec::new(),
    };
    std::hint::black_box(page)
}

#[inline(never)]
fn render_units<const A: usize, const B: usize>(index: usize) -> Vec<u8> {
    let page = match index % 10 {
        0 => render_page::<A, B, 0>(),
        1 => render_page::<A, B, 1>(),
        2 => render_page::<A, B, 2>(),
        3 => render_page::<A, B, 3>(),
        4 => render_page::<A, B, 4>(),
        5 => render_page::<A, B, 5>(),
        6 => render_page::<A, B, 6>(),
        7 => render_page::<A, B, 7>(),
        8 => render_page::<A, B, 8>(),
        9 => render_page::<A, B, 9>(),
        _ => Vec::new(),
    };
    std::hint::black_box(page)
}

#[inline(never)]
fn render_page<const A: usize, const B: usize, const C: usize>() -> Vec<u8> {
    format!("<h1>Template {A}{B}{C}</h1>\n").into_bytes()
}

#[inline(never)]
fn leak_a_little(request: u64) {
    if request % 100 == 0 {
        if let Ok(mut leak) = LEAK.lock() {
            leak.push(vec![1u8; 256]);
        }
    }
}

async fn handle(
    request: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    static REQUESTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let count = REQUESTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    leak_a_little(count);
    let (method, path) = (request.method().clone(), request.uri().path().to_owned());
    let body = match request.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let answer = match (method, path.as_str()) {
        (Method::POST, "/orders") => place_order(&body),
        (Method::GET, "/catalog") => Some(read_catalog()),
        (Method::GET, path) if path.starts_with("/templates/") => {
            path["/templates/".len()..].parse().ok().and_then(template)
        }
        _ => None,
    };
    let mut response = match answer {
        Some(json) => Response::new(Full::new(Bytes::from(json))),
        None => {
            let mut response = Response::new(Full::new(Bytes::from_static(b"no\n")));
            *response.status_mut() = StatusCode::NOT_FOUND;
            response
        }
    };
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

/// Runs the service on two workers; with `debug_endpoint`, the tracker's
/// endpoint beside it. Prints `listening <addr> <debug addr or ->` once
/// both are up, then serves until killed.
pub fn run(debug_endpoint: bool) {
    let debug = debug_endpoint.then(|| {
        // With `SERVICE_KEEP_SYMBOLS` set, the endpoint keeps what symbol
        // lookup answered between requests.
        let options = alloc_track::http::ServeOptions::new()
            .keep_symbols(std::env::var_os("SERVICE_KEEP_SYMBOLS").is_some());
        let server =
            alloc_track::http::serve_with("127.0.0.1:0", options).expect("the debug endpoint");
        let addr = server.local_addr();
        std::mem::forget(server);
        addr
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port");
        let addr: SocketAddr = listener.local_addr().expect("its address");
        println!(
            "listening {addr} {}",
            debug.map_or_else(|| "-".to_owned(), |debug| debug.to_string())
        );
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(
                        hyper_util::rt::TokioIo::new(stream),
                        hyper::service::service_fn(handle),
                    )
                    .await;
            });
        }
    });
}
