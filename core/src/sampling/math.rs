//! Natural logarithm and exponential for the sampling arithmetic, which the
//! core (without `std`) has no library for. Accurate to a few parts in
//! 10^16, well beyond what the estimates need; they run only when a sample
//! is taken.

const LN_2: f64 = core::f64::consts::LN_2;

/// `ln(x)` for `x > 0`.
pub(super) fn ln(x: f64) -> f64 {
    if x <= 0.0 {
        return f64::NEG_INFINITY;
    }
    // x = m * 2^e with m in [1, 2), then m in [sqrt(1/2), sqrt(2)).
    let bits = x.to_bits();
    let mut exponent = ((bits >> 52) & 0x7ff) as i64 - 1023;
    let mut m = f64::from_bits(bits & 0x000f_ffff_ffff_ffff | 0x3ff0_0000_0000_0000);
    if exponent == -1023 {
        // Subnormal: scale up first.
        return ln(x * (1u64 << 52) as f64) - 52.0 * LN_2;
    }
    if m > core::f64::consts::SQRT_2 {
        m /= 2.0;
        exponent += 1;
    }
    exponent as f64 * LN_2 + ln_near_one(m)
}

/// Terms smaller than this, relative to the sum so far, change it no
/// more: the series stop there.
const NEGLIGIBLE: f64 = f64::EPSILON / 4.0;

/// `1/k` for `k = 1, 2, ..., 60`, so that the series multiply where they
/// would divide: on targets without a floating-point unit (most
/// firmware) a division costs several multiplications.
// Evaluated at compile time, where an index out of range fails the
// build rather than the program.
#[allow(clippy::indexing_slicing)]
const RECIPROCALS: [f64; 60] = {
    let mut table = [0.0; 60];
    let mut k = 0;
    while k < 60 {
        table[k] = 1.0 / (k + 1) as f64;
        k += 1;
    }
    table
};

/// `2 atanh(z)` by its series, for `|z|` well below 1: the sum of
/// `z^k / k` over odd `k`, until the terms are negligible (at most 30
/// of them; ten for the `z` that `ln` passes, fewer for smaller ones).
fn twice_atanh(z: f64) -> f64 {
    let z2 = z * z;
    let mut power = z;
    let mut sum = 0.0;
    for reciprocal in RECIPROCALS.iter().step_by(2) {
        let term = power * reciprocal;
        sum += term;
        if term.abs() <= sum.abs() * NEGLIGIBLE {
            break;
        }
        power *= z2;
    }
    2.0 * sum
}

/// `ln(m)` for `m` near 1: `2 atanh((m - 1) / (m + 1))`.
fn ln_near_one(m: f64) -> f64 {
    twice_atanh((m - 1.0) / (m + 1.0))
}

/// `ln(1 + x)` for `x > -1`, accurate for small `x`.
pub(super) fn ln_1p(x: f64) -> f64 {
    if x.abs() < 0.25 {
        // ln(1 + x) = 2 atanh(x / (2 + x)), without forming 1 + x.
        twice_atanh(x / (2.0 + x))
    } else {
        ln(1.0 + x)
    }
}

/// `exp(x) - 1`, accurate for small `x`.
pub(super) fn exp_m1(x: f64) -> f64 {
    if x.abs() < 0.5 {
        // The series x^k / k!, until its terms are negligible (at most
        // 30 of them).
        let mut term = x;
        let mut sum = 0.0;
        for reciprocal in RECIPROCALS.iter().skip(1).take(29) {
            sum += term;
            if term.abs() <= sum.abs() * NEGLIGIBLE {
                break;
            }
            term *= x * reciprocal;
        }
        sum
    } else {
        exp(x) - 1.0
    }
}

/// `exp(x)`.
pub(super) fn exp(x: f64) -> f64 {
    if x < -745.0 {
        return 0.0;
    }
    if x > 709.0 {
        return f64::INFINITY;
    }
    // x = k ln 2 + r with |r| <= ln 2 / 2; exp(x) = 2^k exp(r). ln 2 in
    // two parts, the first with few enough bits that k times it is
    // exact, so that r keeps its precision for large k.
    const LN_2_HIGH: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000);
    const LN_2_LOW: f64 = f64::from_bits(0x3dea_39ef_3579_3c76);
    let k = (x / LN_2 + if x < 0.0 { -0.5 } else { 0.5 }) as i64;
    let r = (x - k as f64 * LN_2_HIGH) - k as f64 * LN_2_LOW;
    let exp_r = 1.0 + exp_m1(r);
    let scale = |value: f64, by: i64| -> f64 {
        // 2^by, built in two steps so that neither leaves the range.
        let half = by / 2;
        let power = |e: i64| f64::from_bits(((e + 1023) as u64) << 52);
        value * power(half) * power(by - half)
    };
    scale(exp_r, k)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-13 * b.abs().max(1e-300)
    }

    #[test]
    fn agree_with_the_standard_library() {
        let mut x = 1e-300;
        while x < 1e300 {
            assert!(close(ln(x), x.ln()), "ln {x}");
            x *= 3.7;
        }
        for x in [-0.2, -1e-9, 1e-12, 0.1, 0.24] {
            assert!(close(ln_1p(x), x.ln_1p()), "ln_1p {x}");
        }
        let mut x = -700.0;
        while x < 700.0 {
            assert!(close(exp(x), x.exp()), "exp {x}");
            x += 0.731;
        }
        for x in [-0.49, -1e-10, 1e-15, 0.3, 2.0, -5.0] {
            assert!(close(exp_m1(x), x.exp_m1()), "exp_m1 {x}");
        }
    }
}
