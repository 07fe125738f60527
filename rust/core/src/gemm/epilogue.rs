//! The float epilogue: exact sums -> `sum as f32 * row_scale * column_scale + bias`,
//! then the activation, for a block of rows of one panel.
//!
//! Compiled twice, portable and for AVX-512 (16 lanes, with the activation's
//! AVX-512 form), and picked per block: the same operations in the same order and no
//! fused multiply-add, so both builds give the same floats.

use super::kernel::PANEL;
use crate::activation::Activation;

pub(crate) struct Epilogue<'a> {
    /// Output columns (the row length of `out`).
    pub n: usize,
    pub col_scales: &'a [f32],
    pub bias: Option<&'a [f32]>,
    pub activation: Option<Activation>,
}

impl Epilogue<'_> {
    /// Writes rows `first..first + sums.len()` of `out` (row-major, `n` columns),
    /// columns `col..col + PANEL` (cut at `n`), from the panel sums `sums`;
    /// `row_scales[r]` belongs to row r.
    pub fn rows(
        &self,
        first: usize,
        col: usize,
        sums: &[[i32; PANEL]],
        row_scales: &[f32],
        out: &mut [f32],
    ) {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has the feature.
            return unsafe { self.rows_avx512(first, col, sums, row_scales, out) };
        }
        self.rows_body::<false>(first, col, sums, row_scales, out);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn rows_avx512(
        &self,
        first: usize,
        col: usize,
        sums: &[[i32; PANEL]],
        row_scales: &[f32],
        out: &mut [f32],
    ) {
        self.rows_body::<true>(first, col, sums, row_scales, out);
    }

    /// `AVX512`: the caller is compiled for AVX-512, so the activation may use it.
    #[inline(always)]
    pub(super) fn rows_body<const AVX512: bool>(
        &self,
        first: usize,
        col: usize,
        sums: &[[i32; PANEL]],
        row_scales: &[f32],
        out: &mut [f32],
    ) {
        // Every panel but the last is whole: a width known at compile time makes each
        // row two straight vectors, without the loop and remainder of a slice of
        // unknown length (which cost as much again).
        let width = self.n - col;
        if width >= PANEL {
            self.rows_of::<AVX512>(first, col, PANEL, sums, row_scales, out);
        } else {
            self.rows_of::<AVX512>(first, col, width, sums, row_scales, out);
        }
    }

    #[inline(always)]
    fn rows_of<const AVX512: bool>(
        &self,
        first: usize,
        col: usize,
        width: usize,
        sums: &[[i32; PANEL]],
        row_scales: &[f32],
        out: &mut [f32],
    ) {
        let n = self.n;
        let col_scales = &self.col_scales[col..col + width];
        let bias = self.bias.map(|b| &b[col..col + width]);
        for (r, ints) in (first..).zip(sums) {
            let scale = row_scales[r];
            let dst = &mut out[r * n + col..r * n + col + width];
            let scaled = dst.iter_mut().zip(&ints[..width]).zip(col_scales);
            match bias {
                Some(bias) => {
                    for (((y, &v), &s), &b) in scaled.zip(bias) {
                        *y = v as f32 * scale * s + b;
                    }
                }
                None => {
                    for ((y, &v), &s) in scaled {
                        *y = v as f32 * scale * s;
                    }
                }
            }
            match self.activation {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: AVX512 is only set by `rows_avx512`, which runs after the
                // CPU was found to have the feature.
                Some(activation) if AVX512 => unsafe { activation.apply_avx512(dst) },
                Some(activation) => activation.apply(dst),
                None => {}
            }
        }
    }
}
