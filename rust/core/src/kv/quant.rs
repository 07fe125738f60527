//! int8 encoding with one scale per channel.
//!
//! A channel is one (layer, head, dim) triple; its scale is the largest
//! magnitude over the page's tokens divided by 127, so each page stands alone.
//! Per-channel scales keep the outlier dimensions that keys are known for from
//! flattening every other dimension to zero.

use super::dtype::DType;
use super::layout::{KvShape, Layout, DIM, HEAD, LAYER, TOKEN};
use crate::error::{Error, Result};

/// Where one page block lives inside a full tensor.
pub(crate) struct Block<'a> {
    pub tensor_shape: &'a KvShape,
    pub tensor_layout: Layout,
    pub page_shape: &'a KvShape,
    pub page_layout: Layout,
    pub start: usize,
}

impl Block<'_> {
    /// Calls `f(channel, page_index, tensor_index)` for every element, channel-major.
    fn for_each(&self, mut f: impl FnMut(usize, usize, usize)) {
        let ts = self.tensor_layout.strides(self.tensor_shape);
        let ps = self.page_layout.strides(self.page_shape);
        let s = self.page_shape;
        let mut channel = 0;
        for l in 0..s.layers {
            for h in 0..s.heads {
                for d in 0..s.head_dim {
                    let p0 = l * ps[LAYER] + h * ps[HEAD] + d * ps[DIM];
                    let t0 = l * ts[LAYER] + h * ts[HEAD] + d * ts[DIM] + self.start * ts[TOKEN];
                    for tok in 0..s.tokens {
                        f(channel, p0 + tok * ps[TOKEN], t0 + tok * ts[TOKEN]);
                    }
                    channel += 1;
                }
            }
        }
    }
}

/// Quantises one block of `tensor` into `q` (one byte per element, page layout)
/// and `scales` (one little-endian f32 per channel). `field` names the tensor in errors.
pub(crate) fn quantize(
    block: &Block,
    dtype: DType,
    tensor: &[u8],
    q: &mut [u8],
    scales: &mut [u8],
    field: &str,
) -> Result<()> {
    let mut absmax = vec![0f32; block.page_shape.channels()];
    let mut finite = true;
    block.for_each(|c, _, t| {
        let x = dtype.read(tensor, t);
        finite &= x.is_finite();
        absmax[c] = absmax[c].max(x.abs());
    });
    if !finite {
        return Err(Error::invalid(
            field,
            "contains a NaN or infinite value, which int8 cannot encode",
        ));
    }
    let inverse: Vec<f32> = absmax
        .iter()
        .map(|&m| if m > 0.0 { 127.0 / m } else { 0.0 })
        .collect();
    block.for_each(|c, p, t| {
        let x = dtype.read(tensor, t);
        q[p] = (x * inverse[c]).round().clamp(-127.0, 127.0) as i8 as u8;
    });
    for (dst, m) in scales.chunks_exact_mut(4).zip(&absmax) {
        dst.copy_from_slice(&(m / 127.0).to_le_bytes());
    }
    Ok(())
}

/// Dequantises a page block into its token range of `tensor`, in `dtype`.
pub(crate) fn dequantize(block: &Block, dtype: DType, q: &[u8], scales: &[u8], tensor: &mut [u8]) {
    let scale: Vec<f32> = scales
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    block.for_each(|c, p, t| {
        dtype.write(tensor, t, f32::from(q[p] as i8) * scale[c]);
    });
}
