//! Python surface of rank fusion: `fuse_rankings`.

use memosd_core::fusion::{self, Ranking, Units};
use numpy::{IntoPyArray, PyArray1};
use pyo3::prelude::*;

use crate::args::vector;
use crate::error::PyErrWrap;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(fuse_rankings, m)?)?;
    Ok(())
}

type RankingArgs<'py> = (Bound<'py, PyAny>, Bound<'py, PyAny>);

/// One ranking from several; see `_native.pyi`.
#[pyfunction]
#[pyo3(signature = (rankings, weights, rrf_k = None, min_spans = None))]
#[allow(clippy::type_complexity)]
fn fuse_rankings<'py>(
    py: Python<'py>,
    rankings: Vec<RankingArgs<'py>>,
    weights: Vec<f64>,
    rrf_k: Option<f64>,
    min_spans: Option<Vec<f64>>,
) -> PyResult<(Bound<'py, PyArray1<u64>>, Bound<'py, PyArray1<f64>>)> {
    let min_spans = min_spans.unwrap_or_else(|| vec![0.0; rankings.len()]);
    if min_spans.len() != rankings.len() {
        let msg = format!("{} spans for {} rankings", min_spans.len(), rankings.len());
        return Err(PyErrWrap(memosd_core::Error::invalid("min_spans", msg)).into());
    }
    let mut arrays = Vec::with_capacity(rankings.len());
    for (i, (keys, scores)) in rankings.iter().enumerate() {
        let field = format!("rankings[{i}]");
        arrays.push((
            vector::<u64>(&field, "a contiguous 1-D uint64 array of keys", keys)?,
            vector::<f64>(&field, "a contiguous 1-D float64 array of scores", scores)?,
        ));
    }
    let rankings = arrays
        .iter()
        .zip(&min_spans)
        .map(|((keys, scores), &min_span)| {
            Ok(Ranking {
                keys: keys.as_slice()?,
                scores: scores.as_slice()?,
                min_span,
            })
        })
        .collect::<PyResult<Vec<_>>>()?;
    let units = rrf_k.map_or(Units::MinMax, Units::ReciprocalRank);
    // About a hundred keys: far less work than handing the GIL over and back.
    let fused = fusion::fuse(&rankings, &weights, units).map_err(PyErrWrap)?;
    let (keys, scores): (Vec<u64>, Vec<f64>) = fused.into_iter().unzip();
    Ok((keys.into_pyarray(py), scores.into_pyarray(py)))
}
