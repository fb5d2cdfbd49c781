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

/// The high and low halves of the full product of `a` and `b`, folded
/// together: every output bit depends on every input bit, in one
/// multiplication.
#[inline]
const fn folded_multiply(a: u64, b: u64) -> u64 {
    let product = (a as u128).wrapping_mul(b as u128);
    (product >> 64) as u64 ^ product as u64
}

/// Hashes a stack of return addresses. Never zero, so zero can mean "empty".
///
/// Tables trust this hash as the stack's identity, so it must not collide
/// more than chance would. Each frame is keyed with its position and folded
/// through a full multiplication on its own (a non-linear mix, so frames
/// that trade places or differ in a few bits give unrelated terms), and the
/// terms are summed: no multiplication waits for the one before, so a deep
/// stack hashes at about a cycle per frame. The final mix spreads the sum
/// over all 64 bits.
#[inline]
pub(crate) fn stack(frames: &[usize]) -> u64 {
    let mut sum = frames.len() as u64;
    for (position, &frame) in (1u64..).zip(frames) {
        let keyed = frame as u64 ^ position.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        sum = sum.wrapping_add(folded_multiply(keyed, 0xff51_afd7_ed55_8ccd));
    }
    mix(sum) | 1
}

#[cfg(test)]
mod tests {
    use super::stack;
    use std::vec::Vec;

    #[test]
    fn stacks_that_differ_by_swapped_or_nearby_frames_hash_apart() {
        // Stacks like those of a recursion that goes left or right at each
        // level: two return addresses a few bytes apart, in every order.
        let (left, right) = (0x5555_1234_5678usize, 0x5555_1234_5698usize);
        let mut seen = std::collections::HashSet::new();
        let levels = if cfg!(miri) { 6 } else { 12 };
        for path in 0u32..1 << levels {
            let frames: Vec<usize> = (0..levels)
                .map(|level| if path >> level & 1 == 0 { left } else { right })
                .collect();
            assert!(seen.insert(stack(&frames)), "path {path:b} collides");
        }
    }
}
