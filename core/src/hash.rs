//! Hashing of task ids and return-address stacks into table positions.

/// A well-spread 64-bit mix of `value` (the finaliser of SplitMix64), so that
/// the high bits used by [`reduce`] depend on every input bit.
#[inline]
pub(crate) const fn mix(value: u64) -> u64 {
    let mut z = value;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Maps a hash onto `0..len` by multiplication instead of division
/// (Lemire's reduction); `len` of zero gives zero.
#[inline]
pub(crate) const fn reduce(hash: u64, len: usize) -> usize {
    ((hash as u128).wrapping_mul(len as u128) >> 64) as usize
}

/// Hashes a stack of return addresses. Never zero, so zero can mean "empty".
#[inline]
pub(crate) fn stack(frames: &[usize]) -> u64 {
    let mut hash = frames.len() as u64;
    for &frame in frames {
        hash = (hash.rotate_left(23) ^ frame as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    mix(hash) | 1
}
