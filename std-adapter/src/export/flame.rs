//! Folded stacks (one line per stack: frames outermost first, joined by
//! `;`, then the value) and flamegraph SVGs drawn from them by `inferno`.

use std::collections::BTreeMap;

use super::{profile_frames, SampleType};
use crate::snapshot::Snapshot;

impl Snapshot {
    /// The snapshot as folded stacks: one line per distinct stack, frames
    /// outermost first (inlined calls as frames of their own), joined by
    /// `;`, then a space and the stack's `value`. Stacks whose value is 0
    /// are left out; lines are sorted. What flamegraph tools read.
    /// Functions are named without generic arguments, but in a snapshot
    /// taken in [`BacktraceMode::Full`](crate::BacktraceMode::Full).
    pub fn folded(&self, value: SampleType) -> String {
        let full_names = self.mode() == crate::BacktraceMode::Full;
        let mut resolved = self.clone();
        resolved.resolve();
        let _scope = crate::context::ReportScope::enter();
        let mut stacks: BTreeMap<String, u64> = BTreeMap::new();
        for (backtrace, metric) in resolved.callsites() {
            let figure = value.of(&metric);
            if figure == 0 {
                continue;
            }
            let Some(frames) = profile_frames(backtrace) else {
                continue;
            };
            let names: Vec<String> = frames
                .iter()
                .rev()
                .flat_map(|frame| frame.symbols.iter().rev())
                // `;` separates frames; a name keeps its other characters.
                .map(|symbol| symbol.name(full_names).replace(';', ","))
                .collect();
            *stacks.entry(names.join(";")).or_default() += figure;
        }
        let mut out = String::new();
        for (stack, figure) in stacks {
            out.push_str(&stack);
            out.push(' ');
            out.push_str(&figure.to_string());
            out.push('\n');
        }
        out
    }

    /// The snapshot as a flamegraph SVG of `value` (drawn by `inferno` from
    /// [`folded`](Snapshot::folded)): a frame's width is its share of the
    /// value. An empty snapshot gives an SVG that says so.
    pub fn flamegraph(&self, value: SampleType) -> String {
        let folded = self.folded(value);
        let _scope = crate::context::ReportScope::enter();
        let mut options = inferno::flamegraph::Options::default();
        options.title = match value {
            SampleType::InuseSpace => "Bytes in use",
            SampleType::InuseObjects => "Allocations in use",
            SampleType::AllocSpace => "Bytes allocated",
            SampleType::AllocObjects => "Allocations made",
        }
        .to_owned();
        if let Some(interval) = self.sampling_interval() {
            options.subtitle = Some(format!(
                "estimated from samples, one per {interval} bytes on average"
            ));
        }
        options.count_name = value.unit().to_owned();
        options.colors = inferno::flamegraph::color::Palette::Basic(
            inferno::flamegraph::color::BasicPalette::Mem,
        );
        // Colours by function name, the same in every drawing.
        options.hash = true;
        let mut svg = Vec::new();
        // With no stack, inferno draws an SVG that says so, and reports
        // the error this function's contract turns into that drawing.
        let _ = inferno::flamegraph::from_lines(&mut options, folded.lines(), &mut svg);
        String::from_utf8_lossy(&svg).into_owned()
    }
}
