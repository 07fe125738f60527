//! Activations applied in the product's epilogue, while the outputs are in cache.
//!
//! BERT's exact GELU, `0.5 x (1 + erf(x / sqrt 2))`, needs erf, which Rust's standard
//! library does not have. The one here is Abramowitz & Stegun 7.1.26 (|error| <=
//! 1.5e-7) with an exp of its own, all branch-free so that the epilogue vectorises:
//! within 5e-7 of erf in float32, far below the int8 quantisation step of the product
//! that consumes the activations.

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

    /// Applies the activation to every value of `values`.
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

#[inline(always)]
pub(crate) fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// erf(x) within 5e-7; exact at 0, odd, and 1 from |x| = 4 (erf(4) = 1 - 1.5e-8).
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
    let a = x.abs().min(4.0);
    let t = 1.0 / (1.0 + P * a);
    let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    (1.0 - poly * exp_small(-(a * a))).copysign(x)
}

/// exp(z) for z in [-16, 0]: z = n ln 2 + r with |r| <= ln 2 / 2, exp(r) by its
/// Taylor series to r^6 (relative error < 1.2e-7), 2^n put into the exponent bits.
#[inline(always)]
fn exp_small(z: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23: rounds to an integer (see quantize.rs)
                                     // ln 2 in two parts: n * LN2_HI is exact for |n| < 512.
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let shifted = z * std::f32::consts::LOG2_E + MAGIC;
    let n = shifted.to_bits() as i32 - MAGIC.to_bits() as i32;
    let nf = shifted - MAGIC;
    let r = z - nf * LN2_HI - nf * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r / 720.0)))));
    // n in [-24, 0]: 2^n is a normal float.
    p * f32::from_bits(((n + 127) as u32) << 23)
}
