//! pprof heap profiles: profile.proto messages (encoded by `prost`),
//! gzip-compressed, laid out as Go's runtime writes its heap profiles.

use std::collections::HashMap;
use std::io::Write as _;

use super::{profile_frames, ProfileSymbol, SampleType};
use crate::backtrace_report::{BacktraceMetric, CallsiteKind};
use crate::snapshot::Snapshot;

/// profile.proto's messages, the fields a heap profile uses.
mod proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Profile {
        #[prost(message, repeated, tag = "1")]
        pub sample_type: Vec<ValueType>,
        #[prost(message, repeated, tag = "2")]
        pub sample: Vec<Sample>,
        #[prost(message, repeated, tag = "3")]
        pub mapping: Vec<Mapping>,
        #[prost(message, repeated, tag = "4")]
        pub location: Vec<Location>,
        #[prost(message, repeated, tag = "5")]
        pub function: Vec<Function>,
        #[prost(string, repeated, tag = "6")]
        pub string_table: Vec<String>,
        #[prost(int64, tag = "7")]
        pub drop_frames: i64,
        #[prost(int64, tag = "9")]
        pub time_nanos: i64,
        #[prost(int64, tag = "10")]
        pub duration_nanos: i64,
        #[prost(message, optional, tag = "11")]
        pub period_type: Option<ValueType>,
        #[prost(int64, tag = "12")]
        pub period: i64,
        #[prost(int64, repeated, tag = "13")]
        pub comment: Vec<i64>,
        #[prost(int64, tag = "14")]
        pub default_sample_type: i64,
    }

    #[derive(Clone, Copy, PartialEq, prost::Message)]
    pub(super) struct ValueType {
        #[prost(int64, tag = "1")]
        pub r#type: i64,
        #[prost(int64, tag = "2")]
        pub unit: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Sample {
        #[prost(uint64, repeated, tag = "1")]
        pub location_id: Vec<u64>,
        #[prost(int64, repeated, tag = "2")]
        pub value: Vec<i64>,
        #[prost(message, repeated, tag = "3")]
        pub label: Vec<Label>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Label {
        #[prost(int64, tag = "1")]
        pub key: i64,
        #[prost(int64, tag = "2")]
        pub str: i64,
        #[prost(int64, tag = "3")]
        pub num: i64,
        #[prost(int64, tag = "4")]
        pub num_unit: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Mapping {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(uint64, tag = "2")]
        pub memory_start: u64,
        #[prost(uint64, tag = "3")]
        pub memory_limit: u64,
        #[prost(uint64, tag = "4")]
        pub file_offset: u64,
        #[prost(int64, tag = "5")]
        pub filename: i64,
        #[prost(int64, tag = "6")]
        pub build_id: i64,
        #[prost(bool, tag = "7")]
        pub has_functions: bool,
        #[prost(bool, tag = "8")]
        pub has_filenames: bool,
        #[prost(bool, tag = "9")]
        pub has_line_numbers: bool,
        #[prost(bool, tag = "10")]
        pub has_inline_frames: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Location {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(uint64, tag = "2")]
        pub mapping_id: u64,
        #[prost(uint64, tag = "3")]
        pub address: u64,
        #[prost(message, repeated, tag = "4")]
        pub line: Vec<Line>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Line {
        #[prost(uint64, tag = "1")]
        pub function_id: u64,
        #[prost(int64, tag = "2")]
        pub line: i64,
        #[prost(int64, tag = "3")]
        pub column: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Function {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(int64, tag = "2")]
        pub name: i64,
        #[prost(int64, tag = "3")]
        pub system_name: i64,
        #[prost(int64, tag = "4")]
        pub filename: i64,
        #[prost(int64, tag = "5")]
        pub start_line: i64,
    }
}

/// Builds a profile's tables: strings, functions and locations, each
/// stored once and referred to by index.
#[derive(Default)]
struct Builder {
    profile: proto::Profile,
    strings: HashMap<String, i64>,
    functions: HashMap<(String, String), u64>,
    /// Locations by address and the number of its inlined calls left out
    /// (the same address may be a stack's innermost, trimmed, frame).
    locations: HashMap<(usize, usize, String), u64>,
    /// Whether no stack is resolved: locations are then addresses alone,
    /// for the reader to symbolize.
    unsymbolized: bool,
}

impl Builder {
    fn string(&mut self, text: &str) -> i64 {
        if let Some(&index) = self.strings.get(text) {
            return index;
        }
        let index = self.profile.string_table.len() as i64;
        self.profile.string_table.push(text.to_owned());
        self.strings.insert(text.to_owned(), index);
        index
    }

    fn value_type(&mut self, name: &str, unit: &str) -> proto::ValueType {
        proto::ValueType {
            r#type: self.string(name),
            unit: self.string(unit),
        }
    }

    fn function(&mut self, name: String, file: String) -> u64 {
        if let Some(&id) = self.functions.get(&(name.clone(), file.clone())) {
            return id;
        }
        let id = self.profile.function.len() as u64 + 1;
        let function = proto::Function {
            id,
            name: self.string(&name),
            system_name: self.string(&name),
            filename: self.string(&file),
            start_line: 0,
        };
        self.profile.function.push(function);
        self.functions.insert((name, file), id);
        id
    }

    fn mapping_of(&self, address: usize) -> u64 {
        let address = address as u64;
        self.profile
            .mapping
            .iter()
            .find(|mapping| (mapping.memory_start..mapping.memory_limit).contains(&address))
            .map_or(0, |mapping| mapping.id)
    }

    fn location(&mut self, frame: &super::ProfileFrame<'_>) -> u64 {
        let address = frame.address.unwrap_or(0);
        let first = frame
            .symbols
            .first()
            .map(|symbol| symbol.name(true))
            .unwrap_or_default();
        let key = (address, frame.symbols.len(), first);
        if let Some(&id) = self.locations.get(&key) {
            return id;
        }
        let mut lines = Vec::with_capacity(frame.symbols.len());
        for symbol in &frame.symbols {
            // Left for the reader to symbolize.
            if self.unsymbolized && matches!(symbol, ProfileSymbol::Unresolved(_)) {
                continue;
            }
            let (file, line, column) = match symbol {
                ProfileSymbol::Resolved(symbol) => (
                    symbol
                        .file
                        .as_ref()
                        .map(|file| file.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    symbol.line.unwrap_or(0),
                    symbol.column.unwrap_or(0),
                ),
                _ => (String::new(), 0, 0),
            };
            lines.push(proto::Line {
                function_id: self.function(symbol.name(true), file),
                line: line.into(),
                column: column.into(),
            });
        }
        let id = self.profile.location.len() as u64 + 1;
        // A stack holds return addresses; a location is the call itself,
        // one byte back, as readers that symbolize expect (a return
        // address may lie in the next line, or the next function).
        let call = address.saturating_sub(1);
        let location = proto::Location {
            id,
            mapping_id: frame.address.map_or(0, |_| self.mapping_of(call)),
            address: if frame.address.is_some() {
                call as u64
            } else {
                0
            },
            line: lines,
        };
        self.profile.location.push(location);
        self.locations.insert(key, id);
        id
    }
}

/// Saturates a figure into a profile's signed value.
fn value(figure: u64) -> i64 {
    i64::try_from(figure).unwrap_or(i64::MAX)
}

/// How [`Snapshot::pprof_with`] writes a profile.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct PprofOptions<'a> {
    /// The sample type a viewer shows first. Default: `inuse_space`, as
    /// Go's `heap` profile (its `allocs` profile shows `alloc_space`).
    pub default: SampleType,
    /// Resolve the stacks to functions, files and lines in the process.
    /// Default: yes. Without, the profile holds return addresses and the
    /// mappings of the files they lie in (path, build ID, addresses and
    /// offset), for a reader that symbolizes on its side (`go tool pprof`
    /// reads the files on disk; continuous profilers look the build IDs
    /// up): no symbol lookup runs in the process at all. Its
    /// `drop_frames` names the tracker's and the allocator's functions,
    /// which readers leave out once they have symbolized.
    pub symbolize: bool,
    /// A profile of what happened since `earlier` (a snapshot of the same
    /// run): each value is the difference, which for the values in use may
    /// be below zero, as Go's `?seconds=` profiles serve it. Default: none.
    pub since: Option<&'a Snapshot>,
}

impl Default for PprofOptions<'_> {
    fn default() -> Self {
        Self {
            default: SampleType::InuseSpace,
            symbolize: true,
            since: None,
        }
    }
}

impl<'a> PprofOptions<'a> {
    /// The default options.
    pub fn new() -> Self {
        Self::default()
    }

    /// The sample type a viewer shows first.
    pub fn default_sample_type(mut self, default: SampleType) -> Self {
        self.default = default;
        self
    }

    /// Whether stacks are resolved in the process.
    pub fn symbolize(mut self, symbolize: bool) -> Self {
        self.symbolize = symbolize;
        self
    }

    /// A profile of the differences since `earlier`.
    pub fn since(mut self, earlier: &'a Snapshot) -> Self {
        self.since = Some(earlier);
        self
    }
}

/// What readers leave out of a profile that is not symbolized, once they
/// have symbolized it: the tracker's functions, the allocator's shims and
/// the standard library's allocation functions, and every frame they call
/// (an RE2 expression that must match a function's whole name, as
/// profile.proto's `drop_frames` is read).
const DROP_FRAMES: &str = "(<)?(alloc_track|alloc_track_core)::.*|__rust(c::)?_?(alloc|dealloc|realloc|alloc_zeroed).*|__rustc::.*|__rdl_.*|__rg_.*|(<)?alloc::alloc::.*|(<)?alloc::raw_vec::.*";

impl Snapshot {
    /// The snapshot as a pprof heap profile, gzip-compressed profile.proto
    /// as Go's runtime writes one: the values `alloc_objects`,
    /// `alloc_space`, `inuse_objects` and `inuse_space` per stack,
    /// `default` the one a viewer shows first (Go's `heap` profile shows
    /// `inuse_space`, its `allocs` profile `alloc_space`).
    ///
    /// Functions, files and lines come from the snapshot's resolved stacks,
    /// inlined calls as several lines of one location; the program's
    /// executable mappings are named, with their build IDs. In the sampling
    /// form the period is the sampling interval and the values are already
    /// unbiased estimates: readers must not scale them again (pprof tools
    /// do not).
    pub fn pprof(&self, default: SampleType) -> Vec<u8> {
        self.pprof_with(PprofOptions::new().default_sample_type(default))
    }

    /// [`pprof`](Self::pprof) with other options: unsymbolized, or the
    /// differences since an earlier snapshot.
    pub fn pprof_with(&self, options: PprofOptions<'_>) -> Vec<u8> {
        let proto = self.pprof_profile(options);
        let _scope = crate::context::ReportScope::enter();
        let bytes = prost::Message::encode_to_vec(&proto);
        let mut gzip = flate2::write::GzEncoder::new(
            Vec::with_capacity(bytes.len() / 2),
            flate2::Compression::default(),
        );
        // Writing to a vector cannot fail.
        let _ = gzip.write_all(&bytes);
        gzip.finish().unwrap_or_default()
    }

    fn pprof_profile(&self, options: PprofOptions<'_>) -> proto::Profile {
        let mut resolved = self.clone();
        if options.symbolize {
            resolved.resolve();
        }
        let default = options.default;
        let _scope = crate::context::ReportScope::enter();
        let mut builder = Builder::default();
        builder.string("");
        for kind in SampleType::ALL {
            let value_type = builder.value_type(kind.name(), kind.unit());
            builder.profile.sample_type.push(value_type);
        }
        builder.profile.period_type = Some(builder.value_type("space", "bytes"));
        builder.profile.period = value(resolved.sampling_interval().unwrap_or(1));
        builder.profile.default_sample_type = builder.string(default.name());
        builder.profile.time_nanos = resolved
            .time()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| value(since.as_nanos() as u64));
        if let Some(earlier) = options.since {
            // As Go's delta profiles say how long they cover.
            builder.profile.duration_nanos = resolved
                .time()
                .duration_since(earlier.time())
                .map_or(0, |since| value(since.as_nanos() as u64));
        }

        let has_symbols = resolved
            .callsites()
            .any(|(backtrace, _)| backtrace.frames.iter().any(|f| !f.symbols.is_empty()));
        if !has_symbols {
            builder.unsymbolized = true;
            builder.profile.drop_frames = builder.string(DROP_FRAMES);
        }
        for mapping in resolved.mappings() {
            let id = builder.profile.mapping.len() as u64 + 1;
            let filename = builder.string(&mapping.path);
            let build_id = builder.string(mapping.build_id.as_deref().unwrap_or(""));
            builder.profile.mapping.push(proto::Mapping {
                id,
                memory_start: mapping.start,
                memory_limit: mapping.limit,
                file_offset: mapping.offset,
                filename,
                build_id,
                has_functions: has_symbols,
                has_filenames: has_symbols,
                has_line_numbers: has_symbols,
                has_inline_frames: has_symbols,
            });
        }

        // The earlier snapshot's figures by stack, for a profile of the
        // differences.
        let earlier: Option<HashMap<(CallsiteKind, Vec<usize>), BacktraceMetric>> =
            options.since.map(|earlier| {
                earlier
                    .callsites()
                    .map(|(backtrace, metric)| {
                        ((backtrace.kind, backtrace.addresses().collect()), metric)
                    })
                    .collect()
            });
        let mut own_bytes = 0;
        for (backtrace, metric) in resolved.callsites() {
            let Some(frames) = profile_frames(backtrace) else {
                own_bytes += metric.in_use();
                continue;
            };
            let mut values: Vec<i64> = SampleType::ALL
                .iter()
                .map(|kind| value(kind.of(&metric)))
                .collect();
            if let Some(earlier) = &earlier {
                let key = (backtrace.kind, backtrace.addresses().collect::<Vec<_>>());
                if let Some(before) = earlier.get(&key) {
                    for (value, kind) in values.iter_mut().zip(SampleType::ALL) {
                        *value = value.saturating_sub(self::value(kind.of(before)));
                    }
                }
                if values.iter().all(|&value| value == 0) {
                    continue;
                }
            } else if metric.allocations == 0 && metric.allocated == 0 {
                continue;
            }
            let location_id = frames.iter().map(|frame| builder.location(frame)).collect();
            builder.profile.sample.push(proto::Sample {
                location_id,
                value: values,
                label: Vec::new(),
            });
        }

        let mut comments = Vec::new();
        if let Some(interval) = resolved.sampling_interval() {
            comments.push(format!(
                "alloc-track: sampled, one sample per {interval} bytes on average; the \
                 values are unbiased estimates, already scaled"
            ));
        }
        let dropped = resolved
            .threads()
            .0
            .values()
            .find_map(|metric| metric.dropped_samples)
            .filter(|dropped| dropped.samples > 0);
        if let Some(dropped) = dropped {
            comments.push(format!(
                "alloc-track: {} samples dropped, with no room to record them: the estimates \
                 miss about {} bytes",
                dropped.samples, dropped.bytes
            ));
        }
        comments.push(format!(
            "alloc-track: its own memory (reports, symbol cache), {own_bytes} bytes in use, \
             is left out"
        ));
        for comment in comments {
            let index = builder.string(&comment);
            builder.profile.comment.push(index);
        }
        builder.profile
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_types_are_in_go_heap_order() {
        let names: Vec<&str> = SampleType::ALL.iter().map(|kind| kind.name()).collect();
        assert_eq!(
            names,
            [
                "alloc_objects",
                "alloc_space",
                "inuse_objects",
                "inuse_space"
            ]
        );
        assert_eq!(
            "alloc_space".parse::<SampleType>(),
            Ok(SampleType::AllocSpace)
        );
        assert!("space".parse::<SampleType>().is_err());
    }
}
