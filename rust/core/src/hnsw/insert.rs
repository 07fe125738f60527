//! Linking nodes into the graph: hnswlib's insertion with its neighbour-selection
//! heuristic, run for many nodes at once from rayon's threads, and the repair of a
//! deleted node's neighbourhood before its slot is reused.

use super::graph::{Entry, Graph, MAX_LEVEL};
use super::search::{with_scratch, Scored, Searcher};
use rayon::prelude::*;

/// A full list that is re-selected keeps at least `max / MIN_LINKS_DIVISOR` links,
/// pruned or not; a new node's own list is filled up to `max`.
const MIN_LINKS_DIVISOR: usize = 2;

/// Distances at or below this are rounding noise between equal vectors.
const DUPLICATE_DISTANCE: f32 = 1e-6;

impl Searcher<'_> {
    /// hnswlib's heuristic: walk the candidates nearest first and keep one only if it
    /// is nearer to `base` than to every neighbour kept so far. This spreads the links
    /// in all directions, so fewer hops (and a lower ef) reach the same recall. It
    /// compares exact distances: among near-duplicates the code distances differ by
    /// less than their rounding error, which would prune almost every link and leave
    /// nodes unreachable.
    pub fn select_neighbours(
        &self,
        base: u32,
        candidates: &[Scored],
        max: usize,
        floor: usize,
    ) -> Vec<u32> {
        let base = self.graph.vector(base);
        let mut exact: Vec<Scored> = candidates
            .iter()
            .map(|c| Scored {
                dist: (self.exact)(base, self.graph.vector(c.slot)),
                slot: c.slot,
            })
            .collect();
        exact.sort_unstable();
        let mut kept: Vec<u32> = Vec::with_capacity(max);
        let mut pruned: Vec<u32> = Vec::new();
        for c in &exact {
            if kept.len() >= max {
                break;
            }
            let v = self.graph.vector(c.slot);
            let nearest_kept = kept
                .iter()
                .map(|&k| (self.exact)(v, self.graph.vector(k)))
                .fold(f32::INFINITY, f32::min);
            if nearest_kept >= c.dist {
                kept.push(c.slot);
            } else if nearest_kept > DUPLICATE_DISTANCE {
                // Duplicates of a kept node add no route, so they never fill the floor.
                pruned.push(c.slot);
            }
        }
        // A vector near the centre of the others (a "hub") is nearer to each candidate
        // than the base is, so the heuristic alone would keep only the hub and every
        // other node would be reachable through the hub's full list alone, i.e. mostly
        // not at all. The nearest pruned candidates keep a floor of links.
        let missing = floor.saturating_sub(kept.len());
        kept.extend(pruned.into_iter().take(missing));
        kept
    }

    /// Scores `slots` against the vector of `base`, nearest first.
    fn ranked_around(&self, base: u32, slots: impl Iterator<Item = u32>) -> Vec<Scored> {
        let base = self.node(base);
        let mut out: Vec<Scored> = slots.map(|s| self.score(&base, s)).collect();
        out.sort_unstable();
        out.dedup_by_key(|s| s.slot);
        out
    }

    /// Links the unlinked node `q` (vector and level already stored) into the graph.
    pub fn insert(&self, q: u32, ef_construction: usize) {
        let g = self.graph;
        let query = self.node(q);
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
            let selected = self.select_neighbours(q, &found, g.m, g.m);
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
        let ranked = self.ranked_around(n, g.neighbours(n, layer).chain([q]));
        let max = g.capacity(layer);
        let kept = self.select_neighbours(n, &ranked, max, (max / MIN_LINKS_DIVISOR).max(1));
        g.set_neighbours(n, layer, &kept);
    }

    /// Before slot `s` is reused, takes it out of its neighbours' lists and fills the
    /// room with the nearest of its other neighbours, so routes that went through `s`
    /// survive. (Re-running the selection heuristic for every neighbour made an add
    /// into reused slots twice as slow as an append, at no better recall.) Slots in
    /// `excluded` (all slots being reused) are never chosen.
    pub fn repair_around(&self, s: u32, excluded: &[bool]) {
        let g = self.graph;
        for layer in 0..=g.level(s) {
            let hood: Vec<u32> = g
                .neighbours(s, layer)
                .filter(|&n| !excluded[n as usize])
                .collect();
            for &n in &hood {
                if layer > g.level(n) {
                    continue;
                }
                let mut kept: Vec<u32> = g
                    .neighbours(n, layer)
                    .filter(|&c| c != s && !excluded[c as usize])
                    .collect();
                let room = g.capacity(layer).saturating_sub(kept.len());
                let fresh = hood
                    .iter()
                    .copied()
                    .filter(|&c| c != n && !kept.contains(&c));
                let ranked = self.ranked_around(n, fresh);
                kept.extend(ranked.iter().take(room).map(|c| c.slot));
                g.set_neighbours(n, layer, &kept);
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
