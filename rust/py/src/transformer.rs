//! Python surface of the encoder-layer helpers: `attention` and `add_layer_norm`.
//!
//! Arrays must be C-contiguous float32 (offsets int64); the work runs with the GIL
//! released.

use memosd_core::transformer;
use memosd_core::Error;
use numpy::ndarray::Array2;
use numpy::{
    IntoPyArray, PyArray1, PyArray2, PyArrayDyn, PyArrayMethods, PyReadonlyArrayDyn,
    PyUntypedArrayMethods,
};
use pyo3::prelude::*;

use crate::error::PyErrWrap;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(attention, m)?)?;
    m.add_function(wrap_pyfunction!(add_layer_norm, m)?)?;
    Ok(())
}

fn invalid(field: &str, message: &str) -> PyErr {
    PyErrWrap(Error::invalid(field, message)).into()
}

fn floats<'py>(field: &str, obj: &Bound<'py, PyAny>) -> PyResult<PyReadonlyArrayDyn<'py, f32>> {
    match obj.cast::<PyArrayDyn<f32>>() {
        Ok(a) if a.is_c_contiguous() => Ok(a.readonly()),
        _ => Err(invalid(field, "expected a C-contiguous float32 array")),
    }
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
    let offsets = match offsets.cast::<PyArray1<i64>>() {
        Ok(a) => a.to_vec()?,
        Err(_) => return Err(invalid("offsets", "expected a 1-D int64 array")),
    };
    if offsets.iter().any(|&o| o < 0) {
        return Err(invalid("offsets", "must not be negative"));
    }
    let offsets: Vec<usize> = offsets.into_iter().map(|o| o as usize).collect();
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
    let array = match x.cast::<PyArrayDyn<f32>>() {
        Ok(a) if a.is_c_contiguous() => a,
        _ => {
            return Err(invalid(
                "x",
                "expected a writable C-contiguous float32 array",
            ))
        }
    };
    let residual = residual.map(|r| floats("residual", r)).transpose()?;
    let (gamma, beta) = (floats("gamma", gamma)?, floats("beta", beta)?);
    let mut values = array
        .try_readwrite()
        .map_err(|_| invalid("x", "the array is not writable"))?;
    let x = values.as_slice_mut()?;
    let residual = residual.as_ref().map(|r| r.as_slice()).transpose()?;
    let (gamma, beta) = (gamma.as_slice()?, beta.as_slice()?);
    py.detach(|| transformer::add_layer_norm(x, residual, gamma, beta, eps))
        .map_err(PyErrWrap)?;
    Ok(())
}
