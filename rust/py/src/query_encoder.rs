//! Python surface of the query-embedding worker: `QueryEncoder`.
//!
//! The daemon's event loop submits each search query and goes on serving; a native
//! thread (`memosd_core::batching`) embeds the queries waiting, several per forward
//! pass, and never needs the GIL. The event loop watches `fileno()` and collects the
//! vectors with `take()`. Tokens and their embedding rows are computed at `submit`
//! (microseconds, with the GIL), so the worker holds no Python objects but the tags
//! it hands back and the frozen `Int8Linear` layers.

use memosd_core::batching::BatchWorker;
use memosd_core::transformer::{self, Int8Layer};
use numpy::ndarray::Array1;
use numpy::{IntoPyArray, PyArrayDyn, PyArrayMethods};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;
use pyo3::types::PyList;

use crate::args::{invalid, unexpected};
use crate::error::PyErrWrap;
use crate::transformer::{
    embedding_arrays, embedding_tables, encoder_layers, EmbeddingArgs, EncoderLayer, LayerArgs,
};
use crate::wordpiece::WordPieceTokenizer;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<QueryEncoder>()?;
    Ok(())
}

/// A query's token rows in; its sentence embedding (or why it failed) out.
type Worker = BatchWorker<Vec<f32>, Result<Vec<f32>, String>, Py<PyAny>>;

/// See `_native.pyi` for the contract.
#[pyclass(frozen, module = "memosd._native")]
pub struct QueryEncoder {
    worker: Worker,
    tokenizer: Py<WordPieceTokenizer>,
    /// word, position, token_type, gamma, beta (borrowed read-only by each `submit`).
    tables: Vec<Py<PyArrayDyn<f32>>>,
    eps: f32,
}

#[pymethods]
impl QueryEncoder {
    #[new]
    #[pyo3(signature = (tokenizer, embeddings, eps, heads, layers, max_batch = 32))]
    fn new<'py>(
        py: Python<'py>,
        tokenizer: Py<WordPieceTokenizer>,
        embeddings: EmbeddingArgs<'py>,
        eps: f32,
        heads: usize,
        layers: Vec<LayerArgs<'py>>,
        max_batch: usize,
    ) -> PyResult<Self> {
        let arrays = embedding_arrays(&embeddings)?;
        let hidden = embedding_tables(&arrays, eps)?.gamma.len();
        if hidden == 0 || heads == 0 || !hidden.is_multiple_of(heads) {
            return Err(invalid("heads", &format!("must divide the width {hidden}")));
        }
        let tables = [
            &embeddings.0,
            &embeddings.1,
            &embeddings.2,
            &embeddings.3,
            &embeddings.4,
        ]
        .map(|a| a.cast::<PyArrayDyn<f32>>().map(|a| a.clone().unbind()))
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
        let stack = encoder_layers(&layers)?;
        // One row through the layers: a layer of the wrong shape fails here, naming
        // itself, rather than failing every query later.
        if let Some(Err(why)) = encode(vec![vec![0.0; hidden]], &stack, hidden, heads, eps).pop() {
            return Err(invalid("layers", &why));
        }
        let run = move |jobs: Vec<Vec<f32>>| encode(jobs, &stack, hidden, heads, eps);
        let worker = py
            .detach(|| {
                Worker::start("memosd-queries", max_batch, run, |why| {
                    Err(format!("query embedding failed: {why}"))
                })
            })
            .map_err(PyErrWrap)?;
        Ok(QueryEncoder {
            worker,
            tokenizer,
            tables,
            eps,
        })
    }

    /// Queue `text`; `take` later hands back `(tag, embedding)`.
    fn submit(&self, py: Python<'_>, tag: Py<PyAny>, text: &Bound<'_, PyAny>) -> PyResult<()> {
        let text: PyBackedStr = text
            .extract()
            .map_err(|_| unexpected("text", "a str", text))?;
        let (ids, offsets) = self.tokenizer.get().core().encode_batch(&[&*text]);
        let offsets: Vec<usize> = offsets.into_iter().map(|o| o as usize).collect();
        let arrays = self
            .tables
            .iter()
            .map(|t| t.bind(py).try_readonly())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| invalid("embeddings", "a table is being written elsewhere"))?;
        let tables = embedding_tables(&arrays, self.eps)?;
        let rows = transformer::embed(&ids, &offsets, &tables).map_err(PyErrWrap)?;
        self.worker.submit(tag, rows).map_err(PyErrWrap)?;
        Ok(())
    }

    /// Every `(tag, embedding or exception)` finished so far; never blocks.
    fn take<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let done = self.worker.take();
        let items = done.into_iter().map(|(tag, result)| {
            let value = match result {
                Ok(vector) => Array1::from_vec(vector).into_pyarray(py).into_any(),
                Err(message) => PyRuntimeError::new_err(message)
                    .into_value(py)
                    .into_bound(py)
                    .into_any(),
            };
            (tag, value)
        });
        PyList::new(py, items.collect::<Vec<_>>())
    }

    /// The descriptor an event loop watches: readable while results wait.
    fn fileno(&self) -> i32 {
        self.worker.ready_fd()
    }

    /// Finish the queued queries (their results stay for `take`) and stop the thread.
    fn close(&self, py: Python<'_>) {
        py.detach(|| self.worker.close());
    }
}

/// The sentence embeddings of a batch of queries, each given as its token rows.
fn encode(
    jobs: Vec<Vec<f32>>,
    layers: &[EncoderLayer],
    hidden: usize,
    heads: usize,
    eps: f32,
) -> Vec<Result<Vec<f32>, String>> {
    let mut offsets = Vec::with_capacity(jobs.len() + 1);
    offsets.push(0);
    let mut x = Vec::with_capacity(jobs.iter().map(Vec::len).sum());
    for rows in &jobs {
        x.extend_from_slice(rows);
        offsets.push(x.len() / hidden);
    }
    let stack: Vec<Int8Layer<'_>> = layers.iter().map(EncoderLayer::view).collect();
    let pooled = transformer::int8_layers(x, &offsets, heads, eps, &stack)
        .and_then(|x| transformer::mean_pool(&x, &offsets, hidden));
    match pooled {
        Ok(pooled) => pooled
            .chunks_exact(hidden)
            .map(|v| Ok(v.to_vec()))
            .collect(),
        Err(e) => {
            let message = format!("query embedding failed: {e}");
            jobs.iter().map(|_| Err(message.clone())).collect()
        }
    }
}
