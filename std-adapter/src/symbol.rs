//! A symbol of a return address (a function, its file and line) and whose
//! code it is, which decides what a short backtrace shows.

use std::path::Path;
use std::sync::Arc;

/// One function a return address lies in (several when calls were inlined,
/// innermost first).
///
/// Names and files are shared: every frame of a report that lies in one
/// function holds the same name, and the symbol cache holds it once.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(from = "SymbolFields"))]
#[non_exhaustive]
pub struct BacktraceSymbol {
    /// The demangled function name, without its hash.
    pub name: Option<Arc<str>>,
    /// The source file of the call. In JSON, a path that is not UTF-8 is
    /// written with replacement characters.
    #[cfg_attr(feature = "serde", serde(serialize_with = "lossy_path"))]
    pub file: Option<Arc<Path>>,
    /// The line of the call.
    pub line: Option<u32>,
    /// The column of the call.
    pub column: Option<u32>,
    /// Whose code it is, decided once from the name and file.
    #[cfg_attr(feature = "serde", serde(skip))]
    origin: FrameOrigin,
}

/// What JSON holds of a symbol: everything but its origin, which is
/// decided again from the name and file when it is read.
#[cfg(feature = "serde")]
#[derive(serde::Deserialize)]
struct SymbolFields {
    name: Option<String>,
    file: Option<std::path::PathBuf>,
    line: Option<u32>,
    column: Option<u32>,
}

#[cfg(feature = "serde")]
impl From<SymbolFields> for BacktraceSymbol {
    fn from(fields: SymbolFields) -> Self {
        BacktraceSymbol::new(
            fields.name.as_deref(),
            fields.file.as_deref(),
            fields.line,
            fields.column,
        )
    }
}

/// Writes a path as a string, replacing what is not UTF-8, so that a report
/// always has a JSON form.
#[cfg(feature = "serde")]
fn lossy_path<S: serde::Serializer>(
    path: &Option<Arc<Path>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match path {
        Some(path) => serializer.serialize_some(&path.to_string_lossy()),
        None => serializer.serialize_none(),
    }
}

impl BacktraceSymbol {
    /// A symbol of `name` at `file:line:column`; whose code it is
    /// ([`origin`](Self::origin)) follows from the name and file.
    pub fn new(
        name: Option<&str>,
        file: Option<&Path>,
        line: Option<u32>,
        column: Option<u32>,
    ) -> Self {
        Self {
            name: name.map(Arc::from),
            file: file.map(Arc::from),
            line,
            column,
            origin: origin_of(name, file),
        }
    }
}

/// Whose code a frame is in, which decides what a short backtrace shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub enum FrameOrigin {
    /// The program's own code: any source file outside the toolchain, the
    /// package registry and this tracker.
    Program,
    /// A dependency's code: a source file from cargo's registry or a git
    /// checkout of it (`.../registry/src/...`, `.../git/checkouts/...`), or
    /// vendored (`.../vendor/...`).
    Dependency,
    /// The standard library (`/rustc/<hash>/library/...` or a toolchain's
    /// `lib/rustlib/src`), the C runtime's thread and process start.
    Toolchain,
    /// This tracker.
    Tracker,
}

impl BacktraceSymbol {
    /// Whose code this frame is in. Decided by the source file when debug
    /// info names one (any debug-info level but none), so that it holds
    /// whatever the names look like (with `line-tables-only`, inlined
    /// functions have bare names such as `clone`); by the function's path
    /// otherwise.
    pub fn origin(&self) -> FrameOrigin {
        self.origin
    }

    /// The function's name without generic arguments, as short reports
    /// and flamegraphs print it: `alloc::raw_vec::RawVec<T,A>::grow_one`
    /// reads `alloc::raw_vec::RawVec::grow_one`, and
    /// `<hyper::Server<S,B> as hyper::Dispatch>::poll_msg` reads
    /// `<hyper::Server as hyper::Dispatch>::poll_msg`. `None` without a
    /// name.
    pub fn short_name(&self) -> Option<std::borrow::Cow<'_, str>> {
        self.name.as_deref().map(without_generics)
    }

    /// The crate a dependency's frame is in, from its source path
    /// (`.../registry/src/<registry>/tokio-1.40.0/src/...` gives `tokio`).
    pub fn dependency_crate(&self) -> Option<&str> {
        let mut parts = self
            .file
            .as_deref()?
            .components()
            .filter_map(|part| match part {
                std::path::Component::Normal(part) => part.to_str(),
                _ => None,
            });
        let (mut two_back, mut one_back) = (None, None);
        while let Some(part) = parts.next() {
            if two_back == Some("registry") && one_back == Some("src") {
                // `<registry>/<crate>-<version>/...`: the version starts at
                // the first `-` before a digit.
                let package = parts.next()?;
                let end = package
                    .match_indices('-')
                    .map(|(index, _)| index)
                    .find(|&index| package[index + 1..].starts_with(|c: char| c.is_ascii_digit()))
                    .unwrap_or(package.len());
                return Some(&package[..end]);
            }
            if one_back == Some("git") && part == "checkouts" {
                // `<crate>-<hash>/<revision>/...`
                let checkout = parts.next()?;
                return Some(checkout.rsplit_once('-').map_or(checkout, |(name, _)| name));
            }
            (two_back, one_back) = (one_back, Some(part));
        }
        None
    }
}

/// `name` without its generic argument lists (`Vec<T>`, `f::<T>`); the
/// angle brackets of a qualified path (`<Type as Trait>::method`) stay.
pub(crate) fn without_generics(name: &str) -> std::borrow::Cow<'_, str> {
    if !name.contains('<') {
        return name.into();
    }
    let mut out = String::with_capacity(name.len());
    // The brackets open around the present character: whether each opened
    // a generic argument list (left out, with all it holds) or a qualified
    // path (kept).
    let mut open: Vec<bool> = Vec::new();
    let mut chars = name.chars().peekable();
    while let Some(c) = chars.next() {
        let skipping = open.contains(&true);
        match c {
            // An arrow of a function type (`Fn() -> T`) closes nothing.
            '-' if chars.peek() == Some(&'>') => {
                chars.next();
                if !skipping {
                    out.push_str("->");
                }
            }
            '<' => {
                let generic = skipping
                    || out.ends_with("::")
                    || out
                        .chars()
                        .next_back()
                        .is_some_and(|before| before.is_alphanumeric() || "_>])}".contains(before));
                if generic {
                    if !skipping && out.ends_with("::") {
                        out.truncate(out.len() - 2);
                    }
                } else {
                    out.push('<');
                }
                open.push(generic);
            }
            '>' => {
                let qualified = open.pop() == Some(false);
                if qualified {
                    out.push('>');
                }
            }
            c if !skipping => out.push(c),
            _ => {}
        }
    }
    out.into()
}

/// Whose code a function `name` in `file` is (see [`BacktraceSymbol::origin`]).
fn origin_of(name: Option<&str>, file: Option<&Path>) -> FrameOrigin {
    // Whatever file they are credited to: the allocator shims that
    // `#[global_allocator]` generates (their file is the program's), and
    // the C runtime's thread and process start (glibc's own sources, when
    // its debug info is installed).
    if let Some(name) = name {
        let last = name.rsplit("::").next().unwrap_or(name);
        if ["__rust_", "__rg_", "__rdl_"]
            .iter()
            .any(|prefix| last.starts_with(prefix))
            || C_RUNTIME.contains(&name)
        {
            return FrameOrigin::Toolchain;
        }
    }
    match file {
        Some(file) => origin_of_file(&slashed(&file.to_string_lossy())),
        None => name.map_or(FrameOrigin::Program, origin_of_name),
    }
}

/// The C runtime's thread and process start, by exact name (a prefix would
/// also take the program's `start_threads` or `clone_all`).
const C_RUNTIME: &[&str] = &[
    "start_thread",
    "clone3",
    "__clone",
    "__clone3",
    "_start",
    "__libc_start_main",
    "__libc_start_main_impl",
    "__libc_start_call_main",
];

/// The tracker's own sources: this crate's and the core's (not their
/// examples or tests, which are programs of their own).
const TRACKER_SOURCES: [&str; 2] = [
    concat!(env!("CARGO_MANIFEST_DIR"), "/src"),
    alloc_track_core::SOURCE_DIR,
];

/// A path with forward slashes (only Windows paths change).
fn slashed(path: &str) -> std::borrow::Cow<'_, str> {
    if cfg!(windows) && path.contains('\\') {
        path.replace('\\', "/").into()
    } else {
        path.into()
    }
}

fn origin_of_file(file: &str) -> FrameOrigin {
    if TRACKER_SOURCES.iter().any(|dir| {
        file.strip_prefix(slashed(dir).as_ref())
            .is_some_and(|rest| rest.starts_with('/'))
    }) {
        FrameOrigin::Tracker
    } else if file.starts_with("/rustc/")
        || file.starts_with("/rust/deps/")
        || file.contains("/lib/rustlib/src/rust/")
    {
        FrameOrigin::Toolchain
    } else if ["/registry/src/", "/git/checkouts/", "/vendor/"]
        .iter()
        .any(|marker| file.contains(marker))
    {
        FrameOrigin::Dependency
    } else {
        FrameOrigin::Program
    }
}

/// For a frame without a source file (no debug info): the allocator, the
/// tracker, the standard library and the C runtime's start-up code by their
/// paths; anything else counts as the program's, since without a file a
/// dependency cannot be told from it.
///
/// A method `<Type as Trait>::method` is the library's only when both the
/// type and the trait are (or the type is primitive): a program's own
/// `impl Clone for MyType` stays the program's.
fn origin_of_name(name: &str) -> FrameOrigin {
    // Without a file, `main` is the shim rustc generates around the
    // program's `main`, and `clone` glibc's thread start (with a file, both
    // may be the program's: `line-tables-only` names functions bare).
    const RUNTIME_WITHOUT_FILE: &[&str] = &["main", "clone"];
    let unqualified = name.trim_start_matches('<');
    if ["alloc_track::", "alloc_track_core::"]
        .iter()
        .any(|prefix| unqualified.starts_with(prefix))
    {
        return FrameOrigin::Tracker;
    }
    let library = match name.strip_prefix('<') {
        Some(qualified) => {
            let (self_type, rest) = qualified.split_once(" as ").unwrap_or((qualified, ""));
            library_path(self_type) && (rest.is_empty() || library_path(rest))
        }
        None => library_path(name) || RUNTIME_WITHOUT_FILE.contains(&name),
    };
    if library {
        FrameOrigin::Toolchain
    } else {
        FrameOrigin::Program
    }
}

fn library_path(path: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "alloc::",
        "core::",
        "std::",
        "hashbrown::",
        "test::",
        "__rust",
        "__rdl_",
        "__rg_",
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
    use super::*;

    fn symbol(name: &str, file: Option<&str>) -> BacktraceSymbol {
        BacktraceSymbol::new(Some(name), file.map(Path::new), Some(1), None)
    }

    #[test]
    fn files_decide_whose_code_a_frame_is() {
        let cases = [
            ("/rustc/4d91de4e48198da2e33413efdcd9cd2cc0c46688/library/alloc/src/vec/mod.rs", FrameOrigin::Toolchain),
            ("/home/me/.rustup/toolchains/stable-x86_64-unknown-linux-gnu/lib/rustlib/src/rust/library/core/src/ptr/mod.rs", FrameOrigin::Toolchain),
            // The standard library's own dependencies, as it was built.
            ("/rust/deps/hashbrown-0.16.1/src/raw/alloc.rs", FrameOrigin::Toolchain),
            ("/home/me/.cargo/registry/src/registry-1949cf8c6b5b557f/tokio-1.40.0/src/runtime/task/core.rs", FrameOrigin::Dependency),
            ("/home/me/.cargo/git/checkouts/hyper-0123abcd/5e1f2a3/src/proto/h1/io.rs", FrameOrigin::Dependency),
            ("/src/service/vendor/bytes/src/bytes.rs", FrameOrigin::Dependency),
            ("/src/service/src/catalog.rs", FrameOrigin::Program),
            ("src/main.rs", FrameOrigin::Program),
            (concat!(env!("CARGO_MANIFEST_DIR"), "/src/lib.rs"), FrameOrigin::Tracker),
            (concat!(env!("CARGO_MANIFEST_DIR"), "/examples/leak.rs"), FrameOrigin::Program),
        ];
        for (file, origin) in cases {
            // Whatever the name says: with line-tables-only it is often bare.
            for name in ["clone", "main", "alloc", "std::rt::lang_start"] {
                assert_eq!(symbol(name, Some(file)).origin(), origin, "{file} {name}");
            }
        }
    }

    #[test]
    fn without_a_file_names_decide() {
        for library in [
            "alloc::raw_vec::RawVec<T,A>::grow_one",
            "<u8 as alloc::vec::spec_from_elem::SpecFromElem>::from_elem",
            "<&dyn core::ops::function::Fn<(), Output = i32> + core::marker::Sync as core::ops::function::FnOnce<()>>::call_once",
            "std::rt::lang_start_internal",
            "__rust_alloc",
            "main",
            "clone",
            "start_thread",
        ] {
            assert_eq!(symbol(library, None).origin(), FrameOrigin::Toolchain, "{library}");
        }
        // The allocator shims are credited to the file of the program's
        // `#[global_allocator]`, glibc's start to its own sources.
        for (library, file) in [
            ("__rustc::__rust_alloc_zeroed", "tests/std_backtrace.rs"),
            ("__rust_realloc", "src/main.rs"),
            ("start_thread", "./nptl/pthread_create.c"),
            ("clone3", "../sysdeps/unix/sysv/linux/x86_64/clone3.S"),
        ] {
            assert_eq!(
                symbol(library, Some(file)).origin(),
                FrameOrigin::Toolchain,
                "{library}"
            );
        }
        for tracker in [
            "alloc_track_core::ledger::Ledger<C,_,_,_,_>::alloc",
            "<alloc_track::AllocTrack<T> as core::alloc::global::GlobalAlloc>::alloc",
        ] {
            assert_eq!(symbol(tracker, None).origin(), FrameOrigin::Tracker);
        }
        for program in [
            "leak::produce",
            "<myapp::Config as core::clone::Clone>::clone",
            "<alloc::vec::Vec<u8> as myapp::Encode>::encode",
            "u8_parser::parse",
            "mainloop::run",
            "clone_all",
            "cloned_catalog",
            "alloc_tracker_ui::draw",
            "<alloc_track_probe::Catalog as core::clone::Clone>::clone",
        ] {
            assert_eq!(
                symbol(program, None).origin(),
                FrameOrigin::Program,
                "{program}"
            );
        }
    }

    #[test]
    fn short_names_leave_out_generic_arguments() {
        for (full, short) in [
            ("leak::produce", "leak::produce"),
            (
                "alloc::raw_vec::RawVec<T,A>::grow_one",
                "alloc::raw_vec::RawVec::grow_one",
            ),
            (
                "<hyper::proto::h1::dispatch::Server<S,hyper::body::incoming::Incoming> as hyper::proto::h1::dispatch::Dispatch>::poll_msg",
                "<hyper::proto::h1::dispatch::Server as hyper::proto::h1::dispatch::Dispatch>::poll_msg",
            ),
            (
                "core::ptr::drop_in_place<std::thread::JoinInner<alloc::vec::Vec<u8>>>",
                "core::ptr::drop_in_place",
            ),
            ("std::sys::backtrace::__rust_begin_short_backtrace::<F,T>", "std::sys::backtrace::__rust_begin_short_backtrace"),
            (
                "<alloc::boxed::Box<dyn core::ops::function::Fn() -> u8> as core::ops::function::FnOnce<()>>::call_once",
                "<alloc::boxed::Box as core::ops::function::FnOnce>::call_once",
            ),
            ("<&T as core::fmt::Display>::fmt", "<&T as core::fmt::Display>::fmt"),
            ("service::main::{{closure}}", "service::main::{{closure}}"),
        ] {
            assert_eq!(without_generics(full), short, "{full}");
        }
    }

    #[test]
    fn dependency_frames_name_their_crate() {
        let file =
            "/home/me/.cargo/registry/src/registry-1949cf8c6b5b557f/serde_json-1.0.140/src/de.rs";
        assert_eq!(
            symbol("x", Some(file)).dependency_crate(),
            Some("serde_json")
        );
        let git = "/home/me/.cargo/git/checkouts/hyper-util-a1b2c3d4e5f60718/5e1f2a3/src/lib.rs";
        assert_eq!(
            symbol("x", Some(git)).dependency_crate(),
            Some("hyper-util")
        );
        assert_eq!(symbol("x", Some("src/main.rs")).dependency_crate(), None);
    }
}
