//! Python surface of the activation functions: `gelu_in_place`.

use memosd_core::activation;
use memosd_core::Error;
use numpy::{PyArrayDyn, PyArrayMethods, PyUntypedArrayMethods};
use pyo3::prelude::*;

use crate::error::PyErrWrap;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(gelu_in_place, m)?)?;
    Ok(())
}

/// BERT's exact (erf) GELU over every element of `x`, in place, with the GIL released.
#[pyfunction]
fn gelu_in_place(py: Python<'_>, x: &Bound<'_, PyAny>) -> PyResult<()> {
    let array = match x.cast::<PyArrayDyn<f32>>() {
        Ok(a) if a.is_c_contiguous() => a,
        _ => {
            let msg = "expected a writable C-contiguous float32 array";
            return Err(PyErrWrap(Error::invalid("x", msg)).into());
        }
    };
    let mut values = array
        .try_readwrite()
        .map_err(|_| PyErrWrap(Error::invalid("x", "the array is not writable")))?;
    let slice = values.as_slice_mut()?;
    py.detach(|| activation::gelu_in_place(slice));
    Ok(())
}
