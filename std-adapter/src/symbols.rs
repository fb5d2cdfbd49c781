//! Symbols for return addresses, resolved only when a report needs them and
//! cached per address.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rustc_hash::FxHashMap;

use crate::symbol::BacktraceSymbol;

/// The answers of symbol lookup, per return address, kept for the next
/// report: names and files stored once each, however many addresses share
/// them, and each address's symbols shared by every frame that holds it.
#[derive(Default)]
struct Cache {
    by_address: FxHashMap<usize, Arc<[BacktraceSymbol]>>,
    names: HashSet<Arc<str>>,
    files: HashSet<Arc<Path>>,
}

/// The most addresses the cache keeps; past it, it starts afresh.
const CACHED_ADDRESSES: usize = 1 << 20;

/// One copy of each text: the known one if there is one.
fn intern<T: ?Sized + Eq + std::hash::Hash>(known: &mut HashSet<Arc<T>>, text: &Arc<T>) -> Arc<T> {
    if let Some(known) = known.get(text) {
        return Arc::clone(known);
    }
    known.insert(Arc::clone(text));
    Arc::clone(text)
}

impl Cache {
    fn keep(&mut self, address: usize, symbols: Vec<BacktraceSymbol>) -> Arc<[BacktraceSymbol]> {
        if self.by_address.len() >= CACHED_ADDRESSES {
            *self = Cache::default();
        }
        let kept: Arc<[BacktraceSymbol]> = symbols
            .into_iter()
            .map(|mut symbol| {
                symbol.name = symbol.name.map(|name| intern(&mut self.names, &name));
                symbol.file = symbol.file.map(|file| intern(&mut self.files, &file));
                symbol
            })
            .collect();
        self.by_address.insert(address, Arc::clone(&kept));
        kept
    }

    fn get(&self, address: usize) -> Option<Arc<[BacktraceSymbol]>> {
        self.by_address.get(&address).cloned()
    }
}

static CACHE: Mutex<Option<Cache>> = Mutex::new(None);

/// The symbols of every address of `addresses`, in order: those looked up
/// before from the cache, the others in one pass over the debug info.
pub(crate) fn resolve_all(addresses: &[usize]) -> Vec<Arc<[BacktraceSymbol]>> {
    // The cache holds plain data, so a panic elsewhere cannot leave it
    // half-updated: a poisoned lock is taken over.
    let mut cache = CACHE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let cache = cache.get_or_insert_with(Cache::default);
    let mut answers: Vec<Option<Arc<[BacktraceSymbol]>>> = addresses
        .iter()
        .map(|&address| cache.get(address))
        .collect();
    let mut missing: Vec<usize> = addresses
        .iter()
        .zip(&answers)
        .filter(|(_, answer)| answer.is_none())
        .map(|(&address, _)| address)
        .collect();
    if !missing.is_empty() {
        missing.sort_unstable();
        missing.dedup();
        let found: Vec<Arc<[BacktraceSymbol]>> = missing
            .iter()
            .zip(resolve_uncached(&missing))
            .map(|(&address, symbols)| cache.keep(address, symbols))
            .collect();
        for (answer, address) in answers.iter_mut().zip(addresses) {
            if answer.is_none() {
                *answer = missing
                    .binary_search(address)
                    .ok()
                    .map(|index| Arc::clone(&found[index]));
            }
        }
    }
    answers
        .into_iter()
        .map(|answer| answer.unwrap_or_else(|| Arc::from([])))
        .collect()
}

/// Releases what symbol lookup keeps for the next report: the symbols of
/// the addresses resolved so far (what is read of the program's debug info
/// is never kept past the lookup that reads it). The next report resolves
/// them again, which takes longer.
///
/// The cache is the tracker's own memory (the [`REPORTS`](crate::REPORTS)
/// entry), never the program's: under a kilobyte per address, most of it
/// the names (a generic function's name may run to a kilobyte alone).
pub fn release_symbols() {
    let _scope = crate::context::ReportScope::enter();
    let cache = CACHE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .take();
    drop(cache);
}

#[cfg(all(feature = "backtrace", target_os = "linux"))]
fn resolve_uncached(addresses: &[usize]) -> Vec<Vec<BacktraceSymbol>> {
    crate::symbolizer::resolve(addresses)
}

#[cfg(all(feature = "backtrace", not(target_os = "linux")))]
fn resolve_uncached(addresses: &[usize]) -> Vec<Vec<BacktraceSymbol>> {
    addresses
        .iter()
        .map(|&address| {
            let mut symbols = Vec::new();
            // A return address points after the call; the call itself is
            // one byte back, which gives its line rather than the next one.
            let call = address.saturating_sub(1);
            backtrace::resolve(call as *mut std::ffi::c_void, |symbol| {
                let name = symbol.name().map(|name| format!("{name:#}"));
                symbols.push(BacktraceSymbol::new(
                    name.as_deref(),
                    symbol.filename(),
                    symbol.lineno(),
                    symbol.colno(),
                ));
            });
            symbols
        })
        .collect()
}

#[cfg(not(feature = "backtrace"))]
fn resolve_uncached(addresses: &[usize]) -> Vec<Vec<BacktraceSymbol>> {
    vec![Vec::new(); addresses.len()]
}
