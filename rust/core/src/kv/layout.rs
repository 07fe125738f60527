//! Axis orders of KV tensors and their shapes.
//!
//! A KV tensor (keys or values of a whole cache) has four axes: layer `L`,
//! KV head `H`, token `S` and head dimension `D`. A layout names their order
//! from outermost to innermost, e.g. `"LHSD"`: a stack of Hugging Face's
//! per-layer `[heads, seq, dim]` tensors (batch of one). Any of the 24 orders is
//! accepted; pages keep the order they were packed in and unpack converts.

use crate::error::{Error, Result};

/// Canonical axis indices, used for shapes and strides regardless of layout.
pub const LAYER: usize = 0;
pub const HEAD: usize = 1;
pub const TOKEN: usize = 2;
pub const DIM: usize = 3;

const LETTERS: [u8; 4] = *b"LHSD";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Layout {
    /// `order[i]` is the canonical axis at position `i` (0 = outermost).
    order: [usize; 4],
}

impl Layout {
    /// The layout of a stack of Hugging Face per-layer caches.
    pub const LHSD: Layout = Layout {
        order: [LAYER, HEAD, TOKEN, DIM],
    };

    pub fn parse(name: &str) -> Result<Self> {
        Self::from_bytes(name.as_bytes()).ok_or_else(|| {
            Error::invalid(
                "layout",
                format!("{name:?} is not an order of the four axes L, H, S, D (e.g. \"LHSD\")"),
            )
        })
    }

    /// Parses the four ASCII letters stored in a page header.
    pub fn from_bytes(letters: &[u8]) -> Option<Self> {
        if letters.len() != 4 {
            return None;
        }
        let mut order = [0usize; 4];
        let mut seen = [false; 4];
        for (slot, letter) in order.iter_mut().zip(letters) {
            let axis = LETTERS.iter().position(|l| l == letter)?;
            if seen[axis] {
                return None;
            }
            seen[axis] = true;
            *slot = axis;
        }
        Some(Layout { order })
    }

    pub fn to_bytes(self) -> [u8; 4] {
        self.order.map(|axis| LETTERS[axis])
    }

    pub fn name(self) -> String {
        self.to_bytes().iter().map(|&b| b as char).collect()
    }

    /// Every axis order; for exhaustive tests.
    pub fn all() -> Vec<Layout> {
        let mut out = Vec::with_capacity(24);
        for a in 0..4 {
            for b in 0..4 {
                for c in 0..4 {
                    for d in 0..4 {
                        let order = [a, b, c, d];
                        let mut seen = [false; 4];
                        order.iter().for_each(|&x| seen[x] = true);
                        if seen.iter().all(|&s| s) {
                            out.push(Layout { order });
                        }
                    }
                }
            }
        }
        out
    }

    /// Sizes in layout order, from canonical sizes.
    pub fn dims(self, shape: &KvShape) -> [usize; 4] {
        let canonical = shape.canonical();
        self.order.map(|axis| canonical[axis])
    }

    /// Element strides of a dense tensor of `shape` in this layout, indexed canonically.
    pub fn strides(self, shape: &KvShape) -> [usize; 4] {
        let canonical = shape.canonical();
        let mut strides = [0usize; 4];
        let mut step = 1;
        for &axis in self.order.iter().rev() {
            strides[axis] = step;
            step *= canonical[axis];
        }
        strides
    }
}

/// Sizes of the four axes of one KV tensor (keys and values share it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KvShape {
    pub layers: usize,
    pub heads: usize,
    pub tokens: usize,
    pub head_dim: usize,
}

impl KvShape {
    /// Builds a shape from sizes given in `layout` order; every size must be positive.
    pub fn from_dims(layout: Layout, dims: &[usize]) -> Result<Self> {
        if dims.len() != 4 {
            return Err(Error::invalid(
                "shape",
                format!(
                    "expected 4 sizes in {} order, got {}",
                    layout.name(),
                    dims.len()
                ),
            ));
        }
        let mut canonical = [0usize; 4];
        for (&axis, &size) in layout.order.iter().zip(dims) {
            if size == 0 {
                return Err(Error::invalid(
                    "shape",
                    "every axis must have a positive size",
                ));
            }
            canonical[axis] = size;
        }
        Ok(KvShape {
            layers: canonical[LAYER],
            heads: canonical[HEAD],
            tokens: canonical[TOKEN],
            head_dim: canonical[DIM],
        })
    }

    pub fn canonical(&self) -> [usize; 4] {
        [self.layers, self.heads, self.tokens, self.head_dim]
    }

    pub fn with_tokens(&self, tokens: usize) -> KvShape {
        KvShape { tokens, ..*self }
    }

    /// Elements in one tensor, or `None` on overflow.
    pub fn elements(&self) -> Option<usize> {
        self.canonical()
            .iter()
            .try_fold(1usize, |acc, &n| acc.checked_mul(n))
    }

    /// Elements per token across layers, heads and dims (the size of one scale set).
    pub fn channels(&self) -> usize {
        self.layers * self.heads * self.head_dim
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_all_orders_and_rejects_others() {
        let all = Layout::all();
        assert_eq!(all.len(), 24);
        for l in &all {
            assert_eq!(Layout::parse(&l.name()).unwrap(), *l);
        }
        for bad in ["LHS", "LHSS", "lhsd", "LHSDX", "ABCD"] {
            assert!(Layout::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn strides_are_dense_row_major() {
        let shape = KvShape {
            layers: 2,
            heads: 3,
            tokens: 5,
            head_dim: 7,
        };
        assert_eq!(Layout::LHSD.strides(&shape), [105, 35, 7, 1]);
        let hlsd = Layout::parse("HLSD").unwrap();
        assert_eq!(hlsd.strides(&shape), [35, 70, 7, 1]);
        assert_eq!(hlsd.dims(&shape), [3, 2, 5, 7]);
        assert_eq!(KvShape::from_dims(hlsd, &[3, 2, 5, 7]).unwrap(), shape);
    }
}
