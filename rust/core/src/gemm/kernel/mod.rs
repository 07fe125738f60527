//! Integer micro-kernels: `acc[r][c] = sum_k a[r][k] * b[k][c]` exactly (i32) for up to
//! [`MR`] rows of quantised activations against one packed panel of [`PANEL`] columns.
//!
//! All kernels read the same packed layout (see `packed.rs`) and produce the same
//! integers; they differ only in the instructions used. AMX works on whole blocks of
//! 32 rows, and VNNI on shifted codes in blocks of 8 rows, rather than on [`MR`]-row
//! tiles, so each has its own driver (`amx::product`, `avx512::product`).

#[cfg(target_arch = "x86_64")]
pub(crate) mod amx;
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512;
pub(crate) mod scalar;

/// Output columns per packed panel.
pub(crate) const PANEL: usize = 32;
/// Activation rows per micro-kernel call.
pub(crate) const MR: usize = 4;

/// The instruction set a product runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// AMX-INT8 `tdpbssd` (i8 x i8 -> i32 on 16 x 64 byte tiles).
    Amx,
    /// AVX-512 VNNI `vpdpbusd` (u8 x i8 -> i32), activations shifted by +128.
    Avx512Vnni,
    /// AVX2 `vpmaddubsw` + `vpmaddwd` with the sign trick (|a| x sign(b, a)).
    Avx2,
    /// Portable Rust; the reference the others are tested against.
    Scalar,
}

impl Kernel {
    /// Every kernel, fastest first.
    pub const ALL: [Kernel; 4] = [
        Kernel::Amx,
        Kernel::Avx512Vnni,
        Kernel::Avx2,
        Kernel::Scalar,
    ];

    /// The fastest kernel this CPU supports (checked at run time).
    pub fn detect() -> Kernel {
        Kernel::ALL
            .into_iter()
            .find(|k| k.available())
            .unwrap_or(Kernel::Scalar)
    }

    /// Whether this CPU can run the kernel.
    pub fn available(self) -> bool {
        match self {
            Kernel::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Kernel::Amx => amx::available(),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => is_x86_feature_detected!("avx2"),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Vnni => avx512::available(),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// Whether the kernel reads activation codes as unsigned bytes, `code + 128`
    /// (VNNI multiplies u8 by i8); the others read them as they are.
    pub(crate) fn unsigned_codes(self) -> bool {
        self == Kernel::Avx512Vnni
    }

    pub fn name(self) -> &'static str {
        match self {
            Kernel::Amx => "amx",
            Kernel::Avx512Vnni => "avx512vnni",
            Kernel::Avx2 => "avx2",
            Kernel::Scalar => "scalar",
        }
    }

    pub fn parse(name: &str) -> Option<Kernel> {
        Kernel::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Runs the micro-kernel: `rows` holds `mr <= MR` activation rows of `k4` codes each
    /// (`k4` a multiple of 4), `panel` one packed panel of `k4 * PANEL` bytes;
    /// `acc[r]` receives row r's `PANEL` sums. The caller guarantees `available()`
    /// and runs [`Kernel::Amx`] and [`Kernel::Avx512Vnni`] products through their
    /// own drivers instead.
    pub(crate) fn tile(self, rows: &[&[i8]], panel: &[i8], k4: usize, acc: &mut [[i32; PANEL]]) {
        debug_assert!(rows.len() <= MR && rows.len() == acc.len());
        debug_assert!(k4.is_multiple_of(4) && panel.len() == k4 * PANEL);
        debug_assert!(rows.iter().all(|r| r.len() == k4));
        match self {
            Kernel::Scalar => scalar::tile(rows, panel, k4, acc),
            // SAFETY: the caller checked `available()`, so the CPU has the features;
            // the slices have the lengths asserted above, which the kernels rely on.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => unsafe { avx2::tile(rows, panel, k4, acc) },
            #[cfg(target_arch = "x86_64")]
            Kernel::Amx | Kernel::Avx512Vnni => {
                unreachable!("AMX and VNNI products run in their own drivers")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => scalar::tile(rows, panel, k4, acc),
        }
    }
}
