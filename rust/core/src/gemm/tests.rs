use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

fn random(rng: &mut StdRng, len: usize, amp: f32) -> Vec<f32> {
    (0..len).map(|_| rng.random_range(-amp..amp)).collect()
}

fn kernels() -> Vec<Kernel> {
    Kernel::ALL.into_iter().filter(|k| k.available()).collect()
}

/// Sum over k of codes, straight from the definition.
fn reference_i32(x: &[i8], w: &[i8], m: usize, n: usize, k: usize) -> Vec<i32> {
    let mut out = vec![0i32; m * n];
    for r in 0..m {
        for c in 0..n {
            out[r * n + c] = (0..k)
                .map(|i| x[r * k + i] as i32 * w[c * k + i] as i32)
                .sum();
        }
    }
    out
}

#[test]
fn detect_picks_an_available_kernel() {
    assert!(Kernel::detect().available());
    assert!(Kernel::Scalar.available());
    for k in Kernel::ALL {
        assert_eq!(Kernel::parse(k.name()), Some(k));
    }
}

#[test]
fn quantisation_is_symmetric_and_per_row() {
    let (codes, scales) = quantize_rows_of(&[1.0, -2.0, 0.5, 0.0, 0.0, 0.0], 2, 3).unwrap();
    assert_eq!(codes, vec![64, -127, 32, 0, 0, 0]);
    assert_eq!(scales, vec![2.0 / 127.0, 0.0]);
}

#[test]
fn the_activation_applies_to_the_biased_product() {
    let mut rng = StdRng::seed_from_u64(13);
    let (m, n, k) = (40, 50, 96);
    let w = random(&mut rng, n * k, 0.2);
    let bias = random(&mut rng, n, 1.0);
    let x = random(&mut rng, m * k, 3.0);
    let plain = Int8Linear::new(&w, n, k, Some(&bias)).unwrap();
    let mut expected = plain.forward(&x, m).unwrap();
    Activation::Gelu.apply(&mut expected);
    for kernel in kernels() {
        let lin = Int8Linear::new(&w, n, k, Some(&bias))
            .unwrap()
            .with_kernel(kernel)
            .unwrap()
            .with_activation(Some(Activation::Gelu));
        assert_eq!(lin.activation(), Some(Activation::Gelu));
        assert_eq!(lin.forward(&x, m).unwrap(), expected, "{kernel:?}");
        // The portable build of the epilogue gives the same floats as the one for
        // this CPU (AVX-512 where available).
        let (codes, scales) = lin.quantize(&x, m).unwrap();
        let mut portable = vec![0f32; m * n];
        let epilogue = lin.epilogue();
        lin.product(&codes, |first, col, sums| {
            epilogue.rows_body::<false>(first, col, sums, &scales, &mut portable);
        });
        assert_eq!(portable, expected, "{kernel:?}");
    }
}

#[test]
fn quantisation_rounds_half_to_even_like_the_definition() {
    // max|x| = 127: the codes are x rounded, ties to even.
    let x = [127.0, 2.5, -3.5, 0.5, -0.5, 126.5, 1.4999999, -126.50001];
    let (codes, _) = quantize_rows_of(&x, 1, x.len()).unwrap();
    assert_eq!(codes, vec![127, 2, -4, 0, 0, 126, 1, -127]);
    let mut rng = StdRng::seed_from_u64(9);
    for len in [1, 7, 16, 33, 384, 1000] {
        let x = random(&mut rng, len, 50.0);
        let (codes, scales) = quantize_rows_of(&x, 1, len).unwrap();
        let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
        let expected: Vec<i8> = x
            .iter()
            .map(|&v| (v * (127.0 / amax)).round_ties_even().clamp(-127.0, 127.0) as i8)
            .collect();
        assert_eq!(codes, expected);
        assert_eq!(scales, vec![amax / 127.0]);
        // The portable build agrees with the one for this CPU.
        let mut portable = vec![0i8; len];
        let scale = quantize::quantize_slice_body("x", &x, &mut portable).unwrap();
        assert_eq!((portable, vec![scale]), (codes, scales));
    }
}

#[test]
fn bad_shapes_and_values_name_the_field() {
    let field = |e: Error| match e {
        Error::InvalidArgument { field, .. } => field,
        other => panic!("unexpected {other:?}"),
    };
    assert_eq!(
        field(Int8Linear::new(&[0.0; 5], 2, 3, None).err().unwrap()),
        "weight"
    );
    assert_eq!(
        field(Int8Linear::new(&[], 0, 3, None).err().unwrap()),
        "weight"
    );
    let nan = [f32::NAN; 6];
    assert_eq!(
        field(Int8Linear::new(&nan, 2, 3, None).err().unwrap()),
        "weight"
    );
    let bias = Some(&[0.0f32; 3][..]);
    assert_eq!(
        field(Int8Linear::new(&[0.0; 6], 2, 3, bias).err().unwrap()),
        "bias"
    );
    let lin = Int8Linear::new(&[1.0; 6], 2, 3, None).unwrap();
    assert_eq!(field(lin.forward(&[0.0; 5], 2).unwrap_err()), "x");
    assert_eq!(field(lin.forward(&[f32::INFINITY; 3], 1).unwrap_err()), "x");
    assert_eq!(
        field(lin.forward_into(&[0.0; 3], 1, &mut [0.0; 3]).unwrap_err()),
        "out"
    );
    assert_eq!(
        field(lin.product_i32(&[-128, 0, 0], 1).unwrap_err()),
        "x_codes"
    );
    assert!(lin.forward(&[], 0).unwrap().is_empty());
}

#[test]
fn weight_codes_round_trip_through_the_packing() {
    let mut rng = StdRng::seed_from_u64(7);
    let (n, k) = (37, 13);
    let w = random(&mut rng, n * k, 1.0);
    let lin = Int8Linear::new(&w, n, k, None).unwrap();
    let mut expected = vec![0i8; n * k];
    for (c, row) in w.chunks_exact(k).enumerate() {
        let s = quantize::quantize_slice("weight", row, &mut expected[c * k..(c + 1) * k]);
        assert_eq!(s.unwrap(), lin.weight_scales()[c]);
    }
    assert_eq!(lin.weight_codes(), expected);
}

#[test]
fn large_products_split_across_threads_give_the_same_rows() {
    let mut rng = StdRng::seed_from_u64(3);
    let (m, n, k) = (1000, 384, 384);
    let w = random(&mut rng, n * k, 0.1);
    let x = random(&mut rng, m * k, 2.0);
    let lin = Int8Linear::new(&w, n, k, Some(&random(&mut rng, n, 1.0))).unwrap();
    assert!(lin.rows_per_task(m) < m);
    let all = lin.forward(&x, m).unwrap();
    for r in [0, 1, 500, 999] {
        let alone = lin.forward(&x[r * k..(r + 1) * k], 1).unwrap();
        assert_eq!(alone, all[r * n..(r + 1) * n]);
    }
}

#[test]
fn dequantised_result_is_close_to_the_float_product() {
    let mut rng = StdRng::seed_from_u64(11);
    let (m, n, k) = (9, 70, 384);
    let w = random(&mut rng, n * k, 0.05);
    let x = random(&mut rng, m * k, 3.0);
    let bias = random(&mut rng, n, 0.5);
    let y = Int8Linear::new(&w, n, k, Some(&bias))
        .unwrap()
        .forward(&x, m)
        .unwrap();
    for r in 0..m {
        let exact: Vec<f64> = (0..n)
            .map(|c| {
                let dot: f64 = (0..k)
                    .map(|i| x[r * k + i] as f64 * w[c * k + i] as f64)
                    .sum();
                dot + bias[c] as f64
            })
            .collect();
        let norm = exact.iter().map(|v| v * v).sum::<f64>().sqrt();
        let err = (0..n)
            .map(|c| (y[r * n + c] as f64 - exact[c]).powi(2))
            .sum::<f64>()
            .sqrt();
        assert!(err / norm < 0.02, "row {r}: relative error {}", err / norm);
    }
}

#[test]
fn detect_prefers_amx_when_the_cpu_and_os_allow_it() {
    let expected = if Kernel::Amx.available() {
        Kernel::Amx
    } else if Kernel::Avx512Vnni.available() {
        Kernel::Avx512Vnni
    } else if Kernel::Avx2.available() {
        Kernel::Avx2
    } else {
        Kernel::Scalar
    };
    assert_eq!(Kernel::detect(), expected);
}

/// Row counts around AMX's 16-row tiles, 32-row blocks and 256-row cache blocks, and
/// shapes around its 64-byte k steps and 16-column tiles (odd and even panel counts).
#[test]
fn amx_matches_scalar_across_tile_edges() {
    if !Kernel::Amx.available() {
        eprintln!("no AMX on this CPU or OS: nothing to compare");
        return;
    }
    let mut rng = StdRng::seed_from_u64(5);
    for (k, n) in [
        (1, 1),
        (63, 15),
        (64, 16),
        (65, 17),
        (130, 33),
        (384, 70),
        (200, 100),
    ] {
        let w = random(&mut rng, n * k, 1.0);
        let bias = random(&mut rng, n, 1.0);
        let scalar = Int8Linear::new(&w, n, k, Some(&bias))
            .unwrap()
            .with_kernel(Kernel::Scalar)
            .unwrap();
        let amx = Int8Linear::new(&w, n, k, Some(&bias))
            .unwrap()
            .with_kernel(Kernel::Amx)
            .unwrap();
        for m in [1, 15, 16, 17, 31, 32, 33, 47, 255, 257, 300] {
            let x = random(&mut rng, m * k, 3.0);
            let codes: Vec<i8> = (0..m * k).map(|_| rng.random_range(-127i8..=127)).collect();
            let expected = reference_i32(&codes, &scalar.weight_codes(), m, n, k);
            assert_eq!(amx.product_i32(&codes, m).unwrap(), expected, "{m}x{k}x{n}");
            let y = amx.forward(&x, m).unwrap();
            assert_eq!(y, scalar.forward(&x, m).unwrap(), "{m}x{k}x{n}");
            // A row alone gives the same floats as in the batch.
            let last = m - 1;
            let alone = amx.forward(&x[last * k..], 1).unwrap();
            assert_eq!(alone, y[last * n..], "{m}x{k}x{n}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn every_kernel_matches_the_integer_reference(
        m in 1usize..70, n in 1usize..80, k in 1usize..140, seed in any::<u64>(),
    ) {
        let mut rng = StdRng::seed_from_u64(seed);
        let w = random(&mut rng, n * k, 1.0);
        let bias = random(&mut rng, n, 1.0);
        let x = random(&mut rng, m * k, 4.0);
        let codes: Vec<i8> = (0..m * k).map(|_| rng.random_range(-127i8..=127)).collect();
        let base = Int8Linear::new(&w, n, k, Some(&bias)).unwrap();
        let expected = reference_i32(&codes, &base.weight_codes(), m, n, k);
        let scalar_out = base.forward(&x, m).unwrap();
        for kernel in kernels() {
            let lin = Int8Linear::new(&w, n, k, Some(&bias)).unwrap().with_kernel(kernel).unwrap();
            prop_assert_eq!(lin.product_i32(&codes, m).unwrap(), expected.clone(), "{:?}", kernel);
            // Same integers, same epilogue: bit-identical floats.
            prop_assert_eq!(lin.forward(&x, m).unwrap(), scalar_out.clone(), "{:?}", kernel);
        }
    }

    #[test]
    fn extreme_codes_do_not_saturate(k in 1usize..600, sign in prop::bool::ANY) {
        let w = vec![if sign { 1.0 } else { -1.0 }; 3 * k];
        let codes = vec![-127i8; k];
        let expected = 127 * 127 * k as i32 * if sign { -1 } else { 1 };
        for kernel in kernels() {
            let lin = Int8Linear::new(&w, 3, k, None).unwrap().with_kernel(kernel).unwrap();
            prop_assert_eq!(lin.product_i32(&codes, 1).unwrap(), vec![expected; 3]);
        }
    }
}
