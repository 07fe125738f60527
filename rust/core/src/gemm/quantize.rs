//! Symmetric int8 quantisation: `q = round_ties_even(x * 127 / max|x|)`, clamped to
//! [-127, 127] (never -128, so the AVX2 sign trick cannot overflow), scale `max|x| / 127`.
//!
//! The arithmetic is spelled out in f32 so that NumPy can reproduce it bit for bit
//! (`np.rint(x * (np.float32(127) / amax))`).

use super::aligned::AlignedBytes;
use crate::error::{Error, Result};

/// `x.round_ties_even() as i32` for |x| < 2^22, in plain arithmetic that vectorises:
/// adding 1.5 * 2^23 pushes the fraction bits out (the FPU rounds them half to even),
/// and the sum's low mantissa bits are then the integer, offset by the constant's.
#[inline(always)]
fn round_ties_even(x: f32) -> i32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23
    (x + MAGIC).to_bits() as i32 - MAGIC.to_bits() as i32
}

/// Quantises `values`, writing `out[i]` for each `values[i]`; returns the scale
/// (0 for an all-zero slice). `field` names the input in the error for a non-finite value.
pub(crate) fn quantize_slice(field: &str, values: &[f32], out: &mut [i8]) -> Result<f32> {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw") {
        // SAFETY: the CPU has the features.
        return unsafe { quantize_slice_avx512(field, values, out) };
    }
    quantize_slice_body(field, values, out)
}

/// The same code compiled for AVX-512: 16 values per instruction, same results
/// (the arithmetic is exact or IEEE-rounded the same way at any width).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn quantize_slice_avx512(field: &str, values: &[f32], out: &mut [i8]) -> Result<f32> {
    quantize_slice_body(field, values, out)
}

#[inline(always)]
pub(super) fn quantize_slice_body(field: &str, values: &[f32], out: &mut [i8]) -> Result<f32> {
    // The magnitudes' bit patterns order like the magnitudes, and every non-finite
    // value (inf, NaN) lies above f32::MAX: one integer max, which vectorises, gives
    // both the largest magnitude and whether all values are finite.
    let top = values
        .iter()
        .fold(0u32, |top, v| top.max(v.to_bits() & 0x7fff_ffff));
    if top > f32::MAX.to_bits() {
        let v = values.iter().find(|v| !v.is_finite()).copied();
        let v = v.unwrap_or(f32::NAN);
        return Err(Error::invalid(field, format!("non-finite value {v}")));
    }
    let amax = f32::from_bits(top);
    let out = &mut out[..values.len()];
    if amax == 0.0 {
        out.fill(0);
        return Ok(0.0);
    }
    let inv = 127.0f32 / amax;
    // |v * inv| <= 127 up to rounding, well inside round_ties_even's range.
    for (q, &v) in out.iter_mut().zip(values) {
        *q = round_ties_even(v * inv).clamp(-127, 127) as i8;
    }
    Ok(amax / 127.0)
}

/// Quantises each row of the row-major `m x k` matrix `a` on its own into rows of
/// `stride >= k` bytes (the tail of each row is zero); returns the codes and row scales.
/// `unsigned`: each code `q` is stored as the byte `q + 128` (its sign bit flipped),
/// the form the VNNI kernel multiplies; the zero tail stays zero either way (the
/// weights' padding codes are zero, so it adds nothing).
pub(crate) fn quantize_rows(
    a: &[f32],
    m: usize,
    k: usize,
    stride: usize,
    unsigned: bool,
) -> Result<(AlignedBytes, Vec<f32>)> {
    let mut codes = AlignedBytes::zeroed(m * stride);
    let mut scales = Vec::with_capacity(m);
    for (row, out) in a.chunks_exact(k).zip(codes.chunks_exact_mut(stride)) {
        scales.push(quantize_slice("x", row, out)?);
        if unsigned {
            out[..k].iter_mut().for_each(|q| *q ^= i8::MIN);
        }
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
    let (codes, scales) = quantize_rows(a, m, k, k, false)?;
    Ok((codes.to_vec(), scales))
}
