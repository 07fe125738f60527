//! Property tests: pack/unpack round trips for every layout and dtype, int8
//! error bounds, corruption and truncation detection, and the page pool.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use proptest::prelude::*;

use super::*;
use crate::error::Error;

fn layouts() -> impl Strategy<Value = Layout> {
    (0..24usize).prop_map(|i| Layout::all()[i])
}

fn dtypes() -> impl Strategy<Value = DType> {
    prop::sample::select(DType::ALL.to_vec())
}

fn shapes() -> impl Strategy<Value = KvShape> {
    (1..4usize, 1..4usize, 1..40usize, 1..10usize).prop_map(|(layers, heads, tokens, head_dim)| {
        KvShape {
            layers,
            heads,
            tokens,
            head_dim,
        }
    })
}

/// The element at canonical index `[l, h, s, d]` of a dense tensor.
fn element<'a>(
    data: &'a [u8],
    layout: Layout,
    shape: &KvShape,
    idx: [usize; 4],
    size: usize,
) -> &'a [u8] {
    let strides = layout.strides(shape);
    let offset: usize = (0..4).map(|a| idx[a] * strides[a]).sum::<usize>() * size;
    &data[offset..offset + size]
}

fn indices(shape: &KvShape) -> impl Iterator<Item = [usize; 4]> + '_ {
    (0..shape.layers).flat_map(move |l| {
        (0..shape.heads).flat_map(move |h| {
            (0..shape.tokens).flat_map(move |s| (0..shape.head_dim).map(move |d| [l, h, s, d]))
        })
    })
}

fn pack(
    keys: &[u8],
    values: &[u8],
    meta: TensorMeta,
    tokens_per_page: usize,
    encoding: Encoding,
) -> Vec<Vec<u8>> {
    let opts = PackOptions {
        tokens_per_page,
        encoding,
        sequence_id: 7,
    };
    Packer::new(keys, values, meta, opts)
        .unwrap()
        .pack_all()
        .unwrap()
}

fn unpack(pages: &[Vec<u8>], layout: Layout) -> crate::Result<(Vec<u8>, Vec<u8>)> {
    let refs: Vec<&[u8]> = pages.iter().map(|p| p.as_slice()).collect();
    inspect(&refs)?.unpack(&refs, layout)
}

/// Random finite values of `dtype`, as bytes.
fn finite_values(dtype: DType, seed: &[u32]) -> Vec<u8> {
    let mut out = vec![0u8; seed.len() * dtype.size()];
    for (i, &s) in seed.iter().enumerate() {
        // A spread of magnitudes, with an outlier channel now and then.
        let x = ((s % 20001) as f32 - 10000.0) / 1000.0 * if s % 97 == 0 { 40.0 } else { 1.0 };
        dtype.write(&mut out, i, x);
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn raw_round_trip_in_any_pair_of_layouts(
        shape in shapes(), dtype in dtypes(), from in layouts(), to in layouts(),
        tokens_per_page in 1..50usize, seed in any::<u64>(),
    ) {
        let meta = TensorMeta { layout: from, dtype, shape };
        let n = meta.byte_len().unwrap();
        let bytes = |salt: u64| -> Vec<u8> {
            (0..n as u64).map(|i| (i.wrapping_mul(2654435761) ^ seed ^ salt) as u8).collect()
        };
        let (keys, values) = (bytes(1), bytes(2));
        let pages = pack(&keys, &values, meta, tokens_per_page, Encoding::Raw);
        prop_assert_eq!(pages.len(), shape.tokens.div_ceil(tokens_per_page));
        let (k2, v2) = unpack(&pages, to).unwrap();
        let size = dtype.size();
        for idx in indices(&shape) {
            prop_assert_eq!(element(&keys, from, &shape, idx, size), element(&k2, to, &shape, idx, size));
            prop_assert_eq!(element(&values, from, &shape, idx, size), element(&v2, to, &shape, idx, size));
        }
    }

    #[test]
    fn int8_round_trip_is_within_half_a_step(
        shape in shapes(), dtype in dtypes(), from in layouts(), to in layouts(),
        tokens_per_page in 1..50usize, seed in prop::collection::vec(any::<u32>(), 1..2),
    ) {
        let meta = TensorMeta { layout: from, dtype, shape };
        let count = shape.elements().unwrap();
        let seeds: Vec<u32> = (0..count as u32).map(|i| i.wrapping_mul(2654435761) ^ seed[0]).collect();
        let keys = finite_values(dtype, &seeds);
        let values = finite_values(dtype, &seeds.iter().map(|s| s.rotate_left(7)).collect::<Vec<_>>());
        let pages = pack(&keys, &values, meta, tokens_per_page, Encoding::Int8);
        let (k2, v2) = unpack(&pages, to).unwrap();
        let size = dtype.size();
        for (orig, back) in [(&keys, &k2), (&values, &v2)] {
            for idx in indices(&shape) {
                // The step of this channel within this token's page.
                let page_start = idx[2] / tokens_per_page * tokens_per_page;
                let page_end = (page_start + tokens_per_page).min(shape.tokens);
                let absmax = (page_start..page_end)
                    .map(|s| dtype.read(element(orig, from, &shape, [idx[0], idx[1], s, idx[3]], size), 0).abs())
                    .fold(0f32, f32::max);
                let x = dtype.read(element(orig, from, &shape, idx, size), 0);
                let y = dtype.read(element(back, to, &shape, idx, size), 0);
                // Half a quantisation step, plus rounding to the output dtype.
                let tolerance = absmax / 127.0 * 0.5001 + x.abs().max(y.abs()) * match dtype {
                    DType::F32 => 1e-6, DType::F16 => 1e-3, DType::BF16 => 8e-3,
                };
                prop_assert!((x - y).abs() <= tolerance, "{} vs {} (absmax {})", x, y, absmax);
            }
        }
    }

    #[test]
    fn any_flipped_byte_is_reported_corrupt(
        shape in shapes(), dtype in dtypes(), int8 in any::<bool>(), pick in any::<prop::sample::Index>(),
        bit in 0..8u8,
    ) {
        let meta = TensorMeta { layout: Layout::LHSD, dtype, shape };
        let count = shape.elements().unwrap();
        let data = finite_values(dtype, &(0..count as u32).collect::<Vec<_>>());
        let encoding = if int8 { Encoding::Int8 } else { Encoding::Raw };
        let mut pages = pack(&data, &data, meta, 16, encoding);
        let p = pick.index(pages.len());
        let at = pick.index(pages[p].len());
        pages[p][at] ^= 1 << bit;
        let err = unpack(&pages, Layout::LHSD).unwrap_err();
        prop_assert!(matches!(err, Error::Corrupt(_)), "{err:?}");
    }

    #[test]
    fn truncated_or_padded_pages_are_reported_corrupt(
        shape in shapes(), cut in any::<prop::sample::Index>(), pad in any::<bool>(),
    ) {
        let meta = TensorMeta { layout: Layout::LHSD, dtype: DType::F16, shape };
        let data = vec![0x3cu8; meta.byte_len().unwrap()];
        let mut pages = pack(&data, &data, meta, 8, Encoding::Raw);
        let last = pages.len() - 1;
        if pad {
            pages[last].push(0);
        } else {
            let len = cut.index(pages[last].len());
            pages[last].truncate(len);
        }
        let err = unpack(&pages, Layout::LHSD).unwrap_err();
        prop_assert!(matches!(err, Error::Corrupt(_)), "{err:?}");
    }
}

fn small_pages(sequence_id: u64) -> Vec<Vec<u8>> {
    let shape = KvShape {
        layers: 2,
        heads: 2,
        tokens: 10,
        head_dim: 4,
    };
    let meta = TensorMeta {
        layout: Layout::LHSD,
        dtype: DType::F32,
        shape,
    };
    let data = finite_values(DType::F32, &(0..160).collect::<Vec<_>>());
    let opts = PackOptions {
        tokens_per_page: 4,
        encoding: Encoding::Raw,
        sequence_id,
    };
    Packer::new(&data, &data, meta, opts)
        .unwrap()
        .pack_all()
        .unwrap()
}

#[test]
fn missing_reordered_or_foreign_pages_are_refused() {
    let pages = small_pages(1);
    let other = small_pages(2);
    let cases: Vec<Vec<&[u8]>> = vec![
        vec![&pages[0], &pages[2]],
        vec![&pages[1], &pages[0], &pages[2]],
        vec![&pages[0], &pages[1]],
        vec![&pages[0], &other[1], &pages[2]],
        vec![],
    ];
    for refs in cases {
        assert!(matches!(inspect(&refs), Err(Error::InvalidArgument { .. })));
    }
}

#[test]
fn packer_names_the_bad_argument() {
    let meta = TensorMeta {
        layout: Layout::LHSD,
        dtype: DType::F16,
        shape: KvShape {
            layers: 1,
            heads: 1,
            tokens: 2,
            head_dim: 2,
        },
    };
    let ok = vec![0u8; 8];
    let opts = |tokens_per_page| PackOptions {
        tokens_per_page,
        encoding: Encoding::Raw,
        sequence_id: 0,
    };
    let field = |r: crate::Result<Packer>| match r {
        Err(Error::InvalidArgument { field, .. }) => field,
        _ => panic!("expected InvalidArgument"),
    };
    assert_eq!(field(Packer::new(&ok[..7], &ok, meta, opts(1))), "keys");
    assert_eq!(field(Packer::new(&ok, &ok[..6], meta, opts(1))), "values");
    assert_eq!(
        field(Packer::new(&ok, &ok, meta, opts(0))),
        "tokens_per_page"
    );
    let nan = [0u8, 0x7e, 0, 0, 0, 0, 0, 0];
    let int8 = PackOptions {
        encoding: Encoding::Int8,
        ..opts(2)
    };
    let err = Packer::new(&nan, &ok, meta, int8)
        .unwrap()
        .pack_all()
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { field, .. } if field == "keys"));
}

/// A blob table in memory, shared so that a test can damage what it holds.
#[derive(Default, Clone)]
struct MemoryBlobs {
    blobs: Rc<RefCell<HashMap<String, Vec<u8>>>>,
}

impl SpillTarget for MemoryBlobs {
    type Error = Error;
    fn put(&mut self, page: &[u8]) -> crate::Result<String> {
        let digest = format!("{:08x}-{}", crc32fast::hash(page), page.len());
        self.blobs
            .borrow_mut()
            .insert(digest.clone(), page.to_vec());
        Ok(digest)
    }
    fn get(&mut self, digest: &str) -> crate::Result<Vec<u8>> {
        self.blobs
            .borrow()
            .get(digest)
            .cloned()
            .ok_or_else(|| Error::NotFound(digest.into()))
    }
}

#[test]
fn pool_spills_least_recently_used_and_loads_back() {
    let pages = small_pages(3);
    let page_len = pages[0].len();
    let mut pool = PagePool::new(2 * page_len, MemoryBlobs::default());
    for (i, p) in pages.iter().enumerate() {
        pool.insert(&format!("a/{i}"), p.clone()).unwrap();
    }
    // Three pages in a two-page budget: the oldest was written out and dropped.
    assert!(!pool.is_resident("a/0") && pool.is_resident("a/1") && pool.is_resident("a/2"));
    assert!(pool.resident_bytes() <= 2 * page_len);
    assert_eq!(pool.stats().spills, 1);
    // Using a/1 makes a/2 the eviction victim when a/0 comes back.
    pool.get("a/1").unwrap();
    assert_eq!(*pool.get("a/0").unwrap(), pages[0]);
    assert!(pool.is_resident("a/1") && !pool.is_resident("a/2"));
    assert_eq!(pool.stats().loads, 1);
    // a/0 was persisted already, so evicting it again writes nothing.
    let spills = pool.stats().spills;
    pool.get("a/2").unwrap();
    pool.get("a/1").unwrap();
    pool.get("a/2").unwrap();
    assert_eq!(pool.stats().spills, spills + 1);
    let refs: Vec<_> = (0..3)
        .map(|i| pool.get(&format!("a/{i}")).unwrap())
        .collect();
    let slices: Vec<&[u8]> = refs.iter().map(|p| p.as_slice()).collect();
    assert_eq!(
        inspect(&slices)
            .unwrap()
            .unpack(&slices, Layout::LHSD)
            .unwrap(),
        unpack(&pages, Layout::LHSD).unwrap()
    );
}

#[test]
fn pool_refuses_corrupt_blobs_and_unknown_keys() {
    let pages = small_pages(4);
    let blobs = MemoryBlobs::default();
    let mut pool = PagePool::new(1 << 20, blobs.clone());
    pool.insert("p", pages[0].clone()).unwrap();
    let digest = pool.persist("p").unwrap();
    assert_eq!(pool.persist("p").unwrap(), digest);
    blobs.blobs.borrow_mut().get_mut(&digest).unwrap()[100] ^= 1;
    pool.register("q", &digest);
    assert!(matches!(pool.get("q"), Err(Error::Corrupt(_))));
    assert!(matches!(pool.get("nope"), Err(Error::NotFound(_))));
    let mut bad = pages[1].clone();
    bad.truncate(70);
    assert!(matches!(pool.insert("r", bad), Err(Error::Corrupt(_))));
    assert!(!pool.contains("r"));
}
