//! Python surface of the activation functions: `gelu_in_place`.

use memosd_core::activation;
use pyo3::prelude::*;

use crate::args;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(gelu_in_place, m)?)?;
    Ok(())
}

/// BERT's exact (erf) GELU over every element of `x`, in place, with the GIL released.
#[pyfunction]
fn gelu_in_place(py: Python<'_>, x: &Bound<'_, PyAny>) -> PyResult<()> {
    let mut values = args::floats_mut("x", x)?;
    let slice = values.as_slice_mut()?;
    py.detach(|| activation::gelu_in_place(slice));
    Ok(())
}
