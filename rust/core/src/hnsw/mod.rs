//! HNSW index (Malkov & Yashunin) with in-graph filtering, deletion with slot
//! reuse, hidden inserts, parallel batch insert and search, and a checksummed file
//! format.
//!
//! Hidden inserts: `add_hidden` links ids into the graph without letting any search
//! return them until `reveal`. A caller can build the expensive part of a write
//! (the links) while the write it belongs to is still being committed elsewhere,
//! and make it visible only once that commit succeeded. Split into `place_hidden`
//! (`&mut self`, quick) and `link` (`&self`), the linking also runs beside searches.
//!
//! Distances: cosine is `1 - cos` (vectors are stored normalised), `ip` is
//! `1 - dot`, `l2` is the squared Euclidean distance, as in hnswlib. Missing
//! results (fewer than `k` matches) are padded with [`MISSING_ID`] and `+inf`.
//!
//! Concurrency: `search` takes `&self` and may run from many threads at once;
//! `add` and `delete` take `&mut self` (callers put the index behind a lock), and so
//! does `place_hidden`, but `link` takes `&self`: the graph's lists are atomics
//! written under per-node locks (see `graph`), so searches may walk them meanwhile.

mod distance;
mod filter;
mod graph;
mod ids;
mod insert;
mod persist;
mod quant;
mod search;

pub use distance::Metric;
pub use filter::{AllowedSlots, IdFilter};
pub use persist::write_file;

use crate::error::{Error, Result};
use distance::DistanceFn;
use graph::Graph;
use ids::IdMap;
use rayon::prelude::*;
use search::{with_scratch, Query, QueryCode, Scored, Searcher};
use std::sync::atomic::{AtomicU64, Ordering};

/// The id reported where fewer than `k` results exist.
pub const MISSING_ID: u64 = u64::MAX;

/// Results per query are allocated up front, so `k` is bounded.
pub const MAX_K: usize = 1 << 20;

/// Identity of an index instance, so filters can cache their resolution per index.
static NEXT_UID: AtomicU64 = AtomicU64::new(1);

/// Which ids a search may return.
#[derive(Clone, Copy)]
pub enum Allowed<'a> {
    All,
    Ids(&'a [u64]),
    Filter(&'a IdFilter),
}

/// Construction parameters, named as in hnswlib.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    pub dim: usize,
    pub metric: Metric,
    pub m: usize,
    pub ef_construction: usize,
}

impl Params {
    fn validate(&self) -> Result<()> {
        if !(1..=65_536).contains(&self.dim) {
            return Err(Error::invalid(
                "dim",
                format!("expected 1..=65536, got {}", self.dim),
            ));
        }
        if !(2..=1_024).contains(&self.m) {
            return Err(Error::invalid(
                "m",
                format!("expected 2..=1024, got {}", self.m),
            ));
        }
        if !(1..=1_000_000).contains(&self.ef_construction) {
            return Err(Error::invalid(
                "ef_construction",
                format!("expected 1..=1000000, got {}", self.ef_construction),
            ));
        }
        Ok(())
    }
}

/// Rows stored by [`HnswIndex::place_hidden`] and not linked yet.
#[must_use = "placed rows are unreachable until linked"]
pub struct Placed {
    slots: Vec<u32>,
    /// Whether free slots were reused (their old neighbours may need reconnecting).
    reusing: bool,
}

pub struct HnswIndex {
    params: Params,
    dist: DistanceFn,
    code_dot: quant::CodeDotFn,
    graph: Graph,
    /// Slot -> external id (meaningless for deleted slots).
    ids: Vec<u64>,
    /// Slots no search returns: deleted ones (their slot is in `free`) and ones added
    /// hidden and not revealed yet (their id is in `slots`).
    hidden: Vec<bool>,
    slots: IdMap,
    /// Deleted slots, reused by the next inserts.
    free: Vec<u32>,
    rng: u64,
    uid: u64,
    /// Bumped by every change of the id -> slot mapping.
    generation: u64,
}

impl HnswIndex {
    /// `max_elements` only reserves memory up front; the index grows past it.
    pub fn new(params: Params, max_elements: usize) -> Result<Self> {
        params.validate()?;
        let mut index = Self::empty(params);
        index
            .graph
            .reserve(max_elements)
            .map_err(|e| Error::invalid("max_elements", e.to_string()))?;
        Ok(index)
    }

    fn empty(params: Params) -> Self {
        HnswIndex {
            params,
            dist: params.metric.kernel(),
            code_dot: quant::code_dot_kernel(),
            graph: Graph::new(params.dim, params.m),
            ids: Vec::new(),
            hidden: Vec::new(),
            slots: IdMap::default(),
            free: Vec::new(),
            rng: 0x5EED_1DE5_u64,
            uid: NEXT_UID.fetch_add(1, Ordering::Relaxed),
            generation: 0,
        }
    }

    pub fn params(&self) -> Params {
        self.params
    }

    /// Number of live ids.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub fn contains(&self, id: u64) -> bool {
        self.slots.contains_key(&id)
    }

    /// Approximate bytes held by the index.
    pub fn memory_bytes(&self) -> usize {
        self.graph.memory_bytes()
            + self.ids.capacity() * 8
            + self.hidden.capacity()
            + self.slots.capacity() * 16
            + self.free.capacity() * 4
    }

    fn searcher(&self) -> Searcher<'_> {
        Searcher {
            graph: &self.graph,
            metric: self.params.metric,
            exact: self.dist,
            code_dot: self.code_dot,
        }
    }

    /// Checks `rows` (row-major, `dim` columns) and returns them ready to store or
    /// query: finite, and normalised for the cosine metric.
    fn prepare_rows(&self, field: &str, rows: &[f32]) -> Result<Vec<f32>> {
        let dim = self.params.dim;
        if !rows.len().is_multiple_of(dim) {
            return Err(Error::invalid(
                field,
                format!(
                    "expected a multiple of dim={dim} values, got {}",
                    rows.len()
                ),
            ));
        }
        let mut out = rows.to_vec();
        for (i, row) in out.chunks_exact_mut(dim).enumerate() {
            if !row.iter().all(|x| x.is_finite()) {
                return Err(Error::invalid(
                    field,
                    format!("row {i} contains NaN or infinity"),
                ));
            }
            if self.params.metric == Metric::Cosine && !distance::normalize(row) {
                return Err(Error::invalid(
                    field,
                    format!("row {i} has zero norm, which the cosine metric cannot compare"),
                ));
            }
        }
        Ok(out)
    }

    /// Inserts `ids` with their `vectors` (row-major, `len(ids) x dim`). An id that is
    /// already present is replaced; within one call the last occurrence wins. Either
    /// every row is inserted or, on invalid input, none.
    pub fn add(&mut self, ids: &[u64], vectors: &[f32]) -> Result<()> {
        let placed = self.place(ids, vectors, false)?;
        self.link(placed);
        Ok(())
    }

    /// As `add`, but no search returns the new rows until `reveal`. An id that was
    /// present stops being returned at once (its old row is replaced).
    pub fn add_hidden(&mut self, ids: &[u64], vectors: &[f32]) -> Result<()> {
        let placed = self.place_hidden(ids, vectors)?;
        self.link(placed);
        Ok(())
    }

    /// The first part of `add_hidden`: checks the input and stores the rows, hidden
    /// and not yet reachable. `link` adds them to the graph.
    pub fn place_hidden(&mut self, ids: &[u64], vectors: &[f32]) -> Result<Placed> {
        self.place(ids, vectors, true)
    }

    /// Links rows stored by `place_hidden` (or `add`) into the graph: most of the cost
    /// of an insert, and safe beside searches. Call it before any other change of the
    /// index.
    pub fn link(&self, placed: Placed) {
        let searcher = self.searcher();
        searcher.insert_all(&placed.slots, self.params.ef_construction);
        if placed.reusing {
            // Reused slots drop the links others had to them; the repair before the
            // reuse keeps nearly every node reachable, this makes sure of the rest.
            searcher.reconnect_orphans();
        }
    }

    /// Lets searches return `ids` added hidden (others are ignored); returns how many
    /// were hidden.
    pub fn reveal(&mut self, ids: &[u64]) -> usize {
        let mut revealed = 0;
        for id in ids {
            if let Some(&slot) = self.slots.get(id) {
                revealed += std::mem::replace(&mut self.hidden[slot as usize], false) as usize;
            }
        }
        if revealed > 0 {
            self.generation += 1; // filters resolved before left these slots out
        }
        revealed
    }

    fn place(&mut self, ids: &[u64], vectors: &[f32], hidden: bool) -> Result<Placed> {
        let dim = self.params.dim;
        if vectors.len() != ids.len() * dim {
            return Err(Error::invalid(
                "vectors",
                format!(
                    "expected {} x {dim} values for {} ids, got {}",
                    ids.len(),
                    ids.len(),
                    vectors.len()
                ),
            ));
        }
        if ids.contains(&MISSING_ID) {
            return Err(Error::invalid(
                "ids",
                format!("{MISSING_ID} is reserved for missing results"),
            ));
        }
        let rows = self.prepare_rows("vectors", vectors)?;
        let mut last_row = IdMap::default();
        for (row, &id) in ids.iter().enumerate() {
            last_row.insert(id, row as u32);
        }
        // Ids already present free their slots for their new rows, so count them as free.
        let present = last_row
            .keys()
            .filter(|id| self.slots.contains_key(id))
            .count();
        let growth = last_row.len().saturating_sub(self.free.len() + present);
        if self.graph.slots() + growth >= u32::MAX as usize {
            return Err(Error::ResourceExhausted(format!(
                "an index holds at most {} vectors",
                u32::MAX - 1
            )));
        }
        self.graph.reserve(growth)?;
        self.delete(ids);
        let reusing = !self.free.is_empty();
        let slots = self.place_rows(ids, &last_row, &rows, hidden);
        self.generation += 1;
        Ok(Placed { slots, reusing })
    }

    /// Gives each distinct id a slot (a free one first) holding its row; returns the
    /// slots to link. Reused slots are unlinked from their old neighbourhood first.
    fn place_rows(
        &mut self,
        ids: &[u64],
        last_row: &IdMap,
        rows: &[f32],
        hidden: bool,
    ) -> Vec<u32> {
        let dim = self.params.dim;
        let mut order: Vec<(u64, u32)> = ids
            .iter()
            .enumerate()
            .filter(|&(row, id)| last_row.get(id) == Some(&(row as u32)))
            .map(|(row, &id)| (id, row as u32))
            .collect();
        let reuse_count = order.len().min(self.free.len());
        let reused: Vec<u32> = self.free.split_off(self.free.len() - reuse_count);
        self.unlink(&reused);
        let mut placed = Vec::with_capacity(order.len());
        for (i, (id, row)) in order.drain(..).enumerate() {
            let vector = &rows[row as usize * dim..(row as usize + 1) * dim];
            let slot = match reused.get(i) {
                Some(&slot) => {
                    self.graph.reset(slot, vector);
                    self.ids[slot as usize] = id;
                    self.hidden[slot as usize] = hidden;
                    slot
                }
                None => {
                    let level = insert::draw_level(&mut self.rng, self.params.m);
                    self.ids.push(id);
                    self.hidden.push(hidden);
                    self.graph.push(vector, level)
                }
            };
            self.slots.insert(id, slot);
            placed.push(slot);
        }
        placed
    }

    /// Detaches the deleted slots `reused` from the graph before they get new vectors.
    fn unlink(&mut self, reused: &[u32]) {
        if reused.is_empty() {
            return;
        }
        let mut excluded = vec![false; self.graph.slots()];
        for &s in reused {
            excluded[s as usize] = true;
        }
        // Who links to a reused slot, per layer (one pass over every list).
        let mut into: Vec<Vec<(u32, u32)>> = vec![Vec::new(); graph::MAX_LEVEL + 1];
        for p in 0..self.graph.slots() as u32 {
            if excluded[p as usize] {
                continue;
            }
            for (layer, pairs) in into.iter_mut().enumerate().take(self.graph.level(p) + 1) {
                for c in self.graph.neighbours(p, layer) {
                    if excluded[c as usize] {
                        pairs.push((p, c));
                    }
                }
            }
        }
        self.searcher().repair_around(&into, &excluded);
        let mut entry = self.graph.entry.lock();
        if entry.is_some_and(|e| excluded[e.slot as usize]) {
            *entry = insert::highest_node(&self.graph, &excluded);
        }
    }

    /// Deletes `ids` (unknown ids are ignored) and returns how many were present.
    /// Deleted nodes keep routing searches until their slot is reused.
    pub fn delete(&mut self, ids: &[u64]) -> usize {
        let mut removed = 0;
        for id in ids {
            if let Some(slot) = self.slots.remove(id) {
                self.hidden[slot as usize] = true;
                self.free.push(slot);
                removed += 1;
            }
        }
        if removed > 0 {
            self.generation += 1;
        }
        removed
    }

    /// The live slots of `ids`.
    fn resolve(&self, ids: &[u64]) -> AllowedSlots {
        let mut slots: Vec<u32> = ids
            .iter()
            .filter_map(|id| self.slots.get(id).copied())
            .filter(|&s| !self.hidden[s as usize])
            .collect();
        slots.sort_unstable();
        slots.dedup();
        AllowedSlots::new(self.graph.slots(), slots)
    }

    /// The live slots of every id but `ids`.
    fn resolve_excluding(&self, ids: &[u64]) -> AllowedSlots {
        let mut skipped = self.hidden.clone(); // deleted, or not revealed yet
        for id in ids {
            if let Some(&s) = self.slots.get(id) {
                skipped[s as usize] = true;
            }
        }
        let slots = (0..skipped.len() as u32)
            .filter(|&s| !skipped[s as usize])
            .collect();
        AllowedSlots::new(self.graph.slots(), slots)
    }

    /// The `k` nearest live ids to each query row (`queries` row-major, `dim` columns),
    /// as row-major `(ids, distances)` of `rows x k`, nearest first, padded with
    /// [`MISSING_ID`] and `+inf`. Rows are searched in parallel.
    pub fn search(
        &self,
        queries: &[f32],
        k: usize,
        ef_search: usize,
        allowed: Allowed<'_>,
    ) -> Result<(Vec<u64>, Vec<f32>)> {
        if !(1..=MAX_K).contains(&k) {
            return Err(Error::invalid(
                "k",
                format!("expected 1..={MAX_K}, got {k}"),
            ));
        }
        if ef_search == 0 {
            return Err(Error::invalid("ef_search", "expected ef_search >= 1"));
        }
        let queries = self.prepare_rows("queries", queries)?;
        let filter = match allowed {
            Allowed::All => None,
            Allowed::Ids(ids) => Some(std::sync::Arc::new(self.resolve(ids))),
            Allowed::Filter(f) => Some(f.resolved(self.uid, self.generation, |ids| {
                if f.is_excluding() {
                    self.resolve_excluding(ids)
                } else {
                    self.resolve(ids)
                }
            })),
        };
        let ef = ef_search.max(k);
        let scan = filter
            .as_ref()
            .is_some_and(|f| f.prefer_scan(self.len(), ef, self.graph.m0));
        let one = |q: &[f32]| -> Vec<Scored> {
            let code = QueryCode::new(q);
            let q = &code.query(q);
            match &filter {
                Some(f) if scan => f.scan(&self.searcher(), q, k),
                Some(f) => self.search_graph(q, k, ef, |s| f.contains(s)),
                None => self.search_graph(q, k, ef, |s| !self.hidden[s as usize]),
            }
        };
        let dim = self.params.dim;
        let hits: Vec<Vec<Scored>> = if queries.len() == dim {
            vec![one(&queries)]
        } else {
            queries.par_chunks_exact(dim).map(one).collect()
        };
        let mut ids = vec![MISSING_ID; hits.len() * k];
        let mut dists = vec![f32::INFINITY; hits.len() * k];
        for (row, found) in hits.iter().enumerate() {
            for (j, s) in found.iter().take(k).enumerate() {
                ids[row * k + j] = self.ids[s.slot as usize];
                dists[row * k + j] = s.dist;
            }
        }
        Ok((ids, dists))
    }

    fn search_graph(
        &self,
        q: &Query<'_>,
        k: usize,
        ef: usize,
        accept: impl Fn(u32) -> bool,
    ) -> Vec<Scored> {
        let Some(entry) = *self.graph.entry.lock() else {
            return Vec::new();
        };
        let searcher = self.searcher();
        let start = searcher.descend(q, searcher.score(q, entry.slot), entry.level, 0, |_| true);
        with_scratch(|s| {
            searcher.search_layer(s, q, start, ef, 0, accept);
            let found: Vec<Scored> = s.results.drain().collect();
            searcher.rerank(q, found, k)
        })
    }
}

#[cfg(test)]
mod tests;
