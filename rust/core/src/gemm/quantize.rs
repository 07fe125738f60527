//! Symmetric int8 quantisation: `q = round_ties_even(x * 127 / max|x|)`, clamped to
//! [-127, 127] (never -128, so the AVX2 sign trick cannot overflow), scale `max|x| / 127`.
//!
//! The arithmetic is spelled out in f32 so that NumPy can reproduce it bit for bit
//! (`np.rint(x * (np.float32(127) / amax))`).

use crate::error::{Error, Result};

/// `x.round_ties_even()` for |x| < 2^22 without a libm call per element (the crate
/// targets baseline x86-64, where `roundps` is not available): adding 1.5 * 2^23
/// pushes the fraction bits out, and the FPU rounds them half to even.
#[inline(always)]
fn round_ties_even(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23
    (x + MAGIC) - MAGIC
}

/// Quantises `values`, writing `out[i]` for each `values[i]`; returns the scale
/// (0 for an all-zero slice). `field` names the input in the error for a non-finite value.
pub(crate) fn quantize_slice(field: &str, values: &[f32], out: &mut [i8]) -> Result<f32> {
    let mut amax = 0.0f32;
    for &v in values {
        if !v.is_finite() {
            return Err(Error::invalid(field, format!("non-finite value {v}")));
        }
        amax = amax.max(v.abs());
    }
    if amax == 0.0 {
        out[..values.len()].fill(0);
        return Ok(0.0);
    }
    let inv = 127.0f32 / amax;
    for (q, &v) in out.iter_mut().zip(values) {
        *q = round_ties_even(v * inv).clamp(-127.0, 127.0) as i8;
    }
    Ok(amax / 127.0)
}

/// Quantises each row of the row-major `m x k` matrix `a` on its own into rows of
/// `stride >= k` bytes (the tail of each row is zero); returns the codes and row scales.
pub(crate) fn quantize_rows(
    a: &[f32],
    m: usize,
    k: usize,
    stride: usize,
) -> Result<(Vec<i8>, Vec<f32>)> {
    let mut codes = vec![0i8; m * stride];
    let mut scales = Vec::with_capacity(m);
    for (row, out) in a.chunks_exact(k).zip(codes.chunks_exact_mut(stride)) {
        scales.push(quantize_slice("x", row, out)?);
    }
    Ok((codes, scales))
}

/// Public form of the row quantisation: the codes of a row-major `m x k` matrix
/// (`m * k` bytes) and one scale per row.
pub fn quantize_rows_of(a: &[f32], m: usize, k: usize) -> Result<(Vec<i8>, Vec<f32>)> {
    if a.len() != m.saturating_mul(k) {
        return Err(Error::invalid(
            "x",
            format!("expected {m} x {k} values, got {}", a.len()),
        ));
    }
    if k == 0 {
        return Ok((Vec::new(), vec![0.0; m]));
    }
    quantize_rows(a, m, k, k)
}
