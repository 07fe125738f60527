//! Element types of KV tensors and the 16-bit float conversions the int8 path needs.
//!
//! f32, f16 and bf16 tensors are packed byte for byte; only quantisation reads
//! elements as numbers, so the conversions live here instead of pulling in a crate.

use crate::error::{Error, Result};

/// The element type of a KV tensor as the model produced it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    BF16,
}

impl DType {
    pub const ALL: [DType; 3] = [DType::F32, DType::F16, DType::BF16];

    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "f32" | "float32" => Ok(DType::F32),
            "f16" | "float16" => Ok(DType::F16),
            "bf16" | "bfloat16" => Ok(DType::BF16),
            other => Err(Error::invalid(
                "dtype",
                format!("unknown dtype {other:?}; expected f32, f16 or bf16"),
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
        }
    }

    /// The code stored in a page header.
    pub fn code(self) -> u8 {
        match self {
            DType::F32 => 1,
            DType::F16 => 2,
            DType::BF16 => 3,
        }
    }

    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(DType::F32),
            2 => Some(DType::F16),
            3 => Some(DType::BF16),
            _ => None,
        }
    }

    /// Reads element `index` of a little-endian buffer of this dtype.
    #[inline]
    pub fn read(self, bytes: &[u8], index: usize) -> f32 {
        match self {
            DType::F32 => {
                let o = index * 4;
                f32::from_le_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]])
            }
            DType::F16 => f16_to_f32(u16::from_le_bytes([bytes[2 * index], bytes[2 * index + 1]])),
            DType::BF16 => {
                bf16_to_f32(u16::from_le_bytes([bytes[2 * index], bytes[2 * index + 1]]))
            }
        }
    }

    /// Writes `value` (rounded to nearest, ties to even) as element `index`.
    #[inline]
    pub fn write(self, bytes: &mut [u8], index: usize, value: f32) {
        match self {
            DType::F32 => bytes[4 * index..4 * index + 4].copy_from_slice(&value.to_le_bytes()),
            DType::F16 => {
                bytes[2 * index..2 * index + 2].copy_from_slice(&f32_to_f16(value).to_le_bytes())
            }
            DType::BF16 => {
                bytes[2 * index..2 * index + 2].copy_from_slice(&f32_to_bf16(value).to_le_bytes())
            }
        }
    }
}

/// IEEE binary16 to f32 (exact).
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h & 0x8000) << 16;
    let exp = u32::from((h >> 10) & 0x1f);
    let man = u32::from(h & 0x3ff);
    let bits = match (exp, man) {
        (0, 0) => sign,
        (0, _) => {
            // Subnormal: shift the mantissa up until the implicit bit appears.
            let mut e = 113u32;
            let mut m = man;
            while m & 0x400 == 0 {
                m <<= 1;
                e -= 1;
            }
            sign | (e << 23) | ((m & 0x3ff) << 13)
        }
        (0x1f, _) => sign | 0x7f80_0000 | (man << 13),
        _ => sign | ((exp + 112) << 23) | (man << 13),
    };
    f32::from_bits(bits)
}

/// f32 to IEEE binary16, round to nearest, ties to even; overflow gives infinity.
pub fn f32_to_f16(x: f32) -> u16 {
    let bits = x.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let exp = ((bits >> 23) & 0xff) as i32;
    let man = bits & 0x7f_ffff;
    if exp == 0xff {
        let nan = if man != 0 {
            0x200 | (man >> 13) as u16
        } else {
            0
        };
        return sign | 0x7c00 | nan;
    }
    let e = exp - 127 + 15;
    if e >= 0x1f {
        return sign | 0x7c00;
    }
    if e <= 0 {
        if e < -10 {
            return sign;
        }
        let m = man | 0x80_0000;
        let shift = (14 - e) as u32;
        let half = 1u32 << (shift - 1);
        let rem = m & ((1u32 << shift) - 1);
        let mut r = m >> shift;
        if rem > half || (rem == half && r & 1 == 1) {
            r += 1;
        }
        return sign | r as u16;
    }
    // A carry out of the mantissa correctly bumps the exponent (up to infinity).
    let mut r = ((e as u32) << 10) | (man >> 13);
    let rem = man & 0x1fff;
    if rem > 0x1000 || (rem == 0x1000 && r & 1 == 1) {
        r += 1;
    }
    sign | r as u16
}

pub fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits(u32::from(h) << 16)
}

/// f32 to bfloat16, round to nearest, ties to even; NaN stays NaN.
pub fn f32_to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) | 0x40) as u16;
    }
    let round = 0x7fff + ((bits >> 16) & 1);
    (bits.wrapping_add(round) >> 16) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_round_trips_every_non_nan_value() {
        for h in 0..=u16::MAX {
            let x = f16_to_f32(h);
            if x.is_nan() {
                assert!(f32_to_f16(x) & 0x7c00 == 0x7c00 && f32_to_f16(x) & 0x3ff != 0);
            } else {
                assert_eq!(f32_to_f16(x), h, "{h:#06x}");
            }
        }
    }

    #[test]
    fn f16_rounds_to_nearest_even() {
        assert_eq!(f16_to_f32(f32_to_f16(1.0 + 1.0 / 2048.0)), 1.0); // tie, even stays
        assert_eq!(
            f16_to_f32(f32_to_f16(1.0 + 3.0 / 2048.0)),
            1.0 + 2.0 / 1024.0
        );
        assert_eq!(f32_to_f16(65520.0), 0x7c00); // rounds past the largest finite value
        assert_eq!(f16_to_f32(f32_to_f16(65504.0)), 65504.0);
        assert_eq!(f32_to_f16(2f32.powi(-25)), 0); // half the smallest subnormal: tie to 0
        assert_eq!(f32_to_f16(2f32.powi(-24)), 1);
        assert_eq!(f32_to_f16(-0.0), 0x8000);
    }

    #[test]
    fn f16_is_nearest_for_sampled_values() {
        let mut x = 1e-8f32;
        while x < 65504.0 {
            let r = f32_to_f16(x);
            let err = (f16_to_f32(r) - x).abs();
            for n in [r.wrapping_sub(1), r + 1] {
                let alt = f16_to_f32(n);
                if alt.is_nan() {
                    continue;
                }
                assert!(err <= (alt - x).abs(), "{x} -> {r:#06x}");
            }
            x *= 1.000_37;
        }
    }

    #[test]
    fn bf16_round_trips_and_rounds() {
        for h in (0..=u16::MAX).step_by(7) {
            let x = bf16_to_f32(h);
            if !x.is_nan() {
                assert_eq!(f32_to_bf16(x), h);
            }
        }
        assert_eq!(bf16_to_f32(f32_to_bf16(1.0 + 1.0 / 256.0)), 1.0);
        assert_eq!(
            bf16_to_f32(f32_to_bf16(1.0 + 3.0 / 256.0)),
            1.0 + 2.0 / 128.0
        );
        assert!(bf16_to_f32(f32_to_bf16(f32::NAN)).is_nan());
    }

    #[test]
    fn parse_names() {
        for d in DType::ALL {
            assert_eq!(DType::parse(d.name()).unwrap(), d);
            assert_eq!(DType::from_code(d.code()), Some(d));
        }
        assert!(DType::parse("f64").is_err());
    }
}
