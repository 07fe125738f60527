//! Python surface of the encoder helpers: `embed_tokens`, `attention`,
//! `add_layer_norm`, `mean_pool`, and `int8_encoder` (all of them, with int8
//! products, in one call).
//!
//! Arrays must be C-contiguous float32 (offsets int64); the work runs with the GIL
//! released.

use memosd_core::transformer;
use numpy::ndarray::Array2;
use numpy::{
    IntoPyArray, PyArray1, PyArray2, PyArrayMethods, PyReadonlyArrayDyn, PyUntypedArrayMethods,
};
use pyo3::prelude::*;

use crate::args::{floats, floats_mut, invalid};
use crate::error::PyErrWrap;
use crate::gemm::Int8Linear;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(attention, m)?)?;
    m.add_function(wrap_pyfunction!(add_layer_norm, m)?)?;
    m.add_function(wrap_pyfunction!(int8_encoder, m)?)?;
    m.add_function(wrap_pyfunction!(embed_tokens, m)?)?;
    m.add_function(wrap_pyfunction!(mean_pool, m)?)?;
    Ok(())
}

fn int64s(field: &str, obj: &Bound<'_, PyAny>) -> PyResult<Vec<i64>> {
    match obj.cast::<PyArray1<i64>>() {
        Ok(a) => Ok(a.to_vec()?),
        Err(_) => Err(invalid(field, "expected a 1-D int64 array")),
    }
}

fn offsets_arg(obj: &Bound<'_, PyAny>) -> PyResult<Vec<usize>> {
    let offsets = int64s("offsets", obj)?;
    if offsets.iter().any(|&o| o < 0) {
        return Err(invalid("offsets", "must not be negative"));
    }
    Ok(offsets.into_iter().map(|o| o as usize).collect())
}

/// Self-attention of each sequence of a ragged batch; see `_native.pyi`.
#[pyfunction]
fn attention<'py>(
    py: Python<'py>,
    qkv: &Bound<'py, PyAny>,
    offsets: &Bound<'py, PyAny>,
    heads: usize,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    let qkv = floats("qkv", qkv)?;
    if qkv.ndim() != 2 || !qkv.shape()[1].is_multiple_of(3) {
        return Err(invalid("qkv", "expected shape (rows, 3 * hidden)"));
    }
    let hidden = qkv.shape()[1] / 3;
    let offsets = offsets_arg(offsets)?;
    let values = qkv.as_slice()?;
    let rows = qkv.shape()[0];
    let out = py
        .detach(|| transformer::attention(values, &offsets, heads, hidden))
        .map_err(PyErrWrap)?;
    let out = Array2::from_shape_vec((rows, hidden), out)
        .map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(e.to_string()))?;
    Ok(out.into_pyarray(py))
}

/// `x = layer_norm(x + residual) * gamma + beta` row by row, in place.
#[pyfunction]
#[pyo3(signature = (x, residual, gamma, beta, eps))]
fn add_layer_norm(
    py: Python<'_>,
    x: &Bound<'_, PyAny>,
    residual: Option<&Bound<'_, PyAny>>,
    gamma: &Bound<'_, PyAny>,
    beta: &Bound<'_, PyAny>,
    eps: f32,
) -> PyResult<()> {
    let mut values = floats_mut("x", x)?;
    let residual = residual.map(|r| floats("residual", r)).transpose()?;
    let (gamma, beta) = (floats("gamma", gamma)?, floats("beta", beta)?);
    let x = values.as_slice_mut()?;
    let residual = residual.as_ref().map(|r| r.as_slice()).transpose()?;
    let (gamma, beta) = (gamma.as_slice()?, beta.as_slice()?);
    py.detach(|| transformer::add_layer_norm(x, residual, gamma, beta, eps))
        .map_err(PyErrWrap)?;
    Ok(())
}

pub(crate) type LayerArgs<'py> = (
    Bound<'py, Int8Linear>,
    Bound<'py, Int8Linear>,
    Bound<'py, PyAny>,
    Bound<'py, PyAny>,
    Bound<'py, Int8Linear>,
    Bound<'py, Int8Linear>,
    Bound<'py, PyAny>,
    Bound<'py, PyAny>,
);

/// One int8 encoder layer, held without the GIL: the frozen products (whose `get`
/// needs no GIL) and copies of the four layer norm vectors.
pub(crate) struct EncoderLayer {
    qkv: Py<Int8Linear>,
    out: Py<Int8Linear>,
    up: Py<Int8Linear>,
    down: Py<Int8Linear>,
    /// ln1 gamma, ln1 beta, ln2 gamma, ln2 beta.
    norms: [Vec<f32>; 4],
}

impl EncoderLayer {
    pub(crate) fn view(&self) -> transformer::Int8Layer<'_> {
        transformer::Int8Layer {
            qkv: self.qkv.get().core(),
            out: self.out.get().core(),
            ln1: (&self.norms[0], &self.norms[1]),
            up: self.up.get().core(),
            down: self.down.get().core(),
            ln2: (&self.norms[2], &self.norms[3]),
        }
    }
}

/// The `layers` argument, checked (a bad norm names `layers[i]`).
pub(crate) fn encoder_layers(layers: &[LayerArgs<'_>]) -> PyResult<Vec<EncoderLayer>> {
    let mut out = Vec::with_capacity(layers.len());
    for (i, (qkv, o, g1, b1, up, down, g2, b2)) in layers.iter().enumerate() {
        let field = format!("layers[{i}]");
        let copy = |a: &Bound<'_, PyAny>| -> PyResult<Vec<f32>> {
            Ok(floats(&field, a)?.as_slice()?.to_vec())
        };
        out.push(EncoderLayer {
            qkv: qkv.clone().unbind(),
            out: o.clone().unbind(),
            up: up.clone().unbind(),
            down: down.clone().unbind(),
            norms: [copy(g1)?, copy(b1)?, copy(g2)?, copy(b2)?],
        });
    }
    Ok(out)
}

/// Token ids to sentence embeddings with int8 products, in one call; see `_native.pyi`.
#[pyfunction]
fn int8_encoder<'py>(
    py: Python<'py>,
    ids: &Bound<'py, PyAny>,
    offsets: &Bound<'py, PyAny>,
    embeddings: EmbeddingArgs<'py>,
    eps: f32,
    heads: usize,
    layers: Vec<LayerArgs<'py>>,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    let ids = int64s("ids", ids)?;
    let offsets = offsets_arg(offsets)?;
    let tables = embedding_arrays(&embeddings)?;
    let tables = embedding_tables(&tables, eps)?;
    let layers = encoder_layers(&layers)?;
    let stack: Vec<transformer::Int8Layer<'_>> = layers.iter().map(EncoderLayer::view).collect();
    let hidden = tables.gamma.len();
    // One release of the GIL for the whole pass: a thread that hands it back between
    // the steps may wait for it each time while other threads run Python.
    let pooled = py
        .detach(|| {
            let x = transformer::embed(&ids, &offsets, &tables)?;
            let x = transformer::int8_layers(x, &offsets, heads, eps, &stack)?;
            transformer::mean_pool(&x, &offsets, hidden)
        })
        .map_err(PyErrWrap)?;
    rows(py, pooled, offsets.len().saturating_sub(1), hidden)
}

pub(crate) type EmbeddingArgs<'py> = (
    Bound<'py, PyAny>,
    Bound<'py, PyAny>,
    Bound<'py, PyAny>,
    Bound<'py, PyAny>,
    Bound<'py, PyAny>,
);

/// The five embedding arrays (word, position, token_type, gamma, beta), read-only.
pub(crate) fn embedding_arrays<'py>(
    (word, position, token_type, gamma, beta): &EmbeddingArgs<'py>,
) -> PyResult<Vec<PyReadonlyArrayDyn<'py, f32>>> {
    [
        ("word", word),
        ("position", position),
        ("token_type", token_type),
        ("gamma", gamma),
        ("beta", beta),
    ]
    .into_iter()
    .map(|(field, a)| floats(field, a))
    .collect()
}

pub(crate) fn embedding_tables<'a>(
    arrays: &'a [PyReadonlyArrayDyn<'_, f32>],
    eps: f32,
) -> PyResult<transformer::Embeddings<'a>> {
    let s = arrays
        .iter()
        .map(|a| a.as_slice())
        .collect::<Result<Vec<_>, _>>()?;
    Ok(transformer::Embeddings {
        word: s[0],
        position: s[1],
        token_type: s[2],
        gamma: s[3],
        beta: s[4],
        eps,
    })
}

/// Token rows from ids: word + position + token-type embeddings, layer norm; see
/// `_native.pyi`.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn embed_tokens<'py>(
    py: Python<'py>,
    ids: &Bound<'py, PyAny>,
    offsets: &Bound<'py, PyAny>,
    word: &Bound<'py, PyAny>,
    position: &Bound<'py, PyAny>,
    token_type: &Bound<'py, PyAny>,
    gamma: &Bound<'py, PyAny>,
    beta: &Bound<'py, PyAny>,
    eps: f32,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    let ids = int64s("ids", ids)?;
    let offsets = offsets_arg(offsets)?;
    let arrays = embedding_arrays(&(
        word.clone(),
        position.clone(),
        token_type.clone(),
        gamma.clone(),
        beta.clone(),
    ))?;
    let tables = embedding_tables(&arrays, eps)?;
    let out = py
        .detach(|| transformer::embed(&ids, &offsets, &tables))
        .map_err(PyErrWrap)?;
    rows(py, out, ids.len(), tables.gamma.len())
}

/// Mean of each sequence's rows, L2-normalised; see `_native.pyi`.
#[pyfunction]
fn mean_pool<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    offsets: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    let x = floats("x", x)?;
    if x.ndim() != 2 {
        return Err(invalid("x", "expected shape (rows, hidden)"));
    }
    let hidden = x.shape()[1];
    let offsets = offsets_arg(offsets)?;
    let values = x.as_slice()?;
    let out = py
        .detach(|| transformer::mean_pool(values, &offsets, hidden))
        .map_err(PyErrWrap)?;
    rows(py, out, offsets.len().saturating_sub(1), hidden)
}

/// `values` as a new `(rows, width)` array.
fn rows(
    py: Python<'_>,
    values: Vec<f32>,
    rows: usize,
    width: usize,
) -> PyResult<Bound<'_, PyArray2<f32>>> {
    let out = Array2::from_shape_vec((rows, width), values)
        .map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(e.to_string()))?;
    Ok(out.into_pyarray(py))
}
