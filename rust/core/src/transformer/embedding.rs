//! The two ends of the encoder: token rows from their ids (word + position +
//! token-type embeddings, then layer norm), and sentence embeddings from the last
//! layer's rows (mean over each sequence, L2-normalised).
//!
//! In NumPy these were a dozen array operations and temporaries per batch, about as
//! long as two of the six int8 layers for 8 short queries.

use super::attention::check_offsets;
use super::layer_norm::add_layer_norm;
use crate::error::{Error, Result};
use crate::simd;

/// The embedding tables of a BERT model, each row-major with rows of `gamma.len()`
/// values.
pub struct Embeddings<'a> {
    pub word: &'a [f32],
    pub position: &'a [f32],
    /// The token-type row that every token gets (type 0).
    pub token_type: &'a [f32],
    /// The embedding layer norm.
    pub gamma: &'a [f32],
    pub beta: &'a [f32],
    pub eps: f32,
}

/// Token rows of a ragged batch: row r of sequence i (`offsets[i] + p`) is
/// `layer_norm((word[ids[r]] + position[p]) + token_type)`.
pub fn embed(ids: &[i64], offsets: &[usize], tables: &Embeddings<'_>) -> Result<Vec<f32>> {
    let hidden = tables.gamma.len();
    check_offsets(offsets, ids.len(), 1, "ids")?;
    if hidden == 0 || tables.token_type.len() != hidden {
        let msg = format!("{} values, expected {hidden}", tables.token_type.len());
        return Err(Error::invalid("token_type", msg));
    }
    let table_rows = |field: &'static str, table: &[f32]| {
        if table.len().is_multiple_of(hidden) {
            Ok(table.len() / hidden)
        } else {
            let msg = format!("{} values are not rows of {hidden}", table.len());
            Err(Error::invalid(field, msg))
        }
    };
    let words = table_rows("word", tables.word)?;
    let positions = table_rows("position", tables.position)?;
    if let Some(&id) = ids.iter().find(|&&id| id < 0 || id as usize >= words) {
        let msg = format!("token id {id} outside the {words} rows of the word table");
        return Err(Error::invalid("ids", msg));
    }
    if let Some(w) = offsets.windows(2).find(|w| w[1] - w[0] > positions) {
        let msg = format!("{} tokens, the position table has {positions}", w[1] - w[0]);
        return Err(Error::invalid("ids", msg));
    }
    let mut x = vec![0f32; ids.len() * hidden];
    for w in offsets.windows(2) {
        let rows = x[w[0] * hidden..w[1] * hidden].chunks_exact_mut(hidden);
        for ((row, &id), p) in rows.zip(&ids[w[0]..w[1]]).zip(0..) {
            let word = &tables.word[id as usize * hidden..][..hidden];
            let position = &tables.position[p * hidden..][..hidden];
            for (((v, &a), &b), &c) in row
                .iter_mut()
                .zip(word)
                .zip(position)
                .zip(tables.token_type)
            {
                *v = (a + b) + c;
            }
        }
    }
    add_layer_norm(&mut x, None, tables.gamma, tables.beta, tables.eps)?;
    Ok(x)
}

/// Sentence embeddings: per sequence of `x` (rows of `hidden`), the mean of its rows
/// (summed in row order), divided by its L2 norm (at least 1e-12). An empty
/// sequence gives zeros (a tokenizer's sequences never are: they hold [CLS] and
/// [SEP]).
pub fn mean_pool(x: &[f32], offsets: &[usize], hidden: usize) -> Result<Vec<f32>> {
    if hidden == 0 {
        return Err(Error::invalid("x", "rows of no values"));
    }
    check_offsets(offsets, x.len(), hidden, "x")?;
    let mut out = vec![0f32; offsets.len().saturating_sub(1) * hidden];
    for (pooled, w) in out.chunks_exact_mut(hidden).zip(offsets.windows(2)) {
        for row in x[w[0] * hidden..w[1] * hidden].chunks_exact(hidden) {
            for (p, &v) in pooled.iter_mut().zip(row) {
                *p += v;
            }
        }
        let len = (w[1] - w[0]).max(1) as f32;
        for p in pooled.iter_mut() {
            *p /= len;
        }
        let norm = simd::sum_map(pooled, |v| v * v).sqrt().max(1e-12);
        for p in pooled.iter_mut() {
            *p /= norm;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        crate::transformer::test_values(n, seed, 1.4)
    }

    #[test]
    fn rows_sum_their_word_position_and_type_then_normalise() {
        let hidden = 8;
        let (word, position) = (values(10 * hidden, 1), values(4 * hidden, 2));
        let (token_type, gamma, beta) = (values(hidden, 3), values(hidden, 4), values(hidden, 5));
        let tables = Embeddings {
            word: &word,
            position: &position,
            token_type: &token_type,
            gamma: &gamma,
            beta: &beta,
            eps: 1e-12,
        };
        let (ids, offsets) = ([3i64, 9, 0, 3, 1], [0usize, 2, 2, 5]);
        let x = embed(&ids, &offsets, &tables).unwrap();
        let mut expected = Vec::new();
        for (id, p) in [(3usize, 0usize), (9, 1), (0, 0), (3, 1), (1, 2)] {
            for c in 0..hidden {
                expected.push((word[id * hidden + c] + position[p * hidden + c]) + token_type[c]);
            }
        }
        add_layer_norm(&mut expected, None, &gamma, &beta, 1e-12).unwrap();
        assert_eq!(x, expected);

        let field = |r: Result<Vec<f32>>| match r {
            Err(Error::InvalidArgument { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field(embed(&[10], &[0, 1], &tables)), "ids");
        assert_eq!(field(embed(&[-1], &[0, 1], &tables)), "ids");
        assert_eq!(field(embed(&[0; 5], &[0, 5], &tables)), "ids"); // 4 positions
        assert_eq!(field(embed(&[0; 2], &[0, 1], &tables)), "offsets");
        let short = Embeddings {
            token_type: &token_type[1..],
            ..tables
        };
        assert_eq!(field(embed(&[0], &[0, 1], &short)), "token_type");
        let ragged = Embeddings {
            word: &word[1..],
            ..tables
        };
        assert_eq!(field(embed(&[0], &[0, 1], &ragged)), "word");
    }

    #[test]
    fn pooling_averages_each_sequence_and_normalises() {
        let x = [1.0, 2.0, 3.0, 6.0, 0.0, 0.0, 3.0, 4.0];
        let out = mean_pool(&x, &[0, 2, 2, 4], 2).unwrap();
        // Means (2, 4), (0, 0) and (1.5, 2): norms sqrt(20), 0 and 2.5.
        let norm = 20f32.sqrt();
        assert_eq!(out, [2.0 / norm, 4.0 / norm, 0.0, 0.0, 0.6, 0.8]);
        let field = |r: Result<Vec<f32>>| match r {
            Err(Error::InvalidArgument { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field(mean_pool(&x, &[0, 3], 2)), "offsets");
        assert_eq!(field(mean_pool(&x, &[0, 2], 3)), "x");
        assert_eq!(field(mean_pool(&x, &[0, 4], 0)), "x");
    }
}
