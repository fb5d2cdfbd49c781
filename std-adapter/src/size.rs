//! Byte counts for people: `Size(1536)` prints `1 KB`, as the seed's reports
//! did.

use std::fmt;

use alloc_track_core::DroppedSamples;

/// Prints a byte count in B, KB or MB (rounded down).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Size(pub u64);

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 < 1024 {
            write!(f, "{} B", self.0)
        } else if self.0 < 1024 * 1024 {
            write!(f, "{} KB", self.0 / 1024)
        } else {
            write!(f, "{} MB", self.0 / 1024 / 1024)
        }
    }
}

/// Prints a fractional byte count in B, KB or MB with one decimal.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SizeF64(pub f64);

impl fmt::Display for SizeF64 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 < 1024.0 {
            write!(f, "{:.1} B", self.0)
        } else if self.0 < 1024.0 * 1024.0 {
            write!(f, "{:.1} KB", self.0 / 1024.0)
        } else {
            write!(f, "{:.1} MB", self.0 / 1024.0 / 1024.0)
        }
    }
}

/// The line that says a report's figures are estimates, from what, and
/// what they miss when samples were dropped: for an entry of the sampling
/// form (one with an interval), none for an exact one.
pub(crate) fn estimated(interval: Option<u64>, dropped: Option<DroppedSamples>) -> Option<String> {
    let interval = interval?;
    let mut line = format!(
        "(estimated from samples: one per {} allocated on average; \
         allocated bytes and allocations per thread are exact",
        Size(interval)
    );
    if let Some(dropped) = dropped.filter(|dropped| dropped.samples > 0) {
        line.push_str(&format!(
            "; {} samples dropped, with no room to record them: \
             the estimates miss about {}",
            dropped.samples,
            Size(dropped.bytes)
        ));
    }
    line.push(')');
    Some(line)
}
