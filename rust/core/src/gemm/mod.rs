//! Int8 matrix products for inference: `y = x @ W^T + b` with `x` (m x k, f32)
//! quantised per row at call time and `W` (n x k, f32, torch's Linear layout)
//! quantised per output column and packed once.
//!
//! Per-row activation scales make each output row a function of its input row
//! alone: a sentence's embedding does not depend on what else shares its batch.
//! The integer products are exact, so every kernel (AMX-INT8, AVX-512 VNNI, AVX2,
//! scalar, picked at run time) returns bit-identical results.

mod aligned;
mod epilogue;
mod kernel;
mod packed;
mod quantize;
#[cfg(test)]
mod tests;

use rayon::prelude::*;

pub use crate::activation::Activation;
use crate::error::{Error, Result};
use epilogue::Epilogue;
pub use kernel::Kernel;
use kernel::{MR, PANEL};
use packed::PackedWeights;
pub use quantize::quantize_rows_of;

/// Largest reduction length: keeps `255 * 127 * k` (the VNNI kernel's shifted sums)
/// within i32.
pub const MAX_IN_FEATURES: usize = 65_536;
/// Products with at least this many multiply-adds are split across rayon threads;
/// smaller ones (a single short query) stay on the calling thread.
const PARALLEL_MACS: usize = 1 << 27;
/// Activation rows per cache block: their codes (up to 256 x 1536 bytes) stay in L2
/// while every weight panel passes over them.
const ROW_BLOCK: usize = 256;
/// The same for the AMX kernel (a multiple of its 32-row block). Smaller: each group
/// of rows is finished (all panels, outputs written) while its 64 x k codes and its
/// outputs are still in L1/L2; at 2048 rows x 1536 outputs this halved the time
/// against 256-row groups, and 32 rows measured the same as 64.
const AMX_ROW_BLOCK: usize = 64;

/// A linear layer with int8 weights.
pub struct Int8Linear {
    weights: PackedWeights,
    bias: Option<Vec<f32>>,
    activation: Option<Activation>,
    kernel: Kernel,
}

impl Int8Linear {
    /// Quantises and packs `weight` (row-major `out_features x in_features`) and an
    /// optional `bias` of `out_features` values. Uses the fastest kernel the CPU has.
    pub fn new(
        weight: &[f32],
        out_features: usize,
        in_features: usize,
        bias: Option<&[f32]>,
    ) -> Result<Self> {
        if out_features == 0 || in_features == 0 {
            return Err(Error::invalid("weight", "expected a non-empty matrix"));
        }
        if in_features > MAX_IN_FEATURES {
            let msg = format!("at most {MAX_IN_FEATURES} input features, got {in_features}");
            return Err(Error::invalid("weight", msg));
        }
        if Some(weight.len()) != out_features.checked_mul(in_features) {
            let msg = format!(
                "expected {out_features} x {in_features} values, got {}",
                weight.len()
            );
            return Err(Error::invalid("weight", msg));
        }
        if let Some(b) = bias {
            if b.len() != out_features {
                let msg = format!("expected {out_features} values, got {}", b.len());
                return Err(Error::invalid("bias", msg));
            }
            if let Some(v) = b.iter().find(|v| !v.is_finite()) {
                return Err(Error::invalid("bias", format!("non-finite value {v}")));
            }
        }
        Ok(Int8Linear {
            weights: PackedWeights::pack(weight, out_features, in_features)?,
            bias: bias.map(<[f32]>::to_vec),
            activation: None,
            kernel: Kernel::detect(),
        })
    }

    /// Runs on `kernel` instead of the detected one (tests and benchmarks compare them).
    pub fn with_kernel(mut self, kernel: Kernel) -> Result<Self> {
        if !kernel.available() {
            let msg = format!("this CPU cannot run the {} kernel", kernel.name());
            return Err(Error::invalid("kernel", msg));
        }
        self.kernel = kernel;
        Ok(self)
    }

    /// Applies `activation` to every output (`y = f(x @ W^T + b)`) while it is in cache.
    pub fn with_activation(mut self, activation: Option<Activation>) -> Self {
        self.activation = activation;
        self
    }

    pub fn activation(&self) -> Option<Activation> {
        self.activation
    }

    pub fn in_features(&self) -> usize {
        self.weights.k
    }

    pub fn out_features(&self) -> usize {
        self.weights.n
    }

    pub fn kernel(&self) -> Kernel {
        self.kernel
    }

    /// The weight codes, row-major `out_features x in_features`.
    pub fn weight_codes(&self) -> Vec<i8> {
        self.weights.unpack()
    }

    /// One scale per output feature: `weight[c] ~= weight_codes[c] * weight_scales[c]`.
    pub fn weight_scales(&self) -> &[f32] {
        &self.weights.scales
    }

    /// `x` row-major `m x in_features` -> row-major `m x out_features`:
    /// `(codes(x) @ weight_codes^T) as f32 * row_scale * weight_scale + bias`, then the
    /// activation if there is one.
    pub fn forward(&self, x: &[f32], m: usize) -> Result<Vec<f32>> {
        let mut out = vec![0f32; m * self.weights.n];
        self.forward_into(x, m, &mut out)?;
        Ok(out)
    }

    /// [`forward`](Self::forward) into `out` (`m * out_features` values).
    pub fn forward_into(&self, x: &[f32], m: usize, out: &mut [f32]) -> Result<()> {
        let (k, n) = (self.weights.k, self.weights.n);
        if Some(x.len()) != m.checked_mul(k) {
            let msg = format!("expected {m} x {k} values, got {}", x.len());
            return Err(Error::invalid("x", msg));
        }
        if Some(out.len()) != m.checked_mul(n) {
            let msg = format!("expected {m} x {n} values, got {}", out.len());
            return Err(Error::invalid("out", msg));
        }
        let kp = self.weights.kp;
        let (codes, row_scales) = self.quantize(x, m)?;
        let chunk = self.rows_per_task(m);
        let epilogue = self.epilogue();
        let run = |(i, out): (usize, &mut [f32])| {
            let lo = i * chunk;
            let rows = out.len() / n;
            let scales = &row_scales[lo..lo + rows];
            self.product(&codes[lo * kp..(lo + rows) * kp], |first, col, sums| {
                epilogue.rows(first, col, sums, scales, out);
            });
        };
        if chunk >= m {
            out.chunks_mut(chunk.max(1) * n).enumerate().for_each(run);
        } else {
            out.par_chunks_mut(chunk * n).enumerate().for_each(run);
        }
        Ok(())
    }

    /// The activation codes of `x` (`m` rows padded to `kp` bytes) in the form this
    /// layer's kernel reads, and the row scales.
    fn quantize(&self, x: &[f32], m: usize) -> Result<(aligned::AlignedBytes, Vec<f32>)> {
        let (k, kp) = (self.weights.k, self.weights.kp);
        quantize::quantize_rows(x, m, k, kp, self.kernel.unsigned_codes())
    }

    fn epilogue(&self) -> Epilogue<'_> {
        Epilogue {
            n: self.weights.n,
            col_scales: &self.weights.scales,
            bias: self.bias.as_deref(),
            activation: self.activation,
        }
    }

    /// The exact integer product of activation codes (row-major `m x in_features`)
    /// with the weight codes: row-major `m x out_features`.
    pub fn product_i32(&self, x_codes: &[i8], m: usize) -> Result<Vec<i32>> {
        let (k, kp, n) = (self.weights.k, self.weights.kp, self.weights.n);
        if Some(x_codes.len()) != m.checked_mul(k) {
            let msg = format!("expected {m} x {k} values, got {}", x_codes.len());
            return Err(Error::invalid("x_codes", msg));
        }
        if let Some(q) = x_codes.iter().find(|&&q| q == i8::MIN) {
            return Err(Error::invalid(
                "x_codes",
                format!("code {q} outside [-127, 127]"),
            ));
        }
        let mut padded = aligned::AlignedBytes::zeroed(m * kp);
        let unsigned = self.kernel.unsigned_codes();
        for (dst, src) in padded.chunks_exact_mut(kp).zip(x_codes.chunks_exact(k)) {
            for (d, &s) in dst.iter_mut().zip(src) {
                *d = if unsigned { s ^ i8::MIN } else { s };
            }
        }
        let mut out = vec![0i32; m * n];
        self.product(&padded, |first, col, sums| {
            let width = PANEL.min(n - col);
            for (r, ints) in (first..).zip(sums) {
                out[r * n + col..r * n + col + width].copy_from_slice(&ints[..width]);
            }
        });
        Ok(out)
    }

    /// Rows per rayon task; `>= m` means run on the calling thread.
    fn rows_per_task(&self, m: usize) -> usize {
        let macs = m * self.weights.k * self.weights.n;
        if macs < PARALLEL_MACS {
            return m.max(1);
        }
        let tasks = 2 * rayon::current_num_threads();
        let unit = match self.kernel {
            #[cfg(target_arch = "x86_64")]
            Kernel::Amx => kernel::amx::BLOCK_ROWS,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Vnni => kernel::avx512::ROWS,
            _ => MR,
        };
        m.div_ceil(tasks).div_ceil(unit).max(1) * unit
    }

    /// Multiplies the padded activation codes (`rows x kp`, in the kernel's form: see
    /// [`Kernel::unsigned_codes`]) with every panel and hands the exact sums on as
    /// `emit(first row, first column, sums)`: consecutive rows from `first`, each the
    /// sums of the panel's `PANEL` columns (padding columns past `out_features`
    /// included).
    fn product(&self, codes: &[i8], mut emit: impl FnMut(usize, usize, &[[i32; PANEL]])) {
        let w = &self.weights;
        #[cfg(target_arch = "x86_64")]
        if self.kernel == Kernel::Amx && !codes.is_empty() {
            // SAFETY: `with_kernel`/`detect` checked `available()`; `kp` is a non-zero
            // multiple of 64, the codes `rows x kp` and the panels `kp * PANEL` bytes.
            unsafe {
                kernel::amx::product(
                    codes,
                    w.kp,
                    w.panels(),
                    |p| w.panel(p),
                    AMX_ROW_BLOCK,
                    |r, p, sums| emit(r, p * PANEL, sums),
                );
            }
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if self.kernel == Kernel::Avx512Vnni {
            // SAFETY: as above; each panel's shift sums are `PANEL` values.
            unsafe {
                kernel::avx512::product(
                    codes,
                    w.kp,
                    w.panels(),
                    |p| w.panel(p),
                    |p| &w.shift_sums[p * PANEL..(p + 1) * PANEL],
                    ROW_BLOCK,
                    |r, p, sums| emit(r, p * PANEL, sums),
                );
            }
            return;
        }
        let kp = w.kp;
        let rows = codes.len() / kp;
        let mut acc = [[0i32; PANEL]; MR];
        for block in (0..rows).step_by(ROW_BLOCK) {
            let block_end = rows.min(block + ROW_BLOCK);
            for p in 0..w.panels() {
                let panel = w.panel(p);
                let col = p * PANEL;
                for r0 in (block..block_end).step_by(MR) {
                    let mr = MR.min(block_end - r0);
                    let mut tile_rows: [&[i8]; MR] = [&[]; MR];
                    for (i, slot) in tile_rows.iter_mut().enumerate().take(mr) {
                        *slot = &codes[(r0 + i) * kp..(r0 + i + 1) * kp];
                    }
                    self.kernel
                        .tile(&tile_rows[..mr], panel, kp, &mut acc[..mr]);
                    emit(r0, col, &acc[..mr]);
                }
            }
        }
    }
}
