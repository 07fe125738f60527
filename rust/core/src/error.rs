//! The one error type of memosd-core. `rust/py` maps each variant to a
//! `memosd.errors` exception (or `ValueError`) in a single `From` impl.

use thiserror::Error as ThisError;

#[derive(Debug, ThisError)]
pub enum Error {
    /// Bad input; `field` names the parameter (dtype, shape, k, ...).
    #[error("{field}: {message}")]
    InvalidArgument { field: String, message: String },
    /// Stored bytes failed validation (truncated, bad checksum, unknown version).
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// Something asked for does not exist (a page, an id).
    #[error("not found: {0}")]
    NotFound(String),
    /// A limit was reached.
    #[error("resource exhausted: {0}")]
    ResourceExhausted(String),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidArgument {
            field: field.into(),
            message: message.into(),
        }
    }
}
