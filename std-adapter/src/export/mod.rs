//! Snapshots in the formats that profilers already read: pprof heap
//! profiles (`go tool pprof`, Pyroscope, Parca), folded stacks and
//! flamegraph SVGs.
//!
//! Every format shows a callsite's stack from the program's side of the
//! allocator: the innermost frames of the tracker, the allocator and the
//! standard library's allocation plumbing are left out, so that the frame a
//! profile calls "flat" is the program's (or a dependency's) function that
//! allocated. Stacks made of library frames alone keep them. The tracker's
//! own memory (reports and the symbol cache) is not the program's and is
//! left out of the figures; a profile's comments say how much it was.

mod flame;
mod pprof;

pub use pprof::PprofOptions;

use crate::backtrace_report::{Backtrace, BacktraceMetric, CallsiteKind};
use crate::symbol::{BacktraceSymbol, FrameOrigin};

/// The figures a profile holds, in pprof's names; each profile format shows
/// one of them (pprof profiles hold all four and name this one the
/// default).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SampleType {
    /// Allocations made (`alloc_objects`, a count).
    AllocObjects,
    /// Bytes allocated (`alloc_space`).
    AllocSpace,
    /// Allocations not yet freed (`inuse_objects`, a count).
    InuseObjects,
    /// Bytes allocated and not yet freed (`inuse_space`).
    #[default]
    InuseSpace,
}

impl SampleType {
    /// All four, in the order of a pprof heap profile's values.
    pub const ALL: [SampleType; 4] = [
        SampleType::AllocObjects,
        SampleType::AllocSpace,
        SampleType::InuseObjects,
        SampleType::InuseSpace,
    ];

    /// pprof's name for it.
    pub fn name(self) -> &'static str {
        match self {
            SampleType::AllocObjects => "alloc_objects",
            SampleType::AllocSpace => "alloc_space",
            SampleType::InuseObjects => "inuse_objects",
            SampleType::InuseSpace => "inuse_space",
        }
    }

    /// pprof's unit for it: `count` or `bytes`.
    pub fn unit(self) -> &'static str {
        match self {
            SampleType::AllocObjects | SampleType::InuseObjects => "count",
            SampleType::AllocSpace | SampleType::InuseSpace => "bytes",
        }
    }

    /// The one named `name` in pprof's words (`inuse_space`, ...).
    pub fn from_name(name: &str) -> Option<SampleType> {
        SampleType::ALL.into_iter().find(|kind| kind.name() == name)
    }

    /// Its figure for one callsite.
    fn of(self, metric: &BacktraceMetric) -> u64 {
        match self {
            SampleType::AllocObjects => metric.allocations,
            SampleType::AllocSpace => metric.allocated,
            SampleType::InuseObjects => metric.live_allocations(),
            SampleType::InuseSpace => metric.in_use(),
        }
    }
}

impl std::str::FromStr for SampleType {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        SampleType::from_name(name).ok_or_else(|| {
            format!(
                "unknown sample type {name:?}: one of alloc_objects, alloc_space, \
                 inuse_objects, inuse_space"
            )
        })
    }
}

/// One frame of a profile's stack: a return address and the functions it
/// lies in, innermost first (inlined calls as several). An entry that is
/// not a stack has one frame without an address and a name that says what
/// it stands for.
struct ProfileFrame<'a> {
    address: Option<usize>,
    symbols: Vec<ProfileSymbol<'a>>,
}

/// A function of a [`ProfileFrame`].
enum ProfileSymbol<'a> {
    Resolved(&'a BacktraceSymbol),
    /// A frame whose address has no symbol (or was not resolved).
    Unresolved(usize),
    /// What a bucket stands for.
    Bucket(&'static str),
}

impl ProfileSymbol<'_> {
    /// Its name: a function's in full when `full`, else without generic
    /// arguments.
    fn name(&self, full: bool) -> String {
        match self {
            ProfileSymbol::Resolved(symbol) => {
                let name = if full {
                    symbol.name.as_deref().map(Into::into)
                } else {
                    symbol.short_name()
                };
                name.as_deref().unwrap_or("<unknown>").to_owned()
            }
            ProfileSymbol::Unresolved(address) => format!("{address:#x}"),
            ProfileSymbol::Bucket(name) => (*name).to_owned(),
        }
    }
}

/// The name of the frame that stands for a bucket's allocations.
fn bucket_frame(kind: CallsiteKind) -> Option<&'static str> {
    match kind {
        CallsiteKind::Stack | CallsiteKind::Tracker => None,
        CallsiteKind::Overflow => Some("[alloc-track: callsite table full]"),
        CallsiteKind::Uncaptured => Some("[alloc-track: stack not captured]"),
    }
}

/// The stack a profile shows for an entry, innermost frame first; `None`
/// for the tracker's own memory.
fn profile_frames(backtrace: &Backtrace) -> Option<Vec<ProfileFrame<'_>>> {
    if backtrace.kind == CallsiteKind::Tracker {
        return None;
    }
    if let Some(name) = bucket_frame(backtrace.kind) {
        return Some(vec![ProfileFrame {
            address: None,
            symbols: vec![ProfileSymbol::Bucket(name)],
        }]);
    }
    // How many symbols, counted from the innermost, are the allocation's
    // plumbing: everything before the first of the program's or a
    // dependency's; if there is none, the tracker's and the allocator's
    // frames only.
    let symbols: Vec<&BacktraceSymbol> = backtrace
        .frames
        .iter()
        .flat_map(|frame| frame.symbols.iter())
        .collect();
    let plumbing = symbols
        .iter()
        .position(|symbol| {
            matches!(
                symbol.origin(),
                FrameOrigin::Program | FrameOrigin::Dependency
            )
        })
        .unwrap_or_else(|| {
            symbols
                .iter()
                .position(|symbol| !is_allocator(symbol))
                .unwrap_or(0)
        });
    let mut skip = plumbing;
    let mut frames = Vec::with_capacity(backtrace.frames.len());
    for frame in &backtrace.frames {
        if frame.symbols.is_empty() {
            if skip > 0 {
                // An unnamed frame among the plumbing: the allocator's.
                continue;
            }
            frames.push(ProfileFrame {
                address: Some(frame.address),
                symbols: vec![ProfileSymbol::Unresolved(frame.address)],
            });
            continue;
        }
        let kept: Vec<ProfileSymbol<'_>> = frame
            .symbols
            .iter()
            .skip(skip)
            .map(ProfileSymbol::Resolved)
            .collect();
        skip = skip.saturating_sub(frame.symbols.len());
        if !kept.is_empty() {
            frames.push(ProfileFrame {
                address: Some(frame.address),
                symbols: kept,
            });
        }
    }
    Some(frames)
}

/// Whether a frame is the tracker's or the allocator's own: the global
/// allocator's shims and the `alloc::alloc` functions that call them.
fn is_allocator(symbol: &BacktraceSymbol) -> bool {
    if symbol.origin() == FrameOrigin::Tracker {
        return true;
    }
    let Some(name) = symbol.name.as_deref() else {
        return false;
    };
    let last = name.rsplit("::").next().unwrap_or(name);
    ["__rust_", "__rg_", "__rdl_"]
        .iter()
        .any(|prefix| last.starts_with(prefix))
        || name.starts_with("alloc::alloc::")
        || name.starts_with("<alloc::alloc::Global")
}
