//! How long blocks live before they are freed, in log2 buckets from under a
//! microsecond to over an hour: the volatile allocations that fragment a
//! heap are the short-lived ones.
//!
//! The sampling form hands each sampled block's lifetime to its context
//! ([`Context::sample_freed`](crate::Context::sample_freed)); a context that
//! keeps a [`Lifetimes`] per callsite can report them.

use crate::primitive::{atomic_array, loom_const_fn, Counter};

/// The buckets: under 1 µs, then `[2^(k-1), 2^k)` µs for `k` from 1 to 32,
/// then 2^32 µs (about 72 minutes) and more.
pub const LIFETIME_BUCKETS: usize = 34;

/// The bucket of a lifetime of `nanos` nanoseconds.
pub const fn lifetime_bucket(nanos: u64) -> usize {
    let micros = nanos / 1000;
    if micros == 0 {
        return 0;
    }
    let bucket = (u64::BITS - micros.leading_zeros()) as usize;
    if bucket < LIFETIME_BUCKETS {
        bucket
    } else {
        LIFETIME_BUCKETS - 1
    }
}

/// The lifetimes bucket `bucket` holds, in nanoseconds: from the first, up to
/// the second (`None` for the last, which has no end).
pub const fn lifetime_bounds(bucket: usize) -> (u64, Option<u64>) {
    if bucket == 0 {
        return (0, Some(1000));
    }
    let low = (1u64 << (bucket - 1)) * 1000;
    if bucket >= LIFETIME_BUCKETS - 1 {
        (low, None)
    } else {
        (low, Some(low * 2))
    }
}

/// A histogram of lifetimes: per bucket, the bytes and the blocks freed
/// with a lifetime in it. Any task may add to it at once.
pub struct Lifetimes {
    bytes: [Counter; LIFETIME_BUCKETS],
    blocks: [Counter; LIFETIME_BUCKETS],
}

/// One bucket of a [`Lifetimes`] as a report sees it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LifetimeBucket {
    /// Bytes freed with a lifetime in the bucket.
    pub bytes: u64,
    /// Blocks freed with a lifetime in the bucket.
    pub blocks: u64,
}

impl Lifetimes {
    loom_const_fn! {
        /// An empty histogram.
        pub fn new() -> Self {
            Self {
                bytes: atomic_array![Counter::new(); LIFETIME_BUCKETS],
                blocks: atomic_array![Counter::new(); LIFETIME_BUCKETS],
            }
        }
    }

    /// Adds `bytes` and `blocks` (in any unit; the sampling form's are
    /// [`SAMPLE_SCALE`](crate::raw::SAMPLE_SCALE) units) freed after `nanos`.
    pub fn record(&self, nanos: u64, bytes: u64, blocks: u64) {
        let bucket = lifetime_bucket(nanos);
        if let (Some(b), Some(n)) = (self.bytes.get(bucket), self.blocks.get(bucket)) {
            b.add_shared(bytes);
            n.add_shared(blocks);
        }
    }

    /// The buckets, shortest first.
    pub fn load(&self) -> [LifetimeBucket; LIFETIME_BUCKETS] {
        let mut buckets = [LifetimeBucket::default(); LIFETIME_BUCKETS];
        for ((bucket, bytes), blocks) in buckets.iter_mut().zip(&self.bytes).zip(&self.blocks) {
            *bucket = LifetimeBucket {
                bytes: bytes.get(),
                blocks: blocks.get(),
            };
        }
        buckets
    }
}

impl Default for Lifetimes {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_powers_of_two_microseconds() {
        assert_eq!(lifetime_bucket(0), 0);
        assert_eq!(lifetime_bucket(999), 0);
        assert_eq!(lifetime_bucket(1000), 1);
        assert_eq!(lifetime_bucket(1999), 1);
        assert_eq!(lifetime_bucket(2000), 2);
        assert_eq!(lifetime_bucket(1_000_000), 10); // 1 ms in [512, 1024) µs
        assert_eq!(lifetime_bucket(u64::MAX), LIFETIME_BUCKETS - 1);
        for bucket in 0..LIFETIME_BUCKETS {
            let (low, high) = lifetime_bounds(bucket);
            assert_eq!(lifetime_bucket(low), bucket);
            if let Some(high) = high {
                assert_eq!(lifetime_bucket(high - 1), bucket);
                assert_eq!(lifetime_bucket(high), bucket + 1);
            }
        }
        // Over an hour is in the last bucket.
        assert_eq!(
            lifetime_bucket(3600 * 1_000_000_000 * 2),
            LIFETIME_BUCKETS - 1
        );
    }
}
