//! Row-wise kernels on matrices stored as row-major slices.
//!
//! Each output element is computed by one fixed sequence of additions, so the results do not
//! depend on the number of threads.

/// Sets each row of `dst` (`rows x cols`) to `src_row + bias`, or adds `bias` to it in place
/// when `src` is `None`.
///
/// # Panics
///
/// Panics if `bias.len()` is not `cols` or `dst.len()` is not a multiple of it.
pub fn add_row_broadcast(dst: &mut [f32], src: Option<&[f32]>, bias: &[f32]) {
    let cols = bias.len();
    assert!(
        cols > 0 && dst.len().is_multiple_of(cols),
        "bias of {cols} values does not divide {} values",
        dst.len()
    );
    match src {
        Some(src) => {
            assert_eq!(
                src.len(),
                dst.len(),
                "broadcast add: source and destination differ in size"
            );
            for (dst_row, src_row) in dst.chunks_exact_mut(cols).zip(src.chunks_exact(cols)) {
                for ((d, s), b) in dst_row.iter_mut().zip(src_row).zip(bias) {
                    *d = s + b;
                }
            }
        }
        None => {
            for dst_row in dst.chunks_exact_mut(cols) {
                for (d, b) in dst_row.iter_mut().zip(bias) {
                    *d += b;
                }
            }
        }
    }
}

/// Adds the column sums of `src` (`rows x cols`, with `cols = dst.len()`) to `dst`.
///
/// # Panics
///
/// Panics if `src.len()` is not a multiple of `dst.len()`.
pub fn sum_rows_into(dst: &mut [f32], src: &[f32]) {
    let cols = dst.len();
    assert!(
        cols > 0 && src.len().is_multiple_of(cols),
        "column sum: {} values do not form rows of {cols}",
        src.len()
    );
    for row in src.chunks_exact(cols) {
        for (d, s) in dst.iter_mut().zip(row) {
            *d += s;
        }
    }
}

/// Returns the index of the largest value in each row of a `rows x cols` matrix. The first
/// index wins a tie; a row containing NaN returns the index of its first NaN.
///
/// # Panics
///
/// Panics if `cols` is 0 or does not divide `values.len()`.
pub fn argmax_rows(values: &[f32], cols: usize) -> Vec<usize> {
    assert!(
        cols > 0 && values.len().is_multiple_of(cols),
        "argmax: {} values do not form rows of {cols}",
        values.len()
    );
    values
        .chunks_exact(cols)
        .map(|row| {
            let mut best = 0;
            for (j, &v) in row.iter().enumerate() {
                if v.is_nan() {
                    return j;
                }
                if v > row[best] {
                    best = j;
                }
            }
            best
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_add_adds_bias_to_each_row() {
        let mut dst = vec![0.0; 6];
        add_row_broadcast(
            &mut dst,
            Some(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
            &[10.0, 20.0, 30.0],
        );
        assert_eq!(dst, vec![11.0, 22.0, 33.0, 14.0, 25.0, 36.0]);
        add_row_broadcast(&mut dst, None, &[1.0, 1.0, 1.0]);
        assert_eq!(dst, vec![12.0, 23.0, 34.0, 15.0, 26.0, 37.0]);
    }

    #[test]
    fn column_sums_accumulate() {
        let mut dst = vec![1.0, 1.0];
        sum_rows_into(&mut dst, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(dst, vec![10.0, 13.0]);
    }

    #[test]
    fn argmax_takes_first_of_ties() {
        assert_eq!(
            argmax_rows(&[1.0, 3.0, 3.0, 0.0, -1.0, -2.0], 3),
            vec![1, 0]
        );
        assert_eq!(argmax_rows(&[1.0, f32::NAN, 5.0], 3), vec![1]);
    }
}
