//! The one conversion from `memosd_core::Error` to Python exceptions.
//! Invalid arguments become `memosd.errors.InvalidArgumentError` (a `ValueError`);
//! everything else maps to its `memosd.errors` class.

use memosd_core::Error;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

pub struct PyErrWrap(pub Error);

impl From<Error> for PyErrWrap {
    fn from(e: Error) -> Self {
        PyErrWrap(e)
    }
}

/// Instantiates `memosd.errors.<class>(*args)`; if that import fails, its error is raised.
fn raise(class: &str, args: Vec<String>) -> PyErr {
    Python::attach(|py| {
        match py
            .import("memosd.errors")
            .and_then(|m| m.getattr(class))
            .and_then(|cls| cls.call1(PyTuple::new(py, args)?))
        {
            Ok(exc) => PyErr::from_value(exc),
            Err(e) => e,
        }
    })
}

impl From<PyErrWrap> for PyErr {
    fn from(w: PyErrWrap) -> PyErr {
        match w.0 {
            Error::InvalidArgument { field, message } => {
                raise("InvalidArgumentError", vec![field, message])
            }
            Error::Corrupt(m) => raise("CorruptDataError", vec![m]),
            Error::NotFound(m) => raise("NotFoundError", vec![m]),
            Error::ResourceExhausted(m) => raise("ResourceExhaustedError", vec![m]),
            Error::Io(e) => PyErr::from(e),
        }
    }
}

/// Shorthand for results of core calls inside `#[pymethods]`.
pub type CoreResult<T> = Result<T, PyErrWrap>;
