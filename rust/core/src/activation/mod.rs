//! Activation functions: the exact (erf) GELU of BERT, `0.5 x (1 + erf(x / sqrt 2))`,
//! over f32, in place ([`gelu_in_place`]) or in the int8 product's epilogue
//! ([`Activation`], see `gemm`).
//!
//! A libm `erf` per element costs tens of nanoseconds; in a batched MiniLM forward
//! pass that was more time than the int8 matrix products. Here `erf` is the
//! Abramowitz-Stegun 7.1.26 form (absolute error <= 1.5e-7, below f32 resolution
//! of `1 + erf`) over a Cephes-style `exp`, written branch-free so that loops over
//! it vectorise: 8 lanes with AVX2 (picked at run time), 4 with SSE2 otherwise. No
//! fused multiply-add is used, so every build gives the same floats.

/// An elementwise function applied to `x @ W^T + b`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `0.5 x (1 + erf(x / sqrt 2))`, the exact (erf) GELU of BERT.
    Gelu,
}

impl Activation {
    pub fn name(self) -> &'static str {
        match self {
            Activation::Gelu => "gelu",
        }
    }

    pub fn parse(name: &str) -> Option<Activation> {
        [Activation::Gelu].into_iter().find(|a| a.name() == name)
    }

    /// Applies the activation to every value of `values` (inlined into the caller's
    /// vectorised loop).
    #[inline(always)]
    pub(crate) fn apply(self, values: &mut [f32]) {
        match self {
            Activation::Gelu => {
                for v in values {
                    *v = gelu(*v);
                }
            }
        }
    }
}

/// Applies GELU to every element of `x`.
pub fn gelu_in_place(x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the feature was detected on this CPU just now.
        unsafe { gelu_avx2(x) };
        return;
    }
    for v in x.iter_mut() {
        *v = gelu(*v);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn gelu_avx2(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v = gelu(*v);
    }
}

#[inline(always)]
pub(crate) fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// erf(x) within 5e-7; exact at 0 and odd.
#[inline(always)]
#[allow(clippy::excessive_precision)] // the published constants, rounded by the compiler
pub(crate) fn erf(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_592,
        -0.284_496_736,
        1.421_413_741,
        -1.453_152_027,
        1.061_405_429,
    ];
    let a = x.abs();
    let t = 1.0 / (1.0 + P * a);
    let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    let y = 1.0 - poly * exp_nonpositive(-a * a);
    y.copysign(x)
}

/// `e^x` for `x <= 0` (Cephes expf: reduction by `ln 2`, degree-6 polynomial);
/// inputs below -87 give about 1e-38 instead of a denormal or zero.
#[inline(always)]
pub(crate) fn exp_nonpositive(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5 * 2^23 rounds to the nearest integer without a branch.
    const ROUND: f32 = 12_582_912.0;
    let x = x.max(-87.0);
    let rounded = x * std::f32::consts::LOG2_E + ROUND;
    let n = rounded - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    // n as an integer, read from the rounded float's mantissa: `n as i32` is a
    // saturating cast that LLVM does lane by lane, which kept this loop scalar.
    let n_int = rounded.to_bits() as i32 - ROUND.to_bits() as i32;
    let scale = f32::from_bits(((n_int + 127) as u32) << 23);
    e * scale
}

#[cfg(test)]
mod tests {
    use super::*;

    /// erf by its Taylor series in f64: cancellation costs at most 1e-10 for |x| <= 4.5,
    /// and beyond that erf is 1 within 3e-10.
    fn erf_reference(x: f64) -> f64 {
        if x.abs() > 4.5 {
            return x.signum();
        }
        let (mut term, mut sum) = (x, x);
        for n in 1..200 {
            term *= -x * x / n as f64;
            sum += term / (2 * n + 1) as f64;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn gelu_follows_the_erf_definition() {
        assert_eq!(Activation::parse("gelu"), Some(Activation::Gelu));
        assert_eq!(Activation::parse("relu"), None);
        assert_eq!(erf(0.0), 0.0);
        let xs: Vec<f32> = (-20_000..=20_000).map(|i| i as f32 * 5e-4).collect(); // [-10, 10]
        let mut ys = xs.clone();
        gelu_in_place(&mut ys);
        let mut worst = 0f64;
        for (&x, &y) in xs.iter().zip(&ys) {
            worst = worst.max((erf(x) as f64 - erf_reference(x as f64)).abs());
            let exact = 0.5 * x as f64 * (1.0 + erf_reference(x as f64 / 2f64.sqrt()));
            let tolerance = 4e-7 * (1.0 + x.abs() as f64);
            assert!(
                (y as f64 - exact).abs() <= tolerance,
                "gelu({x}) = {y}, not {exact}"
            );
        }
        assert!(worst <= 5e-7, "erf error {worst}");
    }

    #[test]
    fn tails_and_zero() {
        let mut ys = [0.0f32, -0.0, 30.0, -30.0, 1e30, -1e30];
        gelu_in_place(&mut ys);
        assert_eq!(ys[0], 0.0);
        assert_eq!(ys[1], 0.0);
        assert_eq!(ys[2], 30.0);
        assert_eq!(ys[3], 0.0);
        assert_eq!(ys[4], 1e30);
        assert_eq!(ys[5], 0.0);
    }

    #[test]
    fn every_build_gives_the_same_floats() {
        let xs: Vec<f32> = (0..1000).map(|i| (i as f32 - 500.0) * 0.0137).collect();
        let mut fast = xs.clone();
        gelu_in_place(&mut fast);
        let mut portable = xs.clone();
        Activation::Gelu.apply(&mut portable);
        assert_eq!(fast, portable);
    }
}
