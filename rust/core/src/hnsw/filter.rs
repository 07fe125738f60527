//! Restricting a search to a set of ids.
//!
//! Ids are resolved once to a bitset over slots that the layer search tests for each
//! node it would return. When the set is small, walking the graph would expand most
//! of it before finding `k` allowed nodes, so the search scans the allowed vectors
//! instead (and re-ranks exactly); recall then holds at any selectivity.

use super::search::{rerank_pool, Query, Scored, Searcher};
use parking_lot::Mutex;
use std::collections::BinaryHeap;
use std::sync::Arc;

/// Live slots a search may return.
pub struct AllowedSlots {
    bits: Vec<u64>,
    slots: Vec<u32>,
}

impl AllowedSlots {
    /// `slots` must be distinct and below `total_slots`.
    pub(crate) fn new(total_slots: usize, slots: Vec<u32>) -> Self {
        let mut bits = vec![0u64; total_slots.div_ceil(64)];
        for &s in &slots {
            bits[s as usize / 64] |= 1 << (s % 64);
        }
        AllowedSlots { bits, slots }
    }

    #[inline]
    pub fn contains(&self, slot: u32) -> bool {
        self.bits
            .get(slot as usize / 64)
            .is_some_and(|w| w & (1 << (slot % 64)) != 0)
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Scan of every allowed vector by code distance (a sequential read of a quarter
    /// of the bytes), the best re-ranked exactly; the nearest `k`, nearest first.
    pub(crate) fn scan(&self, searcher: &Searcher<'_>, query: &Query<'_>, k: usize) -> Vec<Scored> {
        let pool = rerank_pool(k);
        let mut best: BinaryHeap<Scored> = BinaryHeap::with_capacity(pool + 1);
        for &slot in &self.slots {
            let s = searcher.score(query, slot);
            if best.len() < pool {
                best.push(s);
            } else if best.peek().is_some_and(|w| s < *w) {
                best.pop();
                best.push(s);
            }
        }
        searcher.rerank(query, best.into_vec(), k)
    }

    /// Whether an exact scan is cheaper than the filtered graph search. The graph
    /// search expands about `ef * m0 / selectivity` nodes before it has `ef` allowed
    /// ones; the scan costs one distance per allowed node.
    pub(crate) fn prefer_scan(&self, live: usize, ef: usize, m0: usize) -> bool {
        let allowed = self.len() as f64;
        let selectivity = allowed / live.max(1) as f64;
        allowed * selectivity <= (ef * m0) as f64
    }
}

/// A reusable restriction of searches: to a set of ids, or to every id but a set.
/// The slots it resolves to are cached per index state, so repeated searches with the
/// same filter skip the id lookups.
///
/// The exclusion form is for filters that pass most of an index (the default filter
/// of a cube with a few archived memories): it is built and resolved from the few
/// ids it leaves out rather than from the many it lets through (at 100k ids, 4 ms
/// whenever the index or the filter changed).
pub struct IdFilter {
    ids: Vec<u64>,
    excluding: bool,
    cache: Mutex<Option<Resolved>>,
}

struct Resolved {
    index_uid: u64,
    generation: u64,
    slots: Arc<AllowedSlots>,
}

impl IdFilter {
    /// Searches return only `ids`.
    pub fn new(ids: &[u64]) -> Self {
        Self::with(ids, false)
    }

    /// Searches return any id but `ids`, including ids added after the filter.
    pub fn excluding(ids: &[u64]) -> Self {
        Self::with(ids, true)
    }

    fn with(ids: &[u64], excluding: bool) -> Self {
        let mut ids = ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        IdFilter {
            ids,
            excluding,
            cache: Mutex::new(None),
        }
    }

    /// The distinct ids of the filter, ascending: those allowed, or those left out if
    /// [`excluding`](Self::is_excluding).
    pub fn ids(&self) -> &[u64] {
        &self.ids
    }

    pub fn is_excluding(&self) -> bool {
        self.excluding
    }

    /// The cached resolution for an index in state (`index_uid`, `generation`), or a
    /// fresh one from `resolve`, which is then cached.
    pub(crate) fn resolved(
        &self,
        index_uid: u64,
        generation: u64,
        resolve: impl FnOnce(&[u64]) -> AllowedSlots,
    ) -> Arc<AllowedSlots> {
        let mut cache = self.cache.lock();
        if let Some(r) = cache
            .as_ref()
            .filter(|r| r.index_uid == index_uid && r.generation == generation)
        {
            return Arc::clone(&r.slots);
        }
        let slots = Arc::new(resolve(&self.ids));
        *cache = Some(Resolved {
            index_uid,
            generation,
            slots: Arc::clone(&slots),
        });
        slots
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitset_holds_exactly_the_given_slots() {
        let a = AllowedSlots::new(200, vec![0, 63, 64, 199]);
        for s in 0..210 {
            assert_eq!(a.contains(s), [0, 63, 64, 199].contains(&s), "slot {s}");
        }
    }

    #[test]
    fn selective_filters_prefer_the_exact_scan() {
        let few = AllowedSlots::new(100_000, (0..1_000).collect());
        let half = AllowedSlots::new(100_000, (0..50_000).collect());
        assert!(few.prefer_scan(100_000, 64, 32));
        assert!(!half.prefer_scan(100_000, 64, 32));
    }

    #[test]
    fn filter_resolution_is_cached_per_index_state() {
        let f = IdFilter::new(&[5, 3, 5]);
        assert_eq!(f.ids(), &[3, 5]);
        let mut calls = 0;
        for generation in [1, 1, 2] {
            f.resolved(9, generation, |_| {
                calls += 1;
                AllowedSlots::new(1, vec![])
            });
        }
        assert_eq!(calls, 2);
    }
}
