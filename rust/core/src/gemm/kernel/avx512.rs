//! AVX-512 VNNI kernel. `vpdpbusd` multiplies unsigned by signed bytes, so it reads
//! the activation codes shifted to u8 (`a + 128`, stored so by the quantiser: see
//! `Kernel::unsigned_codes`), and each panel's sums start at `-128 * sum_k b[k][c]`
//! (the column sums computed at pack time), which leaves the exact
//! `sum_k a[k] b[k][c]` at the end.
//!
//! The driver runs [`ROWS`] rows against one panel at a time: 2 zmm of sums per row
//! (the panel's 32 columns), so 16 independent accumulators hide the product's
//! latency, and each 128-byte group of the panel, loaded once, feeds 16 products.

use std::arch::x86_64::*;

use super::PANEL;

/// Rows per register block.
pub(crate) const ROWS: usize = 8;

/// Whether the CPU can run this kernel.
pub(crate) fn available() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vnni")
}

/// Multiplies the activation codes (`rows x kp`, shifted to u8) with every panel and
/// hands the exact sums on as `emit(first row, panel, sums)`, like `amx::product`:
/// groups of up to [`ROWS`] consecutive rows, each with the sums of the panel's
/// `PANEL` columns. `row_block` rows pass over all panels before the next ones start,
/// so that their codes stay in cache; `shift(p)` is panel p's `128 * column sums`.
///
/// # Safety
/// The CPU must support the kernel (`available()`); `kp` is a non-zero multiple of 4,
/// `codes.len()` a multiple of `kp`, `panel(p)` is `kp * PANEL` bytes and `shift(p)`
/// `PANEL` values for every `p < panels`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(crate) unsafe fn product<'w>(
    codes: &[i8],
    kp: usize,
    panels: usize,
    panel: impl Fn(usize) -> &'w [i8],
    shift: impl Fn(usize) -> &'w [i32],
    row_block: usize,
    mut emit: impl FnMut(usize, usize, &[[i32; PANEL]]),
) {
    debug_assert!(kp > 0 && kp.is_multiple_of(4) && codes.len().is_multiple_of(kp));
    let rows = codes.len() / kp;
    let row_block = row_block.max(ROWS);
    let mut sums = [[0i32; PANEL]; ROWS];
    for block in (0..rows).step_by(row_block) {
        let block_end = rows.min(block + row_block);
        for p in 0..panels {
            let (b, start) = (panel(p), shift(p));
            debug_assert!(b.len() == kp * PANEL && start.len() == PANEL);
            let (b, start) = (b.as_ptr(), start.as_ptr());
            // The first register block fetches the next panel into L1 while it works:
            // a query's few rows pass over each panel only a few times, so without it
            // most of a product would wait for panels read from L3.
            let mut next = (p + 1 < panels).then(|| panel(p + 1).as_ptr());
            for r0 in (block..block_end).step_by(ROWS) {
                let n = ROWS.min(block_end - r0);
                let a = codes[r0 * kp..].as_ptr();
                let ahead = next.take().unwrap_or(std::ptr::null());
                // SAFETY: rows r0..r0 + n of `kp` shifted codes, a panel of `kp * PANEL`
                // bytes (and the next one at `ahead`, unless null) and `PANEL` shift sums,
                // as the caller guarantees.
                unsafe {
                    match n {
                        8 => block_n::<8>(a, kp, b, ahead, start, &mut sums),
                        7 => block_n::<7>(a, kp, b, ahead, start, &mut sums),
                        6 => block_n::<6>(a, kp, b, ahead, start, &mut sums),
                        5 => block_n::<5>(a, kp, b, ahead, start, &mut sums),
                        4 => block_n::<4>(a, kp, b, ahead, start, &mut sums),
                        3 => block_n::<3>(a, kp, b, ahead, start, &mut sums),
                        2 => block_n::<2>(a, kp, b, ahead, start, &mut sums),
                        _ => block_n::<1>(a, kp, b, ahead, start, &mut sums),
                    }
                }
                emit(r0, p, &sums[..n]);
            }
        }
    }
}

/// `sums[r] = sum_k a[r][k] b[k][.] - shift` for `R` rows of shifted codes at `a`
/// (a stride of `kp` bytes) against the panel at `b`; prefetches the panel at `next`
/// unless it is null.
///
/// # Safety
/// `a` points at `R * kp` bytes, `b` and a non-null `next` at `kp * PANEL` bytes and
/// `shift` at `PANEL` values; the CPU has the kernel's features.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
unsafe fn block_n<const R: usize>(
    a: *const i8,
    kp: usize,
    b: *const i8,
    next: *const i8,
    shift: *const i32,
    sums: &mut [[i32; PANEL]; ROWS],
) {
    const { assert!(R <= ROWS && PANEL == 32) };
    // SAFETY (every load below): group g of the panel is bytes [128 g, 128 g + 128)
    // of its kp * PANEL; row r's bytes 4 g .. 4 g + 4 lie within its kp.
    let start = unsafe {
        let zero = _mm512_setzero_si512();
        [
            _mm512_sub_epi32(zero, _mm512_loadu_si512(shift as *const _)),
            _mm512_sub_epi32(zero, _mm512_loadu_si512(shift.add(16) as *const _)),
        ]
    };
    let mut acc = [start; R];
    for g in 0..kp / 4 {
        if !next.is_null() {
            // SAFETY: group g of the next panel, as for `b` below.
            unsafe {
                _mm_prefetch(next.add(g * 128), _MM_HINT_T0);
                _mm_prefetch(next.add(g * 128 + 64), _MM_HINT_T0);
            }
        }
        let (b0, b1) = unsafe {
            (
                _mm512_load_si512(b.add(g * 128) as *const _),
                _mm512_load_si512(b.add(g * 128 + 64) as *const _),
            )
        };
        for (r, acc) in acc.iter_mut().enumerate() {
            let word = unsafe { (a.add(r * kp + 4 * g) as *const i32).read_unaligned() };
            let a = _mm512_set1_epi32(word);
            acc[0] = _mm512_dpbusd_epi32(acc[0], a, b0);
            acc[1] = _mm512_dpbusd_epi32(acc[1], a, b1);
        }
    }
    for (out, acc) in sums.iter_mut().zip(acc) {
        let out = out.as_mut_ptr();
        // SAFETY: each row of `sums` holds PANEL = 32 values.
        unsafe {
            _mm512_storeu_si512(out as *mut _, acc[0]);
            _mm512_storeu_si512(out.add(16) as *mut _, acc[1]);
        }
    }
}
