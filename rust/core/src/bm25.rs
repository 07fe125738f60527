//! BM25 inverted index over document slots, updated incrementally.
//!
//! Each term keeps its postings as ascending slots with their term frequencies, so
//! that [`lexical::top_k`] can skip through a common term's postings. A term's BM25
//! weights (everything but the IDF) depend on the average document length, which
//! every change to the corpus moves: each term keeps its weights with the average
//! they were computed at, and recomputes them in one pass over its postings when a
//! query needs them after that, noting the largest: what the term can add to a
//! document, which the ranking needs and would otherwise read every posting to
//! find. So a write costs its own document's postings, and the next query a pass
//! over its terms' postings; nothing is ever rebuilt whole.
//!
//! The weights are float32, computed as `memosd.search.lexical` documents them
//! (Okapi BM25, `k1` = 1.2, `b` = 0.75).

use rustc_hash::FxHashMap;

use crate::lexical::{self, Term};

pub const K1: f32 = 1.2;
pub const B: f32 = 0.75;

#[derive(Default)]
struct Postings {
    name: String,
    slots: Vec<u32>,
    tfs: Vec<f32>,
    weights: Vec<f32>,
    /// The largest of `weights` (0 if none), computed with them.
    max_weight: f32,
    /// The average length `weights` were computed at; NaN when they are stale.
    weights_at: f32,
}

impl Postings {
    fn insert(&mut self, slot: u32, tf: f32) {
        // New documents take new, higher slots: almost always an append.
        let at = match self.slots.last() {
            Some(&last) if last > slot => self.slots.partition_point(|&s| s < slot),
            _ => self.slots.len(),
        };
        self.slots.insert(at, slot);
        self.tfs.insert(at, tf);
        self.weights_at = f32::NAN;
    }

    fn remove(&mut self, slot: u32) {
        if let Ok(at) = self.slots.binary_search(&slot) {
            self.slots.remove(at);
            self.tfs.remove(at);
            self.weights_at = f32::NAN;
        }
    }

    fn refresh(&mut self, lengths: &[u32], avg: f32) {
        if self.weights_at.to_bits() == avg.to_bits() {
            return;
        }
        let k1_plus_1 = (f64::from(K1) + 1.0) as f32;
        self.weights.clear();
        self.weights
            .extend(self.slots.iter().zip(&self.tfs).map(|(&s, &tf)| {
                let norm = K1 * ((1.0 - B) + B * lengths[s as usize] as f32 / avg);
                tf * k1_plus_1 / (tf + norm)
            }));
        self.max_weight = self.weights.iter().fold(0f32, |m, &w| m.max(w));
        self.weights_at = avg;
    }
}

#[derive(Default)]
pub struct Bm25Index {
    ids: FxHashMap<String, u32>,
    /// By term id; a freed id (in `free`) has no postings.
    terms: Vec<Postings>,
    free: Vec<u32>,
    /// By slot: the document's distinct term ids, or None for no document.
    docs: Vec<Option<Vec<u32>>>,
    /// By slot: the document's length in tokens.
    lengths: Vec<u32>,
    n_docs: usize,
    total_length: u64,
}

impl Bm25Index {
    pub fn new() -> Self {
        Self::default()
    }

    /// Documents indexed.
    pub fn len(&self) -> usize {
        self.n_docs
    }

    pub fn is_empty(&self) -> bool {
        self.n_docs == 0
    }

    /// Index the document of `tokens` (with repeats) in `slot`, replacing what was there.
    pub fn upsert<S: AsRef<str>>(&mut self, slot: u32, tokens: &[S]) {
        self.remove(slot);
        let mut counts: FxHashMap<&str, u32> = FxHashMap::default();
        for token in tokens {
            *counts.entry(token.as_ref()).or_default() += 1;
        }
        let s = slot as usize;
        if s >= self.docs.len() {
            self.docs.resize(s + 1, None);
            self.lengths.resize(s + 1, 0);
        }
        let mut ids = Vec::with_capacity(counts.len());
        for (term, tf) in counts {
            let id = self.term_id(term);
            self.terms[id as usize].insert(slot, tf as f32);
            ids.push(id);
        }
        self.docs[s] = Some(ids);
        self.lengths[s] = tokens.len() as u32;
        self.n_docs += 1;
        self.total_length += tokens.len() as u64;
    }

    /// Forget the document in `slot`, if any.
    pub fn remove(&mut self, slot: u32) {
        let Some(ids) = self.docs.get_mut(slot as usize).and_then(Option::take) else {
            return;
        };
        for id in ids {
            let postings = &mut self.terms[id as usize];
            postings.remove(slot);
            if postings.slots.is_empty() {
                self.ids.remove(&postings.name);
                *postings = Postings::default();
                self.free.push(id);
            }
        }
        self.n_docs -= 1;
        self.total_length -= u64::from(self.lengths[slot as usize]);
        self.lengths[slot as usize] = 0;
    }

    /// The `k` best slots (score > 0) for the query's distinct `terms`, best first,
    /// limited to the slots `allowed` holds true for if given. Terms are summed in
    /// [`lexical::top_k`]'s order, so equal queries give equal floats whatever the
    /// order of `terms`.
    pub fn search<S: AsRef<str>>(
        &mut self,
        terms: &[S],
        k: usize,
        allowed: Option<&[bool]>,
    ) -> Vec<(u32, f32)> {
        if self.n_docs == 0 || k == 0 {
            return Vec::new();
        }
        let found = self.refresh(terms);
        let (query, bounds) = self.query(&found);
        lexical::top_k_known(&query, &bounds, self.lengths.len(), allowed, k)
    }

    /// The ids and IDFs of the distinct `terms` the index holds, sorted by name, with
    /// their weights brought up to date.
    fn refresh<S: AsRef<str>>(&mut self, terms: &[S]) -> Vec<(u32, f32)> {
        let mut names: Vec<&str> = terms.iter().map(AsRef::as_ref).collect();
        names.sort_unstable();
        names.dedup();
        let avg = (self.total_length as f64 / self.n_docs as f64) as f32;
        let n = self.n_docs as f64;
        let mut found = Vec::with_capacity(names.len());
        for name in names {
            if let Some(&id) = self.ids.get(name) {
                let postings = &mut self.terms[id as usize];
                postings.refresh(&self.lengths, avg);
                let df = postings.slots.len() as f64;
                found.push((id, (1.0 + (n - df + 0.5) / (df + 0.5)).ln() as f32));
            }
        }
        found
    }

    /// The refreshed terms' postings, and the largest `idf * weight` of each.
    fn query(&self, found: &[(u32, f32)]) -> (Vec<Term<'_>>, Vec<f32>) {
        found
            .iter()
            .map(|&(id, idf)| {
                let p = &self.terms[id as usize];
                let term = Term {
                    slots: &p.slots,
                    weights: &p.weights,
                    idf,
                };
                // Weights are positive and rounding a product is monotone, so the
                // largest `idf * weight` is `idf` times the largest weight.
                (term, idf * p.max_weight)
            })
            .unzip()
    }

    fn term_id(&mut self, term: &str) -> u32 {
        if let Some(&id) = self.ids.get(term) {
            return id;
        }
        let id = match self.free.pop() {
            Some(id) => id,
            None => {
                self.terms.push(Postings::default());
                (self.terms.len() - 1) as u32
            }
        };
        self.terms[id as usize].name = term.to_owned();
        self.ids.insert(term.to_owned(), id);
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(docs: &[(u32, &str)]) -> Bm25Index {
        let mut idx = Bm25Index::new();
        for &(slot, text) in docs {
            let tokens: Vec<&str> = text.split_whitespace().collect();
            idx.upsert(slot, &tokens);
        }
        idx
    }

    /// BM25 written out per document, in f64.
    fn reference(docs: &[(u32, &str)], query: &[&str]) -> Vec<(u32, f64)> {
        let n = docs.len() as f64;
        let avg = docs
            .iter()
            .map(|(_, t)| t.split_whitespace().count())
            .sum::<usize>() as f64
            / n;
        let mut out = Vec::new();
        for &(slot, text) in docs {
            let tokens: Vec<&str> = text.split_whitespace().collect();
            let mut score = 0.0;
            for q in query {
                let tf = tokens.iter().filter(|t| *t == q).count() as f64;
                if tf == 0.0 {
                    continue;
                }
                let df = docs
                    .iter()
                    .filter(|(_, t)| t.split_whitespace().any(|w| w == *q))
                    .count();
                let idf = (1.0 + (n - df as f64 + 0.5) / (df as f64 + 0.5)).ln();
                let (k1, b) = (f64::from(K1), f64::from(B));
                score +=
                    idf * tf * (k1 + 1.0) / (tf + k1 * (1.0 - b + b * tokens.len() as f64 / avg));
            }
            if score > 0.0 {
                out.push((slot, score));
            }
        }
        out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        out
    }

    const DOCS: &[(u32, &str)] = &[
        (0, "caroline support group yesterday"),
        (1, "melanie painted sunrise lake"),
        (2, "support group met caroline brought cookies group"),
        (3, "kids love painting swimming lake"),
        (4, "nothing relevant"),
    ];

    #[test]
    fn scores_are_bm25() {
        let mut idx = index(DOCS);
        for query in [
            &["support", "group"][..],
            &["lake", "painting"],
            &["caroline"],
            &["zebra"],
        ] {
            let got = idx.search(query, 10, None);
            let want = reference(DOCS, query);
            assert_eq!(got.len(), want.len(), "{query:?}");
            for ((gs, gv), (ws, wv)) in got.iter().zip(&want) {
                assert_eq!(gs, ws);
                assert!(
                    (f64::from(*gv) - wv).abs() < 1e-5 * wv,
                    "{query:?}: {gv} vs {wv}"
                );
            }
        }
    }

    #[test]
    fn postings_stay_ascending_and_writes_in_any_order_score_alike() {
        let texts: Vec<(u32, String)> = (0..60)
            .map(|s| {
                (
                    s,
                    format!("caroline {}note{}", "lake ".repeat(s as usize % 3), s % 7),
                )
            })
            .collect();
        let borrowed: Vec<(u32, &str)> = texts.iter().map(|(s, t)| (*s, t.as_str())).collect();
        let mut ordered = index(&borrowed);
        let mut scrambled_docs = borrowed.clone();
        scrambled_docs.reverse();
        scrambled_docs.swap(3, 40);
        let mut scrambled = index(&scrambled_docs);
        for p in &scrambled.terms {
            assert!(p.slots.windows(2).all(|w| w[0] < w[1]), "{}", p.name);
        }
        let query = ["caroline", "lake", "note3"];
        assert_eq!(
            ordered.search(&query, 10, None),
            scrambled.search(&query, 10, None)
        );
    }

    #[test]
    fn updates_and_removals_equal_a_fresh_build() {
        let mut idx = index(DOCS);
        let query = ["group", "lake", "caroline"];
        idx.search(&query, 5, None); // weights computed at the first average
        idx.upsert(2, &["lake", "lake", "swim"]);
        idx.remove(0);
        idx.remove(0);
        idx.upsert(9, &["caroline", "group"]);
        let now = [
            (1, DOCS[1].1),
            (2, "lake lake swim"),
            (3, DOCS[3].1),
            (4, DOCS[4].1),
            (9, "caroline group"),
        ];
        assert_eq!(idx.len(), 5);
        assert_eq!(
            idx.search(&query, 10, None),
            index(&now).search(&query, 10, None)
        );
        // Terms no document holds any more are gone, and their ids are reused.
        let mut distinct: Vec<&str> = now.iter().flat_map(|(_, t)| t.split_whitespace()).collect();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(idx.ids.len(), distinct.len());
        assert!(!idx.ids.contains_key("support"));
        assert_eq!(idx.ids.len() + idx.free.len(), idx.terms.len());
    }

    #[test]
    fn masks_empty_queries_and_empty_documents() {
        let mut idx = index(DOCS);
        let mut allowed = vec![false; 8];
        allowed[3] = true;
        let got = idx.search(&["lake"], 10, Some(&allowed));
        assert_eq!(got.iter().map(|h| h.0).collect::<Vec<_>>(), vec![3]);
        assert!(idx.search::<&str>(&[], 10, None).is_empty());
        assert!(idx.search(&["lake"], 0, None).is_empty());
        idx.upsert(7, &[] as &[&str]);
        assert_eq!(idx.len(), 6);
        assert!(Bm25Index::new().search(&["lake"], 3, None).is_empty());
    }

    #[test]
    fn known_bounds_rank_as_a_scan_of_the_postings() {
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};
        let mut rng = StdRng::seed_from_u64(5);
        let vocab: Vec<String> = (0..60).map(|i| format!("w{i}")).collect();
        // Low ids common, high ids rare, as in text.
        let word = |rng: &mut StdRng| vocab[(rng.random::<f64>().powi(3) * 60.0) as usize].as_str();
        let mut idx = Bm25Index::new();
        let mut queries = 0;
        for round in 0..3000 {
            let slot = rng.random_range(0..500);
            if rng.random_bool(0.2) {
                idx.remove(slot);
            } else {
                let doc: Vec<&str> = (0..rng.random_range(1..12))
                    .map(|_| word(&mut rng))
                    .collect();
                idx.upsert(slot, &doc);
            }
            if round % 7 != 0 || idx.is_empty() {
                continue;
            }
            let query: Vec<&str> = (0..rng.random_range(1..7))
                .map(|_| word(&mut rng))
                .collect();
            let k = [1, 5, 10, 50][rng.random_range(0..4)];
            let got = idx.search(&query, k, None);
            let found = idx.refresh(&query);
            let (terms, _) = idx.query(&found);
            let scanned = lexical::top_k(&terms, idx.lengths.len(), None, k).unwrap();
            assert_eq!(got, scanned, "round {round}, query {query:?}, k {k}");
            queries += 1;
        }
        assert!(queries > 300);
    }
}
