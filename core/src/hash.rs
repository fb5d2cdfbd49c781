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
///
/// Each frame is mixed with its position and multiplied on its own, and the
/// products are summed: no multiplication waits for the one before, so a
/// deep stack hashes at about a cycle per frame. The final mix spreads the
/// sum over all 64 bits.
#[inline]
pub(crate) fn stack(frames: &[usize]) -> u64 {
    let mut sum = frames.len() as u64;
    for (position, &frame) in (0u64..).zip(frames) {
        let keyed = frame as u64 ^ position.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        sum = sum.wrapping_add(keyed.wrapping_mul(0xff51_afd7_ed55_8ccd));
    }
    mix(sum) | 1
}
