//! A RAM-budgeted pool of pages with least-recently-used spilling.
//!
//! Pages are held under caller-chosen keys. When the resident bytes would
//! exceed the budget, the least recently used pages leave RAM: a page not yet
//! persisted is first written to the [`SpillTarget`] (the store's blob table,
//! which answers with the blob's digest); a persisted page is simply dropped.
//! Asking for a page that is not resident loads it back by digest and checks
//! it before use.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::page::verify;
use crate::error::Error;

/// Where evicted pages go and come back from (content-addressed).
pub trait SpillTarget {
    /// The target's own error type; pool errors convert into it.
    type Error: From<Error>;
    /// Stores `page` and returns its digest.
    fn put(&mut self, page: &[u8]) -> std::result::Result<String, Self::Error>;
    /// Returns the page stored under `digest`.
    fn get(&mut self, digest: &str) -> std::result::Result<Vec<u8>, Self::Error>;
}

/// A page as the pool hands it out: shared, immutable, already verified.
pub type PageRef = Arc<Vec<u8>>;

struct Entry {
    data: Option<PageRef>,
    digest: Option<String>,
    last_use: u64,
}

/// Counters for monitoring and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    pub hits: u64,
    pub loads: u64,
    pub spills: u64,
    pub evictions: u64,
}

pub struct PagePool<S: SpillTarget> {
    budget: usize,
    resident: usize,
    clock: u64,
    entries: HashMap<String, Entry>,
    /// Resident pages by last use, oldest first.
    lru: BTreeMap<u64, String>,
    target: S,
    stats: PoolStats,
}

type PoolResult<T, S> = std::result::Result<T, <S as SpillTarget>::Error>;

impl<S: SpillTarget> PagePool<S> {
    pub fn new(budget_bytes: usize, target: S) -> Self {
        PagePool {
            budget: budget_bytes,
            resident: 0,
            clock: 0,
            entries: HashMap::new(),
            lru: BTreeMap::new(),
            target,
            stats: PoolStats::default(),
        }
    }

    pub fn budget(&self) -> usize {
        self.budget
    }

    pub fn resident_bytes(&self) -> usize {
        self.resident
    }

    pub fn resident_pages(&self) -> usize {
        self.lru.len()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn contains(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    pub fn is_resident(&self, key: &str) -> bool {
        self.entries.get(key).is_some_and(|e| e.data.is_some())
    }

    pub fn stats(&self) -> PoolStats {
        self.stats
    }

    /// Adds a verified page under `key` (replacing any page there), after making
    /// room for it. If room cannot be made, nothing changes.
    pub fn insert(&mut self, key: &str, page: Vec<u8>) -> PoolResult<(), S> {
        verify(&page)?;
        self.remove(key);
        self.make_room(page.len())?;
        self.admit(key, Arc::new(page), None);
        Ok(())
    }

    /// Records that the page for `key` is in the spill target under `digest`,
    /// without loading it (e.g. an activation read back after a restart).
    pub fn register(&mut self, key: &str, digest: &str) {
        if self.entries.get(key).and_then(|e| e.digest.as_deref()) == Some(digest) {
            return;
        }
        self.remove(key);
        self.entries.insert(
            key.to_owned(),
            Entry {
                data: None,
                digest: Some(digest.to_owned()),
                last_use: 0,
            },
        );
    }

    /// The page under `key`, loaded back from the spill target if it was evicted.
    pub fn get(&mut self, key: &str) -> PoolResult<PageRef, S> {
        let entry = self
            .entries
            .get(key)
            .ok_or_else(|| Error::NotFound(format!("KV page {key:?} is not in the pool")))?;
        if let Some(data) = entry.data.clone() {
            self.stats.hits += 1;
            self.touch(key);
            return Ok(data);
        }
        let digest = entry
            .digest
            .clone()
            .expect("a non-resident page has a digest");
        let page = self.target.get(&digest)?;
        verify(&page).map_err(|e| match e {
            Error::Corrupt(m) => Error::Corrupt(format!("KV page {key:?} (blob {digest}): {m}")),
            other => other,
        })?;
        let page = Arc::new(page);
        self.stats.loads += 1;
        self.make_room(page.len())?;
        self.entries.remove(key);
        self.admit(key, page.clone(), Some(digest));
        Ok(page)
    }

    /// Writes the page under `key` to the spill target if it is not there yet,
    /// and returns its digest. The page stays resident.
    pub fn persist(&mut self, key: &str) -> PoolResult<String, S> {
        let entry = self
            .entries
            .get(key)
            .ok_or_else(|| Error::NotFound(format!("KV page {key:?} is not in the pool")))?;
        if let Some(digest) = &entry.digest {
            return Ok(digest.clone());
        }
        let data = entry
            .data
            .clone()
            .expect("a page without a digest is resident");
        let digest = self.target.put(&data)?;
        self.stats.spills += 1;
        if let Some(e) = self.entries.get_mut(key) {
            e.digest = Some(digest.clone());
        }
        Ok(digest)
    }

    /// The digest of `key`'s page if it has been persisted.
    pub fn digest(&self, key: &str) -> Option<String> {
        self.entries.get(key).and_then(|e| e.digest.clone())
    }

    /// Forgets `key` (the spill target keeps any blob already written).
    pub fn remove(&mut self, key: &str) -> bool {
        match self.entries.remove(key) {
            Some(e) => {
                if let Some(data) = e.data {
                    self.resident -= data.len();
                    self.lru.remove(&e.last_use);
                }
                true
            }
            None => false,
        }
    }

    /// Changes the budget, evicting as needed.
    pub fn set_budget(&mut self, budget_bytes: usize) -> PoolResult<(), S> {
        self.budget = budget_bytes;
        self.make_room(0)
    }

    fn admit(&mut self, key: &str, data: PageRef, digest: Option<String>) {
        self.clock += 1;
        self.resident += data.len();
        self.lru.insert(self.clock, key.to_owned());
        self.entries.insert(
            key.to_owned(),
            Entry {
                data: Some(data),
                digest,
                last_use: self.clock,
            },
        );
    }

    fn touch(&mut self, key: &str) {
        self.clock += 1;
        if let Some(e) = self.entries.get_mut(key) {
            self.lru.remove(&e.last_use);
            e.last_use = self.clock;
            self.lru.insert(self.clock, key.to_owned());
        }
    }

    /// Evicts least recently used pages until `incoming` more bytes fit the budget,
    /// or nothing is left to evict: a page larger than the whole budget is still
    /// admitted, alone, and leaves with the next page that needs room.
    fn make_room(&mut self, incoming: usize) -> PoolResult<(), S> {
        while self.resident + incoming > self.budget {
            let Some((&tick, key)) = self.lru.iter().next() else {
                return Ok(());
            };
            let key = key.clone();
            let entry = self.entries.get(&key).expect("an LRU key is in the pool");
            if entry.digest.is_none() {
                let data = entry.data.clone().expect("an LRU page is resident");
                let digest = self.target.put(&data)?;
                self.stats.spills += 1;
                self.entries.get_mut(&key).expect("present").digest = Some(digest);
            }
            let entry = self.entries.get_mut(&key).expect("present");
            let data = entry.data.take().expect("an LRU page is resident");
            self.resident -= data.len();
            self.lru.remove(&tick);
            self.stats.evictions += 1;
        }
        Ok(())
    }
}
