//! Float loops that vectorise the same way on every build.
//!
//! The crate is built for baseline x86-64 (SSE2), so a float loop is 4 lanes wide
//! unless it is compiled again for a wider instruction set and picked at run time:
//! [`multiversion!`] does that (AVX-512, AVX2, portable). Reductions would still
//! be one serial chain of adds (LLVM never reorders float arithmetic), so sums are
//! written with [`LANES`] partial sums in the source: the order of operations is
//! then the program's, not the compiler's, and every build gives the same floats.
//! No fused multiply-add is enabled or used, for the same reason.

/// Partial sums per reduction: one AVX-512 register, two AVX2 ones, four SSE2 ones.
pub(crate) const LANES: usize = 16;

/// The widest instruction set a multiversioned function may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Isa {
    Avx512,
    Avx2,
    Portable,
}

impl Isa {
    /// The widest one this CPU has.
    pub fn detect() -> Isa {
        Isa::ALL
            .into_iter()
            .find(|isa| isa.available())
            .unwrap_or(Isa::Portable)
    }

    /// Every instruction set, widest first.
    pub const ALL: [Isa; 3] = [Isa::Avx512, Isa::Avx2, Isa::Portable];

    pub fn available(self) -> bool {
        match self {
            Isa::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => is_x86_feature_detected!("avx512f"),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => is_x86_feature_detected!("avx2"),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }
}

/// Defines `fn $name(isa: Isa, args...)` that runs `$body(args...)` compiled for
/// `isa` (AVX-512 or AVX2 when the CPU has it, else the portable build). `$body`
/// must be `#[inline(always)]`, so that it is compiled into each copy.
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) = $body:path;) => {
        $(#[$meta])*
        $vis fn $name(isa: $crate::simd::Isa, $($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f")]
            unsafe fn avx512($($arg: $ty),*) {
                $body($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2")]
            unsafe fn avx2($($arg: $ty),*) {
                $body($($arg),*)
            }
            match isa {
                #[cfg(target_arch = "x86_64")]
                $crate::simd::Isa::Avx512 if $crate::simd::Isa::Avx512.available() => {
                    // SAFETY: the CPU has the feature (checked just now).
                    unsafe { avx512($($arg),*) }
                }
                #[cfg(target_arch = "x86_64")]
                $crate::simd::Isa::Avx512 | $crate::simd::Isa::Avx2
                    if $crate::simd::Isa::Avx2.available() =>
                {
                    // SAFETY: as above.
                    unsafe { avx2($($arg),*) }
                }
                _ => $body($($arg),*),
            }
        }
    };
}
pub(crate) use multiversion;

/// The sum of `f(v)` over `values`: element i goes to partial sum `i % LANES`,
/// then the partial sums are added pairwise ([`reduce`]).
#[inline(always)]
pub(crate) fn sum_map(values: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = values.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (a, &v) in acc.iter_mut().zip(chunk) {
            *a += f(v);
        }
    }
    for (a, &v) in acc.iter_mut().zip(tail) {
        *a += f(v);
    }
    reduce(acc)
}

/// The sum of `values` (see [`sum_map`]).
#[inline(always)]
pub(crate) fn sum(values: &[f32]) -> f32 {
    sum_map(values, |v| v)
}

/// Adds the upper half of the lanes to the lower half until one is left: the order
/// a vector's horizontal sum takes, so it stays in registers.
#[inline(always)]
pub(crate) fn reduce(mut acc: [f32; LANES]) -> f32 {
    let mut half = LANES / 2;
    while half > 0 {
        for i in 0..half {
            acc[i] += acc[i + half];
        }
        half /= 2;
    }
    acc[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_in_the_written_order() {
        let v: Vec<f32> = (0..37).map(|i| i as f32 * 0.25).collect();
        // Lane l holds v[l] + v[l + 16] (+ v[l + 32] for l < 5).
        let mut lanes = [0f32; LANES];
        for (i, x) in v.iter().enumerate() {
            lanes[i % LANES] += x;
        }
        let pairwise = |l: &[f32]| -> f32 {
            let (mut a, mut half) = (l.to_vec(), LANES / 2);
            while half > 0 {
                for i in 0..half {
                    a[i] += a[i + half];
                }
                half /= 2;
            }
            a[0]
        };
        assert_eq!(sum(&v), pairwise(&lanes));
        assert_eq!(sum(&v), (0..37).sum::<i32>() as f32 * 0.25);
        assert_eq!(sum(&[]), 0.0);
        assert_eq!(sum_map(&[1.0, -2.0, 3.0], |x| x * x), 14.0);
    }

    #[test]
    fn detect_picks_an_available_isa() {
        assert!(Isa::detect().available());
        assert!(Isa::Portable.available());
        assert_eq!(Isa::ALL.last(), Some(&Isa::Portable));
    }
}
