//! The scoring half of a lexical (BM25) search: sum each query term's weighted
//! postings per document slot and keep the `k` best slots.
//!
//! Done with dense arrays over every slot (as NumPy does it), a query costs several
//! passes over the whole corpus (zero the scores, mask, find the non-zero ones)
//! however rare its terms are. Here the cost follows the postings: the sums live in
//! a per-thread scratch array whose entries are reset lazily by a generation stamp,
//! and only the slots the postings touched are filtered and ranked.

use std::cell::RefCell;
use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::error::{Error, Result};

/// One query term: the slots whose documents contain it, each with its weight, and
/// the factor every weight is multiplied by (BM25's inverse document frequency).
pub struct Term<'a> {
    pub slots: &'a [u32],
    pub weights: &'a [f32],
    pub idf: f32,
}

/// Per-thread sums: `sums[s]` is live only while `stamps[s]` is the current generation.
#[derive(Default)]
struct Scratch {
    sums: Vec<f32>,
    stamps: Vec<u32>,
    generation: u32,
    touched: Vec<u32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// The `k` slots with the highest `sum over terms of idf * weight`, best first (ties
/// by lower slot), counting only sums above zero and, if `allowed` is given, only
/// slots `s < allowed.len()` with `allowed[s]`. Every slot must be below `slots`.
pub fn top_k(
    terms: &[Term<'_>],
    slots: usize,
    allowed: Option<&[bool]>,
    k: usize,
) -> Result<Vec<(u32, f32)>> {
    for (i, term) in terms.iter().enumerate() {
        if term.slots.len() != term.weights.len() {
            let msg = format!(
                "term {i} has {} slots and {} weights",
                term.slots.len(),
                term.weights.len()
            );
            return Err(Error::invalid("terms", msg));
        }
        if let Some(&s) = term.slots.iter().find(|&&s| s as usize >= slots) {
            let msg = format!("term {i} has slot {s}, not below {slots}");
            return Err(Error::invalid("terms", msg));
        }
    }
    if k == 0 || terms.is_empty() {
        return Ok(Vec::new());
    }
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        Ok(scratch.top_k(terms, slots, allowed, k))
    })
}

impl Scratch {
    fn top_k(
        &mut self,
        terms: &[Term<'_>],
        slots: usize,
        allowed: Option<&[bool]>,
        k: usize,
    ) -> Vec<(u32, f32)> {
        if self.sums.len() < slots {
            self.sums.resize(slots, 0.0);
            self.stamps.resize(slots, 0);
        }
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            // Wrapped: old stamps could look current again.
            self.stamps.fill(0);
            self.generation = 1;
        }
        let generation = self.generation;
        self.touched.clear();
        for term in terms {
            for (&s, &w) in term.slots.iter().zip(term.weights) {
                let i = s as usize;
                if self.stamps[i] != generation {
                    self.stamps[i] = generation;
                    self.sums[i] = 0.0;
                    self.touched.push(s);
                }
                self.sums[i] += term.idf * w;
            }
        }
        // The k best in a heap whose top is the worst kept: most slots cost one
        // comparison with it (sorting or partitioning every touched slot cost more
        // than summing the postings).
        let mut best: BinaryHeap<Ranked> = BinaryHeap::with_capacity(k + 1);
        for &s in &self.touched {
            let sum = self.sums[s as usize];
            let permitted = allowed.is_none_or(|a| a.get(s as usize).copied().unwrap_or(false));
            if sum <= 0.0 || !permitted {
                continue;
            }
            let candidate = Ranked { slot: s, sum };
            if best.len() < k {
                best.push(candidate);
            } else if let Some(mut worst) = best.peek_mut() {
                if candidate < *worst {
                    *worst = candidate;
                }
            }
        }
        best.into_sorted_vec()
            .into_iter()
            .map(|r| (r.slot, r.sum))
            .collect()
    }
}

/// A scored slot, ordered best first: higher sum, then lower slot.
#[derive(Clone, Copy)]
struct Ranked {
    slot: u32,
    sum: f32,
}

impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .sum
            .total_cmp(&self.sum)
            .then(self.slot.cmp(&other.slot))
    }
}

impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Ranked {}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same ranking straight from the definition, over dense arrays.
    fn reference(
        terms: &[Term<'_>],
        slots: usize,
        allowed: Option<&[bool]>,
        k: usize,
    ) -> Vec<(u32, f32)> {
        let mut sums = vec![0f32; slots];
        for t in terms {
            for (&s, &w) in t.slots.iter().zip(t.weights) {
                sums[s as usize] += t.idf * w;
            }
        }
        let mut hits: Vec<(u32, f32)> = (0..slots as u32)
            .map(|s| (s, sums[s as usize]))
            .filter(|&(s, v)| v > 0.0 && allowed.is_none_or(|a| a.get(s as usize) == Some(&true)))
            .collect();
        hits.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        hits.truncate(k);
        hits
    }

    #[test]
    fn matches_the_dense_definition_and_resets_between_calls() {
        let n = 1000usize;
        let mut state = 12345u32;
        let mut next = || {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            state >> 8
        };
        for round in 0..50 {
            let owned: Vec<(Vec<u32>, Vec<f32>, f32)> = (0..1 + round % 4)
                .map(|_| {
                    let len = 1 + next() as usize % 300;
                    let mut slots: Vec<u32> = (0..len).map(|_| next() % n as u32).collect();
                    slots.sort_unstable();
                    slots.dedup();
                    let weights = slots
                        .iter()
                        .map(|_| (next() % 1000) as f32 / 250.0)
                        .collect();
                    (slots, weights, 0.5 + (next() % 100) as f32 / 40.0)
                })
                .collect();
            let terms: Vec<Term<'_>> = owned
                .iter()
                .map(|(s, w, idf)| Term {
                    slots: s,
                    weights: w,
                    idf: *idf,
                })
                .collect();
            let mask: Vec<bool> = (0..n - 100).map(|_| next() % 3 != 0).collect();
            let allowed = (round % 2 == 0).then_some(mask.as_slice());
            let k = [1, 10, 100, 5000][round % 4];
            assert_eq!(
                top_k(&terms, n, allowed, k).unwrap(),
                reference(&terms, n, allowed, k),
                "round {round}"
            );
        }
    }

    #[test]
    fn empty_queries_and_bad_postings() {
        let slots = [3u32, 1];
        let weights = [1.0f32, 2.0];
        let term = Term {
            slots: &slots,
            weights: &weights,
            idf: 1.0,
        };
        assert!(top_k(&[], 10, None, 5).unwrap().is_empty());
        assert!(top_k(std::slice::from_ref(&term), 10, None, 0)
            .unwrap()
            .is_empty());
        assert_eq!(
            top_k(std::slice::from_ref(&term), 10, None, 5).unwrap(),
            vec![(1, 2.0), (3, 1.0)]
        );
        let field = |r: Result<Vec<(u32, f32)>>| match r {
            Err(Error::InvalidArgument { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field(top_k(&[term], 3, None, 5)), "terms");
        let short = Term {
            slots: &slots,
            weights: &weights[..1],
            idf: 1.0,
        };
        assert_eq!(field(top_k(&[short], 10, None, 5)), "terms");
    }
}
