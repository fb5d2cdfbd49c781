//! Symbols for return addresses, resolved only when a report needs them and
//! cached per address; and which frames a short backtrace hides.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

/// One function a return address lies in (several when calls were inlined,
/// innermost first).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct BacktraceSymbol {
    /// The demangled function name, without its hash.
    pub name: Option<String>,
    /// The source file of the call. In JSON, a path that is not UTF-8 is
    /// written with replacement characters.
    #[cfg_attr(feature = "serde", serde(serialize_with = "lossy_path"))]
    pub file: Option<PathBuf>,
    /// The line of the call.
    pub line: Option<u32>,
    /// The column of the call.
    pub column: Option<u32>,
}

/// Writes a path as a string, replacing what is not UTF-8, so that a report
/// always has a JSON form.
#[cfg(feature = "serde")]
fn lossy_path<S: serde::Serializer>(
    path: &Option<PathBuf>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match path {
        Some(path) => serializer.serialize_some(&path.to_string_lossy()),
        None => serializer.serialize_none(),
    }
}

static CACHE: Mutex<Option<HashMap<usize, Vec<BacktraceSymbol>>>> = Mutex::new(None);

/// The symbols of the call that returns to `address`, resolved once per
/// address for the life of the program.
pub(crate) fn resolve(address: usize) -> Vec<BacktraceSymbol> {
    // The cache holds plain data, so a panic elsewhere cannot leave it
    // half-updated: a poisoned lock is taken over.
    let mut cache = CACHE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    cache
        .get_or_insert_with(HashMap::new)
        .entry(address)
        .or_insert_with(|| resolve_uncached(address))
        .clone()
}

#[cfg(feature = "backtrace")]
fn resolve_uncached(address: usize) -> Vec<BacktraceSymbol> {
    let mut symbols = Vec::new();
    // A return address points after the call; the call itself is one byte
    // back, which gives its line rather than the next one.
    let call = address.saturating_sub(1);
    backtrace::resolve(call as *mut std::ffi::c_void, |symbol| {
        symbols.push(BacktraceSymbol {
            name: symbol.name().map(|name| format!("{name:#}")),
            file: symbol.filename().map(PathBuf::from),
            line: symbol.lineno(),
            column: symbol.colno(),
        });
    });
    symbols
}

#[cfg(not(feature = "backtrace"))]
fn resolve_uncached(_address: usize) -> Vec<BacktraceSymbol> {
    Vec::new()
}

/// Whether a short backtrace hides a frame in this function: the allocator,
/// the tracker, the standard library and the runtime's start-up code.
///
/// A method `<Type as Trait>::method` is hidden only when both the type and
/// the trait are the library's (or the type is primitive): a program's own
/// `impl Clone for MyType` stays visible.
pub(crate) fn is_internal(name: &str) -> bool {
    match name.strip_prefix('<') {
        Some(qualified) => {
            let (self_type, rest) = qualified.split_once(" as ").unwrap_or((qualified, ""));
            internal_path(self_type) && (rest.is_empty() || internal_path(rest))
        }
        None => internal_path(name) || name == "main",
    }
}

fn internal_path(path: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "alloc_track",
        "alloc::",
        "core::",
        "std::",
        "hashbrown::",
        "test::",
        "__rust",
        "__rdl_",
        "__rg_",
        "_start",
        "__libc_start",
        "start_thread",
        "clone",
        "__clone",
    ];
    const PRIMITIVES: &[&str] = &[
        "u8", "u16", "u32", "u64", "u128", "usize", "i8", "i16", "i32", "i64", "i128", "isize",
        "f32", "f64", "bool", "char", "str", "[", "(",
    ];
    let path = path
        .trim_start_matches('&')
        .trim_start_matches("mut ")
        .trim_start_matches("dyn ");
    PREFIXES.iter().any(|prefix| path.starts_with(prefix))
        || PRIMITIVES.iter().any(|primitive| {
            path.starts_with(primitive)
                && !path[primitive.len()..].starts_with(|c: char| c.is_alphanumeric() || c == '_')
        })
}

#[cfg(test)]
mod tests {
    use super::is_internal;

    #[test]
    fn short_backtraces_hide_library_frames_only() {
        for hidden in [
            "alloc::raw_vec::RawVec<T,A>::grow_one",
            "<u8 as alloc::vec::spec_from_elem::SpecFromElem>::from_elem",
            "<&dyn core::ops::function::Fn<(), Output = i32> + core::marker::Sync as core::ops::function::FnOnce<()>>::call_once",
            "std::rt::lang_start_internal",
            "alloc_track_core::ledger::Ledger<C,_,_,_,_>::alloc",
            "__rust_alloc",
            "main",
        ] {
            assert!(is_internal(hidden), "{hidden}");
        }
        for shown in [
            "leak::produce",
            "<myapp::Config as core::clone::Clone>::clone",
            "<alloc::vec::Vec<u8> as myapp::Encode>::encode",
            "u8_parser::parse",
            "mainloop::run",
        ] {
            assert!(!is_internal(shown), "{shown}");
        }
    }
}
