//! AMX-INT8 kernel. `tdpbssd` multiplies a tile of signed activation bytes (16 rows x
//! 64 values of k) with a tile of signed weight bytes (16 groups of 4 values of k x
//! 16 columns) into 16 x 16 exact i32 sums: no shift to u8, no correction.
//!
//! The packed panels (`packed.rs`) are B tiles as they are: a half panel (16 columns)
//! over 64 values of k is 16 rows of 64 bytes at a stride of 128. The driver keeps a
//! block of 32 rows x 32 columns (one panel) in four accumulator tiles, runs the
//! whole reduction, stores the sums and hands the block on to the epilogue. A lone
//! row tile (a short query) takes two panels at a time instead, for the same four
//! independent accumulators.
//!
//! Tile state: each call loads the tile configuration on its own thread (rayon
//! workers included) and releases it before returning, so no thread keeps AMX state
//! (a larger context to save on every switch) after a product, and a call never
//! depends on what ran before it on that thread. `ldtilecfg` costs far less than one
//! block of 32 x 32 products.
//!
//! Stable Rust has no AMX intrinsics or feature detection, so the instructions are
//! written with `asm!` and support is checked by hand (CPUID, XCR0, and Linux's
//! permission to use tile data).

use std::arch::asm;
use std::arch::x86_64::{__cpuid, __cpuid_count, _mm_prefetch, _xgetbv, _MM_HINT_T1};
use std::sync::OnceLock;

use super::PANEL;
use crate::gemm::aligned::AlignedBytes;

/// Rows of one tile; a block is two row tiles.
pub(crate) const TILE_ROWS: usize = 16;
/// Rows of one block: rayon tasks get multiples of this.
pub(crate) const BLOCK_ROWS: usize = 2 * TILE_ROWS;
/// Bytes of k per tile row.
const TILE_K: usize = 64;

/// Whether the CPU has AMX-TILE and AMX-INT8 and the OS lets this process use them.
/// Checked once per process.
pub(crate) fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| cpu_and_os_support() && request_tile_data())
}

fn cpu_and_os_support() -> bool {
    let (max_leaf, osxsave) = (__cpuid(0).eax, __cpuid(1).ecx >> 27 & 1 == 1);
    if max_leaf < 7 || !osxsave {
        return false;
    }
    let edx = __cpuid_count(7, 0).edx; // leaf 7 exists (checked above)
    let (tile, int8) = (edx >> 24 & 1 == 1, edx >> 25 & 1 == 1);
    // XCR0 bits 17 (XTILECFG) and 18 (XTILEDATA): the OS saves tile state.
    // SAFETY: OSXSAVE is set, so xgetbv is enabled.
    let xcr0 = unsafe { _xgetbv(0) };
    tile && int8 && xcr0 & (3 << 17) == 3 << 17
}

/// Linux hands out tile data only on request (`arch_prctl(ARCH_REQ_XCOMP_PERM,
/// XFEATURE_XTILEDATA)`), once per process; the first tile instruction without it
/// kills the process. A refusal means no AMX.
#[cfg(target_os = "linux")]
fn request_tile_data() -> bool {
    const SYS_ARCH_PRCTL: i64 = 158;
    const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
    const XFEATURE_XTILEDATA: i64 = 18;
    let ret: i64;
    // SAFETY: arch_prctl with these arguments only changes the process's permitted
    // xsave features; the syscall clobbers rcx and r11 and touches no user memory.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") SYS_ARCH_PRCTL => ret,
            in("rdi") ARCH_REQ_XCOMP_PERM,
            in("rsi") XFEATURE_XTILEDATA,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret == 0
}

/// Other systems: not wired up (each has its own way to grant tile state).
#[cfg(not(target_os = "linux"))]
fn request_tile_data() -> bool {
    false
}

/// Palette 1 with all eight tiles 16 rows x 64 bytes: accumulators (tmm0-3, rows x
/// 16 i32), activations (tmm4-5) and weights (tmm6-7) share one shape.
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

impl TileConfig {
    const fn uniform() -> Self {
        let mut cfg = [0u8; 64];
        cfg[0] = 1; // palette
        let mut t = 0;
        while t < 8 {
            cfg[16 + 2 * t] = TILE_K as u8; // bytes per row (u16, little endian)
            cfg[48 + t] = TILE_ROWS as u8;
            t += 1;
        }
        TileConfig(cfg)
    }
}

/// Tiles configured on this thread until dropped.
struct Tiles;

impl Tiles {
    /// # Safety
    /// [`available`] must have returned true.
    unsafe fn configure() -> Tiles {
        static CONFIG: TileConfig = TileConfig::uniform();
        // SAFETY: the CPU and OS support AMX (caller); CONFIG is a valid palette-1
        // configuration, 64 bytes, aligned.
        unsafe { asm!("ldtilecfg [{}]", in(reg) CONFIG.0.as_ptr(), options(nostack, readonly)) };
        Tiles
    }
}

impl Drop for Tiles {
    fn drop(&mut self) {
        // SAFETY: tiles were configured by `configure`, so AMX is usable.
        unsafe { asm!("tilerelease", options(nostack, nomem)) };
    }
}

/// 32 x 32 sums with rows 64-byte aligned, the tile store target.
#[repr(C, align(64))]
struct Block([[i32; PANEL]; BLOCK_ROWS]);

/// Multiplies `codes` (`rows x kp` activation codes, row-major) with each of
/// `panels` packed panels (`panel(p)`, `kp * PANEL` bytes) and calls
/// `emit(first row, panel index, sums of consecutive rows)` for every block. Rows
/// are taken in groups of `row_block` (a multiple of [`BLOCK_ROWS`]) that stay in
/// cache while all panels pass over them.
///
/// # Safety
/// [`available`] must have returned true; `kp` a non-zero multiple of 64,
/// `codes.len()` a multiple of `kp`, every panel `kp * PANEL` bytes.
pub(crate) unsafe fn product<'w>(
    codes: &[i8],
    kp: usize,
    panels: usize,
    panel: impl Fn(usize) -> &'w [i8],
    row_block: usize,
    mut emit: impl FnMut(usize, usize, &[[i32; PANEL]]),
) {
    debug_assert!(kp > 0 && kp.is_multiple_of(TILE_K) && codes.len().is_multiple_of(kp));
    debug_assert!(row_block.is_multiple_of(BLOCK_ROWS));
    let rows = codes.len() / kp;
    let tiles = rows.div_ceil(TILE_ROWS);
    // A partial last row tile is copied into zeroed rows, so that every tile load
    // reads 16 rows of this call's memory; the zero rows' sums are not emitted.
    let whole = rows / TILE_ROWS * TILE_ROWS;
    let tail = (whole < rows).then(|| {
        let mut t = AlignedBytes::zeroed(TILE_ROWS * kp);
        t[..(rows - whole) * kp].copy_from_slice(&codes[whole * kp..]);
        t
    });
    let tile_rows = |t: usize| -> *const i8 {
        match &tail {
            Some(tail) if t * TILE_ROWS == whole => tail.as_ptr(),
            _ => codes[t * TILE_ROWS * kp..].as_ptr(),
        }
    };
    let mut sums = Block([[0; PANEL]; BLOCK_ROWS]);
    // SAFETY: the caller checked `available()`.
    let _tiles = unsafe { Tiles::configure() };
    // Only the first pass over the panels reads them from memory: later row groups,
    // and a lone tile after pairs, find them in cache, so they fetch nothing ahead.
    let ahead = |p: usize, first_pass: bool| (first_pass && p < panels).then(|| panel(p).as_ptr());
    for first in (0..tiles).step_by(row_block / TILE_ROWS) {
        let end = tiles.min(first + row_block / TILE_ROWS);
        let pairs_end = first + (end - first) / 2 * 2;
        for p in 0..panels {
            let b = panel(p);
            debug_assert_eq!(b.len(), kp * PANEL);
            for t in (first..pairs_end).step_by(2) {
                let next = ahead(p + 1, t == 0);
                // SAFETY: tiles are configured; each row tile pointer has 16 rows of
                // `kp` bytes (whole tiles of `codes`, or the padded tail), the panel
                // `kp / 4` groups of 128 bytes; `sums` takes 32 rows of 128 bytes.
                let a = [tile_rows(t), tile_rows(t + 1)];
                unsafe { block_2x2(a, b.as_ptr(), next, kp, &mut sums) };
                let real = rows.min((t + 2) * TILE_ROWS) - t * TILE_ROWS;
                emit(t * TILE_ROWS, p, &sums.0[..real]);
            }
        }
        if pairs_end == end {
            continue;
        }
        // A lone row tile (up to 16 rows: a short query) meets two panels at a time,
        // so that four independent accumulators hide the latency of each product.
        let t = pairs_end;
        let real = rows.min((t + 1) * TILE_ROWS) - t * TILE_ROWS;
        for p in (0..panels).step_by(2) {
            let two = p + 1 < panels;
            // SAFETY: as above; the second panel exists when `two`; `sums` takes
            // panel p's rows in 0-15 and panel p + 1's in 16-31.
            unsafe {
                if two {
                    let (b0, b1) = (panel(p).as_ptr(), panel(p + 1).as_ptr());
                    let next = [ahead(p + 2, t == 0), ahead(p + 3, t == 0)];
                    block_1x4(tile_rows(t), [b0, b1], next, kp, &mut sums);
                } else {
                    block_1x2(tile_rows(t), panel(p).as_ptr(), kp, &mut sums);
                }
            }
            emit(t * TILE_ROWS, p, &sums.0[..real]);
            if two {
                emit(t * TILE_ROWS, p + 1, &sums.0[TILE_ROWS..TILE_ROWS + real]);
            }
        }
    }
}

/// Bytes of a panel that one step of k (64 values) reads: 16 groups of 128.
const STEP_BYTES: usize = TILE_K * PANEL;

/// Asks for the step at `kk` of the panel at `next`, if any, to be brought into L2.
///
/// Why: the products are bound by reading the weights (a short batch does a few
/// products per 2 KB of them), and the hardware prefetcher stops at every 4 KB page,
/// so without this each page of every panel starts with a wait on memory. Fetching
/// the panel that comes next, step for step, keeps the reads one panel ahead.
#[inline(always)]
fn prefetch_step(next: Option<*const i8>, kk: usize) {
    let Some(next) = next else { return };
    for line in (0..STEP_BYTES).step_by(64) {
        // SAFETY: a prefetch only hints the cache and never faults; the lines asked
        // for are the panel's own (kk < kp, and a panel holds kp * PANEL bytes).
        unsafe { _mm_prefetch::<_MM_HINT_T1>(next.wrapping_add(kk * PANEL + line)) };
    }
}

/// Sums of 32 rows (two tiles at `a0`, `a1`) x 32 columns (the panel at `b`) over
/// `kp` into `out`: tmm0-3 accumulate (rows 0-15 | 16-31) x (columns 0-15 | 16-31).
/// `next` is the panel to fetch meanwhile, if any (the one after `b`).
///
/// # Safety
/// Tiles configured by [`Tiles::configure`]; `a0` and `a1` point to 16 rows of `kp`
/// bytes, `b` and `next` to `kp / 4` rows of 128 bytes.
#[inline(always)]
unsafe fn block_2x2(
    [a0, a1]: [*const i8; 2],
    b: *const i8,
    next: Option<*const i8>,
    kp: usize,
    out: &mut Block,
) {
    // SAFETY (all asm blocks): tiles are configured; loads stay within the rows
    // described above (64 bytes of k at a time), stores within `out`.
    unsafe {
        zero_four();
        for kk in (0..kp).step_by(TILE_K) {
            prefetch_step(next, kk);
            asm!(
                "tileloadd tmm4, [{a0} + {sa}*1]",
                "tileloadd tmm5, [{a1} + {sa}*1]",
                "tileloadd tmm6, [{b} + {sb}*1]",
                "tileloadd tmm7, [{b} + {sb}*1 + 64]",
                "tdpbssd tmm0, tmm4, tmm6",
                "tdpbssd tmm1, tmm4, tmm7",
                "tdpbssd tmm2, tmm5, tmm6",
                "tdpbssd tmm3, tmm5, tmm7",
                a0 = in(reg) a0.add(kk),
                a1 = in(reg) a1.add(kk),
                // Group kk / 4 of the panel: 128 bytes per group.
                b = in(reg) b.add(kk * PANEL),
                sa = in(reg) kp,
                sb = in(reg) 4 * PANEL,
                options(nostack, readonly)
            );
        }
        store_four(out);
    }
}

/// Zeroes accumulators tmm0-tmm3.
///
/// # Safety
/// The tiles must be configured on this thread.
#[inline(always)]
unsafe fn zero_four() {
    // SAFETY: the caller guarantees the tile state; no memory is touched.
    unsafe {
        asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            options(nostack, nomem)
        );
    }
}

/// Stores accumulators tmm0-tmm3 into `out`: tmm0 / tmm1 as rows 0-15 (columns 0-15 /
/// 16-31), tmm2 / tmm3 as rows 16-31.
///
/// # Safety
/// The tiles must be configured on this thread and hold 16 x 16 int32 each.
#[inline(always)]
unsafe fn store_four(out: &mut Block) {
    // SAFETY: `out` holds 32 x 32 int32 (two row tiles of PANEL columns each); the
    // caller guarantees the tile state.
    unsafe {
        let o = out.0.as_mut_ptr().cast::<i32>();
        asm!(
            "tilestored [{o} + {s}*1], tmm0",
            "tilestored [{o} + {s}*1 + 64], tmm1",
            "tilestored [{h} + {s}*1], tmm2",
            "tilestored [{h} + {s}*1 + 64], tmm3",
            o = in(reg) o,
            h = in(reg) o.add(TILE_ROWS * PANEL),
            s = in(reg) 4 * PANEL,
            options(nostack)
        );
    }
}

/// [`block_2x2`] for a lone row tile: rows 0-15 of `out`.
///
/// # Safety
/// As for [`block_2x2`], with one row tile at `a`.
#[inline(always)]
unsafe fn block_1x2(a: *const i8, b: *const i8, kp: usize, out: &mut Block) {
    // SAFETY: as in `block_2x2`.
    unsafe {
        asm!("tilezero tmm0", "tilezero tmm1", options(nostack, nomem));
        for kk in (0..kp).step_by(TILE_K) {
            asm!(
                "tileloadd tmm4, [{a} + {sa}*1]",
                "tileloadd tmm6, [{b} + {sb}*1]",
                "tileloadd tmm7, [{b} + {sb}*1 + 64]",
                "tdpbssd tmm0, tmm4, tmm6",
                "tdpbssd tmm1, tmm4, tmm7",
                a = in(reg) a.add(kk),
                b = in(reg) b.add(kk * PANEL),
                sa = in(reg) kp,
                sb = in(reg) 4 * PANEL,
                options(nostack, readonly)
            );
        }
        let o = out.0.as_mut_ptr().cast::<i32>();
        asm!(
            "tilestored [{o} + {s}*1], tmm0",
            "tilestored [{o} + {s}*1 + 64], tmm1",
            o = in(reg) o,
            s = in(reg) 4 * PANEL,
            options(nostack)
        );
    }
}

/// One row tile at `a` x two panels (`b0`, `b1`): rows 0-15 of `out` get panel
/// `b0`'s sums, rows 16-31 panel `b1`'s. Four accumulators; the fourth weight tile
/// reuses tmm5 once its first product has read it. `next` are the panels to fetch
/// meanwhile, if any (the two after them).
///
/// # Safety
/// As for [`block_2x2`], with one row tile at `a` and two panels.
#[inline(always)]
unsafe fn block_1x4(
    a: *const i8,
    [b0, b1]: [*const i8; 2],
    next: [Option<*const i8>; 2],
    kp: usize,
    out: &mut Block,
) {
    // SAFETY: as in `block_2x2`.
    unsafe {
        zero_four();
        for kk in (0..kp).step_by(TILE_K) {
            prefetch_step(next[0], kk);
            prefetch_step(next[1], kk);
            asm!(
                "tileloadd tmm4, [{a} + {sa}*1]",
                "tileloadd tmm5, [{b0} + {sb}*1]",
                "tileloadd tmm6, [{b0} + {sb}*1 + 64]",
                "tileloadd tmm7, [{b1} + {sb}*1]",
                "tdpbssd tmm0, tmm4, tmm5",
                "tdpbssd tmm1, tmm4, tmm6",
                "tdpbssd tmm2, tmm4, tmm7",
                "tileloadd tmm5, [{b1} + {sb}*1 + 64]",
                "tdpbssd tmm3, tmm4, tmm5",
                a = in(reg) a.add(kk),
                b0 = in(reg) b0.add(kk * PANEL),
                b1 = in(reg) b1.add(kk * PANEL),
                sa = in(reg) kp,
                sb = in(reg) 4 * PANEL,
                options(nostack, readonly)
            );
        }
        store_four(out);
    }
}
