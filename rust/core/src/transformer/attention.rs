//! Multi-head self-attention over a ragged batch, vectorised across queries.
//!
//! Search queries are ~13 tokens with heads of 32 values. Taken one query at a
//! time, each score is a dot product ending in a horizontal sum, and the softmax
//! needs two more (max and sum) per query: those reductions and their latency were
//! most of the time. Here [`LANES`] queries of a head go through together, one per
//! vector lane: their queries are transposed (one vector per dimension), each key
//! broadcast against them gives one vector of scores, and the softmax's max and sum
//! over keys are then lane-wise, with no horizontal step. Every lane adds in the
//! order of the scalar definition (scores over dimensions, the softmax sum and the
//! context over keys; the context is divided by the sum at the end), and
//! `multiversion!` compiles the code per instruction set, so each build gives the
//! same floats.

use rayon::prelude::*;

use super::PARALLEL_ROWS;
use crate::activation::exp_nonpositive;
use crate::error::{Error, Result};
use crate::simd::{multiversion, Isa, LANES};

/// Queries whose context rows are computed together, sharing each load of a value
/// vector (a divisor of [`LANES`]).
const QUERIES: usize = 4;

/// Keys whose scores are computed together: independent chains of adds that share
/// each load of the transposed queries.
const KEYS: usize = 4;

/// Multi-head self-attention of every sequence with itself.
///
/// `qkv` has one row of `3 * hidden` values per token: its query, key and value
/// projections side by side, each `heads` blocks of `hidden / heads`. Returns the
/// context rows (`rows x hidden`): per head, the softmax of the scaled query-key
/// dot products over the sequence's own tokens, times their values.
pub fn attention(qkv: &[f32], offsets: &[usize], heads: usize, hidden: usize) -> Result<Vec<f32>> {
    let mut out = vec![0f32; qkv.len() / 3];
    attention_into(qkv, offsets, heads, hidden, &mut out)?;
    Ok(out)
}

/// [`attention`] into `out` (`rows * hidden` values), which it overwrites.
pub fn attention_into(
    qkv: &[f32],
    offsets: &[usize],
    heads: usize,
    hidden: usize,
    out: &mut [f32],
) -> Result<()> {
    if heads == 0 || hidden == 0 || !hidden.is_multiple_of(heads) {
        let msg = format!("hidden size {hidden} must be a positive multiple of {heads} heads");
        return Err(Error::invalid("heads", msg));
    }
    let rows = check_offsets(offsets, qkv.len(), 3 * hidden, "qkv")?;
    if out.len() != rows * hidden {
        let msg = format!("expected {rows} x {hidden} values, got {}", out.len());
        return Err(Error::invalid("out", msg));
    }
    let mut chunks = Vec::with_capacity(offsets.len().saturating_sub(1));
    let mut rest = out;
    for w in offsets.windows(2) {
        let (chunk, tail) = rest.split_at_mut((w[1] - w[0]) * hidden);
        chunks.push((w[0], w[1] - w[0], chunk));
        rest = tail;
    }
    let isa = Isa::detect();
    let one = |(start, len, chunk): (usize, usize, &mut [f32])| {
        let rows = &qkv[start * 3 * hidden..(start + len) * 3 * hidden];
        sequence(isa, rows, len, heads, hidden, chunk);
    };
    if rows >= PARALLEL_ROWS {
        chunks.into_par_iter().for_each(one);
    } else {
        chunks.into_iter().for_each(one);
    }
    Ok(())
}

multiversion! {
    /// Attention of one sequence (`len` rows of `qkv`) into its `len` context rows.
    fn sequence(qkv: &[f32], len: usize, heads: usize, hidden: usize, out: &mut [f32]) =
        sequence_body;
}

#[inline(always)]
fn sequence_body(qkv: &[f32], len: usize, heads: usize, hidden: usize, out: &mut [f32]) {
    let d = hidden / heads;
    let stride = 3 * hidden;
    let scale = 1.0 / (d as f32).sqrt();
    // A block of up to LANES queries: transposed (row c holds dimension c of each),
    // and their scores / softmax weights, one row per key.
    let mut queries = vec![[0f32; LANES]; d];
    let mut weights = vec![[0f32; LANES]; len];
    for h in 0..heads {
        let (qo, ko, vo) = (h * d, hidden + h * d, 2 * hidden + h * d);
        for first in (0..len).step_by(LANES) {
            let n = LANES.min(len - first);
            if n < LANES {
                // Lanes past the sequence score zeros; their weights go unused.
                queries.fill([0.0; LANES]);
            }
            let rows = qkv[first * stride..].chunks_exact(stride).take(n);
            for (l, row) in rows.enumerate() {
                for (lanes, &q) in queries.iter_mut().zip(&row[qo..qo + d]) {
                    lanes[l] = q;
                }
            }
            scores(&queries, qkv, len, stride, ko, scale, &mut weights);
            let inv = softmax(&mut weights);
            for lane in (0..n).step_by(QUERIES) {
                let m = QUERIES.min(n - lane);
                let rows = first + lane..first + lane + m;
                let out = &mut out[rows.start * hidden..rows.end * hidden];
                let values = Values {
                    qkv,
                    stride,
                    at: vo,
                    d,
                };
                context(&weights, &inv, lane, values, out, hidden, h * d);
            }
        }
    }
}

/// `scores[j][l] = (queries lane l . key j) * scale` for the `len` keys at column `ko`
/// of `qkv`'s rows, each dot product summed over dimensions in order.
#[inline(always)]
fn scores(
    queries: &[[f32; LANES]],
    qkv: &[f32],
    len: usize,
    stride: usize,
    ko: usize,
    scale: f32,
    scores: &mut [[f32; LANES]],
) {
    let d = queries.len();
    for first in (0..len).step_by(KEYS) {
        let n = KEYS.min(len - first);
        // A short last block repeats its last key; those sums are not stored.
        let keys: [&[f32]; KEYS] = std::array::from_fn(|r| {
            let at = (first + r.min(n - 1)) * stride + ko;
            &qkv[at..at + d]
        });
        let mut acc = [[0f32; LANES]; KEYS];
        for (c, q) in queries.iter().enumerate() {
            for (acc, key) in acc.iter_mut().zip(&keys) {
                let k = key[c];
                for (a, &q) in acc.iter_mut().zip(q) {
                    *a += k * q;
                }
            }
        }
        for (s, acc) in scores[first..first + n].iter_mut().zip(&acc) {
            for (s, &a) in s.iter_mut().zip(acc) {
                *s = a * scale;
            }
        }
    }
}

/// Scores (one row per key, one lane per query) -> `exp(s - max)` over keys, lane by
/// lane; returns the reciprocals of their sums (in key order), which the context
/// rows are scaled by rather than every weight.
#[inline(always)]
fn softmax(rows: &mut [[f32; LANES]]) -> [f32; LANES] {
    let mut max = [f32::NEG_INFINITY; LANES];
    for row in rows.iter() {
        for (m, &s) in max.iter_mut().zip(row) {
            *m = m.max(s);
        }
    }
    let mut sum = [0f32; LANES];
    for row in rows.iter_mut() {
        for ((s, &m), t) in row.iter_mut().zip(&max).zip(&mut sum) {
            *s = exp_nonpositive(*s - m);
            *t += *s;
        }
    }
    sum.map(|t| 1.0 / t)
}

/// One head's values: `d` columns from `at` of each row of `qkv` (rows of `stride`).
#[derive(Clone, Copy)]
struct Values<'a> {
    qkv: &'a [f32],
    stride: usize,
    at: usize,
    d: usize,
}

/// For the queries in lanes `lane..` (one per row of `out`, at most [`QUERIES`]):
/// `out[r][at + c] = (sum over keys j of weights[j][lane + r] * value j [c]) *
/// inv[lane + r]`, summed in key order.
#[inline(always)]
fn context(
    weights: &[[f32; LANES]],
    inv: &[f32; LANES],
    lane: usize,
    values: Values<'_>,
    out: &mut [f32],
    hidden: usize,
    at: usize,
) {
    debug_assert!(LANES.is_multiple_of(QUERIES) && lane.is_multiple_of(QUERIES));
    let Values {
        qkv,
        stride,
        at: vo,
        d,
    } = values;
    for c in (0..d).step_by(LANES) {
        let width = LANES.min(d - c);
        // Whole blocks of lanes: those past the last query (finite weights) are
        // summed and dropped rather than branched around.
        let mut acc = [[0f32; LANES]; QUERIES];
        for (w, row) in weights.iter().zip(qkv.chunks_exact(stride)) {
            let value = padded(&row[vo + c..vo + c + width]);
            for (acc, &w) in acc.iter_mut().zip(&w[lane..lane + QUERIES]) {
                for (a, &v) in acc.iter_mut().zip(&value) {
                    *a += w * v;
                }
            }
        }
        let rows = out.chunks_exact_mut(hidden).zip(&acc).zip(&inv[lane..]);
        for ((row, acc), &inv) in rows {
            for (o, &a) in row[at + c..at + c + width].iter_mut().zip(acc) {
                *o = a * inv;
            }
        }
    }
}

/// Up to [`LANES`] values as a vector, zeros after them.
#[inline(always)]
fn padded(values: &[f32]) -> [f32; LANES] {
    <[f32; LANES]>::try_from(values).unwrap_or_else(|_| {
        let mut v = [0.0; LANES];
        v[..values.len()].copy_from_slice(values);
        v
    })
}

/// Checks that `values` (named `field`) are whole rows of `width` and that
/// `offsets` start at 0, never decrease and end at their row count; returns it.
pub(super) fn check_offsets(
    offsets: &[usize],
    values: usize,
    width: usize,
    field: &'static str,
) -> Result<usize> {
    if !values.is_multiple_of(width) {
        let msg = format!("{values} values are not rows of {width}");
        return Err(Error::invalid(field, msg));
    }
    let rows = values / width;
    let ordered = offsets.windows(2).all(|w| w[0] <= w[1]);
    if offsets.first() != Some(&0) || offsets.last() != Some(&rows) || !ordered {
        let msg = format!("must rise from 0 to the {rows} rows of {field}");
        return Err(Error::invalid("offsets", msg));
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Attention straight from the definition, in f64, one sequence.
    fn reference(qkv: &[f32], len: usize, heads: usize, hidden: usize) -> Vec<f64> {
        let d = hidden / heads;
        let at = |t: usize, c: usize| qkv[t * 3 * hidden + c] as f64;
        let mut out = vec![0f64; len * hidden];
        for h in 0..heads {
            for i in 0..len {
                let s: Vec<f64> = (0..len)
                    .map(|j| {
                        (0..d)
                            .map(|c| at(i, h * d + c) * at(j, hidden + h * d + c))
                            .sum::<f64>()
                            / (d as f64).sqrt()
                    })
                    .collect();
                let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = s.iter().map(|v| (v - max).exp()).collect();
                let total: f64 = e.iter().sum();
                for c in 0..d {
                    out[i * hidden + h * d + c] = (0..len)
                        .map(|j| e[j] / total * at(j, 2 * hidden + h * d + c))
                        .sum();
                }
            }
        }
        out
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        crate::transformer::test_values(n, seed, 2.0)
    }

    fn offsets(lens: &[usize]) -> Vec<usize> {
        let mut offsets = vec![0];
        for l in lens {
            offsets.push(offsets.last().unwrap() + l);
        }
        offsets
    }

    /// Sequence lengths around the lane and query-block sizes (empty included), and
    /// heads of 8 (less than a vector), 24 (one and a half) and 32 values.
    const LENS: [usize; 12] = [3, 1, 7, 0, 5, 4, 15, 16, 17, 33, 2, 13];
    const SHAPES: [(usize, usize); 3] = [(4, 32), (2, 48), (12, 384)];

    #[test]
    fn ragged_batch_matches_each_sequence_alone() {
        for (heads, hidden) in SHAPES {
            let offsets = offsets(&LENS);
            let rows = *offsets.last().unwrap();
            let qkv = values(rows * 3 * hidden, 7);
            let out = attention(&qkv, &offsets, heads, hidden).unwrap();
            for (w, &len) in offsets.windows(2).zip(&LENS) {
                let seq = &qkv[w[0] * 3 * hidden..w[1] * 3 * hidden];
                let want = reference(seq, len, heads, hidden);
                for (got, want) in out[w[0] * hidden..w[1] * hidden].iter().zip(&want) {
                    assert!((*got as f64 - want).abs() < 1e-5, "{got} vs {want}");
                }
            }
        }
    }

    #[test]
    fn every_build_gives_the_same_floats() {
        for (heads, hidden) in SHAPES {
            let offsets = offsets(&LENS);
            let rows = *offsets.last().unwrap();
            let qkv = values(rows * 3 * hidden, 3);
            for (w, &len) in offsets.windows(2).zip(&LENS) {
                let seq = &qkv[w[0] * 3 * hidden..w[1] * 3 * hidden];
                let mut portable = vec![0f32; len * hidden];
                sequence(Isa::Portable, seq, len, heads, hidden, &mut portable);
                for isa in Isa::ALL.into_iter().filter(|i| i.available()) {
                    let mut got = vec![f32::NAN; len * hidden];
                    sequence(isa, seq, len, heads, hidden, &mut got);
                    assert_eq!(got, portable, "{isa:?}, {len} tokens, hidden {hidden}");
                }
            }
        }
    }

    #[test]
    fn sequences_split_across_threads_give_the_same_floats() {
        let (heads, hidden) = (2, 16);
        let lens: Vec<usize> = (0..PARALLEL_ROWS / 8).map(|i| 1 + i % 20).collect();
        let offsets = offsets(&lens);
        let rows = *offsets.last().unwrap();
        assert!(rows >= PARALLEL_ROWS);
        let qkv = values(rows * 3 * hidden, 5);
        let all = attention(&qkv, &offsets, heads, hidden).unwrap();
        for w in offsets.windows(2).step_by(7) {
            let seq = &qkv[w[0] * 3 * hidden..w[1] * 3 * hidden];
            let alone = attention(seq, &[0, w[1] - w[0]], heads, hidden).unwrap();
            assert_eq!(alone, all[w[0] * hidden..w[1] * hidden]);
        }
    }
}
