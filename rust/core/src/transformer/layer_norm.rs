//! Residual add + layer norm over rows, vectorised: the row sums are
//! [`LANES`](crate::simd::LANES) partial sums and the loops are compiled for
//! AVX-512 and AVX2 as well as the portable baseline, so a row costs a few dozen
//! vector instructions instead of two serial chains of scalar adds.

use rayon::prelude::*;

use super::PARALLEL_ROWS;
use crate::error::{Error, Result};
use crate::simd::{self, multiversion, Isa};

/// `x = layer_norm(x + residual) * gamma + beta` per row of `gamma.len()` values,
/// in place; without a residual, the layer norm of `x` alone.
pub fn add_layer_norm(
    x: &mut [f32],
    residual: Option<&[f32]>,
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
) -> Result<()> {
    let width = gamma.len();
    if width == 0 || beta.len() != width {
        let msg = format!("gamma has {width} values and beta {}", beta.len());
        return Err(Error::invalid("beta", msg));
    }
    if !x.len().is_multiple_of(width) {
        let msg = format!("{} values are not rows of {width}", x.len());
        return Err(Error::invalid("x", msg));
    }
    if let Some(r) = residual {
        if r.len() != x.len() {
            let msg = format!("{} values for {} in x", r.len(), x.len());
            return Err(Error::invalid("residual", msg));
        }
    }
    let isa = Isa::detect();
    let rows = x.len() / width;
    if rows < PARALLEL_ROWS {
        norm_rows(isa, x, residual, gamma, beta, eps);
        return Ok(());
    }
    // Blocks of rows per rayon task, so each task dispatches once.
    let block = PARALLEL_ROWS / 4 * width;
    x.par_chunks_mut(block).enumerate().for_each(|(i, x)| {
        let residual = residual.map(|r| &r[i * block..i * block + x.len()]);
        norm_rows(isa, x, residual, gamma, beta, eps);
    });
    Ok(())
}

multiversion! {
    /// The rows of `x` (checked to be whole rows of `gamma.len()`, `residual` as long).
    fn norm_rows(
        x: &mut [f32],
        residual: Option<&[f32]>,
        gamma: &[f32],
        beta: &[f32],
        eps: f32,
    ) = norm_rows_body;
}

#[inline(always)]
fn norm_rows_body(x: &mut [f32], residual: Option<&[f32]>, gamma: &[f32], beta: &[f32], eps: f32) {
    let width = gamma.len();
    for (i, row) in x.chunks_exact_mut(width).enumerate() {
        if let Some(r) = residual {
            for (v, &add) in row.iter_mut().zip(&r[i * width..(i + 1) * width]) {
                *v += add;
            }
        }
        let mean = simd::sum(row) / width as f32;
        let var = simd::sum_map(row, |v| (v - mean) * (v - mean)) / width as f32;
        let inv = 1.0 / (var + eps).sqrt();
        for ((v, &g), &b) in row.iter_mut().zip(gamma).zip(beta) {
            *v = (*v - mean) * inv * g + b;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_norm_with_and_without_residual() {
        let gamma = [1.0, 2.0, 0.5, 1.0];
        let beta = [0.0, 1.0, -1.0, 0.5];
        let mut x = vec![1.0, 2.0, 3.0, 4.0, -1.0, 0.0, 0.0, 1.0];
        let residual = vec![1.0; 8];
        add_layer_norm(&mut x, Some(&residual), &gamma, &beta, 1e-12).unwrap();
        let mut alone = vec![2.0, 3.0, 4.0, 5.0, 0.0, 1.0, 1.0, 2.0];
        add_layer_norm(&mut alone, None, &gamma, &beta, 1e-12).unwrap();
        assert_eq!(x, alone);
        // Row 1: mean 3.5, variance 1.25.
        let inv = 1.0 / 1.25f32.sqrt();
        assert!((x[0] - (-1.5 * inv)).abs() < 1e-6);
        assert!((x[3] - (1.5 * inv + 0.5)).abs() < 1e-6);
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        crate::transformer::test_values(n, seed, 3.0)
    }

    /// Against an f64 layer norm, at widths around the lane count.
    #[test]
    fn layer_norm_matches_the_definition() {
        for width in [1, 5, 16, 17, 40, 384] {
            let (x, r) = (values(3 * width, 1), values(3 * width, 2));
            let (gamma, beta) = (values(width, 3), values(width, 4));
            let mut got = x.clone();
            add_layer_norm(&mut got, Some(&r), &gamma, &beta, 1e-5).unwrap();
            for (row, out) in got.chunks(width).enumerate() {
                let y: Vec<f64> = (0..width)
                    .map(|c| x[row * width + c] as f64 + r[row * width + c] as f64)
                    .collect();
                let mean = y.iter().sum::<f64>() / width as f64;
                let var = y.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / width as f64;
                for c in 0..width {
                    let want =
                        (y[c] - mean) / (var + 1e-5).sqrt() * gamma[c] as f64 + beta[c] as f64;
                    let got = out[c] as f64;
                    assert!(
                        (got - want).abs() < 1e-5 * (1.0 + want.abs()),
                        "{got} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn every_build_gives_the_same_floats() {
        let width = 384;
        let (x, r) = (values(7 * width, 5), values(7 * width, 6));
        let (gamma, beta) = (values(width, 7), values(width, 8));
        let mut portable = x.clone();
        norm_rows(Isa::Portable, &mut portable, Some(&r), &gamma, &beta, 1e-12);
        for isa in Isa::ALL.into_iter().filter(|i| i.available()) {
            let mut got = x.clone();
            norm_rows(isa, &mut got, Some(&r), &gamma, &beta, 1e-12);
            assert_eq!(got, portable, "{isa:?}");
        }
    }

    #[test]
    fn rows_split_across_threads_give_the_same_floats() {
        let width = 48;
        let rows = 2 * PARALLEL_ROWS + 3;
        let (x, r) = (values(rows * width, 9), values(rows * width, 10));
        let (gamma, beta) = (values(width, 11), values(width, 12));
        let mut all = x.clone();
        add_layer_norm(&mut all, Some(&r), &gamma, &beta, 1e-12).unwrap();
        for row in [0, 127, 128, rows - 1] {
            let span = row * width..(row + 1) * width;
            let mut alone = x[span.clone()].to_vec();
            add_layer_norm(&mut alone, Some(&r[span.clone()]), &gamma, &beta, 1e-12).unwrap();
            assert_eq!(alone, all[span]);
        }
    }
}
