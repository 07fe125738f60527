//! Python surface of the HNSW index: `HnswIndex` and `IdFilter`.
//!
//! Arrays are checked for dtype and shape here (so the error names what was
//! expected), copied out of numpy, and every index call runs with the GIL released.

use crate::error::{CoreResult, PyErrWrap};
use memosd_core::hnsw::{
    write_file, Allowed, HnswIndex as CoreIndex, IdFilter as CoreFilter, Metric, Params, MISSING_ID,
};
use memosd_core::Error;
use numpy::ndarray::{Array2, Dimension, ShapeError};
use numpy::{
    Element, IntoPyArray, PyArray, PyArray1, PyArray2, PyArrayMethods, PyUntypedArray,
    PyUntypedArrayMethods,
};
use parking_lot::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use std::path::PathBuf;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<HnswIndex>()?;
    m.add_class::<HnswImage>()?;
    m.add_class::<IdFilter>()?;
    m.add("MISSING_ID", MISSING_ID)?;
    Ok(())
}

/// "float64 (10, 384)" for an array, the type name for anything else.
fn describe(obj: &Bound<'_, PyAny>) -> String {
    match obj.cast::<PyUntypedArray>() {
        Ok(a) => {
            let dims: Vec<String> = a.shape().iter().map(|d| d.to_string()).collect();
            let trail = if dims.len() == 1 { "," } else { "" };
            format!("{} ({}{trail})", a.dtype(), dims.join(", "))
        }
        Err(_) => obj
            .get_type()
            .name()
            .map_or_else(|_| "an object".into(), |n| n.to_string()),
    }
}

fn invalid(field: &str, expected: &str, obj: &Bound<'_, PyAny>) -> PyErr {
    PyErrWrap(Error::invalid(
        field,
        format!("expected {expected}, got {}", describe(obj)),
    ))
    .into()
}

/// The elements in row-major order: one copy for C-contiguous arrays (`to_vec` would
/// also take Fortran order as is), element by element otherwise.
fn row_major<T: Element + Copy, D: Dimension>(arr: &Bound<'_, PyArray<T, D>>) -> Vec<T> {
    if arr.is_c_contiguous() {
        if let Ok(values) = arr.to_vec() {
            return values;
        }
    }
    arr.readonly().as_array().iter().copied().collect()
}

/// A 1-D uint64 array, copied.
fn id_array(field: &str, obj: &Bound<'_, PyAny>) -> PyResult<Vec<u64>> {
    let arr = obj
        .cast::<PyArray1<u64>>()
        .map_err(|_| invalid(field, "uint64 array of shape (n,)", obj))?;
    Ok(row_major(arr))
}

/// A (n, dim) float32 array, copied row-major; returns the values and n.
fn row_array(field: &str, obj: &Bound<'_, PyAny>, dim: usize) -> PyResult<(Vec<f32>, usize)> {
    let expected = format!("float32 array of shape (n, {dim})");
    let arr = obj
        .cast::<PyArray2<f32>>()
        .map_err(|_| invalid(field, &expected, obj))?;
    let shape = arr.shape();
    if shape[1] != dim {
        return Err(invalid(field, &expected, obj));
    }
    Ok((row_major(arr), shape[0]))
}

/// An index serialised at one moment (`HnswIndex.image`), to be written later.
#[pyclass(frozen, module = "memosd._native")]
pub struct HnswImage {
    bytes: Vec<u8>,
}

#[pymethods]
impl HnswImage {
    fn save(&self, py: Python<'_>, path: PathBuf) -> CoreResult<()> {
        py.detach(|| write_file(&path, &self.bytes))?;
        Ok(())
    }
}

/// Approximate nearest-neighbour index (HNSW). See `_native.pyi` for the contract.
#[pyclass(frozen, module = "memosd._native")]
pub struct HnswIndex {
    inner: RwLock<CoreIndex>,
    /// Fixed at construction; kept here so argument checks need no lock.
    dim: usize,
}

impl HnswIndex {
    fn read(&self) -> RwLockReadGuard<'_, CoreIndex> {
        self.inner.read()
    }

    /// Runs `change` under the write lock, then hands the lock to the threads waiting
    /// for it (searches, mostly) before this one can take it again: a writer that adds
    /// batch after batch would otherwise often win the race for the lock, and a search
    /// (the daemon's event loop) would wait for several batches.
    fn write<T>(&self, change: impl FnOnce(&mut CoreIndex) -> T) -> T {
        let mut index = self.inner.write();
        let result = change(&mut index);
        RwLockWriteGuard::unlock_fair(index);
        result
    }
}

#[pymethods]
impl HnswIndex {
    #[new]
    #[pyo3(signature = (dim, metric = "cosine", m = 16, ef_construction = 200, max_elements = 0))]
    fn new(
        dim: usize,
        metric: &str,
        m: usize,
        ef_construction: usize,
        max_elements: usize,
    ) -> CoreResult<Self> {
        let params = Params {
            dim,
            metric: Metric::parse(metric)?,
            m,
            ef_construction,
        };
        Ok(HnswIndex {
            inner: RwLock::new(CoreIndex::new(params, max_elements)?),
            dim,
        })
    }

    #[pyo3(signature = (ids, vectors, *, hidden = false))]
    fn add(
        &self,
        py: Python<'_>,
        ids: &Bound<'_, PyAny>,
        vectors: &Bound<'_, PyAny>,
        hidden: bool,
    ) -> PyResult<()> {
        let ids = id_array("ids", ids)?;
        let (vectors, rows) = row_array("vectors", vectors, self.dim)?;
        if rows != ids.len() {
            let msg = format!("expected {} rows (one per id), got {rows}", ids.len());
            return Err(PyErrWrap(Error::invalid("vectors", msg)).into());
        }
        if !hidden {
            return py
                .detach(|| self.write(|index| index.add(&ids, &vectors)))
                .map_err(|e| PyErrWrap(e).into());
        }
        py.detach(|| {
            let mut index = self.inner.write();
            let placed = index.place_hidden(&ids, &vectors)?;
            // Searches walk the graph while it links the rows; no writer gets in between.
            RwLockWriteGuard::downgrade(index).link(placed);
            Ok(())
        })
        .map_err(|e: Error| PyErrWrap(e).into())
    }

    fn reveal(&self, py: Python<'_>, ids: &Bound<'_, PyAny>) -> PyResult<usize> {
        let ids = id_array("ids", ids)?;
        Ok(py.detach(|| self.write(|index| index.reveal(&ids))))
    }

    #[pyo3(signature = (queries, k = 10, ef_search = 64, allowed = None))]
    #[allow(clippy::type_complexity)]
    fn search<'py>(
        &self,
        py: Python<'py>,
        queries: &Bound<'py, PyAny>,
        k: usize,
        ef_search: usize,
        allowed: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<(Bound<'py, PyArray2<u64>>, Bound<'py, PyArray2<f32>>)> {
        let (queries, rows) = row_array("queries", queries, self.dim)?;
        let filter_obj = allowed.map(|a| a.cast::<IdFilter>().ok().cloned());
        let ids = match (&filter_obj, allowed) {
            (Some(None), Some(a)) => Some(
                id_array("allowed", a)
                    .map_err(|_| invalid("allowed", "uint64 array of shape (n,) or IdFilter", a))?,
            ),
            _ => None,
        };
        let restrict = match (&filter_obj, &ids) {
            (Some(Some(f)), _) => Allowed::Filter(&f.get().inner),
            (_, Some(ids)) => Allowed::Ids(ids),
            _ => Allowed::All,
        };
        let (found, dists) = py
            .detach(|| self.read().search(&queries, k, ef_search, restrict))
            .map_err(PyErrWrap)?;
        // The core returns rows x k entries of each; a mismatch would be an internal error.
        let shape_err = |e: ShapeError| PyRuntimeError::new_err(e.to_string());
        let found = Array2::from_shape_vec((rows, k), found).map_err(shape_err)?;
        let dists = Array2::from_shape_vec((rows, k), dists).map_err(shape_err)?;
        Ok((found.into_pyarray(py), dists.into_pyarray(py)))
    }

    fn delete(&self, py: Python<'_>, ids: &Bound<'_, PyAny>) -> PyResult<usize> {
        let ids = id_array("ids", ids)?;
        Ok(py.detach(|| self.write(|index| index.delete(&ids))))
    }

    /// Serialises under the read lock only: adds wait for the copy, not for the disk.
    fn save(&self, py: Python<'_>, path: PathBuf) -> CoreResult<()> {
        self.image(py).save(py, path)
    }

    fn image(&self, py: Python<'_>) -> HnswImage {
        HnswImage {
            bytes: py.detach(|| self.read().to_bytes()),
        }
    }

    #[staticmethod]
    fn load(py: Python<'_>, path: PathBuf) -> CoreResult<Self> {
        let index = py.detach(|| CoreIndex::load(&path))?;
        Ok(HnswIndex {
            dim: index.params().dim,
            inner: RwLock::new(index),
        })
    }

    fn __len__(&self) -> usize {
        self.read().len()
    }

    fn __contains__(&self, id: u64) -> bool {
        self.read().contains(id)
    }

    fn memory_bytes(&self) -> usize {
        self.read().memory_bytes()
    }

    #[getter(dim)]
    fn get_dim(&self) -> usize {
        self.dim
    }

    #[getter]
    fn metric(&self) -> &'static str {
        self.read().params().metric.name()
    }

    #[getter]
    fn m(&self) -> usize {
        self.read().params().m
    }

    #[getter]
    fn ef_construction(&self) -> usize {
        self.read().params().ef_construction
    }

    fn __repr__(&self) -> String {
        let index = self.read();
        let p = index.params();
        format!(
            "HnswIndex(dim={}, metric={:?}, m={}, ef_construction={}, len={})",
            p.dim,
            p.metric.name(),
            p.m,
            p.ef_construction,
            index.len()
        )
    }
}

/// A reusable set of ids to restrict searches to, or to leave out of them.
#[pyclass(frozen, module = "memosd._native")]
pub struct IdFilter {
    inner: CoreFilter,
}

#[pymethods]
impl IdFilter {
    #[new]
    #[pyo3(signature = (ids, *, excluding = false))]
    fn new(ids: &Bound<'_, PyAny>, excluding: bool) -> PyResult<Self> {
        let ids = id_array("ids", ids)?;
        let inner = if excluding {
            CoreFilter::excluding(&ids)
        } else {
            CoreFilter::new(&ids)
        };
        Ok(IdFilter { inner })
    }

    #[getter]
    fn excluding(&self) -> bool {
        self.inner.is_excluding()
    }

    fn __len__(&self) -> usize {
        self.inner.ids().len()
    }
}
