//! Allocation lifetimes per callsite, in the sampling form: how long the
//! sampled blocks of each callsite lived, and the share of its bytes that
//! lived under a millisecond, which marks the volatile callsites that
//! fragment a heap.

use alloc_track_core::raw::SAMPLE_SCALE;
use alloc_track_core::{lifetime_bounds, Lifetimes as Histogram, LIFETIME_BUCKETS};

/// Callsite rows whose lifetimes are kept: the first ones claimed. In the
/// sampling form only sampled stacks claim rows, so this covers most
/// programs; lifetimes of rows beyond it are not kept.
pub const LIFETIME_ROWS: usize = 8192;

/// Lived under this many nanoseconds (1,024 µs, a bucket boundary, about a
/// millisecond): short-lived.
pub const SHORT_LIVED_NANOS: u64 = 1_024_000;

static TABLE: [Histogram; LIFETIME_ROWS] = [const { Histogram::new() }; LIFETIME_ROWS];

/// Records a sampled block's free: `site` its callsite row, `nanos` how long
/// it lived, `bytes` and `count` what the sample stands for (in
/// [`SAMPLE_SCALE`] units).
pub(crate) fn record(site: u32, nanos: u64, bytes: u64, count: u64) {
    if let Some(histogram) = TABLE.get(site as usize) {
        histogram.record(nanos, bytes, count);
    }
}

/// The blocks freed with a lifetime in one bucket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct LifetimeRange {
    /// Lifetimes from (nanoseconds).
    pub from_nanos: u64,
    /// Lifetimes up to (nanoseconds, excluded); `None` for the last, open
    /// bucket.
    pub up_to_nanos: Option<u64>,
    /// Bytes freed.
    pub bytes: u64,
    /// Blocks freed.
    pub blocks: u64,
}

/// How long one callsite's freed blocks lived, estimated from its samples.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct LifetimeSummary {
    /// The buckets that hold any block, shortest first (log2 of
    /// microseconds, from under 1 µs to over an hour).
    pub buckets: Vec<LifetimeRange>,
    /// Bytes freed within [`SHORT_LIVED_NANOS`] of their allocation.
    pub short_lived_bytes: u64,
    /// Bytes freed, of the blocks whose lifetime was seen.
    pub freed_bytes: u64,
}

impl LifetimeSummary {
    /// The share of freed bytes that lived under about a millisecond
    /// ([`SHORT_LIVED_NANOS`]), from 0 to 1.
    pub fn short_lived_share(&self) -> f64 {
        if self.freed_bytes == 0 {
            0.0
        } else {
            self.short_lived_bytes as f64 / self.freed_bytes as f64
        }
    }

    /// Adds another stack's lifetimes (when a report merges stacks).
    pub(crate) fn absorb(&mut self, other: &LifetimeSummary) {
        self.short_lived_bytes += other.short_lived_bytes;
        self.freed_bytes += other.freed_bytes;
        for range in &other.buckets {
            match self
                .buckets
                .iter_mut()
                .find(|mine| mine.from_nanos == range.from_nanos)
            {
                Some(mine) => {
                    mine.bytes += range.bytes;
                    mine.blocks += range.blocks;
                }
                None => self.buckets.push(*range),
            }
        }
        self.buckets.sort_by_key(|range| range.from_nanos);
    }

    /// Whether most of the callsite's freed bytes were short-lived: a
    /// volatile callsite.
    pub fn is_volatile(&self) -> bool {
        self.freed_bytes > 0 && 2 * self.short_lived_bytes > self.freed_bytes
    }
}

/// The lifetimes of callsite row `site`, if any of its blocks was seen freed.
pub(crate) fn summary(site: u32) -> Option<LifetimeSummary> {
    let histogram = TABLE.get(site as usize)?.load();
    let unscale = |value: u64| value.saturating_add(SAMPLE_SCALE / 2) / SAMPLE_SCALE;
    let mut summary = LifetimeSummary::default();
    for (index, bucket) in histogram.iter().enumerate().take(LIFETIME_BUCKETS) {
        let (low, high) = lifetime_bounds(index);
        let range = LifetimeRange {
            from_nanos: low,
            up_to_nanos: high,
            bytes: unscale(bucket.bytes),
            blocks: unscale(bucket.blocks),
        };
        summary.freed_bytes += range.bytes;
        if high.is_some_and(|high| high <= SHORT_LIVED_NANOS) {
            summary.short_lived_bytes += range.bytes;
        }
        if range.blocks > 0 || range.bytes > 0 {
            summary.buckets.push(range);
        }
    }
    (summary.freed_bytes > 0).then_some(summary)
}
