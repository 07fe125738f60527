//! The parts of a BERT encoder around its matrix products: token embeddings,
//! self-attention over a ragged batch, residual add + layer norm, mean pooling.
//!
//! A batch is its sequences' token rows one after another (`offsets[i]..offsets[i+1]`
//! are sequence i's rows), so nothing is padded: a query of 9 tokens batched with
//! one of 25 costs 9 rows, not 25. Done in NumPy these steps were about 25 calls per
//! layer, each over the whole padded batch; for short queries that overhead was as
//! much time as the int8 products themselves.

mod attention;
mod embedding;
mod layer_norm;

pub use attention::{attention, attention_into};
pub use embedding::{embed, mean_pool, Embeddings};
pub use layer_norm::add_layer_norm;

use crate::error::{Error, Result};
use crate::gemm::Int8Linear;

/// Sequences at least this many token rows in total are split across rayon threads.
const PARALLEL_ROWS: usize = 512;

/// One post-norm BERT encoder layer with int8 products, borrowed from its owner.
pub struct Int8Layer<'a> {
    /// hidden -> 3 * hidden: query, key and value projections side by side.
    pub qkv: &'a Int8Linear,
    pub out: &'a Int8Linear,
    pub ln1: (&'a [f32], &'a [f32]),
    /// hidden -> intermediate, with the activation (GELU) in its epilogue.
    pub up: &'a Int8Linear,
    pub down: &'a Int8Linear,
    pub ln2: (&'a [f32], &'a [f32]),
}

/// Runs `x` (the ragged batch's token rows, `hidden` wide) through `layers`:
/// attention, output product, residual + layer norm, feed-forward, residual + layer
/// norm. The same steps as calling [`attention`], [`add_layer_norm`] and the
/// products one by one, in one call, so a caller can run the whole stack without
/// coming back to its interpreter between steps.
pub fn int8_layers(
    mut x: Vec<f32>,
    offsets: &[usize],
    heads: usize,
    eps: f32,
    layers: &[Int8Layer<'_>],
) -> Result<Vec<f32>> {
    let rows = *offsets.last().unwrap_or(&0);
    if rows == 0 || !x.len().is_multiple_of(rows) {
        let msg = format!("{} values are not the {rows} rows of offsets", x.len());
        return Err(Error::invalid("x", msg));
    }
    let hidden = x.len() / rows;
    for (i, layer) in layers.iter().enumerate() {
        check_shapes(i, layer, hidden)?;
    }
    // Every intermediate lives in buffers allocated once per call and overwritten by
    // each layer (fresh zeroed vectors per product were a memset of ~1.5 MB per
    // layer for a batch of 100 token rows), and buffers whose contents are dead
    // are reused: `wide` holds qkv, then the FFN's inner rows; `spare` the
    // attention context, then the layer's output.
    let inner = layers.iter().map(|l| l.up.out_features()).max();
    let wide = (3 * hidden).max(inner.unwrap_or(0));
    let (mut wide, mut spare, mut h) = (
        vec![0f32; rows * wide],
        vec![0f32; rows * hidden],
        vec![0f32; rows * hidden],
    );
    for layer in layers {
        let qkv = &mut wide[..rows * 3 * hidden];
        layer.qkv.forward_into(&x, rows, qkv)?;
        attention_into(qkv, offsets, heads, hidden, &mut spare)?;
        layer.out.forward_into(&spare, rows, &mut h)?;
        add_layer_norm(&mut h, Some(&x), layer.ln1.0, layer.ln1.1, eps)?;
        let up = &mut wide[..rows * layer.up.out_features()];
        layer.up.forward_into(&h, rows, up)?;
        layer.down.forward_into(up, rows, &mut spare)?;
        add_layer_norm(&mut spare, Some(&h), layer.ln2.0, layer.ln2.1, eps)?;
        std::mem::swap(&mut x, &mut spare);
    }
    Ok(x)
}

/// Checks that the products of layer `i` chain: hidden -> 3 hidden (qkv), hidden ->
/// hidden (out), hidden -> inner (up), inner -> hidden (down).
fn check_shapes(i: usize, layer: &Int8Layer<'_>, hidden: usize) -> Result<()> {
    let inner = layer.up.out_features();
    let products = [
        ("qkv", layer.qkv, 3 * hidden),
        ("out", layer.out, hidden),
        ("up", layer.up, inner),
        ("down", layer.down, hidden),
    ];
    for (name, product, outputs) in products {
        let inputs = if name == "down" { inner } else { hidden };
        if (product.in_features(), product.out_features()) != (inputs, outputs) {
            let msg = format!(
                "layer {i}: {name} maps {} -> {} features, expected {inputs} -> {outputs}",
                product.in_features(),
                product.out_features()
            );
            return Err(Error::invalid("layers", msg));
        }
    }
    Ok(())
}

/// Deterministic test inputs: `n` values spread over `[-range, range)`, varied by
/// `seed` (shared by the tests of this module's parts).
#[cfg(test)]
pub(crate) fn test_values(n: usize, seed: u32, range: f32) -> Vec<f32> {
    (0..n)
        .map(|i| (((i as u32).wrapping_mul(2_654_435_761) ^ seed) % 2000) as f32 / 1000.0 - 1.0)
        .map(|unit| unit * range)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activation::Activation;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        crate::transformer::test_values(n, seed, 2.0)
    }

    #[test]
    fn layer_stack_checks_rows_and_passes_through_without_layers() {
        let x = values(4 * 8, 3);
        assert_eq!(
            int8_layers(x.clone(), &[0, 1, 4], 2, 1e-12, &[]).unwrap(),
            x
        );
        match int8_layers(x, &[0, 3], 2, 1e-12, &[]) {
            Err(Error::InvalidArgument { field, .. }) => assert_eq!(field, "x"),
            other => panic!("{other:?}"),
        }
    }

    /// Two layers of hidden 32, 4 heads, inner 64, with GELU on the up product.
    fn small_layers() -> (Vec<Int8Linear>, Vec<Vec<f32>>) {
        let (hidden, inner) = (32, 64);
        let linear = |n: usize, k: usize, seed: u32| {
            let w: Vec<f32> = values(n * k, seed).iter().map(|v| v / 8.0).collect();
            Int8Linear::new(&w, n, k, Some(&values(n, seed + 1))).unwrap()
        };
        let mut products = Vec::new();
        for l in 0..2 {
            let s = 10 * l;
            products.push(linear(3 * hidden, hidden, s + 1));
            products.push(linear(hidden, hidden, s + 3));
            products.push(linear(inner, hidden, s + 5).with_activation(Some(Activation::Gelu)));
            products.push(linear(hidden, inner, s + 7));
        }
        let norms = (0..8)
            .map(|i| {
                values(hidden, 50 + i)
                    .iter()
                    .map(|v| 1.0 + v / 10.0)
                    .collect()
            })
            .collect();
        (products, norms)
    }

    fn stack<'a>(products: &'a [Int8Linear], norms: &'a [Vec<f32>]) -> Vec<Int8Layer<'a>> {
        products
            .chunks(4)
            .zip(norms.chunks(4))
            .map(|(p, n)| Int8Layer {
                qkv: &p[0],
                out: &p[1],
                ln1: (&n[0], &n[1]),
                up: &p[2],
                down: &p[3],
                ln2: (&n[2], &n[3]),
            })
            .collect()
    }

    #[test]
    fn layer_stack_gives_the_floats_of_the_steps_one_by_one() {
        let (products, norms) = small_layers();
        let layers = stack(&products, &norms);
        let offsets = [0, 3, 4, 20, 37];
        let x = values(37 * 32, 11);
        let mut expected = x.clone();
        for l in &layers {
            let qkv = l.qkv.forward(&expected, 37).unwrap();
            let mut h = l
                .out
                .forward(&attention(&qkv, &offsets, 4, 32).unwrap(), 37)
                .unwrap();
            add_layer_norm(&mut h, Some(&expected), l.ln1.0, l.ln1.1, 1e-12).unwrap();
            expected = l.down.forward(&l.up.forward(&h, 37).unwrap(), 37).unwrap();
            add_layer_norm(&mut expected, Some(&h), l.ln2.0, l.ln2.1, 1e-12).unwrap();
        }
        assert_eq!(
            int8_layers(x, &offsets, 4, 1e-12, &layers).unwrap(),
            expected
        );
    }

    #[test]
    fn layer_stack_names_a_product_that_does_not_chain() {
        let (mut products, norms) = small_layers();
        products.swap(1, 2); // out and up
        let layers = stack(&products, &norms);
        match int8_layers(values(2 * 32, 1), &[0, 2], 4, 1e-12, &layers) {
            Err(Error::InvalidArgument { field, .. }) => assert_eq!(field, "layers"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_shapes_name_the_argument() {
        let qkv = vec![0f32; 2 * 3 * 8];
        let field = |r: Result<Vec<f32>>| match r {
            Err(Error::InvalidArgument { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field(attention(&qkv, &[0, 2], 3, 8)), "heads");
        assert_eq!(field(attention(&qkv, &[0, 3], 2, 8)), "offsets");
        assert_eq!(field(attention(&qkv, &[1, 2], 2, 8)), "offsets");
        assert_eq!(field(attention(&qkv, &[0, 2, 1, 2], 2, 8)), "offsets");
        assert_eq!(field(attention(&qkv[1..], &[0, 2], 2, 8)), "qkv");
        let mut short = vec![0f32; 8];
        let r = attention_into(&qkv, &[0, 2], 2, 8, &mut short);
        assert_eq!(field(r.map(|()| Vec::new())), "out");
        let mut x = vec![0f32; 8];
        assert!(add_layer_norm(&mut x, None, &[1.0; 3], &[0.0; 3], 1e-5).is_err());
        assert!(add_layer_norm(&mut x, Some(&[0.0; 4]), &[1.0; 4], &[0.0; 4], 1e-5).is_err());
        assert!(add_layer_norm(&mut x, None, &[1.0; 4], &[0.0; 3], 1e-5).is_err());
    }
}
