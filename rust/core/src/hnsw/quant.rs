//! Scalar quantisation for graph traversal: each vector is also kept as int8 codes
//! with one scale per vector. Walking the graph reads a quarter of the bytes of the
//! f32 vectors, and memory traffic, not arithmetic, bounds HNSW search; the final
//! candidates are re-ranked with the exact f32 distance.

use super::distance::{portable, Metric};

/// A vector's codes with what turns their integer dot product back into a distance.
#[derive(Clone, Copy)]
pub(crate) struct Coded<'a> {
    pub code: &'a [i8],
    pub scale: f32,
    /// Squared norm of the f32 vector (for L2 through the dot product).
    pub norm2: f32,
    /// Sum of the codes (lets a VNNI product skip the bias correction pass).
    pub sum: i32,
    /// For a query: the codes with the sign bit flipped (`code + 128` as bytes), the
    /// unsigned operand of `vpdpbusd`; empty for stored vectors.
    pub flipped: &'a [i8],
}

/// Appends the codes of `v` to `out`; returns (scale, squared norm).
pub(crate) fn encode(v: &[f32], out: &mut Vec<i8>) -> (f32, f32) {
    let max = max_abs(v);
    let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
    let inv = 1.0 / scale;
    // Round half away from zero with a truncating cast: unlike `f32::round` (a libm
    // call per element) this vectorises. |x * inv| <= 127 up to rounding, and `as`
    // saturates, so codes stay within -127..=127.
    let start = out.len();
    out.resize(start + v.len(), 0);
    for (code, x) in out[start..].iter_mut().zip(v) {
        let y = x * inv;
        *code = (y + 0.5f32.copysign(y)) as i8;
    }
    (scale, portable::dot(v, v))
}

/// Largest |x|, in eight independent lanes so that it vectorises.
fn max_abs(v: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let chunks = v.chunks_exact(8);
    let tail = chunks
        .remainder()
        .iter()
        .fold(0.0f32, |m, x| m.max(x.abs()));
    for c in chunks {
        for (lane, x) in lanes.iter_mut().zip(c) {
            *lane = lane.max(x.abs());
        }
    }
    lanes.iter().fold(tail, |m, &x| m.max(x))
}

pub(crate) type CodeDotFn = fn(Coded<'_>, Coded<'_>) -> i32;

/// The integer dot-product kernel for this CPU.
pub(crate) fn code_dot_kernel() -> CodeDotFn {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512bw") {
            return vnni::dot;
        }
        if is_x86_feature_detected!("avx2") {
            return |a, b| avx2::dot(a.code, b.code);
        }
    }
    |a, b| portable_dot(a.code, b.code)
}

/// Sum of the codes.
pub(crate) fn code_sum(code: &[i8]) -> i32 {
    code.iter().map(|&c| c as i32).sum()
}

/// The codes with the sign bit flipped: `c + 128` read as an unsigned byte.
pub(crate) fn flip(code: &[i8]) -> Vec<i8> {
    code.iter().map(|&c| c ^ i8::MIN).collect()
}

/// The approximate distance between two coded vectors.
#[inline]
pub(crate) fn approx_distance(metric: Metric, dot: CodeDotFn, a: Coded<'_>, b: Coded<'_>) -> f32 {
    let d = dot(a, b) as f32 * a.scale * b.scale;
    match metric {
        Metric::Cosine | Metric::InnerProduct => 1.0 - d,
        Metric::L2 => (a.norm2 + b.norm2 - 2.0 * d).max(0.0),
    }
}

/// How far [`approx_distance`] of `a` and `b` lies from their exact distance, in
/// practice. Rounding each component to a code moves a dot product by a sum of
/// `dim` small, independent errors: their spread is about `(|a| s_b + |b| s_a) / 3.5`
/// whatever the dimension (`s` the scales), and on text embeddings, Gaussian and
/// clustered vectors (1.2 million pairs) the error never exceeded 1.04 times that
/// sum. This takes 1.5 times the sum. It is not a worst case (errors that all
/// line up with the other vector could exceed it): callers use it to decide which
/// comparisons codes settle, where a rare wrong call changes a choice of links,
/// not a result.
#[inline]
pub(crate) fn error_bound(metric: Metric, a: Coded<'_>, b: Coded<'_>) -> f32 {
    let dot = 1.5 * (a.norm2.sqrt() * b.scale + b.norm2.sqrt() * a.scale);
    match metric {
        Metric::Cosine | Metric::InnerProduct => dot,
        Metric::L2 => 2.0 * dot,
    }
}

fn portable_dot(a: &[i8], b: &[i8]) -> i32 {
    a.iter().zip(b).map(|(&x, &y)| x as i32 * y as i32).sum()
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    pub fn dot(a: &[i8], b: &[i8]) -> i32 {
        // SAFETY: only installed as the kernel after runtime detection of AVX2.
        unsafe { dot_avx2(a, b) }
    }

    /// Sign-extends 16 codes at a time to i16 and multiply-adds pairs into i32 lanes.
    /// |code| <= 127, so a lane gains at most 2 * 127^2 per step: no overflow below
    /// 2^31 / 32258 * 16 (over a million) dimensions.
    #[target_feature(enable = "avx2")]
    unsafe fn dot_avx2(a: &[i8], b: &[i8]) -> i32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc0 = _mm256_setzero_si256();
        let mut acc1 = _mm256_setzero_si256();
        let mut i = 0;
        // SAFETY (all loads): indices stay below n, the length of both slices.
        while i + 32 <= n {
            let x0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(pa.add(i) as *const __m128i));
            let y0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(pb.add(i) as *const __m128i));
            let x1 = _mm256_cvtepi8_epi16(_mm_loadu_si128(pa.add(i + 16) as *const __m128i));
            let y1 = _mm256_cvtepi8_epi16(_mm_loadu_si128(pb.add(i + 16) as *const __m128i));
            acc0 = _mm256_add_epi32(acc0, _mm256_madd_epi16(x0, y0));
            acc1 = _mm256_add_epi32(acc1, _mm256_madd_epi16(x1, y1));
            i += 32;
        }
        let acc = _mm256_add_epi32(acc0, acc1);
        let s = _mm_add_epi32(
            _mm256_castsi256_si128(acc),
            _mm256_extracti128_si256(acc, 1),
        );
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
        let mut total = _mm_cvtsi128_si32(s);
        while i < n {
            total += *pa.add(i) as i32 * *pb.add(i) as i32;
            i += 1;
        }
        total
    }
}

/// AVX-512 VNNI: `vpdpbusd` multiplies 64 unsigned by 64 signed bytes per step. The
/// codes are signed, so `a` is shifted to unsigned (`a + 128`, a sign-bit flip) and
/// the excess `128 * sum(b)` is subtracted, with `sum(b)` from a second `vpdpbusd`.
#[cfg(target_arch = "x86_64")]
mod vnni {
    use super::Coded;
    use std::arch::x86_64::*;

    /// A query brings its flipped codes, so its product with a stored vector is one
    /// `vpdpbusd` per 64 bytes minus `128 * b.sum`; two stored vectors take the
    /// general path.
    pub fn dot(a: Coded<'_>, b: Coded<'_>) -> i32 {
        // SAFETY: only installed as the kernel after runtime detection of AVX-512 VNNI/BW.
        unsafe {
            if a.flipped.len() == b.code.len() {
                dot_flipped(a.flipped, b.code) - 128 * b.sum
            } else {
                dot_vnni(a.code, b.code)
            }
        }
    }

    /// Sum of unsigned `a` (flipped codes) times signed `b`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn dot_flipped(a: &[i8], b: &[i8]) -> i32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc = _mm512_setzero_si512();
        let mut i = 0;
        while i < n {
            // SAFETY: the mask covers only the bytes below n, the length of both slices.
            let mask: __mmask64 = if n - i >= 64 {
                !0
            } else {
                (1u64 << (n - i)) - 1
            };
            let x = _mm512_maskz_loadu_epi8(mask, pa.add(i));
            let y = _mm512_maskz_loadu_epi8(mask, pb.add(i));
            acc = _mm512_dpbusd_epi32(acc, x, y);
            i += 64;
        }
        _mm512_reduce_add_epi32(acc)
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn dot_vnni(a: &[i8], b: &[i8]) -> i32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let flip = _mm512_set1_epi8(i8::MIN);
        let ones = _mm512_set1_epi8(1);
        let mut prod = _mm512_setzero_si512();
        let mut sum_b = _mm512_setzero_si512();
        let mut i = 0;
        while i < n {
            // SAFETY: the mask covers only the bytes below n, the length of both slices.
            let mask: __mmask64 = if n - i >= 64 {
                !0
            } else {
                (1u64 << (n - i)) - 1
            };
            let x = _mm512_maskz_loadu_epi8(mask, pa.add(i));
            let y = _mm512_maskz_loadu_epi8(mask, pb.add(i));
            // Masked-off bytes load as zero: flipping them gives 128, times y = 0.
            prod = _mm512_dpbusd_epi32(prod, _mm512_xor_si512(x, flip), y);
            sum_b = _mm512_dpbusd_epi32(sum_b, ones, y);
            i += 64;
        }
        // One horizontal sum of prod - 128 * sum_b (no lane overflows: |lane| < 2^31).
        _mm512_reduce_add_epi32(_mm512_sub_epi32(prod, _mm512_slli_epi32::<7>(sum_b)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_matches_the_portable_sum_for_all_lengths() {
        for n in [0usize, 1, 15, 16, 31, 32, 33, 63, 64, 65, 100, 384] {
            let a: Vec<i8> = (0..n).map(|i| ((i * 37) % 255) as i8).collect();
            let b: Vec<i8> = (0..n).map(|i| ((i * 11 + 5) % 255) as i8).collect();
            let stored = |code| Coded {
                code,
                scale: 1.0,
                norm2: 0.0,
                sum: code_sum(code),
                flipped: &[],
            };
            let flipped = flip(&a);
            let query = Coded {
                flipped: &flipped,
                ..stored(&a)
            };
            let want = portable_dot(&a, &b);
            assert_eq!(code_dot_kernel()(stored(&a), stored(&b)), want, "n={n}");
            assert_eq!(code_dot_kernel()(query, stored(&b)), want, "query, n={n}");
            #[cfg(target_arch = "x86_64")]
            if is_x86_feature_detected!("avx2") {
                assert_eq!(avx2::dot(&a, &b), portable_dot(&a, &b), "n={n}");
            }
        }
    }

    #[test]
    fn code_distances_stay_within_their_error_bound() {
        use rand::{rngs::StdRng, Rng, SeedableRng};
        let mut rng = StdRng::seed_from_u64(11);
        for dim in [2usize, 7, 16, 100, 384] {
            for metric in [Metric::Cosine, Metric::InnerProduct, Metric::L2] {
                for _ in 0..2_000 {
                    let mut row = || -> Vec<f32> {
                        let mut v: Vec<f32> =
                            (0..dim).map(|_| rng.random_range(-1.0..1.0)).collect();
                        if metric == Metric::Cosine {
                            crate::hnsw::distance::normalize(&mut v);
                        }
                        v
                    };
                    let (a, b) = (row(), row());
                    let (mut ca, mut cb) = (Vec::new(), Vec::new());
                    let (sa, na) = encode(&a, &mut ca);
                    let (sb, nb) = encode(&b, &mut cb);
                    let coded = |code, scale, norm2| Coded {
                        code,
                        scale,
                        norm2,
                        sum: code_sum(code),
                        flipped: &[],
                    };
                    let (x, y) = (coded(&ca, sa, na), coded(&cb, sb, nb));
                    let approx = approx_distance(metric, code_dot_kernel(), x, y);
                    let exact = metric.kernel()(&a, &b);
                    let bound = error_bound(metric, x, y);
                    assert!(
                        (approx - exact).abs() <= bound,
                        "{metric:?} dim={dim}: {approx} vs {exact}, bound {bound}"
                    );
                }
            }
        }
    }

    #[test]
    fn quantised_distances_are_close_to_exact_ones() {
        let a: Vec<f32> = (0..384).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..384).map(|i| (i as f32 * 0.11).cos()).collect();
        let (mut ca, mut cb) = (Vec::new(), Vec::new());
        let (sa, na) = encode(&a, &mut ca);
        let (sb, nb) = encode(&b, &mut cb);
        let coded = |code, scale, norm2| Coded {
            code,
            scale,
            norm2,
            sum: code_sum(code),
            flipped: &[],
        };
        let approx = approx_distance(
            Metric::L2,
            code_dot_kernel(),
            coded(&ca, sa, na),
            coded(&cb, sb, nb),
        );
        let exact: f32 = a.iter().zip(&b).map(|(x, y)| (x - y) * (x - y)).sum();
        assert!((approx - exact).abs() < 0.01 * exact, "{approx} vs {exact}");
    }
}
