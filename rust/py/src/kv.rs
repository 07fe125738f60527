//! Python surface of the KV packing and paging: `kv_pack`, `kv_unpack`,
//! `kv_page_header`, `kv_verify_page`, `KvPageHeader` and `KvPagePool`.
//!
//! Tensors come in through the buffer protocol (numpy arrays, bytes,
//! memoryviews) and are read in place; they go out as numpy arrays that Rust
//! fills directly. Packing, unpacking and checksumming run with the GIL released.

use std::sync::{Mutex, MutexGuard};

use memosd_core::kv::page::verify;
use memosd_core::kv::{
    inspect, DType, Encoding, KvShape, Layout, PackOptions, Packer, PageHeader, PagePool, PageRef,
    Sequence, SpillTarget, TensorMeta,
};
use memosd_core::Error;
use numpy::{PyArrayDyn, PyArrayMethods};
use pyo3::buffer::PyUntypedBuffer;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use crate::error::{CoreResult, PyErrWrap};

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(kv_pack, m)?)?;
    m.add_function(wrap_pyfunction!(kv_unpack, m)?)?;
    m.add_function(wrap_pyfunction!(kv_page_header, m)?)?;
    m.add_function(wrap_pyfunction!(kv_verify_page, m)?)?;
    m.add_class::<KvPageHeader>()?;
    m.add_class::<KvPagePool>()?;
    Ok(())
}

/// A C-contiguous buffer borrowed from a Python object for the duration of a call.
struct Borrowed(PyUntypedBuffer);

impl Borrowed {
    /// Borrows `obj`; `item_size` is the element size it must have (bytes are always fine).
    fn new(field: &str, obj: &Bound<'_, PyAny>, item_size: Option<usize>) -> PyResult<Self> {
        let buf = PyUntypedBuffer::get(obj).map_err(|_| {
            PyErrWrap(Error::invalid(
                field,
                "expected a buffer (numpy array, bytes, memoryview)",
            ))
        })?;
        if !buf.is_c_contiguous() {
            return Err(PyErrWrap(Error::invalid(field, "buffer must be C-contiguous")).into());
        }
        if let Some(size) = item_size {
            if buf.item_size() != size && buf.item_size() != 1 {
                let msg = format!("items of {} bytes, the dtype has {size}", buf.item_size());
                return Err(PyErrWrap(Error::invalid(field, msg)).into());
            }
        }
        Ok(Borrowed(buf))
    }

    fn bytes(&self) -> &[u8] {
        let len = self.0.len_bytes();
        if len == 0 {
            return &[];
        }
        // SAFETY: the buffer is C-contiguous, `len` bytes long and stays exported
        // (so its memory stays alive) for as long as `self` lives.
        unsafe { std::slice::from_raw_parts(self.0.buf_ptr() as *const u8, len) }
    }
}

fn tensor_meta(layout: &str, dtype: &str, shape: Vec<usize>) -> CoreResult<TensorMeta> {
    let layout = Layout::parse(layout)?;
    Ok(TensorMeta {
        layout,
        dtype: DType::parse(dtype)?,
        shape: KvShape::from_dims(layout, &shape)?,
    })
}

fn pack_options(
    tokens_per_page: usize,
    encoding: &str,
    sequence_id: u64,
) -> CoreResult<PackOptions> {
    Ok(PackOptions {
        tokens_per_page,
        encoding: Encoding::parse(encoding)?,
        sequence_id,
    })
}

/// Packs keys and values (each of `shape`, given in `layout` order) into pages.
#[pyfunction]
#[pyo3(signature = (keys, values, *, layout, dtype, shape, tokens_per_page, encoding = "raw", sequence_id = 0))]
#[allow(clippy::too_many_arguments)]
fn kv_pack<'py>(
    py: Python<'py>,
    keys: &Bound<'py, PyAny>,
    values: &Bound<'py, PyAny>,
    layout: &str,
    dtype: &str,
    shape: Vec<usize>,
    tokens_per_page: usize,
    encoding: &str,
    sequence_id: u64,
) -> PyResult<Vec<Bound<'py, PyBytes>>> {
    let meta = tensor_meta(layout, dtype, shape)?;
    let opts = pack_options(tokens_per_page, encoding, sequence_id)?;
    let keys = Borrowed::new("keys", keys, Some(meta.dtype.size()))?;
    let values = Borrowed::new("values", values, Some(meta.dtype.size()))?;
    let packer = Packer::new(keys.bytes(), values.bytes(), meta, opts).map_err(PyErrWrap)?;
    (0..packer.page_count())
        .map(|i| {
            // Each page is written straight into its bytes object, GIL released.
            PyBytes::new_with(py, packer.page_len(i), |out| {
                py.detach(|| packer.pack_page(i, out))
                    .map_err(|e| PyErrWrap(e).into())
            })
        })
        .collect()
}

/// Allocates the two output arrays, fills them with the GIL released, and gives
/// them the element type numpy has for `dtype` (bf16 stays uint16).
fn unpack_to_arrays<'py>(
    py: Python<'py>,
    seq: &Sequence,
    pages: &[&[u8]],
    layout: Layout,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    let dims = layout.dims(&seq.shape).to_vec();
    // Returns the array with the address and byte length of its data.
    let alloc = |py: Python<'py>| -> (Bound<'py, PyAny>, usize, usize) {
        let bytes = seq.meta(layout).byte_len().unwrap_or(0);
        // SAFETY (both arms): every element is written by `unpack_into` before
        // the arrays are handed out; on error they are dropped unread.
        match seq.dtype {
            DType::F32 => {
                let a = unsafe { PyArrayDyn::<f32>::new(py, dims.clone(), false) };
                let ptr = a.data() as usize;
                (a.into_any(), ptr, bytes)
            }
            DType::F16 | DType::BF16 => {
                let a = unsafe { PyArrayDyn::<u16>::new(py, dims.clone(), false) };
                let ptr = a.data() as usize;
                (a.into_any(), ptr, bytes)
            }
        }
    };
    let ((keys, kp, kl), (values, vp, vl)) = (alloc(py), alloc(py));
    py.detach(|| {
        // SAFETY: the two arrays are distinct allocations of the given lengths,
        // alive for this call and not yet visible to any other code.
        let k = unsafe { std::slice::from_raw_parts_mut(kp as *mut u8, kl) };
        let v = unsafe { std::slice::from_raw_parts_mut(vp as *mut u8, vl) };
        seq.unpack_into(pages, layout, k, v)
    })
    .map_err(PyErrWrap)?;
    if seq.dtype == DType::F16 {
        return Ok((
            keys.call_method1("view", ("float16",))?,
            values.call_method1("view", ("float16",))?,
        ));
    }
    Ok((keys, values))
}

fn out_layout(seq: &Sequence, layout: Option<&str>) -> CoreResult<Layout> {
    Ok(match layout {
        Some(name) => Layout::parse(name)?,
        None => seq.layout,
    })
}

/// Unpacks the pages of one sequence, in order, into `(keys, values)` arrays.
#[pyfunction]
#[pyo3(signature = (pages, layout = None))]
fn kv_unpack<'py>(
    py: Python<'py>,
    pages: Vec<Bound<'py, PyAny>>,
    layout: Option<&str>,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    let borrowed = pages
        .iter()
        .enumerate()
        .map(|(i, p)| Borrowed::new(&format!("pages[{i}]"), p, None))
        .collect::<PyResult<Vec<_>>>()?;
    let slices: Vec<&[u8]> = borrowed.iter().map(Borrowed::bytes).collect();
    let seq = inspect(&slices).map_err(PyErrWrap)?;
    let layout = out_layout(&seq, layout)?;
    unpack_to_arrays(py, &seq, &slices, layout)
}

/// Decodes a page's header (checked against its own checksum) without reading the payload.
#[pyfunction]
fn kv_page_header(page: &Bound<'_, PyAny>) -> PyResult<KvPageHeader> {
    let page = Borrowed::new("page", page, None)?;
    let header = PageHeader::decode(page.bytes()).map_err(PyErrWrap)?;
    Ok(KvPageHeader(header))
}

/// Checks a whole page (header and payload checksums) and returns its header.
#[pyfunction]
fn kv_verify_page(py: Python<'_>, page: &Bound<'_, PyAny>) -> PyResult<KvPageHeader> {
    let page = Borrowed::new("page", page, None)?;
    let bytes = page.bytes();
    let header = py.detach(|| verify(bytes)).map_err(PyErrWrap)?;
    Ok(KvPageHeader(header))
}

/// The decoded header of one page.
#[pyclass(frozen, module = "memosd._native")]
pub struct KvPageHeader(PageHeader);

#[pymethods]
impl KvPageHeader {
    #[getter]
    fn dtype(&self) -> &'static str {
        self.0.dtype.name()
    }
    #[getter]
    fn encoding(&self) -> &'static str {
        self.0.encoding.name()
    }
    #[getter]
    fn layout(&self) -> String {
        self.0.layout.name()
    }
    /// Sizes of this page's block in its layout's order.
    #[getter]
    fn shape(&self) -> Vec<usize> {
        self.0.layout.dims(&self.0.shape).to_vec()
    }
    #[getter]
    fn token_start(&self) -> usize {
        self.0.token_start
    }
    #[getter]
    fn token_count(&self) -> usize {
        self.0.shape.tokens
    }
    #[getter]
    fn total_tokens(&self) -> usize {
        self.0.total_tokens
    }
    #[getter]
    fn sequence_id(&self) -> u64 {
        self.0.sequence_id
    }
    #[getter]
    fn page_len(&self) -> usize {
        self.0.page_len()
    }
    fn __repr__(&self) -> String {
        format!(
            "KvPageHeader({} {} {} {:?} tokens {}..{} of {})",
            self.0.layout.name(),
            self.0.dtype.name(),
            self.0.encoding.name(),
            self.shape(),
            self.0.token_start,
            self.0.token_start + self.0.shape.tokens,
            self.0.total_tokens
        )
    }
}

/// Errors of pool calls: the core's, or whatever a blob callback raised.
enum PoolError {
    Core(Error),
    Py(PyErr),
}

impl From<Error> for PoolError {
    fn from(e: Error) -> Self {
        PoolError::Core(e)
    }
}

impl From<PoolError> for PyErr {
    fn from(e: PoolError) -> PyErr {
        match e {
            PoolError::Core(e) => PyErrWrap(e).into(),
            PoolError::Py(e) => e,
        }
    }
}

/// The store's blob table, reached through two Python callables.
struct BlobCallbacks {
    put: Py<PyAny>,
    get: Py<PyAny>,
}

impl SpillTarget for BlobCallbacks {
    type Error = PoolError;

    fn put(&mut self, page: &[u8]) -> Result<String, PoolError> {
        Python::attach(|py| {
            let digest = self.put.call1(py, (PyBytes::new(py, page),))?;
            digest.extract::<String>(py)
        })
        .map_err(PoolError::Py)
    }

    fn get(&mut self, digest: &str) -> Result<Vec<u8>, PoolError> {
        Python::attach(|py| {
            let blob = self.get.call1(py, (digest,))?;
            let page = Borrowed::new("get_blob", blob.bind(py), None)?;
            Ok(page.bytes().to_vec())
        })
        .map_err(PoolError::Py)
    }
}

/// A RAM-budgeted page pool spilling to the store's blob table; see `_native.pyi`.
#[pyclass(frozen, module = "memosd._native")]
pub struct KvPagePool {
    inner: Mutex<PagePool<BlobCallbacks>>,
}

impl KvPagePool {
    // Core calls do not panic on user input, so a poisoned lock still guards a
    // consistent pool. The lock is only ever taken with the GIL released (blob
    // callbacks take the GIL while it is held).
    fn lock(&self) -> MutexGuard<'_, PagePool<BlobCallbacks>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn with<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut PagePool<BlobCallbacks>) -> Result<T, PoolError> + Send,
    ) -> PyResult<T> {
        py.detach(|| f(&mut self.lock())).map_err(PyErr::from)
    }
}

#[pymethods]
impl KvPagePool {
    #[new]
    fn new(budget_bytes: usize, put_blob: Py<PyAny>, get_blob: Py<PyAny>) -> Self {
        let target = BlobCallbacks {
            put: put_blob,
            get: get_blob,
        };
        KvPagePool {
            inner: Mutex::new(PagePool::new(budget_bytes, target)),
        }
    }

    #[getter]
    fn budget_bytes(&self, py: Python<'_>) -> usize {
        py.detach(|| self.lock().budget())
    }

    fn set_budget(&self, py: Python<'_>, budget_bytes: usize) -> PyResult<()> {
        self.with(py, |pool| pool.set_budget(budget_bytes))
    }

    #[getter]
    fn resident_bytes(&self, py: Python<'_>) -> usize {
        py.detach(|| self.lock().resident_bytes())
    }

    #[getter]
    fn resident_pages(&self, py: Python<'_>) -> usize {
        py.detach(|| self.lock().resident_pages())
    }

    fn __len__(&self, py: Python<'_>) -> usize {
        py.detach(|| self.lock().len())
    }

    fn __contains__(&self, py: Python<'_>, key: &str) -> bool {
        py.detach(|| self.lock().contains(key))
    }

    fn is_resident(&self, py: Python<'_>, key: &str) -> bool {
        py.detach(|| self.lock().is_resident(key))
    }

    /// Packs keys and values into pages stored under `prefix/0`, `prefix/1`, ...
    #[pyo3(signature = (prefix, keys, values, *, layout, dtype, shape, tokens_per_page, encoding = "raw", sequence_id = 0))]
    #[allow(clippy::too_many_arguments)]
    fn pack(
        &self,
        py: Python<'_>,
        prefix: &str,
        keys: &Bound<'_, PyAny>,
        values: &Bound<'_, PyAny>,
        layout: &str,
        dtype: &str,
        shape: Vec<usize>,
        tokens_per_page: usize,
        encoding: &str,
        sequence_id: u64,
    ) -> PyResult<Vec<String>> {
        let meta = tensor_meta(layout, dtype, shape)?;
        let opts = pack_options(tokens_per_page, encoding, sequence_id)?;
        let keys = Borrowed::new("keys", keys, Some(meta.dtype.size()))?;
        let values = Borrowed::new("values", values, Some(meta.dtype.size()))?;
        let (kb, vb) = (keys.bytes(), values.bytes());
        let pages = py
            .detach(|| Packer::new(kb, vb, meta, opts)?.pack_all())
            .map_err(PyErrWrap)?;
        let names: Vec<String> = (0..pages.len()).map(|i| format!("{prefix}/{i}")).collect();
        let keys_out = names.clone();
        self.with(py, move |pool| {
            for (name, page) in keys_out.iter().zip(pages) {
                pool.insert(name, page)?;
            }
            Ok(())
        })?;
        Ok(names)
    }

    /// Adds a page (checked first) under `key`, replacing any page there.
    fn insert(&self, py: Python<'_>, key: &str, page: &Bound<'_, PyAny>) -> PyResult<()> {
        let page = Borrowed::new("page", page, None)?.bytes().to_vec();
        self.with(py, |pool| pool.insert(key, page))
    }

    /// Records that `key`'s page is in the blob table under `digest`.
    fn register(&self, py: Python<'_>, key: &str, digest: &str) {
        py.detach(|| self.lock().register(key, digest))
    }

    /// The page under `key` as bytes, loaded back from the blob table if needed.
    fn get<'py>(&self, py: Python<'py>, key: &str) -> PyResult<Bound<'py, PyBytes>> {
        let page = self.with(py, |pool| pool.get(key))?;
        Ok(PyBytes::new(py, &page))
    }

    /// Writes `key`'s page to the blob table if it is not there yet; returns its digest.
    fn persist(&self, py: Python<'_>, key: &str) -> PyResult<String> {
        self.with(py, |pool| pool.persist(key))
    }

    fn digest(&self, py: Python<'_>, key: &str) -> Option<String> {
        py.detach(|| self.lock().digest(key))
    }

    fn remove(&self, py: Python<'_>, key: &str) -> bool {
        py.detach(|| self.lock().remove(key))
    }

    /// Unpacks the pages under `keys` (one sequence, in order) into `(keys, values)`.
    #[pyo3(signature = (keys, layout = None))]
    fn unpack<'py>(
        &self,
        py: Python<'py>,
        keys: Vec<String>,
        layout: Option<&str>,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
        let pages: Vec<PageRef> = self.with(py, |pool| {
            keys.iter()
                .map(|k| pool.get(k))
                .collect::<Result<Vec<_>, _>>()
        })?;
        let slices: Vec<&[u8]> = pages.iter().map(|p| p.as_slice()).collect();
        let seq = inspect(&slices).map_err(PyErrWrap)?;
        let layout = out_layout(&seq, layout)?;
        unpack_to_arrays(py, &seq, &slices, layout)
    }

    /// Counters: hits, loads, spills, evictions, and the current residency.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let (stats, bytes, pages, len) = py.detach(|| {
            let pool = self.lock();
            (
                pool.stats(),
                pool.resident_bytes(),
                pool.resident_pages(),
                pool.len(),
            )
        });
        let d = PyDict::new(py);
        d.set_item("hits", stats.hits)?;
        d.set_item("loads", stats.loads)?;
        d.set_item("spills", stats.spills)?;
        d.set_item("evictions", stats.evictions)?;
        d.set_item("resident_bytes", bytes)?;
        d.set_item("resident_pages", pages)?;
        d.set_item("pages", len)?;
        Ok(d)
    }
}
