//! Python surface of the int8 matrix product: `Int8Linear`.
//!
//! Arrays must be C-contiguous float32 (checked here, so the error names the
//! argument); they are copied, and packing and products run with the GIL released.

use memosd_core::gemm::{Activation, Int8Linear as CoreLinear, Kernel};
use memosd_core::Error;
use numpy::ndarray::Array2;
use numpy::{
    IntoPyArray, PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2,
    PyUntypedArrayMethods,
};
use pyo3::prelude::*;

use crate::args::unexpected;
use crate::error::{CoreResult, PyErrWrap};

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Int8Linear>()?;
    Ok(())
}

fn matrix<'py>(field: &str, obj: &Bound<'py, PyAny>) -> PyResult<PyReadonlyArray2<'py, f32>> {
    let expected = "a C-contiguous float32 array of 2 dimensions";
    match obj.cast::<PyArray2<f32>>() {
        Ok(a) if a.is_c_contiguous() => Ok(a.readonly()),
        _ => Err(unexpected(field, expected, obj)),
    }
}

/// A linear layer with int8 weights. See `_native.pyi` for the contract.
#[pyclass(frozen, module = "memosd._native")]
pub struct Int8Linear {
    inner: CoreLinear,
}

impl Int8Linear {
    /// The core layer, for Rust code that runs several products in one call.
    pub(crate) fn core(&self) -> &CoreLinear {
        &self.inner
    }
}

#[pymethods]
impl Int8Linear {
    #[new]
    #[pyo3(signature = (weight, bias = None, kernel = None, activation = None))]
    fn new(
        py: Python<'_>,
        weight: &Bound<'_, PyAny>,
        bias: Option<&Bound<'_, PyAny>>,
        kernel: Option<&str>,
        activation: Option<&str>,
    ) -> PyResult<Self> {
        let w = matrix("weight", weight)?;
        let (out_features, in_features) = (w.shape()[0], w.shape()[1]);
        let b: Option<PyReadonlyArray1<'_, f32>> = match bias {
            None => None,
            Some(obj) => match obj.cast::<PyArray1<f32>>() {
                Ok(a) if a.is_c_contiguous() => Some(a.readonly()),
                _ => {
                    return Err(unexpected(
                        "bias",
                        "a C-contiguous float32 array (out,)",
                        obj,
                    ))
                }
            },
        };
        let kernel = match kernel {
            None => None,
            Some(name) => Some(Kernel::parse(name).ok_or_else(|| {
                let names: Vec<&str> = Kernel::ALL.iter().map(|k| k.name()).collect();
                PyErrWrap(Error::invalid(
                    "kernel",
                    format!("expected one of {names:?}, got {name:?}"),
                ))
            })?),
        };
        let activation = match activation {
            None => None,
            Some(name) => Some(Activation::parse(name).ok_or_else(|| {
                PyErrWrap(Error::invalid(
                    "activation",
                    format!("expected 'gelu' or None, got {name:?}"),
                ))
            })?),
        };
        // Copied: with the GIL released, Python code may write to the arrays.
        let w = w.as_slice()?.to_vec();
        let b = match &b {
            Some(b) => Some(b.as_slice()?.to_vec()),
            None => None,
        };
        let inner = py.detach(|| -> CoreResult<CoreLinear> {
            let lin = CoreLinear::new(&w, out_features, in_features, b.as_deref())?
                .with_activation(activation);
            Ok(match kernel {
                Some(k) => lin.with_kernel(k)?,
                None => lin,
            })
        })?;
        Ok(Int8Linear { inner })
    }

    #[getter]
    fn in_features(&self) -> usize {
        self.inner.in_features()
    }

    #[getter]
    fn out_features(&self) -> usize {
        self.inner.out_features()
    }

    #[getter]
    fn kernel(&self) -> &'static str {
        self.inner.kernel().name()
    }

    #[getter]
    fn activation(&self) -> Option<&'static str> {
        self.inner.activation().map(Activation::name)
    }

    fn weight_codes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray2<i8>>> {
        let shape = (self.inner.out_features(), self.inner.in_features());
        let codes = Array2::from_shape_vec(shape, self.inner.weight_codes())
            .map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(e.to_string()))?;
        Ok(codes.into_pyarray(py))
    }

    fn weight_scales<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f32>> {
        self.inner.weight_scales().to_vec().into_pyarray(py)
    }

    fn __call__<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let k = self.inner.in_features();
        let expected = format!("a C-contiguous float32 array of shape (m, {k})");
        let arr = matrix("x", x).map_err(|_| unexpected("x", &expected, x))?;
        if arr.shape()[1] != k {
            return Err(unexpected("x", &expected, x));
        }
        let m = arr.shape()[0];
        // Copied (cheap next to the product): with the GIL released, Python code may write to x.
        let values = arr.as_slice()?.to_vec();
        let out = py
            .detach(|| self.inner.forward(&values, m))
            .map_err(PyErrWrap)?;
        let out = Array2::from_shape_vec((m, self.inner.out_features()), out)
            .map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(e.to_string()))?;
        Ok(out.into_pyarray(py))
    }

    fn __repr__(&self) -> String {
        let activation = match self.inner.activation() {
            Some(a) => format!(", activation={:?}", a.name()),
            None => String::new(),
        };
        format!(
            "Int8Linear(in_features={}, out_features={}, kernel={:?}{activation})",
            self.inner.in_features(),
            self.inner.out_features(),
            self.inner.kernel().name()
        )
    }
}
