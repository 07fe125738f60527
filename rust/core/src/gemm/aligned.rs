//! Zeroed byte buffers aligned to 64 bytes (a cache line).
//!
//! Weight panels and activation rows have lengths that are multiples of 64, so with
//! an aligned start every 64-byte row the kernels load (an AMX tile row, a zmm
//! vector) sits in one cache line instead of straddling two.

use std::ops::{Deref, DerefMut};

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([i8; 64]);

pub(crate) struct AlignedBytes {
    lines: Vec<Line>,
    len: usize,
}

impl AlignedBytes {
    /// `len` zero bytes.
    pub fn zeroed(len: usize) -> Self {
        AlignedBytes {
            lines: vec![Line([0; 64]); len.div_ceil(64)],
            len,
        }
    }
}

impl Deref for AlignedBytes {
    type Target = [i8];

    fn deref(&self) -> &[i8] {
        // SAFETY: `lines` holds at least `len` initialised bytes (64 per line, no
        // padding inside `Line`), borrowed for as long as `self`.
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr().cast::<i8>(), self.len) }
    }
}

impl DerefMut for AlignedBytes {
    fn deref_mut(&mut self) -> &mut [i8] {
        // SAFETY: as in `deref`, borrowed mutably for as long as `self`.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr().cast::<i8>(), self.len) }
    }
}
