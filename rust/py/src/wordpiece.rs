//! Python surface of the BERT tokenizer: `WordPieceTokenizer`.
//!
//! `memosd.tokenizer` reads `tokenizer.json` into its arguments; tokenizing a batch
//! runs with the GIL released.

use memosd_core::wordpiece::{AddedTokens, Normalizer, Tokenizer, WordPiece};
use numpy::{IntoPyArray, PyArray1};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;
use pyo3::types::PyDict;

use crate::args::{invalid, unexpected};
use crate::error::CoreResult;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<WordPieceTokenizer>()?;
    Ok(())
}

/// `obj` as `T`, or an `InvalidArgumentError` naming `field`.
fn arg<'py, T: FromPyObjectOwned<'py>>(
    field: &str,
    expected: &str,
    obj: &Bound<'py, PyAny>,
) -> PyResult<T> {
    obj.extract().map_err(|_| unexpected(field, expected, obj))
}

/// The (token, id) entries of the `vocab` dict.
fn vocab_arg(vocab: &Bound<'_, PyAny>) -> PyResult<Vec<(String, u32)>> {
    let expected = "a dict of str to ids (0 <= id < 2**32)";
    let dict = vocab
        .cast::<PyDict>()
        .map_err(|_| unexpected("vocab", expected, vocab))?;
    let mut entries = Vec::with_capacity(dict.len());
    for (token, id) in dict.iter() {
        match (token.extract(), id.extract()) {
            (Ok(token), Ok(id)) => entries.push((token, id)),
            _ => {
                let entry = format!("{}: {}", token.repr()?, id.repr()?);
                return Err(invalid(
                    "vocab",
                    &format!("expected {expected}, got {entry}"),
                ));
            }
        }
    }
    Ok(entries)
}

/// A BERT WordPiece tokenizer; see `_native.pyi` for the contract.
#[pyclass(frozen, module = "memosd._native")]
pub struct WordPieceTokenizer {
    inner: Tokenizer,
}

impl WordPieceTokenizer {
    /// The core tokenizer, for Rust code that tokenizes on its own.
    pub(crate) fn core(&self) -> &Tokenizer {
        &self.inner
    }
}

#[pymethods]
impl WordPieceTokenizer {
    #[new]
    #[pyo3(signature = (
        vocab,
        *,
        max_tokens,
        unk_token = "[UNK]",
        continuing_subword_prefix = "##",
        max_input_chars_per_word = 100,
        clean_text = true,
        handle_chinese_chars = true,
        strip_accents = true,
        lowercase = true,
        added_tokens = None,
        prefix = None,
        suffix = None,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        vocab: &Bound<'_, PyAny>,
        max_tokens: usize,
        unk_token: &str,
        continuing_subword_prefix: &str,
        max_input_chars_per_word: usize,
        clean_text: bool,
        handle_chinese_chars: bool,
        strip_accents: bool,
        lowercase: bool,
        added_tokens: Option<&Bound<'_, PyAny>>,
        prefix: Option<&Bound<'_, PyAny>>,
        suffix: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let vocab = vocab_arg(vocab)?;
        let ids = |field: &str, obj: Option<&Bound<'_, PyAny>>| -> PyResult<Vec<u32>> {
            obj.map_or(Ok(Vec::new()), |o| arg(field, "a list of ids", o))
        };
        let (prefix, suffix) = (ids("prefix", prefix)?, ids("suffix", suffix)?);
        let added_tokens: Vec<(String, u32)> = match added_tokens {
            None => Vec::new(),
            Some(obj) => arg("added_tokens", "a list of (str, id) pairs", obj)?,
        };
        let normalizer = Normalizer {
            clean_text,
            handle_chinese_chars,
            strip_accents,
            lowercase,
        };
        let (unk, continuing) = (unk_token.to_owned(), continuing_subword_prefix.to_owned());
        let inner = py.detach(|| -> CoreResult<Tokenizer> {
            let model = WordPiece::new(vocab, &unk, &continuing, max_input_chars_per_word)?;
            let added = AddedTokens::new(added_tokens);
            Ok(Tokenizer::new(
                added, normalizer, model, prefix, suffix, max_tokens,
            )?)
        })?;
        Ok(WordPieceTokenizer { inner })
    }

    /// The ids of every text one after another, and where each text starts.
    #[allow(clippy::type_complexity)]
    fn encode_batch<'py>(
        &self,
        py: Python<'py>,
        texts: &Bound<'py, PyAny>,
    ) -> PyResult<(Bound<'py, PyArray1<i64>>, Bound<'py, PyArray1<i64>>)> {
        let texts: Vec<PyBackedStr> = arg("texts", "a list of str", texts)?;
        let (ids, offsets) = py.detach(|| self.inner.encode_batch(&texts));
        Ok((ids.into_pyarray(py), offsets.into_pyarray(py)))
    }
}
