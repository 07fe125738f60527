//! KV-cache packing and paging.
//!
//! - [`layout`]: axis orders (`"LHSD"`, ...) and shapes of KV tensors.
//! - [`dtype`]: element types, kept as they are (f32, f16, bf16).
//! - [`page`]: the checksummed page format.
//! - [`pack`]: keys/values tensors to pages and back, in any pair of layouts.
//! - [`quant`]: the optional int8 encoding with per-channel scales.
//! - [`pool`]: a RAM-budgeted page pool that spills least-recently-used pages.

#[cfg(target_endian = "big")]
compile_error!("KV pages are little-endian and are copied byte for byte");

mod copy;
pub mod dtype;
pub mod layout;
pub mod pack;
pub mod page;
pub mod pool;
mod quant;

#[cfg(test)]
mod tests;

pub use dtype::DType;
pub use layout::{KvShape, Layout};
pub use pack::{inspect, PackOptions, Packer, Sequence, TensorMeta};
pub use page::{Encoding, PageHeader};
pub use pool::{PagePool, PageRef, PoolStats, SpillTarget};
