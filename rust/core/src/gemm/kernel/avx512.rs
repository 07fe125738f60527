//! AVX-512 VNNI kernel. `vpdpbusd` multiplies unsigned by signed bytes, so each
//! activation code is shifted to u8 (`a + 128`, an xor of the sign bit); the extra
//! `128 * sum_k b[k][c]` is subtracted with the column sums computed at pack time.

use std::arch::x86_64::*;

use super::{MR, PANEL};

/// # Safety
/// The CPU must support avx512f, avx512bw and avx512vnni; `rows[r].len() == k4`,
/// `panel.len() == k4 * PANEL`, `rows.len() == acc.len() <= MR`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(crate) unsafe fn tile(rows: &[&[i8]], panel: &[i8], k4: usize, acc: &mut [[i32; PANEL]]) {
    match rows.len() {
        4 => tile_n::<4>(rows, panel, k4, acc),
        3 => tile_n::<3>(rows, panel, k4, acc),
        2 => tile_n::<2>(rows, panel, k4, acc),
        1 => tile_n::<1>(rows, panel, k4, acc),
        _ => {}
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
unsafe fn tile_n<const R: usize>(
    rows: &[&[i8]],
    panel: &[i8],
    k4: usize,
    acc: &mut [[i32; PANEL]],
) {
    const { assert!(R <= MR && PANEL == 32) };
    let mut sums = [[_mm512_setzero_si512(); 2]; R];
    let flip = _mm512_set1_epi32(0x8080_8080u32 as i32);
    let b = panel.as_ptr();
    for g in 0..k4 / 4 {
        // SAFETY: group g of the panel is bytes [128 g, 128 g + 128) < k4 * PANEL.
        let b0 = _mm512_loadu_si512(b.add(g * 128) as *const _);
        let b1 = _mm512_loadu_si512(b.add(g * 128 + 64) as *const _);
        for r in 0..R {
            // SAFETY: 4 g + 4 <= k4 == rows[r].len().
            let a = (rows[r].as_ptr().add(4 * g) as *const i32).read_unaligned();
            let a = _mm512_xor_si512(_mm512_set1_epi32(a), flip);
            sums[r][0] = _mm512_dpbusd_epi32(sums[r][0], a, b0);
            sums[r][1] = _mm512_dpbusd_epi32(sums[r][1], a, b1);
        }
    }
    for r in 0..R {
        let out = acc[r].as_mut_ptr();
        _mm512_storeu_si512(out as *mut _, sums[r][0]);
        _mm512_storeu_si512(out.add(16) as *mut _, sums[r][1]);
    }
}
