//! Weights quantised per output column and packed for the kernels.
//!
//! Layout: output columns in panels of [`PANEL`]; within a panel, the reduction
//! dimension in groups of 4; within a group, for each of the panel's columns its 4
//! consecutive codes. One group is one 128-byte row of a panel, which the kernels
//! load as 2 zmm or 4 ymm vectors and multiply with 4 broadcast activation bytes.
//! The same bytes are AMX's B tiles: 16 groups (64 values of k) of one half panel
//! (16 columns, 64 bytes) at a stride of 128 bytes.
//! `k` is padded to a multiple of [`K_ALIGN`] and `n` to a multiple of `PANEL` with
//! zero codes; panels start on 64-byte boundaries.

use super::aligned::AlignedBytes;
use super::kernel::PANEL;
use super::quantize::quantize_slice;
use crate::error::Result;

/// The reduction length is padded to whole AMX tile rows (64 bytes); the padding
/// codes are zero, so every kernel may run over them and the sums stay exact.
pub(crate) const K_ALIGN: usize = 64;

pub(crate) struct PackedWeights {
    pub k: usize,
    pub n: usize,
    /// `k` rounded up to a multiple of [`K_ALIGN`]: the row length of activation codes.
    pub kp: usize,
    pub codes: AlignedBytes,
    pub scales: Vec<f32>,
    /// `128 * sum_k codes[k][c]` per (padded) column: the VNNI kernel's shift correction.
    pub shift_sums: Vec<i32>,
}

impl PackedWeights {
    /// Packs `weight`, row-major `n x k` (one row per output, like torch's Linear).
    pub fn pack(weight: &[f32], n: usize, k: usize) -> Result<Self> {
        let kp = k.div_ceil(K_ALIGN) * K_ALIGN;
        let panels = n.div_ceil(PANEL);
        let mut codes = AlignedBytes::zeroed(panels * PANEL * kp);
        let mut shift_sums = vec![0i32; panels * PANEL];
        let mut scales = Vec::with_capacity(n);
        let mut column = vec![0i8; k];
        for (c, w) in weight.chunks_exact(k).enumerate() {
            scales.push(quantize_slice("weight", w, &mut column)?);
            shift_sums[c] = 128 * column.iter().map(|&q| q as i32).sum::<i32>();
            let (panel, lane) = (c / PANEL, c % PANEL);
            let base = panel * PANEL * kp;
            for (g, quad) in column.chunks(4).enumerate() {
                let at = base + (g * PANEL + lane) * 4;
                codes[at..at + quad.len()].copy_from_slice(quad);
            }
        }
        Ok(PackedWeights {
            k,
            n,
            kp,
            codes,
            scales,
            shift_sums,
        })
    }

    pub fn panels(&self) -> usize {
        self.n.div_ceil(PANEL)
    }

    pub fn panel(&self, p: usize) -> &[i8] {
        let size = PANEL * self.kp;
        &self.codes[p * size..(p + 1) * size]
    }

    /// The codes as a row-major `n x k` matrix (unpacked), for inspection and tests.
    pub fn unpack(&self) -> Vec<i8> {
        let mut out = vec![0i8; self.n * self.k];
        for (c, row) in out.chunks_exact_mut(self.k.max(1)).enumerate().take(self.n) {
            let panel = self.panel(c / PANEL);
            for (i, q) in row.iter_mut().enumerate() {
                *q = panel[((i / 4) * PANEL + c % PANEL) * 4 + i % 4];
            }
        }
        out
    }
}
