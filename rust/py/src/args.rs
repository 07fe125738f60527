//! Argument checks shared by the Python surface: a failure is an
//! `InvalidArgumentError` that names the argument and says what it got.

use memosd_core::Error;
use numpy::{
    PyArray1, PyArrayDyn, PyArrayMethods, PyReadonlyArray1, PyReadonlyArrayDyn,
    PyReadwriteArrayDyn, PyUntypedArray, PyUntypedArrayMethods,
};
use pyo3::prelude::*;

use crate::error::PyErrWrap;

pub fn invalid(field: &str, message: &str) -> PyErr {
    PyErrWrap(Error::invalid(field, message)).into()
}

/// `expected ..., got <dtype> <shape>` (or the object's type name).
pub fn unexpected(field: &str, expected: &str, obj: &Bound<'_, PyAny>) -> PyErr {
    let got = match obj.cast::<PyUntypedArray>() {
        Ok(a) => format!("{} {:?}", a.dtype(), a.shape()),
        Err(_) => obj
            .get_type()
            .name()
            .map_or_else(|_| "an object".into(), |n| n.to_string()),
    };
    invalid(field, &format!("expected {expected}, got {got}"))
}

/// A C-contiguous float32 array, read-only.
pub fn floats<'py>(field: &str, obj: &Bound<'py, PyAny>) -> PyResult<PyReadonlyArrayDyn<'py, f32>> {
    match obj.cast::<PyArrayDyn<f32>>() {
        Ok(a) if a.is_c_contiguous() => a
            .try_readonly()
            .map_err(|_| invalid(field, "the array is also an argument written in place")),
        _ => Err(unexpected(field, "a C-contiguous float32 array", obj)),
    }
}

/// A contiguous 1-D array of `T`, read-only; `expected` describes it in the error.
pub fn vector<'py, T: numpy::Element>(
    field: &str,
    expected: &str,
    obj: &Bound<'py, PyAny>,
) -> PyResult<PyReadonlyArray1<'py, T>> {
    match obj.cast::<PyArray1<T>>() {
        Ok(a) if a.is_c_contiguous() => a
            .try_readonly()
            .map_err(|_| invalid(field, "the array is being written elsewhere")),
        _ => Err(unexpected(field, expected, obj)),
    }
}

/// A writable C-contiguous float32 array, for functions that work in place.
pub fn floats_mut<'py>(
    field: &str,
    obj: &Bound<'py, PyAny>,
) -> PyResult<PyReadwriteArrayDyn<'py, f32>> {
    let expected = "a writable C-contiguous float32 array";
    match obj.cast::<PyArrayDyn<f32>>() {
        Ok(a) if a.is_c_contiguous() => a
            .try_readwrite()
            .map_err(|_| invalid(field, "the array is not writable")),
        _ => Err(unexpected(field, expected, obj)),
    }
}
