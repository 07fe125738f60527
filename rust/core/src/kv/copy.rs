//! Copying a token range between a dense tensor and a dense page block, in any
//! pair of layouts.
//!
//! The copy is planned once: axes of size one are dropped, the rest are ordered
//! as the page stores them, and neighbours that are contiguous on both sides are
//! merged. What remains is a loop over *runs*: stretches that are contiguous in
//! the page (so a checksum can follow them in page order) and, when the layouts
//! agree on the inner axes, contiguous in the tensor too (then a `memcpy`).

use super::layout::{KvShape, Layout, TOKEN};

#[derive(Clone, Copy, Debug)]
struct Axis {
    len: usize,
    page: usize,
    tensor: usize,
}

/// A planned copy of one token range; offsets and strides are in elements.
#[derive(Debug)]
pub(crate) struct BlockCopy {
    outer: Vec<Axis>,
    inner: Axis,
    tensor_base: usize,
}

impl BlockCopy {
    /// Plans the copy of tokens `[start, start + page_shape.tokens)` of a tensor
    /// of `tensor_shape` in `tensor_layout` to/from a page block of `page_shape`
    /// in `page_layout`.
    pub fn new(
        tensor_shape: &KvShape,
        tensor_layout: Layout,
        page_shape: &KvShape,
        page_layout: Layout,
        start: usize,
    ) -> Self {
        let tensor_strides = tensor_layout.strides(tensor_shape);
        let page_strides = page_layout.strides(page_shape);
        let mut axes: Vec<Axis> = page_shape
            .canonical()
            .iter()
            .enumerate()
            .filter(|(_, &len)| len > 1)
            .map(|(i, &len)| Axis {
                len,
                page: page_strides[i],
                tensor: tensor_strides[i],
            })
            .collect();
        axes.sort_by_key(|a| std::cmp::Reverse(a.page));
        let mut merged: Vec<Axis> = Vec::with_capacity(4);
        for axis in axes {
            match merged.last_mut() {
                Some(last)
                    if last.page == axis.page * axis.len
                        && last.tensor == axis.tensor * axis.len =>
                {
                    last.len *= axis.len;
                    last.page = axis.page;
                    last.tensor = axis.tensor;
                }
                _ => merged.push(axis),
            }
        }
        let inner = merged.pop().unwrap_or(Axis {
            len: 1,
            page: 1,
            tensor: 1,
        });
        BlockCopy {
            outer: merged,
            inner,
            tensor_base: start * tensor_strides[TOKEN],
        }
    }

    /// Elements per run.
    pub fn run_len(&self) -> usize {
        self.inner.len
    }

    /// Tensor element stride inside a run (1 when runs are contiguous in the tensor).
    pub fn run_stride(&self) -> usize {
        self.inner.tensor
    }

    /// Calls `f(page_offset, tensor_offset)` for every run, in page order.
    pub fn for_each_run(&self, mut f: impl FnMut(usize, usize)) {
        let n = self.outer.len();
        let mut index = vec![0usize; n];
        let (mut page, mut tensor) = (0usize, self.tensor_base);
        loop {
            f(page, tensor);
            // Odometer over the outer axes, innermost first.
            let mut k = n;
            loop {
                if k == 0 {
                    return;
                }
                k -= 1;
                let axis = self.outer[k];
                index[k] += 1;
                page += axis.page;
                tensor += axis.tensor;
                if index[k] < axis.len {
                    break;
                }
                page -= axis.page * axis.len;
                tensor -= axis.tensor * axis.len;
                index[k] = 0;
            }
        }
    }

    /// Copies the token range of `tensor` into `page` (bytes; `elem` is the element
    /// size), handing each page run to `on_run` right after it is written.
    pub fn gather(
        &self,
        elem: usize,
        tensor: &[u8],
        page: &mut [u8],
        mut on_run: impl FnMut(&[u8]),
    ) {
        let run = self.run_len() * elem;
        let stride = self.run_stride() * elem;
        self.for_each_run(|p, t| {
            let (p, t) = (p * elem, t * elem);
            let page_run = &mut page[p..p + run];
            if stride == elem {
                page_run.copy_from_slice(&tensor[t..t + run]);
            } else {
                for (i, dst) in page_run.chunks_exact_mut(elem).enumerate() {
                    let o = t + i * stride;
                    dst.copy_from_slice(&tensor[o..o + elem]);
                }
            }
            on_run(page_run);
        });
    }

    /// Copies `page` into the token range of `tensor`, handing each page run to
    /// `on_run` as it is read.
    pub fn scatter(
        &self,
        elem: usize,
        page: &[u8],
        tensor: &mut [u8],
        mut on_run: impl FnMut(&[u8]),
    ) {
        let run = self.run_len() * elem;
        let stride = self.run_stride() * elem;
        self.for_each_run(|p, t| {
            let (p, t) = (p * elem, t * elem);
            let page_run = &page[p..p + run];
            on_run(page_run);
            if stride == elem {
                tensor[t..t + run].copy_from_slice(page_run);
            } else {
                for (i, src) in page_run.chunks_exact(elem).enumerate() {
                    let o = t + i * stride;
                    tensor[o..o + elem].copy_from_slice(src);
                }
            }
        });
    }
}
