//! Linking nodes into the graph: hnswlib's insertion with its neighbour-selection
//! heuristic, run for many nodes at once from rayon's threads, and the repair of a
//! deleted node's neighbourhood before its slot is reused.

use super::graph::{Entry, Graph, MAX_LEVEL};
use super::quant::{self, approx_distance};
use super::search::{with_scratch, Scored, Searcher};
use rayon::prelude::*;

/// Distances at or below this are rounding noise between equal vectors.
const DUPLICATE_DISTANCE: f32 = 1e-6;

/// What the heuristic does with a candidate.
enum Verdict {
    Keep,
    /// A kept neighbour is nearer to it than the base.
    Pruned,
    /// A kept neighbour is (up to rounding) the same vector.
    Duplicate,
}

impl Searcher<'_> {
    /// hnswlib's heuristic: walk the candidates nearest first and keep one only if it
    /// is nearer to `base` than to every neighbour kept so far. This spreads the links
    /// in all directions, so fewer hops (and a lower ef) reach the same recall.
    /// `candidates` come from [`Self::exact_around`] for `base`: ranked by exact
    /// distance, as ranking by code distance, whose rounding reorders candidates at
    /// nearly equal distances, measurably lowered recall.
    ///
    /// Whether a kept neighbour is nearer to a candidate than the base is decided on
    /// codes (in cache from the walk) where their error bound decides it, and on the
    /// exact vectors only where it does not: among near-duplicates the code distances
    /// differ by less than their rounding error, and deciding those on codes would
    /// prune almost every link and leave nodes unreachable.
    pub fn select_neighbours(&self, candidates: &[Scored], max: usize, floor: usize) -> Vec<u32> {
        let g = self.graph;
        let mut kept: Vec<u32> = Vec::with_capacity(max);
        let mut pruned: Vec<u32> = Vec::new();
        let mut duplicates: Vec<u32> = Vec::new();
        for c in candidates {
            if kept.len() >= max {
                break;
            }
            let coded = g.coded(c.slot);
            // The first kept neighbour nearer to c than the base decides: most pruned
            // candidates are decided by the first or second kept one (the nearest to
            // the base), so this computes a few distances per candidate, not `max`.
            let mut verdict = Verdict::Keep;
            for &k in &kept {
                let k_coded = g.coded(k);
                let d = approx_distance(self.metric, self.code_dot, coded, k_coded);
                let error = quant::error_bound(self.metric, coded, k_coded);
                if d > c.dist + error {
                    continue;
                }
                let d = if d < c.dist - error && d > error + DUPLICATE_DISTANCE {
                    d
                } else {
                    (self.exact)(g.vector(c.slot), g.vector(k))
                };
                if d < c.dist {
                    verdict = if d > DUPLICATE_DISTANCE {
                        Verdict::Pruned
                    } else {
                        Verdict::Duplicate
                    };
                    break;
                }
            }
            match verdict {
                Verdict::Keep => kept.push(c.slot),
                Verdict::Pruned => pruned.push(c.slot),
                Verdict::Duplicate => duplicates.push(c.slot),
            }
        }
        // A vector near the centre of the others (a "hub") is nearer to each candidate
        // than the base is, so the heuristic alone would keep only the hub and every
        // other node would be reachable through the hub's full list alone, i.e. mostly
        // not at all. So the list is filled up to `floor` with the nearest pruned
        // candidates (hnswlib's keepPrunedConnections): a new node fills its whole list,
        // a full list that is re-selected keeps at least half (filling those too made
        // builds a third slower). Duplicates of a kept node add no route and come last,
        // but they come, or a copy could be left with no in-link at all.
        let missing = floor.saturating_sub(kept.len());
        kept.extend(pruned.into_iter().chain(duplicates).take(missing));
        kept
    }

    /// Scores `slots` against the vector of `base` by code distance, nearest first,
    /// each slot once.
    fn ranked_around(&self, base: u32, slots: impl Iterator<Item = u32>) -> Vec<Scored> {
        let base = self.node(base);
        let mut out: Vec<Scored> = slots.map(|s| self.score(&base, s)).collect();
        out.sort_unstable();
        out.dedup_by_key(|s| s.slot);
        out
    }

    /// Scores `slots` against the vector of `base` by exact distance, nearest first,
    /// each slot once: the input of [`Self::select_neighbours`].
    pub fn exact_around(&self, base: u32, slots: impl Iterator<Item = u32>) -> Vec<Scored> {
        let base = self.graph.vector(base);
        let mut out: Vec<Scored> = slots
            .map(|s| Scored {
                dist: (self.exact)(base, self.graph.vector(s)),
                slot: s,
            })
            .collect();
        out.sort_unstable();
        out.dedup_by_key(|s| s.slot);
        out
    }

    /// Links the unlinked node `q` (vector and level already stored) into the graph.
    pub fn insert(&self, q: u32, ef_construction: usize) {
        let g = self.graph;
        // The VNNI kernel scores a query with pre-flipped codes in one instruction per
        // 64 bytes instead of three.
        let flipped = quant::flip(g.coded(q).code);
        let mut query = self.node(q);
        query.coded.flipped = &flipped;
        let level = g.level(q);
        let mut entry_lock = g.entry.lock();
        let Some(entry) = *entry_lock else {
            *entry_lock = Some(Entry { slot: q, level });
            g.mark_linked(q);
            return;
        };
        // A node that raises the top of the graph keeps the entry locked until it is
        // linked, so no other insert descends from an entry that is not yet reachable.
        let raise = (level > entry.level).then_some(entry_lock);
        let start = self.score(&query, entry.slot);
        let linked = |n: u32| g.is_linked(n);
        let mut cur = self.descend(&query, start, entry.level, level, linked);
        for layer in (0..=level.min(entry.level)).rev() {
            let found = with_scratch(|s| {
                let accept = |n| n != q && g.is_linked(n);
                self.search_layer(s, &query, cur, ef_construction, layer, accept);
                s.sorted_results()
            });
            let Some(&nearest) = found.first() else {
                continue;
            };
            cur = nearest;
            // A new node fills its list: its nearest candidates then link back to it, so
            // it gets in-links from more than the one node (a hub) it might keep.
            let ranked = self.exact_around(q, found.iter().map(|s| s.slot));
            let selected = self.select_neighbours(&ranked, g.m, g.m);
            {
                let _own = g.locks[q as usize].lock();
                g.set_neighbours(q, layer, &selected);
            }
            for &n in &selected {
                self.link_back(n, q, layer);
            }
        }
        g.mark_linked(q);
        if let Some(mut lock) = raise {
            *lock = Some(Entry { slot: q, level });
        }
    }

    /// Adds `q` to the list of `n`; a full list is re-selected from its members and `q`.
    fn link_back(&self, n: u32, q: u32, layer: usize) {
        let g = self.graph;
        if layer > g.level(n) {
            return;
        }
        let _lock = g.locks[n as usize].lock();
        if g.neighbours(n, layer).any(|x| x == q) || g.try_push_neighbour(n, layer, q) {
            return;
        }
        let ranked = self.exact_around(n, g.neighbours(n, layer).chain([q]));
        let max = g.capacity(layer);
        let kept = self.select_neighbours(&ranked, max, max / 2);
        g.set_neighbours(n, layer, &kept);
    }

    /// Before the slots in `excluded` are reused, every node that links to one of
    /// them gets a new list on that layer: its other links plus the reused slot's own
    /// links, nearest first, filled to capacity. A node reachable only through a
    /// reused slot thereby gets in-links from the nodes that used to route to it (the
    /// consolidation of FreshDiskANN). `into` lists, per layer, the (node, reused slot)
    /// pairs where the node links to the slot.
    pub fn repair_around(&self, into: &[Vec<(u32, u32)>], excluded: &[bool]) {
        let g = self.graph;
        for (layer, pairs) in into.iter().enumerate() {
            let mut i = 0;
            while i < pairs.len() {
                let p = pairs[i].0;
                let mut candidates: Vec<u32> = g
                    .neighbours(p, layer)
                    .filter(|&c| !excluded[c as usize])
                    .collect();
                // All reused slots that p links to on this layer (pairs are sorted by node).
                while i < pairs.len() && pairs[i].0 == p {
                    let s = pairs[i].1;
                    candidates.extend(
                        g.neighbours(s, layer)
                            .filter(|&c| c != p && !excluded[c as usize] && layer <= g.level(c)),
                    );
                    i += 1;
                }
                let ranked = self.exact_around(p, candidates.into_iter());
                let max = g.capacity(layer);
                let kept = self.select_neighbours(&ranked, max, max);
                let _lock = g.locks[p as usize].lock();
                g.set_neighbours(p, layer, &kept);
            }
        }
    }

    /// Links every node that a walk of layer 0 from the entry does not reach into the
    /// list of its nearest reached neighbour (or the entry's). A full list gives up the
    /// farthest member that has another in-link. A few passes, as each link can only
    /// make more nodes reachable.
    pub fn reconnect_orphans(&self) {
        let g = self.graph;
        let Some(entry) = *g.entry.lock() else {
            return;
        };
        for _ in 0..8 {
            let n = g.slots();
            let mut in_links = vec![0u32; n];
            for p in 0..n as u32 {
                for c in g.neighbours(p, 0) {
                    in_links[c as usize] += 1;
                }
            }
            let mut reached = vec![false; n];
            reached[entry.slot as usize] = true;
            let mut stack = vec![entry.slot];
            while let Some(p) = stack.pop() {
                for c in g.neighbours(p, 0) {
                    if !std::mem::replace(&mut reached[c as usize], true) {
                        stack.push(c);
                    }
                }
            }
            let orphans: Vec<u32> = (0..n as u32)
                .filter(|&u| !reached[u as usize] && g.is_linked(u))
                .collect();
            if orphans.is_empty() {
                return;
            }
            for u in orphans {
                let host = self
                    .ranked_around(u, g.neighbours(u, 0).filter(|&c| reached[c as usize]))
                    .first()
                    .map_or(entry.slot, |c| c.slot);
                let _lock = g.locks[host as usize].lock();
                if g.try_push_neighbour(host, 0, u) {
                    continue;
                }
                let mut list: Vec<u32> = g.neighbours(host, 0).collect();
                let ranked = self.ranked_around(host, list.iter().copied());
                if let Some(spare) = ranked.iter().rev().find(|c| in_links[c.slot as usize] > 1) {
                    in_links[spare.slot as usize] -= 1;
                    if let Some(cell) = list.iter_mut().find(|x| **x == spare.slot) {
                        *cell = u;
                    }
                    g.set_neighbours(host, 0, &list);
                }
            }
        }
    }

    /// Inserts `slots` in parallel on all cores.
    pub fn insert_all(&self, slots: &[u32], ef_construction: usize) {
        slots
            .par_iter()
            .with_min_len(8)
            .for_each(|&q| self.insert(q, ef_construction));
    }
}

/// The node on the highest layer among those not `excluded`, to take over as entry.
pub(crate) fn highest_node(g: &Graph, excluded: &[bool]) -> Option<Entry> {
    (0..g.slots() as u32)
        .filter(|&s| !excluded[s as usize])
        .max_by_key(|&s| g.level(s))
        .map(|slot| Entry {
            slot,
            level: g.level(slot),
        })
}

/// Draws a node's top layer: geometric with ratio 1/m, as in the HNSW paper.
pub(crate) fn draw_level(rng: &mut u64, m: usize) -> usize {
    let u = (splitmix64(rng) >> 11) as f64 / (1u64 << 53) as f64;
    let ml = 1.0 / (m as f64).ln();
    ((-(u.max(f64::MIN_POSITIVE)).ln() * ml) as usize).min(MAX_LEVEL)
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_geometric() {
        let mut rng = 7;
        let draws: Vec<usize> = (0..100_000).map(|_| draw_level(&mut rng, 16)).collect();
        let above0 = draws.iter().filter(|&&l| l > 0).count() as f64 / draws.len() as f64;
        assert!((above0 - 1.0 / 16.0).abs() < 0.01, "{above0}");
        assert!(draws.iter().all(|&l| l <= MAX_LEVEL));
    }
}
