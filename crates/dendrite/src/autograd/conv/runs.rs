//! Copies and adds of the short runs that im2col and col2im move, a whole vector at a time.
//!
//! A run of im2col is one output row, often shorter than a vector (10 values in the second
//! layer of LeNet-5). Moving it value by value, or through `memcpy`, costs more than the
//! matrix multiply that reads it. These helpers read and write whole vectors past the end of
//! a run where the buffers have room, and keep the values there unchanged or let the caller
//! overwrite them.

/// Lane indices as `f32`, for masks of the first lanes of a vector.
pub(super) const LANE_INDICES: [f32; 16] = [
    0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0,
];

/// Loads the vector of `values` from `at`.
///
/// # Panics
///
/// Panics if `values` has fewer than `at + S::F32_LANES` values.
#[inline(always)]
pub(super) fn load<S: pulp::Simd>(values: &[f32], at: usize) -> S::f32s {
    S::as_simd_f32s(&values[at..at + S::F32_LANES]).0[0]
}

/// Loads the vector of `values` that starts `back` values before `at`. Lanes that fall
/// outside `values` are 0.
#[inline(always)]
pub(super) fn load_shifted<S: pulp::Simd>(values: &[f32], at: usize, back: usize) -> S::f32s {
    let lanes = S::F32_LANES;
    if at >= back && at - back + lanes <= values.len() {
        return load::<S>(values, at - back);
    }
    let mut padded = [0.0f32; LANE_INDICES.len()];
    for (l, p) in padded[..lanes].iter_mut().enumerate() {
        if let Some(&v) = (at + l).checked_sub(back).and_then(|i| values.get(i)) {
            *p = v;
        }
    }
    load::<S>(&padded, 0)
}

/// Stores `vector` into `values` from `at`.
///
/// # Panics
///
/// Panics if `values` has fewer than `at + S::F32_LANES` values.
#[inline(always)]
fn store<S: pulp::Simd>(values: &mut [f32], at: usize, vector: S::f32s) {
    S::as_mut_simd_f32s(&mut values[at..at + S::F32_LANES]).0[0] = vector;
}

/// Copies `src[from..from + len]` to `dst[at..at + len]`. When both buffers have room, whole
/// vectors are copied, which also overwrites up to `S::F32_LANES - 1` values of `dst` after
/// the run: the caller must write those later, as im2col does when it fills a buffer from
/// start to end.
///
/// # Panics
///
/// Panics if either range is out of bounds.
#[inline(always)]
pub(super) fn copy_run<S: pulp::Simd>(
    dst: &mut [f32],
    at: usize,
    src: &[f32],
    from: usize,
    len: usize,
) {
    let covered = len.next_multiple_of(S::F32_LANES);
    if at + covered <= dst.len() && from + covered <= src.len() {
        let mut offset = 0;
        while offset < covered {
            store::<S>(dst, at + offset, load::<S>(src, from + offset));
            offset += S::F32_LANES;
        }
    } else {
        dst[at..at + len].copy_from_slice(&src[from..from + len]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Copies runs of every length at every offset near the ends of the buffers, and loads
    /// every shifted vector, with the instruction set `S`, and checks them against plain
    /// loops.
    struct Check;

    impl pulp::WithSimd for Check {
        type Output = ();

        fn with_simd<S: pulp::Simd>(self, _simd: S) {
            let lanes = S::F32_LANES;
            for buffer_len in [1, 7, 16, 40] {
                let src: Vec<f32> = (0..buffer_len).map(|v| v as f32 + 0.25).collect();
                for len in 0..=buffer_len {
                    for at in 0..=buffer_len - len {
                        let from = buffer_len - len - at;
                        let mut copied = vec![-1.0; buffer_len];
                        copy_run::<S>(&mut copied, at, &src, from, len);
                        assert_eq!(
                            copied[at..at + len],
                            src[from..from + len],
                            "copy of {len} values at {at} from {from}, {lanes} lanes"
                        );
                        assert!(
                            copied[..at].iter().all(|&v| v == -1.0),
                            "copy of {len} values at {at} wrote before the run"
                        );
                    }
                }
                for at in 0..buffer_len + 2 {
                    for back in 0..lanes + 2 {
                        let mut loaded = [0.0f32; LANE_INDICES.len()];
                        S::as_mut_simd_f32s(&mut loaded[..lanes]).0[0] =
                            load_shifted::<S>(&src, at, back);
                        for (l, &v) in loaded[..lanes].iter().enumerate() {
                            let expected = (at + l)
                                .checked_sub(back)
                                .and_then(|i| src.get(i))
                                .copied()
                                .unwrap_or(0.0);
                            assert_eq!(
                                v, expected,
                                "lane {l} of the vector {back} before {at}, {lanes} lanes"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn runs_match_plain_loops() {
        pulp::WithSimd::with_simd(Check, pulp::Scalar::new());
        pulp::Arch::new().dispatch(Check);
    }
}
