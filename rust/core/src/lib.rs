//! memosd-core: the pure-Rust core of memosd.
//!
//! - [`hnsw`]: approximate nearest-neighbour search (HNSW) with in-graph filtering.
//! - [`activation`]: BERT's GELU, vectorised.
//! - [`batching`]: a worker thread that serves a queue in batches (query embedding).
//! - [`gemm`]: int8 matrix products (per-row activation, per-column weight scales).
//! - [`transformer`]: ragged self-attention and layer norm of a BERT encoder layer.
//! - [`bm25`]: the BM25 inverted index, updated incrementally.
//! - [`ascii_terms`]: its terms of ASCII text, as the Python tokenizer makes them.
//! - [`lexical`]: the top-k sums of weighted postings (BM25 scoring).
//! - [`fusion`]: one ranking from several (HYBRID search).
//! - [`wordpiece`]: BERT's WordPiece tokenizer (HF tokenizers' ids, without HF).
//! - [`kv`]: packing of per-layer KV-cache tensors into checksummed pages, and a page pool.
//!
//! No Python here: the PyO3 layer lives in `rust/py`.

pub mod activation;
pub mod ascii_terms;
pub mod batching;
pub mod bm25;
pub mod error;
pub mod fusion;
pub mod gemm;
pub mod hnsw;
pub mod kv;
pub mod lexical;
mod simd;
pub mod transformer;
pub mod wordpiece;

pub use error::{Error, Result};
