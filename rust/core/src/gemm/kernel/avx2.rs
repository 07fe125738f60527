//! AVX2 kernel. `vpmaddubsw` multiplies unsigned by signed bytes and saturates pairs
//! to i16; with codes in [-127, 127], `|a| * sign(b, a)` keeps every pair sum within
//! 2 * 127 * 127 < 32767, so nothing saturates and the sums are exact.

use std::arch::x86_64::*;

use super::{MR, PANEL};

/// # Safety
/// The CPU must support avx2; `rows[r].len() == k4`, `panel.len() == k4 * PANEL`,
/// `rows.len() == acc.len() <= MR`.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn tile(rows: &[&[i8]], panel: &[i8], k4: usize, acc: &mut [[i32; PANEL]]) {
    // Two rows at a time: 8 accumulators + 4 panel vectors fit in 16 ymm registers.
    let mut r = 0;
    while r + 2 <= rows.len() {
        tile_n::<2>(&rows[r..r + 2], panel, k4, &mut acc[r..r + 2]);
        r += 2;
    }
    if r < rows.len() {
        tile_n::<1>(&rows[r..], panel, k4, &mut acc[r..]);
    }
}

#[target_feature(enable = "avx2")]
#[inline]
unsafe fn tile_n<const R: usize>(
    rows: &[&[i8]],
    panel: &[i8],
    k4: usize,
    acc: &mut [[i32; PANEL]],
) {
    const { assert!(R <= MR && PANEL == 32) };
    let mut sums = [[_mm256_setzero_si256(); 4]; R];
    let ones = _mm256_set1_epi16(1);
    let b = panel.as_ptr();
    for g in 0..k4 / 4 {
        let mut bv = [_mm256_setzero_si256(); 4];
        for (j, v) in bv.iter_mut().enumerate() {
            // SAFETY: group g of the panel is bytes [128 g, 128 g + 128) < k4 * PANEL.
            *v = _mm256_loadu_si256(b.add(g * 128 + 32 * j) as *const _);
        }
        for r in 0..R {
            // SAFETY: 4 g + 4 <= k4 == rows[r].len().
            let a = (rows[r].as_ptr().add(4 * g) as *const i32).read_unaligned();
            let a = _mm256_set1_epi32(a);
            let a_abs = _mm256_abs_epi8(a);
            for (sum, &bj) in sums[r].iter_mut().zip(&bv) {
                let prod = _mm256_maddubs_epi16(a_abs, _mm256_sign_epi8(bj, a));
                *sum = _mm256_add_epi32(*sum, _mm256_madd_epi16(prod, ones));
            }
        }
    }
    for r in 0..R {
        let out = acc[r].as_mut_ptr();
        for (j, &sum) in sums[r].iter().enumerate() {
            _mm256_storeu_si256(out.add(8 * j) as *mut _, sum);
        }
    }
}
