//! Distance kernels. Cosine and inner product are `1 - dot` (cosine on stored unit
//! vectors), L2 is the squared Euclidean distance: the same values hnswlib returns.
//!
//! The hot loop runs through a function pointer chosen once per index: an AVX-512
//! or AVX2/FMA kernel when the CPU has it (runtime detection), otherwise portable
//! code.

use crate::error::{Error, Result};

/// The distance an index ranks by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    Cosine,
    InnerProduct,
    L2,
}

impl Metric {
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "cosine" => Ok(Metric::Cosine),
            "ip" => Ok(Metric::InnerProduct),
            "l2" => Ok(Metric::L2),
            other => Err(Error::invalid(
                "metric",
                format!("expected one of \"cosine\", \"ip\", \"l2\", got {other:?}"),
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Metric::Cosine => "cosine",
            Metric::InnerProduct => "ip",
            Metric::L2 => "l2",
        }
    }

    pub(crate) fn code(self) -> u8 {
        match self {
            Metric::Cosine => 0,
            Metric::InnerProduct => 1,
            Metric::L2 => 2,
        }
    }

    pub(crate) fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(Metric::Cosine),
            1 => Some(Metric::InnerProduct),
            2 => Some(Metric::L2),
            _ => None,
        }
    }

    /// The kernel for this metric on this CPU.
    pub(crate) fn kernel(self) -> DistanceFn {
        match self {
            Metric::Cosine | Metric::InnerProduct => one_minus_dot_kernel(),
            Metric::L2 => l2_squared_kernel(),
        }
    }
}

pub(crate) type DistanceFn = fn(&[f32], &[f32]) -> f32;

/// Scales `v` to unit length; `false` when its norm is zero (nothing to normalise).
pub(crate) fn normalize(v: &mut [f32]) -> bool {
    let norm = portable::dot(v, v).sqrt();
    if norm == 0.0 {
        return false;
    }
    let inv = 1.0 / norm;
    v.iter_mut().for_each(|x| *x *= inv);
    true
}

fn one_minus_dot_kernel() -> DistanceFn {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            return |a, b| 1.0 - avx512::dot(a, b);
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return |a, b| 1.0 - avx2::dot(a, b);
        }
    }
    |a, b| 1.0 - portable::dot(a, b)
}

fn l2_squared_kernel() -> DistanceFn {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            return avx512::l2_squared;
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return avx2::l2_squared;
        }
    }
    portable::l2_squared
}

/// Eight independent lanes so the compiler can vectorise without reassociating floats.
pub(crate) mod portable {
    const LANES: usize = 8;

    pub fn dot(a: &[f32], b: &[f32]) -> f32 {
        let mut acc = [0.0f32; LANES];
        let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
        let tail: f32 = ca
            .remainder()
            .iter()
            .zip(cb.remainder())
            .map(|(x, y)| x * y)
            .sum();
        for (x, y) in ca.zip(cb) {
            for i in 0..LANES {
                acc[i] += x[i] * y[i];
            }
        }
        acc.iter().sum::<f32>() + tail
    }

    pub fn l2_squared(a: &[f32], b: &[f32]) -> f32 {
        let mut acc = [0.0f32; LANES];
        let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
        let tail: f32 = ca
            .remainder()
            .iter()
            .zip(cb.remainder())
            .map(|(x, y)| (x - y) * (x - y))
            .sum();
        for (x, y) in ca.zip(cb) {
            for i in 0..LANES {
                let d = x[i] - y[i];
                acc[i] += d * d;
            }
        }
        acc.iter().sum::<f32>() + tail
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// Horizontal sum of the eight lanes.
    #[target_feature(enable = "avx2,fma")]
    fn hsum(v: __m256) -> f32 {
        let hi = _mm256_extractf128_ps(v, 1);
        let s = _mm_add_ps(_mm256_castps256_ps128(v), hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    pub fn dot(a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: only installed as the kernel after runtime detection of AVX2 and FMA.
        unsafe { dot_avx2(a, b) }
    }

    pub fn l2_squared(a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: only installed as the kernel after runtime detection of AVX2 and FMA.
        unsafe { l2_avx2(a, b) }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        // SAFETY (all loads): indices stay below n, the length of both slices.
        while i + 32 <= n {
            for (j, lane) in acc.iter_mut().enumerate() {
                let x = _mm256_loadu_ps(pa.add(i + 8 * j));
                let y = _mm256_loadu_ps(pb.add(i + 8 * j));
                *lane = _mm256_fmadd_ps(x, y, *lane);
            }
            i += 32;
        }
        while i + 8 <= n {
            acc[0] = _mm256_fmadd_ps(
                _mm256_loadu_ps(pa.add(i)),
                _mm256_loadu_ps(pb.add(i)),
                acc[0],
            );
            i += 8;
        }
        let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        let mut total = hsum(sum);
        while i < n {
            total += *pa.add(i) * *pb.add(i);
            i += 1;
        }
        total
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn l2_avx2(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        // SAFETY (all loads): indices stay below n, the length of both slices.
        while i + 32 <= n {
            for (j, lane) in acc.iter_mut().enumerate() {
                let d = _mm256_sub_ps(
                    _mm256_loadu_ps(pa.add(i + 8 * j)),
                    _mm256_loadu_ps(pb.add(i + 8 * j)),
                );
                *lane = _mm256_fmadd_ps(d, d, *lane);
            }
            i += 32;
        }
        while i + 8 <= n {
            let d = _mm256_sub_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)));
            acc[0] = _mm256_fmadd_ps(d, d, acc[0]);
            i += 8;
        }
        let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        let mut total = hsum(sum);
        while i < n {
            let d = *pa.add(i) - *pb.add(i);
            total += d * d;
            i += 1;
        }
        total
    }
}

/// Sixteen lanes per register, four registers in flight; the tail is a masked load,
/// so any length runs without a scalar loop.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    pub fn dot(a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: only installed as the kernel after runtime detection of AVX-512F.
        unsafe { dot_avx512(a, b) }
    }

    pub fn l2_squared(a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: only installed as the kernel after runtime detection of AVX-512F.
        unsafe { l2_avx512(a, b) }
    }

    /// Mask of the lanes below `n - i` (all sixteen when at least that many remain).
    #[inline]
    fn tail_mask(n: usize, i: usize) -> __mmask16 {
        if n - i >= 16 {
            !0
        } else {
            (1u16 << (n - i)) - 1
        }
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn dot_avx512(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc = [_mm512_setzero_ps(); 4];
        let mut i = 0;
        // SAFETY (all loads): indices stay below n, the length of both slices; the
        // masked load reads only the lanes below n.
        while i + 64 <= n {
            for (j, lane) in acc.iter_mut().enumerate() {
                let x = _mm512_loadu_ps(pa.add(i + 16 * j));
                let y = _mm512_loadu_ps(pb.add(i + 16 * j));
                *lane = _mm512_fmadd_ps(x, y, *lane);
            }
            i += 64;
        }
        while i < n {
            let mask = tail_mask(n, i);
            let x = _mm512_maskz_loadu_ps(mask, pa.add(i));
            let y = _mm512_maskz_loadu_ps(mask, pb.add(i));
            acc[0] = _mm512_fmadd_ps(x, y, acc[0]);
            i += 16;
        }
        let sum = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
        _mm512_reduce_add_ps(sum)
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn l2_avx512(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc = [_mm512_setzero_ps(); 4];
        let mut i = 0;
        // SAFETY (all loads): as in `dot_avx512`.
        while i + 64 <= n {
            for (j, lane) in acc.iter_mut().enumerate() {
                let d = _mm512_sub_ps(
                    _mm512_loadu_ps(pa.add(i + 16 * j)),
                    _mm512_loadu_ps(pb.add(i + 16 * j)),
                );
                *lane = _mm512_fmadd_ps(d, d, *lane);
            }
            i += 64;
        }
        while i < n {
            let mask = tail_mask(n, i);
            let d = _mm512_sub_ps(
                _mm512_maskz_loadu_ps(mask, pa.add(i)),
                _mm512_maskz_loadu_ps(mask, pb.add(i)),
            );
            acc[0] = _mm512_fmadd_ps(d, d, acc[0]);
            i += 16;
        }
        let sum = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
        _mm512_reduce_add_ps(sum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive_dot(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn kernels_agree_with_naive_sums_for_all_lengths() {
        for n in [0usize, 1, 7, 8, 9, 31, 32, 33, 100, 384] {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            let dot = naive_dot(&a, &b);
            let l2: f32 = a.iter().zip(&b).map(|(x, y)| (x - y) * (x - y)).sum();
            let tol = 1e-4 * (1.0 + n as f32);
            assert!((Metric::InnerProduct.kernel()(&a, &b) - (1.0 - dot)).abs() < tol);
            assert!((Metric::L2.kernel()(&a, &b) - l2).abs() < tol);
            assert!((portable::dot(&a, &b) - dot).abs() < tol);
            assert!((portable::l2_squared(&a, &b) - l2).abs() < tol);
            // The AVX2 kernel is what CPUs without AVX-512 run.
            #[cfg(target_arch = "x86_64")]
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                assert!((avx2::dot(&a, &b) - dot).abs() < tol);
                assert!((avx2::l2_squared(&a, &b) - l2).abs() < tol);
            }
        }
    }

    #[test]
    fn metric_names_round_trip_and_unknown_is_rejected() {
        for m in [Metric::Cosine, Metric::InnerProduct, Metric::L2] {
            assert_eq!(Metric::parse(m.name()).unwrap(), m);
            assert_eq!(Metric::from_code(m.code()), Some(m));
        }
        assert!(Metric::parse("hamming").is_err());
    }

    #[test]
    fn normalize_rejects_zero_vectors() {
        let mut v = vec![3.0, 4.0];
        assert!(normalize(&mut v));
        assert!((v[0] - 0.6).abs() < 1e-6);
        assert!(!normalize(&mut [0.0, 0.0]));
    }
}
