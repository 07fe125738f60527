//! Index tests: recall against exact search, deletion, slot reuse, replacement,
//! filtering, persistence and rejection of bad input and damaged files; then
//! property tests over random operation sequences.

use super::*;
use proptest::prelude::*;
use rand::{rngs::StdRng, Rng, SeedableRng};

fn params(dim: usize, metric: Metric) -> Params {
    Params {
        dim,
        metric,
        m: 8,
        ef_construction: 64,
    }
}

/// `n` points around 20 random centres.
fn clustered(n: usize, dim: usize, seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    let centres: Vec<f32> = (0..20 * dim).map(|_| rng.random_range(-1.0..1.0)).collect();
    (0..n)
        .flat_map(|i| {
            let c = (i % 20) * dim;
            (0..dim)
                .map(|d| centres[c + d] + rng.random_range(-0.3..0.3))
                .collect::<Vec<f32>>()
        })
        .collect()
}

fn build(n: usize, dim: usize, metric: Metric) -> (HnswIndex, Vec<f32>) {
    let data = clustered(n, dim, 1);
    let mut index = HnswIndex::new(params(dim, metric), 0).unwrap();
    let ids: Vec<u64> = (0..n as u64).collect();
    index.add(&ids, &data).unwrap();
    (index, data)
}

/// Exact k nearest ids by the index's own distance (data as stored, i.e. normalised).
fn exact(index: &HnswIndex, query: &[f32], k: usize, live: impl Fn(u64) -> bool) -> Vec<u64> {
    let q = index.prepare_rows("q", query).unwrap();
    let mut all: Vec<(f32, u64)> = (0..index.graph.slots() as u32)
        .filter(|&s| !index.hidden[s as usize] && live(index.ids[s as usize]))
        .map(|s| {
            (
                (index.dist)(&q, index.graph.vector(s)),
                index.ids[s as usize],
            )
        })
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    all.into_iter().take(k).map(|(_, id)| id).collect()
}

/// Whether a walk over layer 0 from the entry reaches every slot holding an id (live
/// or hidden): a search can return only what this walk reaches, whatever its `ef`.
fn every_live_slot_is_reachable(index: &HnswIndex) -> bool {
    let g = &index.graph;
    let mut seen = vec![false; g.slots()];
    let mut stack: Vec<u32> = g.entry.lock().iter().map(|e| e.slot).collect();
    for &s in &stack {
        seen[s as usize] = true;
    }
    while let Some(s) = stack.pop() {
        for n in g.neighbours(s, 0) {
            if !std::mem::replace(&mut seen[n as usize], true) {
                stack.push(n);
            }
        }
    }
    (0..g.slots()).all(|s| seen[s] || index.slots.get(&index.ids[s]) != Some(&(s as u32)))
}

/// `copies` copies of a centre vector, then points around it: the centre is nearer
/// to every point than the points are to each other (a hub).
fn hub(n: usize, copies: usize, dim: usize, seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    let centre: Vec<f32> = (0..dim).map(|_| rng.random_range(-1.0..1.0)).collect();
    let mut data = centre.repeat(copies);
    for _ in copies..n {
        data.extend(centre.iter().map(|c| c + rng.random_range(-0.5..0.5)));
    }
    data
}

fn recall(
    index: &HnswIndex,
    queries: &[f32],
    k: usize,
    ef: usize,
    allowed: Allowed<'_>,
    live: impl Fn(u64) -> bool,
) -> f64 {
    let dim = index.params.dim;
    let (ids, _) = index.search(queries, k, ef, allowed).unwrap();
    let mut hits = 0;
    let mut total = 0;
    for (row, q) in queries.chunks_exact(dim).enumerate() {
        let truth = exact(index, q, k, &live);
        total += truth.len();
        hits += truth
            .iter()
            .filter(|t| ids[row * k..(row + 1) * k].contains(t))
            .count();
    }
    hits as f64 / total as f64
}

#[test]
fn recall_at_10_is_high_for_every_metric() {
    for metric in [Metric::Cosine, Metric::InnerProduct, Metric::L2] {
        let (index, data) = build(3_000, 24, metric);
        let queries = &data[..100 * 24];
        let r = recall(&index, queries, 10, 64, Allowed::All, |_| true);
        assert!(r >= 0.95, "{metric:?}: recall {r}");
    }
}

#[test]
fn distances_follow_the_hnswlib_conventions() {
    let mut cos = HnswIndex::new(params(2, Metric::Cosine), 0).unwrap();
    cos.add(&[1], &[3.0, 4.0]).unwrap();
    let (_, d) = cos.search(&[4.0, -3.0], 1, 10, Allowed::All).unwrap();
    assert!((d[0] - 1.0).abs() < 1e-6, "orthogonal => 1 - cos = 1");
    let mut l2 = HnswIndex::new(params(2, Metric::L2), 0).unwrap();
    l2.add(&[1], &[3.0, 4.0]).unwrap();
    let (_, d) = l2.search(&[0.0, 0.0], 1, 10, Allowed::All).unwrap();
    assert_eq!(d[0], 25.0, "squared L2");
    let mut ip = HnswIndex::new(params(2, Metric::InnerProduct), 0).unwrap();
    ip.add(&[1], &[3.0, 4.0]).unwrap();
    let (_, d) = ip.search(&[1.0, 1.0], 1, 10, Allowed::All).unwrap();
    assert_eq!(d[0], 1.0 - 7.0, "1 - dot");
}

/// Ten copies of the centre of the data and points around it: the heuristic alone
/// links every point to the centre only, leaving most points unreachable.
#[test]
fn a_hub_with_duplicates_does_not_make_points_unreachable() {
    let dim = 64;
    let mut rng = StdRng::seed_from_u64(3);
    let centre: Vec<f32> = (0..dim).map(|_| rng.random_range(-1.0..1.0)).collect();
    let mut data: Vec<f32> = centre.repeat(10);
    for _ in 0..190 {
        data.extend(centre.iter().map(|c| c + rng.random_range(-0.4..0.4)));
    }
    let mut index = HnswIndex::new(
        Params {
            dim,
            metric: Metric::Cosine,
            m: 16,
            ef_construction: 200,
        },
        0,
    )
    .unwrap();
    index.add(&(0..200).collect::<Vec<u64>>(), &data).unwrap();
    let (ids, _) = index.search(&data, 10, 64, Allowed::All).unwrap();
    let found_self = (0..200)
        .filter(|&i| ids[i * 10..(i + 1) * 10].contains(&(i as u64)))
        .count();
    assert_eq!(found_self, 200);
    assert!(recall(&index, &data, 10, 64, Allowed::All, |_| true) >= 0.95);
}

#[test]
fn missing_results_are_padded() {
    let empty = HnswIndex::new(params(4, Metric::L2), 0).unwrap();
    let (ids, d) = empty.search(&[0.0; 8], 3, 10, Allowed::All).unwrap();
    assert_eq!(ids, vec![MISSING_ID; 6]);
    assert!(d.iter().all(|x| x.is_infinite()));
    let (index, data) = build(5, 4, Metric::L2);
    let (ids, d) = index.search(&data[..4], 8, 10, Allowed::All).unwrap();
    assert_eq!(ids.iter().filter(|&&i| i != MISSING_ID).count(), 5);
    assert_eq!(&ids[5..], &[MISSING_ID; 3]);
    assert!(d[5..].iter().all(|x| *x == f32::INFINITY));
}

#[test]
fn deleted_ids_are_never_returned_and_their_slots_are_reused() {
    let (mut index, data) = build(2_000, 16, Metric::Cosine);
    let gone: Vec<u64> = (0..2_000).filter(|i| i % 3 == 0).collect();
    assert_eq!(index.delete(&gone), gone.len());
    assert_eq!(index.delete(&gone), 0, "deleting twice is a no-op");
    assert_eq!(index.len(), 2_000 - gone.len());
    let (ids, _) = index.search(&data, 10, 32, Allowed::All).unwrap();
    assert!(ids.iter().all(|id| id % 3 != 0));
    let r = recall(&index, &data[..16 * 200], 10, 64, Allowed::All, |_| true);
    assert!(r >= 0.95, "recall after deletes {r}");

    let fresh: Vec<u64> = (10_000..10_000 + gone.len() as u64).collect();
    index.add(&fresh, &clustered(gone.len(), 16, 5)).unwrap();
    assert_eq!(
        index.graph.slots(),
        2_000,
        "new ids went into the freed slots"
    );
    assert_eq!(index.len(), 2_000);
    let r = recall(&index, &data[..16 * 100], 10, 64, Allowed::All, |_| true);
    assert!(r >= 0.95, "recall after slot reuse {r}");
}

#[test]
fn hidden_ids_are_returned_only_once_revealed() {
    let (mut index, data) = build(1_000, 16, Metric::Cosine);
    let fresh: Vec<u64> = (5_000..5_200).collect();
    let rows = clustered(200, 16, 9);
    index.add_hidden(&fresh, &rows).unwrap();
    let is_fresh = |id: &u64| (5_000..5_200).contains(id);
    // Their own rows as queries: each would be its own nearest neighbour.
    let (ids, _) = index.search(&rows, 10, 64, Allowed::All).unwrap();
    assert!(!ids.iter().any(is_fresh), "unfiltered");
    let (ids, _) = index.search(&rows, 10, 64, Allowed::Ids(&fresh)).unwrap();
    assert_eq!(ids, vec![MISSING_ID; ids.len()], "allowed by id");
    let filter = IdFilter::new(&fresh);
    let (ids, _) = index
        .search(&rows, 10, 64, Allowed::Filter(&filter))
        .unwrap();
    assert_eq!(
        ids,
        vec![MISSING_ID; ids.len()],
        "allowed by a cached filter"
    );

    // Saved while hidden: the rows load as deleted.
    let loaded = HnswIndex::from_bytes(&index.to_bytes()).unwrap();
    assert!(!fresh.iter().any(|&id| loaded.contains(id)));
    assert_eq!(loaded.len(), 1_000);

    assert_eq!(index.reveal(&fresh[..100]), 100);
    assert_eq!(index.reveal(&fresh[..100]), 0, "revealing twice is a no-op");
    assert_eq!(index.reveal(&[77_777]), 0, "unknown ids are ignored");
    let (ids, _) = index
        .search(&rows, 1, 64, Allowed::Filter(&filter))
        .unwrap();
    assert_eq!(
        &ids[..100],
        &fresh[..100],
        "the same filter after the reveal"
    );
    assert!(ids[100..].iter().all(|id| fresh[..100].contains(id)));
    let (ids, _) = index.search(&rows, 1, 64, Allowed::All).unwrap();
    assert_eq!(&ids[..100], &fresh[..100]);
    assert!(!ids[100..].iter().any(|id| fresh[100..].contains(id)));

    // A hidden id deleted before its reveal frees its slot like any other.
    assert_eq!(index.delete(&fresh[100..]), 100);
    assert_eq!(index.reveal(&fresh[100..]), 0);
    assert_eq!(index.len(), 1_100);
    assert!(every_live_slot_is_reachable(&index));
    let r = recall(&index, &data[..16 * 100], 10, 64, Allowed::All, |_| true);
    assert!(r >= 0.95, "recall with hidden inserts in the graph {r}");
}

#[test]
fn deleting_everything_then_adding_again_works() {
    let (mut index, data) = build(300, 8, Metric::L2);
    index.delete(&(0..300).collect::<Vec<u64>>());
    let (ids, _) = index.search(&data[..8], 5, 16, Allowed::All).unwrap();
    assert_eq!(ids, vec![MISSING_ID; 5]);
    index.add(&(500..800).collect::<Vec<u64>>(), &data).unwrap();
    let r = recall(&index, &data[..8 * 50], 10, 64, Allowed::All, |_| true);
    assert!(r >= 0.95, "{r}");
}

/// Batches that mix new ids with re-added ones (present or deleted), into the freed
/// slots of deleted ids, around a hub: every live node stays reachable and a search
/// for its own vector finds it.
#[test]
fn every_node_stays_reachable_around_a_hub_through_deletes_and_re_adds() {
    let dim = 32;
    let p = Params {
        m: 16,
        ef_construction: 200,
        ..params(dim, Metric::Cosine)
    };
    let data = hub(400, 10, dim, 7);
    let row = |i: u64| &data[i as usize * dim..(i as usize + 1) * dim];
    let mut index = HnswIndex::new(p, 0).unwrap();
    index
        .add(&(0..200).collect::<Vec<u64>>(), &data[..200 * dim])
        .unwrap();
    assert!(
        every_live_slot_is_reachable(&index),
        "after the first build"
    );
    let mut fresh = 200u64;
    for round in 0..12u64 {
        let gone: Vec<u64> = (0..4).map(|j| (round * 17 + j * 41) % 200).collect();
        index.delete(&gone);
        // New ids, ids present (one of them in slot 0) and just-deleted ids, in one batch.
        let mut batch = vec![fresh, fresh + 1, round % 10, 100 + round, gone[0], gone[1]];
        fresh += 2;
        batch.dedup();
        let vectors: Vec<f32> = batch
            .iter()
            .flat_map(|&id| row(id % 400).iter().copied())
            .collect();
        index.add(&batch, &vectors).unwrap();
        assert!(every_live_slot_is_reachable(&index), "round {round}");
    }
    for s in 0..index.graph.slots() as u32 {
        if index.hidden[s as usize] {
            continue;
        }
        let id = index.ids[s as usize];
        // ef_search above the node count: the walk visits every node reachable from
        // the entry, so this checks reachability, not the luck of a greedy descent.
        let ef = index.graph.slots() + 16;
        let (ids, d) = index
            .search(index.graph.vector(s), 16, ef, Allowed::All)
            .unwrap();
        // Copies of the hub are at distance 0 from each other, so any order among them.
        assert!(ids.contains(&id) || d[15] <= 1e-6, "id {id} not found");
    }
}

#[test]
fn re_adding_an_id_replaces_its_vector() {
    let (mut index, data) = build(1_000, 8, Metric::L2);
    // Moved next to row 500: an outlier could be unreachable in any HNSW graph.
    let moved: Vec<f32> = data[500 * 8..501 * 8].iter().map(|x| x + 0.01).collect();
    index
        .add(&[7, 7], &[data[..8].to_vec(), moved.clone()].concat())
        .unwrap();
    assert_eq!(index.len(), 1_000);
    let (ids, d) = index.search(&moved, 1, 16, Allowed::All).unwrap();
    assert_eq!((ids[0], d[0]), (7, 0.0), "the last row for an id wins");
    let (ids, _) = index.search(&data[56..64], 1, 16, Allowed::All).unwrap();
    assert_ne!(ids[0], 7, "the old vector of id 7 is gone");
}

#[test]
fn filtered_search_returns_only_allowed_ids_at_any_selectivity() {
    let (index, _) = build(4_000, 16, Metric::Cosine);
    let queries = clustered(50, 16, 3);
    for step in [200u64, 20, 2] {
        let allowed: Vec<u64> = (0..4_000).filter(|i| i % step == 0).collect();
        let filter = IdFilter::new(&allowed);
        for a in [Allowed::Ids(&allowed), Allowed::Filter(&filter)] {
            let (ids, _) = index.search(&queries, 10, 64, a).unwrap();
            assert!(ids.iter().all(|id| id % step == 0));
            let r = recall(&index, &queries, 10, 64, a, |id| id % step == 0);
            assert!(r >= 0.95, "1/{step} selectivity: recall {r}");
        }
    }
}

#[test]
fn excluding_filter_leaves_out_exactly_its_ids() {
    let (mut index, data) = build(2_000, 16, Metric::Cosine);
    // Every third id, a few unknown ones, and the queries' own rows among them.
    let left_out: Vec<u64> = (0..2_000).step_by(3).chain([9_999, 10_000]).collect();
    let filter = IdFilter::excluding(&left_out);
    assert!(filter.is_excluding());
    let queries = &data[..60 * 16];
    let allowed = Allowed::Filter(&filter);
    let (ids, _) = index.search(queries, 10, 64, allowed).unwrap();
    assert!(ids.iter().all(|id| id % 3 != 0 && *id < 2_000), "{ids:?}");
    let r = recall(&index, queries, 10, 64, allowed, |id| id % 3 != 0);
    assert!(r >= 0.95, "recall {r}");

    // Ids added after the filter was made pass it, unless hidden or left out.
    let rows = clustered(3, 16, 5);
    index.add(&[5_000, 10_000], &rows[..32]).unwrap();
    index.add_hidden(&[5_001], &rows[32..]).unwrap();
    let (ids, _) = index.search(&rows, 1, 64, allowed).unwrap();
    assert_eq!(ids[0], 5_000);
    assert_ne!(ids[1], 10_000);
    assert_ne!(ids[2], 5_001);
    index.reveal(&[5_001]);
    let (ids, _) = index.search(&rows[32..], 1, 64, allowed).unwrap();
    assert_eq!(ids[0], 5_001, "revealed after the filter was made");

    // A deleted id stays out of the results.
    index.delete(&[5_000]);
    let (ids, _) = index.search(&rows[..16], 10, 64, allowed).unwrap();
    assert!(!ids.contains(&5_000));
}

#[test]
fn save_and_load_give_identical_results() {
    let (mut index, data) = build(1_500, 12, Metric::InnerProduct);
    index.delete(&[1, 2, 3]);
    let back = HnswIndex::from_bytes(&index.to_bytes()).unwrap();
    assert_eq!(back.len(), index.len());
    assert_eq!(back.params(), index.params());
    assert_eq!(
        back.search(&data, 10, 50, Allowed::All).unwrap(),
        index.search(&data, 10, 50, Allowed::All).unwrap()
    );
    assert_eq!(back.to_bytes(), index.to_bytes());
    let dir = std::env::temp_dir().join(format!("memosd-hnsw-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("index.hnsw");
    index.save(&path).unwrap();
    let loaded = HnswIndex::load(&path).unwrap();
    assert_eq!(loaded.to_bytes(), index.to_bytes());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn every_truncation_and_every_byte_flip_is_reported_as_corrupt() {
    let (index, _) = build(40, 4, Metric::L2);
    let bytes = index.to_bytes();
    for len in 0..bytes.len() {
        assert!(
            matches!(HnswIndex::from_bytes(&bytes[..len]), Err(Error::Corrupt(_))),
            "len {len}"
        );
    }
    for i in 0..bytes.len() {
        let mut bad = bytes.clone();
        bad[i] ^= 0x41;
        assert!(
            matches!(HnswIndex::from_bytes(&bad), Err(Error::Corrupt(_))),
            "byte {i}"
        );
    }
}

/// Damage behind a valid checksum (a crafted file) is caught by the structural checks.
#[test]
fn files_with_a_valid_checksum_but_an_impossible_graph_are_corrupt() {
    let (index, _) = build(40, 4, Metric::L2);
    let bytes = index.to_bytes();
    let header = 8 + 4 + 4 + 1 + 4 + 4 + 4 + 8 + 1 + 4 + 4;
    let links0 = header + 40 * 10 + 40 * 4 * 4;
    let with_crc = |mut body: Vec<u8>| {
        body.truncate(body.len() - 4);
        let crc = crc32fast::hash(&body);
        body.extend_from_slice(&crc.to_le_bytes());
        body
    };
    assert!(HnswIndex::from_bytes(&with_crc(bytes.clone())).is_ok());
    for (offset, value) in [(links0, 999u32), (links0 + 4, 40), (header - 8, 40)] {
        let mut bad = bytes.clone();
        bad[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
        let err = HnswIndex::from_bytes(&with_crc(bad)).err();
        assert!(
            matches!(err, Some(Error::Corrupt(_))),
            "offset {offset}: {err:?}"
        );
    }
}

#[test]
fn bad_input_is_rejected_naming_the_field_and_changes_nothing() {
    let (mut index, _) = build(10, 4, Metric::Cosine);
    let field = |e: Error| match e {
        Error::InvalidArgument { field, .. } => field,
        other => panic!("{other:?}"),
    };
    assert_eq!(field(index.add(&[1, 2], &[1.0; 4]).unwrap_err()), "vectors");
    assert_eq!(field(index.add(&[100], &[0.0; 4]).unwrap_err()), "vectors");
    assert_eq!(
        field(index.add(&[100], &[f32::NAN; 4]).unwrap_err()),
        "vectors"
    );
    assert_eq!(
        field(index.add(&[MISSING_ID], &[1.0; 4]).unwrap_err()),
        "ids"
    );
    assert_eq!(
        field(index.search(&[1.0; 3], 1, 1, Allowed::All).unwrap_err()),
        "queries"
    );
    assert_eq!(
        field(index.search(&[1.0; 4], 0, 1, Allowed::All).unwrap_err()),
        "k"
    );
    assert_eq!(
        field(index.search(&[1.0; 4], 1, 0, Allowed::All).unwrap_err()),
        "ef_search"
    );
    assert_eq!(index.len(), 10);
    assert!(!index.contains(100));
    for (p, f) in [
        (
            Params {
                dim: 0,
                ..params(4, Metric::L2)
            },
            "dim",
        ),
        (
            Params {
                m: 1,
                ..params(4, Metric::L2)
            },
            "m",
        ),
        (
            Params {
                ef_construction: 0,
                ..params(4, Metric::L2)
            },
            "ef_construction",
        ),
    ] {
        assert_eq!(field(HnswIndex::new(p, 0).err().unwrap()), f);
    }
    let huge = HnswIndex::new(params(4, Metric::L2), usize::MAX)
        .err()
        .unwrap();
    assert_eq!(field(huge), "max_elements");
    let too_many = index.search(&[1.0; 4], MAX_K + 1, 1, Allowed::All);
    assert_eq!(field(too_many.unwrap_err()), "k");
}

#[test]
fn concurrent_searches_agree_with_serial_ones() {
    let (index, data) = build(2_000, 16, Metric::L2);
    let serial: Vec<_> = (0..8)
        .map(|t| {
            index
                .search(&data[t * 16..(t + 1) * 16], 10, 32, Allowed::All)
                .unwrap()
        })
        .collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let (index, data) = (&index, &data);
                s.spawn(move || {
                    index
                        .search(&data[t * 16..(t + 1) * 16], 10, 32, Allowed::All)
                        .unwrap()
                })
            })
            .collect();
        for (t, h) in handles.into_iter().enumerate() {
            assert_eq!(h.join().unwrap(), serial[t]);
        }
    });
}

#[derive(Clone, Debug)]
enum Op {
    Add(Vec<u64>, u64),
    AddHidden(Vec<u64>, u64),
    Reveal(Vec<u64>),
    Delete(Vec<u64>),
}

/// Adds and deletes of ids from a small range, so adds mix new ids with present and
/// deleted ones, and deletes are often followed by an add of some of the same ids
/// (their freed slots reused in the same batch as new ids). Hidden adds replace present
/// ids too, and reveals name hidden, visible, deleted and unknown ids alike.
fn ops() -> impl Strategy<Value = Vec<Op>> {
    let add = (prop::collection::vec(0u64..60, 1..25), any::<u64>());
    let op = prop_oneof![
        3 => add.clone().prop_map(|(ids, seed)| vec![Op::Add(ids, seed)]),
        1 => add.clone().prop_map(|(ids, seed)| vec![Op::AddHidden(ids, seed)]),
        1 => prop::collection::vec(0u64..70, 1..30).prop_map(|ids| vec![Op::Reveal(ids)]),
        1 => prop::collection::vec(0u64..60, 1..20).prop_map(|ids| vec![Op::Delete(ids)]),
        2 => (prop::collection::vec(0u64..60, 1..8), add).prop_map(|(gone, (mut ids, seed))| {
            ids.extend(gone.iter().step_by(2));
            vec![Op::Delete(gone), Op::Add(ids, seed)]
        }),
    ];
    prop::collection::vec(op, 1..12).prop_map(|groups| groups.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Against a model (a map id -> vector, and the hidden ids): the live set, every
    /// live or hidden node reachable from the entry, no deleted, hidden or unknown id
    /// ever returned, reveals counted, slots never exceed the
    /// peak live count, results sorted, exact filtered scans match brute force, and
    /// save/load preserves all of it.
    #[test]
    fn operations_keep_the_index_consistent(ops in ops()) {
        let dim = 6;
        let mut index = HnswIndex::new(params(dim, Metric::L2), 0).unwrap();
        let mut model = std::collections::HashMap::new();
        let mut hidden = std::collections::HashSet::new();
        let mut peak = 0;
        for op in &ops {
            match op {
                Op::Add(ids, seed) | Op::AddHidden(ids, seed) => {
                    let vectors = clustered(ids.len(), dim, *seed);
                    let hide = matches!(op, Op::AddHidden(..));
                    if hide {
                        index.add_hidden(ids, &vectors).unwrap();
                    } else {
                        index.add(ids, &vectors).unwrap();
                    }
                    for (i, id) in ids.iter().enumerate() {
                        model.insert(*id, vectors[i * dim..(i + 1) * dim].to_vec());
                        if hide { hidden.insert(*id); } else { hidden.remove(id); }
                    }
                }
                Op::Reveal(ids) => {
                    let was = ids.iter().collect::<std::collections::HashSet<_>>()
                        .into_iter().filter(|id| hidden.remove(id)).count();
                    prop_assert_eq!(index.reveal(ids), was);
                }
                Op::Delete(ids) => {
                    let present = ids.iter().collect::<std::collections::HashSet<_>>()
                        .into_iter().filter(|id| model.remove(id).is_some()).count();
                    hidden.retain(|id| model.contains_key(id));
                    prop_assert_eq!(index.delete(ids), present);
                }
            }
            peak = peak.max(model.len());
            prop_assert_eq!(index.len(), model.len());
            prop_assert!(index.graph.slots() <= peak);
            prop_assert!(every_live_slot_is_reachable(&index));
        }
        let queries = clustered(5, dim, 123);
        let (ids, dists) = index.search(&queries, 8, 32, Allowed::All).unwrap();
        for row in 0..5 {
            let r = &ids[row * 8..(row + 1) * 8];
            let found: Vec<u64> = r.iter().copied().filter(|&i| i != MISSING_ID).collect();
            prop_assert!(found.iter().all(|id| model.contains_key(id) && !hidden.contains(id)));
            let distinct: std::collections::HashSet<_> = found.iter().collect();
            prop_assert_eq!(distinct.len(), found.len());
            prop_assert!(dists[row * 8..(row + 1) * 8].windows(2).all(|w| w[0] <= w[1]));
        }
        // Hidden ids in the allowed list are still never returned.
        let allowed: Vec<u64> = model.keys().copied().filter(|id| id % 2 == 0).collect();
        let (ids, _) = index.search(&queries, 4, 16, Allowed::Ids(&allowed)).unwrap();
        let allowed: Vec<u64> = allowed.into_iter().filter(|id| !hidden.contains(id)).collect();
        let l2 = |id: &u64, q: &[f32]| -> f32 { model[id].iter().zip(q).map(|(a, b)| (a - b) * (a - b)).sum() };
        for (row, q) in queries.chunks_exact(dim).enumerate() {
            // Small filters are scanned exactly, so the distances are the true top-k.
            let mut truth: Vec<f32> = allowed.iter().map(|id| l2(id, q)).collect();
            truth.sort_by(f32::total_cmp);
            truth.truncate(4);
            let got: Vec<f32> = ids[row * 4..(row + 1) * 4].iter()
                .filter(|&&i| i != MISSING_ID).map(|id| l2(id, q)).collect();
            prop_assert_eq!(got.len(), truth.len());
            prop_assert!(got.iter().zip(&truth).all(|(a, b)| (a - b).abs() <= 1e-4 * (1.0 + b)));
            prop_assert!(ids[row * 4..(row + 1) * 4].iter().all(|i| *i == MISSING_ID || i % 2 == 0));
        }
        let back = HnswIndex::from_bytes(&index.to_bytes()).unwrap();
        prop_assert_eq!(back.search(&queries, 8, 32, Allowed::All).unwrap(),
                        index.search(&queries, 8, 32, Allowed::All).unwrap());
    }

    #[test]
    fn damaged_files_are_errors_never_panics(cut in 0usize..2_000, flip in 0usize..2_000, bit in 0u8..8) {
        let (index, _) = build(20, 4, Metric::Cosine);
        let bytes = index.to_bytes();
        prop_assert!(HnswIndex::from_bytes(&bytes[..cut.min(bytes.len() - 1)]).is_err());
        let mut bad = bytes.clone();
        let i = flip % bad.len();
        bad[i] ^= 1 << bit;
        prop_assert!(HnswIndex::from_bytes(&bad).is_err());
    }
}
