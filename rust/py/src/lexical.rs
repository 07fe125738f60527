//! Python surface of the lexical scoring: `postings_top_k`.

use memosd_core::lexical::{self, Term};
use numpy::{IntoPyArray, PyArray1};
use pyo3::prelude::*;

use crate::args::vector;
use crate::error::PyErrWrap;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(postings_top_k, m)?)?;
    Ok(())
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
) -> PyResult<(Bound<'py, PyArray1<i64>>, Bound<'py, PyArray1<f32>>)> {
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
    let (found, scores): (Vec<i64>, Vec<f32>) =
        hits.into_iter().map(|(s, v)| (s as i64, v)).unzip();
    Ok((found.into_pyarray(py), scores.into_pyarray(py)))
}
