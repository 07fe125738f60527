//! Graph traversal: the greedy descent through the upper layers and the beam search
//! of one layer, shared by inserts and queries.
//!
//! A layer search takes an `accept` predicate: rejected nodes (deleted, hidden, or
//! outside a filter) are still expanded, so the route through the graph is
//! unchanged, but they never enter the result set.

use super::distance::{DistanceFn, Metric};
use super::graph::Graph;
use super::quant::{self, approx_distance, CodeDotFn, Coded};
use std::cell::RefCell;
use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

/// A node and its distance to the query; ordered by distance.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Scored {
    pub dist: f32,
    pub slot: u32,
}

impl PartialEq for Scored {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Scored {}
impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scored {
    fn cmp(&self, other: &Self) -> Ordering {
        self.dist
            .total_cmp(&other.dist)
            .then(self.slot.cmp(&other.slot))
    }
}

/// Per-thread buffers reused by every search on that thread, so a query allocates
/// nothing. The visited set is epoch-stamped: starting a search bumps the epoch
/// instead of clearing the array.
pub(crate) struct Scratch {
    /// u16 stamps keep the set small enough to stay in L2 for large graphs.
    marks: Vec<u16>,
    epoch: u16,
    fresh: Vec<u32>,
    candidates: BinaryHeap<Reverse<Scored>>,
    pub results: BinaryHeap<Scored>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = const { RefCell::new(Scratch {
        marks: Vec::new(),
        epoch: 0,
        fresh: Vec::new(),
        candidates: BinaryHeap::new(),
        results: BinaryHeap::new(),
    }) };
}

/// Runs `f` with this thread's scratch buffers (not re-entrant).
pub(crate) fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|s| f(&mut s.borrow_mut()))
}

impl Scratch {
    fn begin(&mut self, slots: usize) {
        if self.marks.len() < slots {
            self.marks.resize(slots, 0);
        }
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            self.marks.fill(0);
            self.epoch = 1;
        }
        self.candidates.clear();
        self.results.clear();
    }

    /// Marks `slot` visited; `true` if it was not yet.
    #[inline]
    fn visit(&mut self, slot: u32) -> bool {
        let mark = &mut self.marks[slot as usize];
        let first = *mark != self.epoch;
        *mark = self.epoch;
        first
    }

    /// The results of the last layer search, nearest first.
    pub fn sorted_results(&mut self) -> Vec<Scored> {
        let mut out: Vec<Scored> = self.results.drain().collect();
        out.sort_unstable();
        out
    }
}

/// Asks for every cache line of `row`, so it arrives while other work proceeds.
#[inline]
fn prefetch<T>(row: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let bytes = std::mem::size_of_val(row);
        let base = row.as_ptr() as *const i8;
        for offset in (0..bytes).step_by(64) {
            // SAFETY: prefetching is a hint; the address lies inside `row`.
            unsafe { _mm_prefetch(base.add(offset), _MM_HINT_T0) };
        }
    }
}

/// How many code-ranked candidates are re-ranked exactly for a top-`k` result.
pub(crate) fn rerank_pool(k: usize) -> usize {
    (2 * k).max(k + 10)
}

/// What a search is looking for: the f32 vector (for exact re-ranking) and its codes
/// (for traversal). Stored nodes borrow theirs from the graph.
pub(crate) struct Query<'a> {
    pub vector: &'a [f32],
    pub coded: Coded<'a>,
}

/// Codes owned by an external query.
pub(crate) struct QueryCode {
    code: Vec<i8>,
    flipped: Vec<i8>,
    scale: f32,
    norm2: f32,
}

impl QueryCode {
    pub fn new(vector: &[f32]) -> Self {
        let mut code = Vec::with_capacity(vector.len());
        let (scale, norm2) = quant::encode(vector, &mut code);
        let flipped = quant::flip(&code);
        QueryCode {
            code,
            flipped,
            scale,
            norm2,
        }
    }

    pub fn query<'a>(&'a self, vector: &'a [f32]) -> Query<'a> {
        Query {
            vector,
            coded: Coded {
                code: &self.code,
                scale: self.scale,
                norm2: self.norm2,
                sum: quant::code_sum(&self.code),
                flipped: &self.flipped,
            },
        }
    }
}

/// A graph together with the distances it is searched by.
#[derive(Clone, Copy)]
pub(crate) struct Searcher<'a> {
    pub graph: &'a Graph,
    pub metric: Metric,
    pub exact: DistanceFn,
    pub code_dot: CodeDotFn,
}

impl Searcher<'_> {
    /// A stored node as a query (for inserting it).
    pub fn node(&self, slot: u32) -> Query<'_> {
        Query {
            vector: self.graph.vector(slot),
            coded: self.graph.coded(slot),
        }
    }

    /// Asks for what scoring `slot` reads: its codes and their record.
    #[inline]
    fn prefetch_codes(&self, slot: u32) {
        let (code, meta) = self.graph.code_rows(slot);
        prefetch(code);
        prefetch(std::slice::from_ref(meta));
    }

    /// Approximate (quantised) distance from `query` to `slot`.
    #[inline]
    pub fn score(&self, query: &Query<'_>, slot: u32) -> Scored {
        Scored {
            dist: approx_distance(
                self.metric,
                self.code_dot,
                query.coded,
                self.graph.coded(slot),
            ),
            slot,
        }
    }

    /// Exact f32 distance from `query` to `slot`.
    #[inline]
    pub fn exact(&self, query: &Query<'_>, slot: u32) -> Scored {
        Scored {
            dist: (self.exact)(query.vector, self.graph.vector(slot)),
            slot,
        }
    }

    /// The `k` nearest of `found` by exact distance, nearest first. Only the best
    /// [`rerank_pool`] by code distance are re-scored: quantisation moves distances
    /// far less than the gap between the k-th and the 2k-th neighbour.
    pub fn rerank(&self, query: &Query<'_>, mut found: Vec<Scored>, k: usize) -> Vec<Scored> {
        let pool = rerank_pool(k);
        if found.len() > pool {
            found.select_nth_unstable(pool);
            found.truncate(pool);
        }
        for s in &found {
            prefetch(self.graph.vector(s.slot));
        }
        let mut exact: Vec<Scored> = found.iter().map(|s| self.exact(query, s.slot)).collect();
        exact.sort_unstable();
        exact.truncate(k);
        exact
    }

    /// Greedy walk from `start` down to (not into) layer `stop`: on each layer, move to
    /// the nearest `usable` neighbour until none is nearer.
    pub fn descend(
        &self,
        query: &Query<'_>,
        mut cur: Scored,
        top: usize,
        stop: usize,
        usable: impl Fn(u32) -> bool,
    ) -> Scored {
        for level in (stop + 1..=top).rev() {
            loop {
                let mut moved = false;
                for n in self.graph.neighbours(cur.slot, level) {
                    let s = self.score(query, n);
                    if s.dist < cur.dist && usable(n) {
                        cur = s;
                        moved = true;
                    }
                }
                if !moved {
                    break;
                }
            }
        }
        cur
    }

    /// Beam search of width `ef` on `level` from `entry`; the accepted nodes nearest to
    /// `query` are left in `scratch.results` (a max-heap of at most `ef`).
    pub fn search_layer(
        &self,
        scratch: &mut Scratch,
        query: &Query<'_>,
        entry: Scored,
        ef: usize,
        level: usize,
        accept: impl Fn(u32) -> bool,
    ) {
        scratch.begin(self.graph.slots());
        scratch.visit(entry.slot);
        scratch.candidates.push(Reverse(entry));
        let mut bound = f32::INFINITY;
        if accept(entry.slot) {
            scratch.results.push(entry);
            bound = entry.dist;
        }
        while let Some(Reverse(current)) = scratch.candidates.pop() {
            if current.dist > bound && scratch.results.len() >= ef {
                break;
            }
            let mut fresh = std::mem::take(&mut scratch.fresh);
            fresh.clear();
            fresh.extend(
                self.graph
                    .neighbours(current.slot, level)
                    .filter(|&n| scratch.visit(n)),
            );
            // Ask for every fresh neighbour's codes at once: the misses then overlap
            // (as many as the core tracks) instead of arriving one by one.
            for &n in &fresh {
                self.prefetch_codes(n);
            }
            if let Some(&Reverse(next)) = scratch.candidates.peek() {
                prefetch(self.graph.raw_list(next.slot, level));
            }
            for &n in &fresh {
                let s = self.score(query, n);
                if scratch.results.len() < ef || s.dist < bound {
                    scratch.candidates.push(Reverse(s));
                    if accept(n) {
                        scratch.results.push(s);
                        if scratch.results.len() > ef {
                            scratch.results.pop();
                        }
                        bound = scratch.results.peek().map_or(f32::INFINITY, |w| w.dist);
                    }
                }
            }
            scratch.fresh = fresh;
        }
    }
}
