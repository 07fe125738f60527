//! `memosd._native`: the thin PyO3 layer over memosd-core.

use pyo3::prelude::*;

mod activation;
mod args;
mod error;
mod fusion;
mod gemm;
mod hnsw;
mod kv;
mod lexical;
mod query_encoder;
mod transformer;
mod wordpiece;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    activation::register(m)?;
    fusion::register(m)?;
    gemm::register(m)?;
    hnsw::register(m)?;
    kv::register(m)?;
    lexical::register(m)?;
    query_encoder::register(m)?;
    transformer::register(m)?;
    wordpiece::register(m)?;
    Ok(())
}
