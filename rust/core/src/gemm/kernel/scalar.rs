//! The portable kernel, and the reference for the SIMD ones.

use super::PANEL;

pub(crate) fn tile(rows: &[&[i8]], panel: &[i8], k4: usize, acc: &mut [[i32; PANEL]]) {
    for (row, out) in rows.iter().zip(acc.iter_mut()) {
        *out = [0; PANEL];
        for g in 0..k4 / 4 {
            let a = &row[4 * g..4 * g + 4];
            let block = &panel[g * 4 * PANEL..(g + 1) * 4 * PANEL];
            for (c, sum) in out.iter_mut().enumerate() {
                let b = &block[4 * c..4 * c + 4];
                *sum += a
                    .iter()
                    .zip(b)
                    .map(|(&x, &y)| x as i32 * y as i32)
                    .sum::<i32>();
            }
        }
    }
}
