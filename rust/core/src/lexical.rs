//! The scoring half of a lexical (BM25) search: sum each query term's weighted
//! postings per document slot and keep the `k` best slots.
//!
//! Done with dense arrays over every slot (as NumPy does it), a query costs several
//! passes over the whole corpus (zero the scores, mask, find the non-zero ones)
//! however rare its terms are. Here the cost follows the postings: the sums live in
//! a per-thread scratch array whose entries are reset lazily by a generation stamp,
//! and only the slots the postings touched are filtered and ranked.
//!
//! Most postings of a typical query belong to a common term with a low IDF, while
//! the rare terms decide the ranking. So the terms are taken from the highest
//! upper bound (`idf * max(weight)`) down, MaxScore-style: while a slot that no term
//! so far has touched could still reach the `k` best, each term's postings are all
//! added ("essential" terms). Once the `k`-th best sum so far, `θ`, is above what
//! the remaining terms' bounds add up to, no new slot can enter the result: the
//! remaining terms only add to the candidates, the slots that can still reach `θ`
//! (their sum plus the remaining bounds), found by galloping search in the term's
//! ascending slots, and candidates that fall below `θ` as it rises are dropped.
//! The result and its scores are exactly those of adding every posting, since a
//! candidate receives every contribution, in the same order.

use std::cell::RefCell;
use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use crate::error::{Error, Result};

/// One query term: the slots whose documents contain it, each with its weight, and
/// the factor every weight is multiplied by (BM25's inverse document frequency).
///
/// Slots in strictly ascending order let the term be skipped through once the
/// ranking is nearly settled; any other order is equally correct, but such a term
/// is always read in full, and no postings are skipped until it has been.
pub struct Term<'a> {
    pub slots: &'a [u32],
    pub weights: &'a [f32],
    pub idf: f32,
}

/// One scratch entry per slot: while `stamp` is the current generation, the slot's
/// sum is `touched[at]`.
#[derive(Clone, Copy, Default)]
struct Cell {
    stamp: u32,
    at: u32,
}

/// Per-thread state, kept between calls so that a query allocates little.
#[derive(Default)]
struct Scratch {
    cells: Vec<Cell>,
    generation: u32,
    /// Every slot stamped in this generation with its sum, in the order first
    /// touched: dense, so that ranking them reads no cells. Once the ranking is
    /// nearly settled, only the candidates.
    touched: Vec<Ranked>,
    /// Where each term's run of `touched` ends.
    runs: Vec<usize>,
    /// Scratch for picking the best of `touched`.
    best: Vec<Ranked>,
    /// Queries that skipped postings (read by the tests).
    #[cfg(test)]
    settled_early: u64,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// What one pass over a term tells.
struct Scan {
    /// Some slot is `limit` or more.
    too_high: bool,
    /// The slots are strictly ascending.
    ascending: bool,
    /// The largest `idf * weight` (NaN ones left out), or 0 if that is smaller.
    bound: f32,
    /// Every `idf * weight` is finite and not negative, so sums only grow.
    monotone: bool,
}

/// One pass over `term`'s slots and one over its weights; with AVX2 where the CPU
/// has it (the build targets baseline x86-64).
fn scan(term: &Term<'_>, limit: u32) -> Scan {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2.
        return unsafe { scan_avx2(term, limit) };
    }
    scan_lanes(term, limit)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn scan_avx2(term: &Term<'_>, limit: u32) -> Scan {
    scan_lanes(term, limit)
}

/// The bits of `f32` 0 and up to the largest finite one rank as the numbers do;
/// every other value's (negative, infinite, NaN) are above this.
const FINITE_BITS: u32 = 0x7f80_0000;

/// [`scan`] as three integer reductions (max, "or", max), which vectorise: they
/// are exact in any grouping.
#[inline(always)]
fn scan_lanes(term: &Term<'_>, limit: u32) -> Scan {
    let (slots, weights, idf) = (term.slots, term.weights, term.idf);
    let top = slots.iter().fold(0, |m, &s| m.max(s));
    let nexts = slots.get(1..).unwrap_or(&[]);
    let descents = slots
        .iter()
        .zip(nexts)
        .fold(0u32, |d, (&a, &b)| d | (a >= b) as u32);
    // The largest contribution's bits (`+ 0.0` turns -0 into 0): also the largest
    // contribution if all are finite and not negative.
    let bits = weights
        .iter()
        .fold(0, |m, &w| m.max((idf * w + 0.0).to_bits()));
    let monotone = bits < FINITE_BITS;
    let bound = if monotone {
        f32::from_bits(bits)
    } else {
        weights
            .iter()
            .map(|&w| idf * w)
            .fold(0.0, |m, c| if c > m { c } else { m })
    };
    Scan {
        too_high: top >= limit && !slots.is_empty(),
        ascending: descents == 0,
        bound,
        monotone,
    }
}

/// The `k` slots with the highest `sum over terms of idf * weight`, best first (ties
/// by lower slot), counting only sums above zero and, if `allowed` is given, only
/// slots `s < allowed.len()` with `allowed[s]`. Every slot must be below `slots`.
///
/// The sums are in `f32`, each slot's contributions `idf * weight` added in this
/// order: terms by their bound, the largest `idf * weight` among their postings (or
/// 0 if that is smaller), highest first and ties by position in `terms`; within a
/// term, postings in the given order (a slot listed twice counts twice).
///
/// Skipping postings that cannot change the result needs every contribution to be
/// finite and not negative; otherwise (never the case for BM25) every posting is
/// added.
pub fn top_k(
    terms: &[Term<'_>],
    slots: usize,
    allowed: Option<&[bool]>,
    k: usize,
) -> Result<Vec<(u32, f32)>> {
    let limit = u32::try_from(slots).unwrap_or(u32::MAX);
    let mut scans = Vec::with_capacity(terms.len());
    for (i, term) in terms.iter().enumerate() {
        if term.slots.len() != term.weights.len() {
            let msg = format!(
                "term {i} has {} slots and {} weights",
                term.slots.len(),
                term.weights.len()
            );
            return Err(Error::invalid("terms", msg));
        }
        let scan = scan(term, limit);
        if scan.too_high {
            if let Some(&s) = term.slots.iter().find(|&&s| s as usize >= slots) {
                let msg = format!("term {i} has slot {s}, not below {slots}");
                return Err(Error::invalid("terms", msg));
            }
        }
        scans.push(scan);
    }
    let prune = scans.iter().all(|s| s.monotone);
    let plan = terms.iter().zip(&scans).map(|(term, scan)| Planned {
        term,
        bound: scan.bound,
        ascending: scan.ascending,
    });
    Ok(ranked(plan.collect(), slots, allowed, k, prune))
}

/// [`top_k`] for postings kept in a known shape, which need no pass over them first:
/// every term's slots strictly ascending and below `slots`, every `idf * weight`
/// finite and not negative, and `bounds[i]` the largest `idf * weight` of term `i`
/// (0 if it has no postings). [`crate::bm25::Bm25Index`] keeps its postings so and
/// its bounds up to date; reading every posting to find them out again was a fifth
/// of a query's time. Checked in debug builds.
pub(crate) fn top_k_known(
    terms: &[Term<'_>],
    bounds: &[f32],
    slots: usize,
    allowed: Option<&[bool]>,
    k: usize,
) -> Vec<(u32, f32)> {
    debug_assert_eq!(terms.len(), bounds.len());
    #[cfg(debug_assertions)]
    for (term, &bound) in terms.iter().zip(bounds) {
        let scan = scan(term, u32::try_from(slots).unwrap_or(u32::MAX));
        debug_assert!(!scan.too_high && scan.ascending && scan.monotone);
        debug_assert_eq!(scan.bound.to_bits(), bound.to_bits());
    }
    let plan = terms.iter().zip(bounds).map(|(term, &bound)| Planned {
        term,
        bound,
        ascending: true,
    });
    ranked(plan.collect(), slots, allowed, k, true)
}

/// The ranking of the terms in `plan` (in the caller's order, with what is known of
/// each); see [`top_k`].
fn ranked(
    mut plan: Vec<Planned<'_, '_>>,
    slots: usize,
    allowed: Option<&[bool]>,
    k: usize,
    prune: bool,
) -> Vec<(u32, f32)> {
    if k == 0 || plan.is_empty() {
        return Vec::new();
    }
    // Highest bound first; a stable sort keeps ties in the caller's order.
    plan.sort_by(|a, b| b.bound.total_cmp(&a.bound));
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        scratch.top_k(&plan, slots, allowed, k, prune)
    })
}

/// A term with its bound and whether its slots ascend, as its scan found or its
/// index knows.
struct Planned<'t, 'a> {
    term: &'t Term<'a>,
    bound: f32,
    ascending: bool,
}

impl Scratch {
    /// `plan` is the terms in summing order; every slot in it is below `slots`
    /// (checked by `top_k`). Postings are skipped only if `prune`.
    fn top_k(
        &mut self,
        plan: &[Planned<'_, '_>],
        slots: usize,
        allowed: Option<&[bool]>,
        k: usize,
        prune: bool,
    ) -> Vec<(u32, f32)> {
        if self.cells.len() < slots {
            self.cells.resize(slots, Cell::default());
        }
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            // Wrapped: old stamps could look current again.
            self.cells.fill(Cell::default());
            self.generation = 1;
        }
        let generation = self.generation;
        self.touched.clear();
        self.runs.clear();

        // rest[j]: the most that terms j.. can add to any slot, infinite while one of
        // them is not strictly ascending (it may list a slot twice, so its bound
        // does not bound what it adds to a slot; it is added in full). Compared
        // with sums added in another order, so every comparison allows a relative
        // margin far above the rounding error of `plan.len()` additions.
        let slack = 1.0 + 1e-6 * (plan.len() as f32 + 4.0);
        let mut rest = vec![0f32; plan.len() + 1];
        for j in (0..plan.len()).rev() {
            rest[j] = if plan[j].ascending {
                rest[j + 1] + plan[j].bound
            } else {
                f32::INFINITY
            };
        }
        let mut postings_left: usize = plan.iter().map(|p| p.term.slots.len()).sum();

        // Essential terms: every posting is added.
        let mut done = 0f32; // the bounds of the terms added so far
        let mut next = 0;
        let mut theta = None;
        while next < plan.len() {
            let term = plan[next].term;
            self.add_all(term, generation);
            postings_left -= term.slots.len();
            done += plan[next].bound;
            next += 1;
            // θ costs a pass over the touched slots: worth it only when the
            // postings it could spare are not much fewer (measured: checking
            // from half as many on was best), and only if the terms done so far
            // can outweigh the rest at all (θ is at most their bounds' sum).
            if prune
                && next < plan.len()
                && 2 * postings_left > self.touched.len()
                && self.touched.len() >= k
                && done > rest[next]
            {
                // Strictly above even with the margin: a slot no term has touched
                // yet could at best tie with the k-th, and lose.
                let floor = rest[next] * slack;
                if let Some(kth) = kth_best(&self.touched, allowed, k, floor) {
                    if kth > floor {
                        theta = Some(kth);
                        break;
                    }
                }
            }
        }
        let Some(mut theta) = theta else {
            return best(&self.touched, allowed, k);
        };

        // The rest (all ascending) only add to the candidates: the touched slots
        // that count and can still reach θ (one that could only tie with θ is
        // kept: it might rank by its lower slot).
        #[cfg(test)]
        {
            self.settled_early += 1;
        }
        let reach = rest[next];
        self.retain(|r| {
            (r.sum > 0.0) & permitted(allowed, r.slot) & ((r.sum + reach) * slack >= theta)
        });
        // Galloping needs each run ascending, as is the run of an ascending term.
        let mut start = 0;
        for (&end, essential) in self.runs.iter().zip(plan) {
            if !essential.ascending {
                self.touched[start..end].sort_unstable_by_key(|r| r.slot);
            }
            start = end;
        }
        for j in next..plan.len() {
            let mut start = 0;
            for &end in &self.runs {
                add_to_candidates(plan[j].term, &mut self.touched[start..end]);
                start = end;
            }
            if j + 1 < plan.len() && self.touched.len() > k {
                if let Some(kth) = kth_best(&self.touched, None, k, theta) {
                    theta = theta.max(kth);
                }
                let reach = rest[j + 1];
                self.retain(|r| (r.sum + reach) * slack >= theta);
            }
        }
        // The k best are all at θ or above.
        at_least(&self.touched, theta, &mut self.best);
        self.best.sort_unstable();
        self.best.truncate(k);
        self.best.iter().map(|r| (r.slot, r.sum)).collect()
    }

    /// Adds every posting of `term`: a slot it is first to touch is stamped and
    /// appended to `touched` (a new run, ascending if the term's slots are).
    /// Without branches: whether a slot is new is as good as random for a common
    /// term, and mispredicting it cost more than the memory access.
    fn add_all(&mut self, term: &Term<'_>, generation: u32) {
        let cells = self.cells.as_mut_slice();
        let mut len = self.touched.len();
        let blank = Ranked { slot: 0, sum: 0.0 };
        self.touched.resize(len + term.slots.len(), blank);
        let touched = self.touched.as_mut_slice();
        for (&s, &w) in term.slots.iter().zip(term.weights) {
            debug_assert!((s as usize) < cells.len());
            // SAFETY: `top_k` checked every slot against `slots`, and `cells`
            // holds at least `slots` entries.
            let cell = unsafe { cells.get_unchecked_mut(s as usize) };
            let fresh = cell.stamp != generation;
            // A new slot goes at the end (`len`, not yet used).
            let at = if fresh { len } else { cell.at as usize };
            let entry = &mut touched[at];
            entry.sum = if fresh { 0.0 } else { entry.sum } + term.idf * w;
            entry.slot = s;
            // Fits: at most one entry per slot, and slots are u32.
            *cell = Cell {
                stamp: generation,
                at: at as u32,
            };
            len += fresh as usize;
        }
        self.touched.truncate(len);
        self.runs.push(len);
    }

    /// Keeps the entries of `touched` that pass `keep`, in order and runs.
    /// Without branches: which pass is as good as random.
    fn retain(&mut self, keep: impl Fn(&Ranked) -> bool) {
        let touched = self.touched.as_mut_slice();
        let (mut len, mut start) = (0, 0);
        for end in self.runs.iter_mut() {
            for i in start..*end {
                let r = touched[i];
                touched[len] = r;
                len += keep(&r) as usize;
            }
            (start, *end) = (*end, len);
        }
        self.touched.truncate(len);
    }
}

/// Adds the postings of `term` (slots strictly ascending) that hit a candidate
/// (`candidates` by ascending slot), galloping through the slots from one
/// candidate to the next.
fn add_to_candidates(term: &Term<'_>, candidates: &mut [Ranked]) {
    let (slots, weights) = (term.slots, term.weights);
    let mut at = 0;
    for c in candidates {
        at = gallop(slots, at, c.slot);
        match slots.get(at) {
            None => break,
            Some(&s) if s == c.slot => {
                c.sum += term.idf * weights[at];
                at += 1;
            }
            Some(_) => {}
        }
    }
}

fn permitted(allowed: Option<&[bool]>, s: u32) -> bool {
    allowed.is_none_or(|a| a.get(s as usize).copied().unwrap_or(false))
}

/// The `k` best of `from` that count (sum above zero, `allowed`), best first, in a
/// heap whose top is the worst kept: most cost one comparison with it (sorting
/// or partitioning all of them cost more).
fn best(from: &[Ranked], allowed: Option<&[bool]>, k: usize) -> Vec<(u32, f32)> {
    let mut best: BinaryHeap<Ranked> = BinaryHeap::with_capacity(k + 1);
    for &r in from {
        // Equal sums go on: the lower slot ranks first.
        if best.len() == k && best.peek().is_some_and(|worst| r.sum < worst.sum) {
            continue;
        }
        if !(r.sum > 0.0 && permitted(allowed, r.slot)) {
            continue;
        }
        if best.len() < k {
            best.push(r);
        } else if let Some(mut worst) = best.peek_mut() {
            if r < *worst {
                *worst = r;
            }
        }
    }
    best.into_sorted_vec()
        .into_iter()
        .map(|r| (r.slot, r.sum))
        .collect()
}

/// Sets `out` to the entries of `from` with sums at `floor` or above, in order.
/// Without branches: which pass is as good as random.
fn at_least(from: &[Ranked], floor: f32, out: &mut Vec<Ranked>) {
    out.resize(from.len(), Ranked { slot: 0, sum: 0.0 });
    let mut len = 0;
    for &r in from {
        out[len] = r;
        len += (r.sum >= floor) as usize;
    }
    out.truncate(len);
}

/// The `k`-th best sum in `from` (of those `allowed`) if that is `floor` or above.
/// Sums here are neither negative nor NaN, so their bits rank as they do: a heap
/// of integers whose top is the lowest kept, and most sums cost one comparison
/// with it.
fn kth_best(from: &[Ranked], allowed: Option<&[bool]>, k: usize, floor: f32) -> Option<f32> {
    let mut best: BinaryHeap<Reverse<u32>> = BinaryHeap::with_capacity(k + 1);
    let mut low = floor.to_bits();
    for r in from {
        let bits = r.sum.to_bits();
        if bits < low || !permitted(allowed, r.slot) {
            continue;
        }
        if best.len() < k {
            best.push(Reverse(bits));
            if best.len() == k {
                low = low.max(best.peek().map_or(0, |r| r.0));
            }
        } else {
            if let Some(mut lowest) = best.peek_mut() {
                *lowest = Reverse(bits);
            }
            low = best.peek().map_or(low, |r| r.0);
        }
    }
    (best.len() == k).then(|| f32::from_bits(best.peek().map_or(0, |r| r.0)))
}

/// The first index `i >= from` with `slots[i] >= target` (or `slots.len()`), for
/// ascending `slots`: steps of 1, 2, 4, ... past `from`, then a binary search.
fn gallop(slots: &[u32], from: usize, target: u32) -> usize {
    // Most often the very next slot will do.
    if slots.get(from).is_none_or(|&s| s >= target) {
        return from;
    }
    let (mut lo, mut hi, mut step) = (from + 1, from + 1, 1);
    while hi < slots.len() && slots[hi] < target {
        lo = hi + 1;
        hi += step;
        step *= 2;
    }
    let hi = hi.min(slots.len());
    lo + slots[lo..hi].partition_point(|&s| s < target)
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
    use rand::rngs::StdRng;
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};

    type Owned = (Vec<u32>, Vec<f32>, f32);

    fn borrow(owned: &[Owned]) -> Vec<Term<'_>> {
        owned
            .iter()
            .map(|(s, w, idf)| Term {
                slots: s,
                weights: w,
                idf: *idf,
            })
            .collect()
    }

    /// The ranking straight from its definition: dense sums, every posting added in
    /// the documented order (terms by descending bound, ties by position).
    fn reference(
        terms: &[Term<'_>],
        slots: usize,
        allowed: Option<&[bool]>,
        k: usize,
    ) -> Vec<(u32, f32)> {
        let bound = |t: &Term<'_>| {
            t.weights
                .iter()
                .map(|&w| t.idf * w)
                .fold(0f32, |m, c| if c > m { c } else { m })
        };
        let mut order: Vec<usize> = (0..terms.len()).collect();
        order.sort_by(|&a, &b| {
            bound(&terms[b])
                .total_cmp(&bound(&terms[a]))
                .then(a.cmp(&b))
        });
        let mut sums = vec![0f32; slots];
        for t in order.iter().map(|&i| &terms[i]) {
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

    fn settled_early() -> u64 {
        SCRATCH.with(|s| s.borrow().settled_early)
    }

    /// A corpus like a conversation's: BM25 weights over documents of varied
    /// length; terms from very common (low IDF) to rare, their postings ascending,
    /// or (now and then) shuffled or with a slot twice.
    fn random_terms(rng: &mut StdRng, n: usize) -> Vec<Owned> {
        let lengths: Vec<f32> = (0..n).map(|_| rng.random_range(3..40) as f32).collect();
        let coarse = rng.random_bool(0.3); // few distinct weights: many exact ties
        (0..rng.random_range(1..8))
            .map(|_| {
                let share = match rng.random_range(0..4) {
                    0 => rng.random_range(0.2..0.6),
                    1 => rng.random_range(0.02..0.2),
                    _ => rng.random_range(0.0..0.02),
                };
                let mut slots: Vec<u32> =
                    (0..n as u32).filter(|_| rng.random_bool(share)).collect();
                let weights: Vec<f32> = slots
                    .iter()
                    .map(|&s| {
                        let tf = rng.random_range(1..4) as f32;
                        if coarse {
                            tf * 0.5
                        } else {
                            tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * lengths[s as usize] / 20.0))
                        }
                    })
                    .collect();
                let df = slots.len() as f32;
                let idf = (1.0 + (n as f32 - df + 0.5) / (df + 0.5)).ln();
                match rng.random_range(0..8) {
                    0 => slots.shuffle(rng),
                    1 if !slots.is_empty() => {
                        let s = slots[rng.random_range(0..slots.len())];
                        slots.push(s);
                    }
                    _ => {}
                }
                let weights = slots
                    .iter()
                    .enumerate()
                    .map(|(i, _)| weights.get(i).copied().unwrap_or(0.7))
                    .collect();
                (slots, weights, idf)
            })
            .collect()
    }

    #[test]
    fn matches_the_reference_in_summing_order() {
        let mut rng = StdRng::seed_from_u64(7);
        let before = settled_early();
        let rounds = 3000;
        for round in 0..rounds {
            let n = [40, 300, 2000][round % 3];
            let owned = random_terms(&mut rng, n);
            let terms = borrow(&owned);
            let mask: Vec<bool> = (0..rng.random_range(n / 2..n + 5))
                .map(|_| rng.random_bool(0.7))
                .collect();
            let allowed = rng.random_bool(0.5).then_some(mask.as_slice());
            let k = [1, 2, 5, 10, 50, n + 1][rng.random_range(0..6)];
            assert_eq!(
                top_k(&terms, n, allowed, k).unwrap(),
                reference(&terms, n, allowed, k),
                "round {round}, k {k}"
            );
        }
        // The rounds must exercise the skipping, not only the plain sums.
        let settled = settled_early() - before;
        assert!(settled > rounds as u64 / 5, "only {settled} settled early");
    }

    #[test]
    fn a_common_term_still_adds_to_the_candidates() {
        // After the rare term, slots 5 and 7 tie at 5; the common term's bound
        // (1.0) cannot lift an untouched slot to 5, but it decides between them.
        let common: Vec<u32> = (0..400).collect();
        let mut common_weights = vec![0.25f32; 400];
        common_weights[7] = 0.5;
        let owned: Vec<Owned> = vec![
            (common.clone(), common_weights, 2.0),
            (vec![5, 7, 100], vec![1.0, 1.0, 0.5], 5.0),
        ];
        let terms = borrow(&owned);
        let before = settled_early();
        assert_eq!(top_k(&terms, 400, None, 1).unwrap(), vec![(7, 6.0)]);
        assert_eq!(
            top_k(&terms, 400, None, 2).unwrap(),
            vec![(7, 6.0), (5, 5.5)]
        );
        assert_eq!(settled_early() - before, 2);
        // The same with the common term's slots reversed: read in full, as exact.
        let mut reversed = owned.clone();
        reversed[0].0.reverse();
        reversed[0].1.reverse();
        let terms = borrow(&reversed);
        assert_eq!(
            top_k(&terms, 400, None, 2).unwrap(),
            vec![(7, 6.0), (5, 5.5)]
        );
    }

    #[test]
    fn a_slot_that_can_only_tie_is_kept() {
        // Slot 9 leads with 5 after the first term; slot 3 (4 so far) can reach
        // exactly 5 and then wins the tie by its lower slot.
        let mut common: Vec<u32> = (10..300).collect();
        common.insert(0, 3);
        let owned: Vec<Owned> = vec![
            (vec![3, 9], vec![4.0, 5.0], 1.0),
            (common, vec![1.0; 291], 1.0),
        ];
        let terms = borrow(&owned);
        assert_eq!(top_k(&terms, 300, None, 1).unwrap(), vec![(3, 5.0)]);
        // Nor does one no term has touched yet: after the first two terms slot 9
        // leads with 5, which the last two could only just give slot 3 too.
        let owned: Vec<Owned> = vec![
            (vec![9], vec![5.0], 1.0),
            (vec![20], vec![2.5], 1.0),
            (vec![3, 50, 51, 52], vec![2.5, 0.5, 0.5, 0.5], 1.0),
            (vec![3, 60, 61, 62], vec![2.5, 0.5, 0.5, 0.5], 1.0),
        ];
        let terms = borrow(&owned);
        assert_eq!(top_k(&terms, 100, None, 1).unwrap(), vec![(3, 5.0)]);
    }

    #[test]
    fn scans_find_order_bounds_and_signs() {
        let mut rng = StdRng::seed_from_u64(3);
        // Both ways the scan runs (the vectorised one if this CPU has it), over
        // lengths that leave every remainder of the lanes.
        for scan in [scan, scan_lanes] {
            for n in 0..70usize {
                let mut slots: Vec<u32> = (0..n as u32).map(|i| 3 * i + 1).collect();
                let mut weights: Vec<f32> = (0..n).map(|_| rng.random_range(0.0..2.0)).collect();
                let check = |slots: &[u32], weights: &[f32]| {
                    let term = Term {
                        slots,
                        weights,
                        idf: 1.5,
                    };
                    let top = slots.iter().copied().max().unwrap_or(0);
                    let s = scan(&term, top);
                    assert_eq!(s.too_high, !slots.is_empty());
                    assert!(!scan(&term, top + 1).too_high);
                    assert_eq!(s.ascending, slots.windows(2).all(|p| p[0] < p[1]));
                    let max = weights.iter().map(|&w| 1.5 * w).fold(0f32, f32::max);
                    assert_eq!(s.bound, max);
                    s.monotone
                };
                assert!(check(&slots, &weights));
                if n >= 2 {
                    let i = rng.random_range(1..n);
                    slots[i] = slots[i - 1]; // a repeat is not ascending
                    weights[rng.random_range(0..n)] = -0.5;
                    assert!(!check(&slots, &weights));
                    slots.swap(rng.random_range(0..n), n - 1);
                    weights.fill(1.0);
                    weights[rng.random_range(0..n)] = f32::NAN;
                    assert!(!check(&slots, &weights));
                    weights.fill(1.0);
                    weights[rng.random_range(0..n)] = f32::INFINITY;
                    assert!(!check(&slots, &weights));
                }
            }
        }
    }

    #[test]
    fn negative_contributions_are_added_in_full() {
        // Pruning would be wrong here (sums can fall); the plain sums are exact.
        let mut rng = StdRng::seed_from_u64(11);
        for round in 0..300 {
            let mut owned = random_terms(&mut rng, 500);
            let last = owned.len() - 1;
            owned[last].2 = -owned[last].2;
            let terms = borrow(&owned);
            let k = [1, 5, 20][round % 3];
            assert_eq!(
                top_k(&terms, 500, None, k).unwrap(),
                reference(&terms, 500, None, k),
                "round {round}"
            );
        }
    }

    #[test]
    fn gallop_finds_the_first_not_below() {
        let slots: Vec<u32> = (0..100).map(|i| 2 * i).collect();
        for from in [0, 1, 17, 99, 100] {
            for target in 0..205 {
                let want = from + slots[from..].partition_point(|&s| s < target);
                assert_eq!(gallop(&slots, from, target), want, "{from} {target}");
            }
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
            Err(Error::InvalidArgument { field, message }) => (field, message),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            field(top_k(&[term], 3, None, 5)),
            ("terms".into(), "term 0 has slot 3, not below 3".into())
        );
        let short = Term {
            slots: &slots,
            weights: &weights[..1],
            idf: 1.0,
        };
        assert_eq!(field(top_k(&[short], 10, None, 5)).0, "terms");
    }
}
