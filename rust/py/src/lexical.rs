//! Python surface of the lexical search: the BM25 index `Bm25Index`, `AsciiTerms`,
//! its terms of ASCII text, and `postings_top_k`, the ranking it runs.

use std::sync::{Mutex, MutexGuard};

use memosd_core::ascii_terms::AsciiTerms as CoreTerms;
use memosd_core::bm25::Bm25Index as CoreIndex;
use memosd_core::lexical::{self, Term};
use numpy::{IntoPyArray, PyArray1};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;

use crate::args::{unexpected, vector};
use crate::error::PyErrWrap;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Bm25Index>()?;
    m.add_class::<AsciiTerms>()?;
    m.add_function(wrap_pyfunction!(postings_top_k, m)?)?;
    Ok(())
}

/// Slots and scores as NumPy arrays (int64, float32).
type Ranked<'py> = (Bound<'py, PyArray1<i64>>, Bound<'py, PyArray1<f32>>);

fn ranked(py: Python<'_>, hits: Vec<(u32, f32)>) -> Ranked<'_> {
    let (found, scores): (Vec<i64>, Vec<f32>) =
        hits.into_iter().map(|(s, v)| (i64::from(s), v)).unzip();
    (found.into_pyarray(py), scores.into_pyarray(py))
}

fn terms_arg(field: &str, obj: &Bound<'_, PyAny>) -> PyResult<Vec<PyBackedStr>> {
    obj.extract()
        .map_err(|_| unexpected(field, "a list of str", obj))
}

/// The BM25 index over document slots; see `_native.pyi`.
#[pyclass(frozen, module = "memosd._native")]
pub struct Bm25Index {
    inner: Mutex<CoreIndex>,
}

impl Bm25Index {
    fn index(&self) -> MutexGuard<'_, CoreIndex> {
        // Every method leaves the index whole before it can panic: recover from poison.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[pymethods]
impl Bm25Index {
    #[new]
    fn new() -> Self {
        Bm25Index {
            inner: Mutex::new(CoreIndex::new()),
        }
    }

    fn __len__(&self) -> usize {
        self.index().len()
    }

    fn upsert(&self, slot: u32, tokens: &Bound<'_, PyAny>) -> PyResult<()> {
        let tokens = terms_arg("tokens", tokens)?;
        self.index().upsert(slot, &tokens);
        Ok(())
    }

    fn remove(&self, slot: u32) {
        self.index().remove(slot);
    }

    #[pyo3(signature = (terms, k, allowed = None))]
    fn search<'py>(
        &self,
        py: Python<'py>,
        terms: &Bound<'py, PyAny>,
        k: usize,
        allowed: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Ranked<'py>> {
        let terms = terms_arg("terms", terms)?;
        let allowed = allowed
            .map(|a| vector::<bool>("allowed", "a contiguous 1-D bool array", a))
            .transpose()?;
        let allowed = allowed.as_ref().map(|a| a.as_slice()).transpose()?;
        let hits = self.index().search(&terms, k, allowed);
        Ok(ranked(py, hits))
    }
}

/// The index terms of ASCII text; see `_native.pyi`.
#[pyclass(frozen, module = "memosd._native")]
pub struct AsciiTerms {
    inner: CoreTerms,
}

#[pymethods]
impl AsciiTerms {
    #[new]
    fn new(stop_words: &Bound<'_, PyAny>) -> PyResult<Self> {
        let stop_words: Vec<PyBackedStr> = stop_words
            .try_iter()
            .and_then(|words| words.map(|w| w?.extract()).collect())
            .map_err(|_| unexpected("stop_words", "an iterable of str", stop_words))?;
        Ok(AsciiTerms {
            inner: CoreTerms::new(&stop_words),
        })
    }

    fn __call__(&self, text: &str) -> Option<Vec<String>> {
        self.inner.terms(text)
    }
}

type TermArgs<'py> = (Bound<'py, PyAny>, Bound<'py, PyAny>, f32);

/// The `k` best slots by summed `idf * weight` over the terms; see `_native.pyi`.
#[pyfunction]
#[pyo3(signature = (terms, slots, k, allowed = None))]
#[allow(clippy::type_complexity)]
fn postings_top_k<'py>(
    py: Python<'py>,
    terms: Vec<TermArgs<'py>>,
    slots: usize,
    k: usize,
    allowed: Option<&Bound<'py, PyAny>>,
) -> PyResult<Ranked<'py>> {
    let mut arrays = Vec::with_capacity(terms.len());
    for (i, (s, w, idf)) in terms.iter().enumerate() {
        let field = format!("terms[{i}]");
        arrays.push((
            vector::<u32>(&field, "a contiguous 1-D uint32 array of slots", s)?,
            vector::<f32>(&field, "a contiguous 1-D float32 array of weights", w)?,
            *idf,
        ));
    }
    let allowed = allowed
        .map(|a| vector::<bool>("allowed", "a contiguous 1-D bool array", a))
        .transpose()?;
    let allowed = allowed.as_ref().map(|a| a.as_slice()).transpose()?;
    let terms = arrays
        .iter()
        .map(|(s, w, idf)| {
            Ok(Term {
                slots: s.as_slice()?,
                weights: w.as_slice()?,
                idf: *idf,
            })
        })
        .collect::<PyResult<Vec<_>>>()?;
    let hits = py
        .detach(|| lexical::top_k(&terms, slots, allowed, k))
        .map_err(PyErrWrap)?;
    Ok(ranked(py, hits))
}
