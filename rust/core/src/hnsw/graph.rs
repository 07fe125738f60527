//! Storage of the HNSW graph: vectors in one contiguous array, layer-0 neighbour
//! lists in one flat array of fixed-size blocks, and the (rare) upper-layer lists
//! per node.
//!
//! Neighbour lists are atomics so that a batch insert can link nodes from many
//! threads: writers hold the node's lock, readers load without locking. A reader
//! racing a writer may see a mix of old and new entries, but every entry is always
//! a valid slot, so traversal stays memory-safe and only its route changes.

use super::quant::{self, Coded};
use crate::error::{Error, Result};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};

/// Highest layer a node may be drawn at; with m >= 2 reaching it is practically impossible.
pub(crate) const MAX_LEVEL: usize = 24;

/// The entry point of the graph: the node on the highest layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub slot: u32,
    pub level: usize,
}

/// A stored vector's code scale, squared norm (for L2) and code sum (for VNNI).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct CodeMeta {
    pub scale: f32,
    pub norm2: f32,
    pub sum: i32,
}

impl CodeMeta {
    /// Appends the codes of `vector` to `codes` and returns their record.
    fn encode(vector: &[f32], codes: &mut Vec<i8>) -> Self {
        let start = codes.len();
        let (scale, norm2) = quant::encode(vector, codes);
        CodeMeta {
            scale,
            norm2,
            sum: quant::code_sum(&codes[start..]),
        }
    }
}

pub(crate) struct Graph {
    pub dim: usize,
    /// Maximum neighbours per node on layers >= 1 (hnswlib's `M`).
    pub m: usize,
    /// Maximum neighbours per node on layer 0 (`2 * M`, as in hnswlib).
    pub m0: usize,
    pub vectors: Vec<f32>,
    /// int8 codes of `vectors` (`dim` per slot).
    pub codes: Vec<i8>,
    /// Per slot what turns its codes' dot products into distances. One array of
    /// small records rather than one per field: a walk step then misses the cache
    /// once for them, not three times.
    pub meta: Vec<CodeMeta>,
    /// Per slot a block of `m0 + 1` words: the count, then the neighbours.
    pub links0: Vec<AtomicU32>,
    /// Per slot `level` blocks of `m + 1` words for layers 1..=level.
    pub upper: Vec<Box<[AtomicU32]>>,
    pub levels: Vec<u8>,
    /// Serialises writers of one node's neighbour lists during parallel inserts.
    pub locks: Vec<Mutex<()>>,
    /// Whether a node's insert has finished. A reused slot can still be reached
    /// through old edges before that; inserts must not link to it or descend into it.
    pub linked: Vec<AtomicBool>,
    pub entry: Mutex<Option<Entry>>,
}

impl Graph {
    pub fn new(dim: usize, m: usize) -> Self {
        Graph {
            dim,
            m,
            m0: 2 * m,
            vectors: Vec::new(),
            codes: Vec::new(),
            meta: Vec::new(),
            links0: Vec::new(),
            upper: Vec::new(),
            levels: Vec::new(),
            locks: Vec::new(),
            linked: Vec::new(),
            entry: Mutex::new(None),
        }
    }

    /// Number of slots, live or deleted.
    pub fn slots(&self) -> usize {
        self.levels.len()
    }

    /// Makes room for `extra` more nodes, or fails (changing only capacities).
    pub fn reserve(&mut self, extra: usize) -> Result<()> {
        let no_memory =
            || Error::ResourceExhausted(format!("cannot allocate memory for {extra} more vectors"));
        // Byte counts of the largest arrays must not overflow.
        extra
            .checked_mul(4 * self.dim.max(self.m0 + 1))
            .ok_or_else(no_memory)?;
        let (dim, block) = (self.dim, self.m0 + 1);
        let fail = |_| no_memory();
        self.vectors.try_reserve(extra * dim).map_err(fail)?;
        self.codes.try_reserve(extra * dim).map_err(fail)?;
        self.meta.try_reserve(extra).map_err(fail)?;
        self.links0.try_reserve(extra * block).map_err(fail)?;
        self.upper.try_reserve(extra).map_err(fail)?;
        self.levels.try_reserve(extra).map_err(fail)?;
        self.locks.try_reserve(extra).map_err(fail)?;
        self.linked.try_reserve(extra).map_err(fail)?;
        Ok(())
    }

    /// Appends an unlinked node holding `vector` and returns its slot.
    pub fn push(&mut self, vector: &[f32], level: usize) -> u32 {
        let slot = self.levels.len() as u32;
        self.vectors.extend_from_slice(vector);
        self.meta.push(CodeMeta::encode(vector, &mut self.codes));
        self.links0.extend((0..=self.m0).map(|_| AtomicU32::new(0)));
        self.upper.push(Self::upper_block(level, self.m));
        self.levels.push(level as u8);
        self.locks.push(Mutex::new(()));
        self.linked.push(AtomicBool::new(false));
        slot
    }

    fn upper_block(level: usize, m: usize) -> Box<[AtomicU32]> {
        (0..level * (m + 1)).map(|_| AtomicU32::new(0)).collect()
    }

    /// Gives `slot` a new vector and empty neighbour lists; its level is kept so that
    /// lists of other nodes that still point at it stay within its layers.
    pub fn reset(&mut self, slot: u32, vector: &[f32]) {
        let s = slot as usize;
        self.vectors[s * self.dim..(s + 1) * self.dim].copy_from_slice(vector);
        let mut code = Vec::with_capacity(self.dim);
        self.meta[s] = CodeMeta::encode(vector, &mut code);
        self.codes[s * self.dim..(s + 1) * self.dim].copy_from_slice(&code);
        for level in 0..=self.level(slot) {
            self.list(slot, level)[0].store(0, Relaxed);
        }
        self.linked[s].store(false, Relaxed);
    }

    #[inline]
    pub fn vector(&self, slot: u32) -> &[f32] {
        let s = slot as usize;
        &self.vectors[s * self.dim..(s + 1) * self.dim]
    }

    #[inline]
    pub fn coded(&self, slot: u32) -> Coded<'_> {
        let s = slot as usize;
        let meta = self.meta[s];
        Coded {
            code: &self.codes[s * self.dim..(s + 1) * self.dim],
            scale: meta.scale,
            norm2: meta.norm2,
            sum: meta.sum,
            flipped: &[],
        }
    }

    /// The codes of `slot` and their record, to prefetch before scoring the slot.
    #[inline]
    pub fn code_rows(&self, slot: u32) -> (&[i8], &CodeMeta) {
        let s = slot as usize;
        (&self.codes[s * self.dim..(s + 1) * self.dim], &self.meta[s])
    }

    /// Rebuilds the codes from the vectors (after loading, which stores only the latter).
    pub fn encode_all(&mut self) {
        self.codes.clear();
        self.meta.clear();
        for v in self.vectors.chunks_exact(self.dim) {
            self.meta.push(CodeMeta::encode(v, &mut self.codes));
        }
    }

    #[inline]
    pub fn is_linked(&self, slot: u32) -> bool {
        self.linked[slot as usize].load(Relaxed)
    }

    pub fn mark_linked(&self, slot: u32) {
        self.linked[slot as usize].store(true, Relaxed);
    }

    #[inline]
    pub fn level(&self, slot: u32) -> usize {
        self.levels[slot as usize] as usize
    }

    pub fn capacity(&self, level: usize) -> usize {
        if level == 0 {
            self.m0
        } else {
            self.m
        }
    }

    /// The raw block (count word, then entries) of `slot` on `level` (<= its level).
    #[inline]
    fn list(&self, slot: u32, level: usize) -> &[AtomicU32] {
        if level == 0 {
            let base = slot as usize * (self.m0 + 1);
            &self.links0[base..base + self.m0 + 1]
        } else {
            let base = (level - 1) * (self.m + 1);
            &self.upper[slot as usize][base..base + self.m + 1]
        }
    }

    /// The block of `slot` on `level` (to prefetch); empty when the node does not
    /// reach `level`.
    #[inline]
    pub fn raw_list(&self, slot: u32, level: usize) -> &[AtomicU32] {
        if level <= self.level(slot) {
            self.list(slot, level)
        } else {
            &[]
        }
    }

    /// The neighbours of `slot` on `level`; empty when the node does not reach `level`.
    #[inline]
    pub fn neighbours(&self, slot: u32, level: usize) -> impl Iterator<Item = u32> + '_ {
        let list = self.raw_list(slot, level);
        let (count, entries) = match list.split_first() {
            Some((count, entries)) => (count.load(Relaxed) as usize, entries),
            None => (0, list),
        };
        entries[..count.min(entries.len())]
            .iter()
            .map(|a| a.load(Relaxed))
    }

    /// Replaces the list of `slot` on `level`; the caller holds `locks[slot]`
    /// (or `&mut self`) and passes at most `capacity(level)` valid slots.
    pub fn set_neighbours(&self, slot: u32, level: usize, neighbours: &[u32]) {
        let list = self.list(slot, level);
        let n = neighbours.len().min(list.len() - 1);
        for (cell, &v) in list[1..].iter().zip(&neighbours[..n]) {
            cell.store(v, Relaxed);
        }
        list[0].store(n as u32, Relaxed);
    }

    /// Appends to the list of `slot` on `level` if it has room (caller holds the lock).
    pub fn try_push_neighbour(&self, slot: u32, level: usize, neighbour: u32) -> bool {
        let list = self.list(slot, level);
        let n = list[0].load(Relaxed) as usize;
        if n + 1 >= list.len() {
            return false;
        }
        list[1 + n].store(neighbour, Relaxed);
        list[0].store(n as u32 + 1, Relaxed);
        true
    }

    /// Bytes held by the graph's arrays (vectors, lists, levels, locks).
    pub fn memory_bytes(&self) -> usize {
        let upper: usize = self.upper.iter().map(|b| b.len() * 4 + 16).sum();
        self.vectors.capacity() * 4
            + self.codes.capacity()
            + self.meta.capacity() * std::mem::size_of::<CodeMeta>()
            + self.links0.capacity() * 4
            + upper
            + self.levels.capacity()
            + self.locks.capacity() * std::mem::size_of::<Mutex<()>>()
            + self.linked.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_hold_at_most_their_capacity_and_upper_layers_are_bounded_by_level() {
        let mut g = Graph::new(2, 2);
        let a = g.push(&[0.0, 1.0], 1);
        let b = g.push(&[1.0, 0.0], 0);
        for n in 0..10 {
            g.try_push_neighbour(a, 0, n % 2);
        }
        assert_eq!(g.neighbours(a, 0).count(), g.m0);
        g.set_neighbours(a, 1, &[b, b, b, b]);
        assert_eq!(g.neighbours(a, 1).count(), g.m);
        assert_eq!(g.neighbours(b, 1).count(), 0, "b does not reach layer 1");
        g.reset(a, &[5.0, 5.0]);
        assert_eq!(g.neighbours(a, 0).count(), 0);
        assert_eq!(g.vector(a), &[5.0, 5.0]);
    }
}
