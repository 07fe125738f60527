//! Activation functions: the exact (erf) GELU of BERT, `0.5 x (1 + erf(x / sqrt 2))`,
//! over f32, in place ([`gelu_in_place`]) or in the int8 product's epilogue
//! ([`Activation`], see `gemm`).
//!
//! A libm `erf` per element costs tens of nanoseconds, and even a vectorised
//! Abramowitz-Stegun erf (a division and an `exp` per value) was a quarter of a
//! batched MiniLM forward pass. Here `E(u) = erf(u / sqrt 2)` for `u = |x|` is a
//! degree-4 polynomial on each of 32 intervals of [0, 6.4) (`gelu_table.rs`,
//! written by `gelu_table.py`; beyond, E is 1 in f32), within 1e-7 of erf: about 20
//! operations per value, no division. With AVX-512 the coefficients are picked by
//! register permutes, 16 values at a time ([`Activation::apply_avx512`]), with
//! AVX2 by gathers, 8 at a time; the portable code looks them up one value at a
//! time. All do the same arithmetic in the same order, without fused multiply-add,
//! so every build gives the same floats.

mod gelu_table;

use gelu_table::{DEGREE, GELU_TABLE, INTERVALS, SCALE, U_MAX};

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
    /// loop; the portable build).
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

    /// [`apply`](Self::apply) with AVX-512, 16 values per step: the same floats.
    ///
    /// # Safety
    /// The CPU must support avx512f.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(crate) unsafe fn apply_avx512(self, values: &mut [f32]) {
        match self {
            Activation::Gelu => gelu_avx512(values),
        }
    }
}

/// Applies GELU to every element of `x`.
pub fn gelu_in_place(x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") {
            // SAFETY: the feature was detected on this CPU just now.
            unsafe { Activation::Gelu.apply_avx512(x) };
            return;
        }
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: as above.
            unsafe { gelu_avx2(x) };
            return;
        }
    }
    Activation::Gelu.apply(x);
}

/// [`gelu`] with AVX2, 8 lanes at a time: the coefficients are gathered from the
/// table (the portable loop compiled for AVX2 stayed scalar, twice as slow as the
/// division-and-exp erf it replaced). The last partial vector goes through [`gelu`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn gelu_avx2(values: &mut [f32]) {
    use std::arch::x86_64::*;
    let (u_max, scale) = (_mm256_set1_ps(U_MAX), _mm256_set1_ps(SCALE));
    let (half, one) = (_mm256_set1_ps(0.5), _mm256_set1_ps(1.0));
    let sign = _mm256_set1_ps(-0.0);
    let mut chunks = values.chunks_exact_mut(8);
    for chunk in &mut chunks {
        // SAFETY: the chunk holds 8 values.
        let x = unsafe { _mm256_loadu_ps(chunk.as_ptr()) };
        // vminps returns its second operand when the first is NaN, like f32::min.
        let u = _mm256_min_ps(_mm256_andnot_ps(sign, x), u_max);
        let v = _mm256_mul_ps(u, scale);
        let i = _mm256_cvttps_epi32(v);
        let t = _mm256_sub_ps(v, _mm256_cvtepi32_ps(i));
        // SAFETY: every index is in 0..INTERVALS, within each table row.
        let pick = |k: usize| unsafe { _mm256_i32gather_ps::<4>(GELU_TABLE[k].as_ptr(), i) };
        let mut e = pick(DEGREE);
        for k in (0..DEGREE).rev() {
            e = _mm256_add_ps(pick(k), _mm256_mul_ps(t, e));
        }
        let e = _mm256_or_ps(_mm256_andnot_ps(sign, e), _mm256_and_ps(sign, x));
        let y = _mm256_mul_ps(_mm256_mul_ps(half, x), _mm256_add_ps(one, e));
        // SAFETY: as for the load.
        unsafe { _mm256_storeu_ps(chunk.as_mut_ptr(), y) };
    }
    Activation::Gelu.apply(chunks.into_remainder());
}

/// `0.5 x (1 + copysign(E(|x|), x))`.
#[inline(always)]
pub(crate) fn gelu(x: f32) -> f32 {
    (0.5 * x) * (1.0 + erf_scaled(x.abs()).copysign(x))
}

/// `E(u) = erf(u / sqrt 2)` for `u >= 0` (or NaN), from the table (see the module
/// comment).
#[inline(always)]
fn erf_scaled(u: f32) -> f32 {
    // min() returns U_MAX for NaN, so the index is always in range (GELU keeps the
    // NaN through x).
    let v = u.min(U_MAX) * SCALE; // in [0, INTERVALS)
    let i = v as i32;
    let t = v - i as f32;
    // The mask changes nothing (i < INTERVALS) but spares a bounds check.
    let i = i as usize & (INTERVALS - 1);
    let mut e = GELU_TABLE[DEGREE][i];
    for k in (0..DEGREE).rev() {
        e = GELU_TABLE[k][i] + t * e;
    }
    e
}

/// [`gelu`] over `values`, 16 lanes at a time (the last step masked).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
fn gelu_avx512(values: &mut [f32]) {
    use std::arch::x86_64::*;
    const { assert!(INTERVALS == 32) }; // two registers per coefficient
                                        // SAFETY (loads): each table row is 32 floats, two unaligned 16-float loads.
    let table: [(__m512, __m512); DEGREE + 1] = std::array::from_fn(|k| unsafe {
        let row = GELU_TABLE[k].as_ptr();
        (_mm512_loadu_ps(row), _mm512_loadu_ps(row.add(16)))
    });
    let (u_max, scale) = (_mm512_set1_ps(U_MAX), _mm512_set1_ps(SCALE));
    let (half, one) = (_mm512_set1_ps(0.5), _mm512_set1_ps(1.0));
    let sign = _mm512_set1_epi32(i32::MIN);
    for chunk in values.chunks_mut(16) {
        let mask: __mmask16 = (1u32 << chunk.len()).wrapping_sub(1) as __mmask16;
        // SAFETY: the mask covers the chunk's values only.
        let x = unsafe { _mm512_maskz_loadu_ps(mask, chunk.as_ptr()) };
        // vminps returns its second operand when the first is NaN, like f32::min.
        let u = _mm512_min_ps(_mm512_abs_ps(x), u_max);
        let v = _mm512_mul_ps(u, scale);
        let i = _mm512_cvttps_epi32(v);
        let t = _mm512_sub_ps(v, _mm512_cvtepi32_ps(i));
        let pick = |(lo, hi): (__m512, __m512)| _mm512_permutex2var_ps(lo, i, hi);
        let mut e = pick(table[DEGREE]);
        for k in (0..DEGREE).rev() {
            e = _mm512_add_ps(pick(table[k]), _mm512_mul_ps(t, e));
        }
        // copysign(e, x): e's magnitude bits, x's sign bit.
        let (e, x_bits) = (_mm512_castps_si512(e), _mm512_castps_si512(x));
        let bits = _mm512_or_si512(_mm512_andnot_si512(sign, e), _mm512_and_si512(sign, x_bits));
        let y = _mm512_mul_ps(
            _mm512_mul_ps(half, x),
            _mm512_add_ps(one, _mm512_castsi512_ps(bits)),
        );
        // SAFETY: as for the load.
        unsafe { _mm512_mask_storeu_ps(chunk.as_mut_ptr(), mask, y) };
    }
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
        assert_eq!(erf_scaled(0.0), GELU_TABLE[0][0]);
        let xs: Vec<f32> = (-20_000..=20_000).map(|i| i as f32 * 5e-4).collect(); // [-10, 10]
        let mut ys = xs.clone();
        gelu_in_place(&mut ys);
        let mut worst = 0f64;
        for (&x, &y) in xs.iter().zip(&ys) {
            let erf = erf_reference(x.abs() as f64 / 2f64.sqrt());
            worst = worst.max((erf_scaled(x.abs()) as f64 - erf).abs());
            let exact = 0.5 * x as f64 * (1.0 + erf_reference(x as f64 / 2f64.sqrt()));
            let tolerance = 4e-7 * (1.0 + x.abs() as f64);
            assert!(
                (y as f64 - exact).abs() <= tolerance,
                "gelu({x}) = {y}, not {exact}"
            );
        }
        // 8e-8 when the table was made: float32 rounding of the polynomial.
        assert!(worst <= 2e-7, "erf error {worst}");
    }

    #[test]
    fn tails_and_zero() {
        let mut ys = [
            0.0f32,
            -0.0,
            30.0,
            -30.0,
            1e30,
            -1e30,
            f32::INFINITY,
            f32::NAN,
        ];
        gelu_in_place(&mut ys);
        assert_eq!(ys[0], 0.0);
        assert_eq!(ys[1], 0.0);
        assert_eq!(ys[2], 30.0);
        assert_eq!(ys[3], 0.0);
        assert_eq!(ys[4], 1e30);
        assert_eq!(ys[5], 0.0);
        assert_eq!(ys[6], f32::INFINITY);
        assert!(ys[7].is_nan());
    }

    /// Every interval's ends, the clamp, specials, and lengths that leave a partial
    /// last vector.
    #[test]
    fn every_build_gives_the_same_floats() {
        let mut xs: Vec<f32> = (0..1000).map(|i| (i as f32 - 500.0) * 0.0137).collect();
        for i in 0..=INTERVALS as i32 {
            for edge in [i as f32 / SCALE, (i as f32 / SCALE).next_down()] {
                xs.extend([edge, -edge]);
            }
        }
        let specials = [
            U_MAX,
            U_MAX.next_up(),
            1e30,
            f32::INFINITY,
            f32::MIN_POSITIVE,
            1e-40,
        ];
        xs.extend(specials.iter().flat_map(|&v| [v, -v]));
        xs.extend([0.0, -0.0, f32::NAN]);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for len in [xs.len(), xs.len() - 1, 17, 15, 1] {
            let mut portable = xs[..len].to_vec();
            Activation::Gelu.apply(&mut portable);
            let mut fast = xs[..len].to_vec();
            gelu_in_place(&mut fast);
            assert_eq!(bits(&fast), bits(&portable), "{len} values");
            #[cfg(target_arch = "x86_64")]
            if std::is_x86_feature_detected!("avx2") {
                let mut avx2 = xs[..len].to_vec();
                // SAFETY: the CPU has the feature.
                unsafe { gelu_avx2(&mut avx2) };
                assert_eq!(bits(&avx2), bits(&portable), "{len} values");
            }
        }
    }
}
