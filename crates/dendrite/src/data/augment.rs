//! Seeded random augmentation of image features, for training batches only.

use serde::{Deserialize, Serialize};

use crate::rng::Rng;

/// Random changes applied to each training image, each one off by default.
///
/// An image is shifted by a random offset `(dy, dx)` and then, if enabled, mirrored left to
/// right with probability 1/2. The offset is the sum of the offset of the random crop and the
/// offset of the shift, each drawn uniformly per axis, so it is at most
/// `crop_padding + max_shift` pixels per axis. Pixels shifted in from outside the image are 0,
/// which is black for features in `[0, 1]` and the channel mean for standardized features.
///
/// With `crop_padding = p` alone, the result has the same distribution as PyTorch's
/// `RandomCrop(size, padding=p)` with zero fill. `max_shift = p` alone gives the same
/// distribution, and both fields exist so that configs can use either name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Augment {
    /// The zero padding, in pixels, added on every side before cropping a window of the
    /// original size at a random position.
    pub crop_padding: usize,

    /// Whether to mirror the image left to right with probability 1/2.
    pub horizontal_flip: bool,

    /// The maximum translation, in pixels, along each axis.
    pub max_shift: usize,
}

impl Augment {
    /// Returns true if every augmentation is off, so [`Augment::apply_into`] only copies.
    pub fn is_identity(&self) -> bool {
        self.crop_padding == 0 && !self.horizontal_flip && self.max_shift == 0
    }

    /// Writes a randomly augmented copy of one image to `out`.
    ///
    /// `image` and `out` both contain `channels * height * width` values in the layout
    /// `[channels, height, width]`, with `shape = (channels, height, width)`. All channels get
    /// the same offset and flip. The random draws come from `rng` in a fixed order (crop
    /// offsets, shift offsets, flip), and disabled augmentations draw nothing, so the same
    /// seed gives the same output.
    ///
    /// # Panics
    ///
    /// Panics if `image` or `out` does not contain `channels * height * width` values.
    pub fn apply_into(
        &self,
        image: &[f32],
        (channels, height, width): (usize, usize, usize),
        rng: &mut Rng,
        out: &mut [f32],
    ) {
        let len = channels * height * width;
        assert_eq!(
            image.len(),
            len,
            "Augment::apply_into: image has {} values, but shape ({channels}, {height}, {width}) \
             needs {len}",
            image.len()
        );
        assert_eq!(
            out.len(),
            len,
            "Augment::apply_into: out has {} values, but shape ({channels}, {height}, {width}) \
             needs {len}",
            out.len()
        );

        let mut dy = 0isize;
        let mut dx = 0isize;
        for max in [self.crop_padding, self.max_shift] {
            if max > 0 {
                dy += random_offset(rng, max);
                dx += random_offset(rng, max);
            }
        }
        let flip = self.horizontal_flip && rng.uniform() < 0.5;

        let plane = height * width;
        for (source, target) in image
            .chunks_exact(plane.max(1))
            .zip(out.chunks_exact_mut(plane.max(1)))
        {
            shift_plane_into(source, (height, width), (dy, dx), flip, target);
        }
    }
}

/// Returns a uniform offset in `-max..=max`.
fn random_offset(rng: &mut Rng, max: usize) -> isize {
    rng.below(2 * max + 1) as isize - max as isize
}

/// Writes `out[y][x] = plane[y + dy][x' + dx]`, where `x'` is `width - 1 - x` when `flip` is
/// set and `x` otherwise, with 0 where the source lies outside the plane.
fn shift_plane_into(
    plane: &[f32],
    (height, width): (usize, usize),
    (dy, dx): (isize, isize),
    flip: bool,
    out: &mut [f32],
) {
    for y in 0..height {
        let source_y = y as isize + dy;
        let row = &mut out[y * width..(y + 1) * width];
        if source_y < 0 || source_y >= height as isize {
            row.fill(0.0);
            continue;
        }

        let source_row = &plane[source_y as usize * width..(source_y as usize + 1) * width];
        for (x, value) in row.iter_mut().enumerate() {
            let mirrored_x = if flip { width - 1 - x } else { x };
            let source_x = mirrored_x as isize + dx;
            *value = if source_x < 0 || source_x >= width as isize {
                0.0
            } else {
                source_row[source_x as usize]
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHAPE: (usize, usize, usize) = (2, 5, 4);

    /// Returns an image of shape `SHAPE` whose values are 1, 2, 3, ..., all distinct and nonzero.
    fn numbered_image() -> Vec<f32> {
        (1..=SHAPE.0 * SHAPE.1 * SHAPE.2)
            .map(|v| v as f32)
            .collect()
    }

    fn augment(augment: &Augment, image: &[f32], seed: u64) -> Vec<f32> {
        let mut out = vec![f32::NAN; image.len()];
        augment.apply_into(image, SHAPE, &mut Rng::new(seed), &mut out);
        out
    }

    /// Returns the image mirrored left to right.
    fn mirrored(image: &[f32]) -> Vec<f32> {
        let mut out = vec![0.0; image.len()];
        for (source, target) in image
            .chunks_exact(SHAPE.1 * SHAPE.2)
            .zip(out.chunks_exact_mut(SHAPE.1 * SHAPE.2))
        {
            shift_plane_into(source, (SHAPE.1, SHAPE.2), (0, 0), true, target);
        }
        out
    }

    #[test]
    fn all_off_is_identity() {
        let image = numbered_image();
        let off = Augment::default();

        assert!(off.is_identity());
        for seed in 0..5 {
            assert_eq!(augment(&off, &image, seed), image);
        }
    }

    #[test]
    fn same_seed_same_output() {
        let image = numbered_image();
        let all_on = Augment {
            crop_padding: 2,
            horizontal_flip: true,
            max_shift: 1,
        };

        for seed in 0..10 {
            assert_eq!(
                augment(&all_on, &image, seed),
                augment(&all_on, &image, seed)
            );
        }
        let outputs: Vec<Vec<f32>> = (0..10).map(|seed| augment(&all_on, &image, seed)).collect();
        assert!(
            outputs.iter().any(|out| *out != outputs[0]),
            "10 seeds gave the same output"
        );
    }

    #[test]
    fn flip_twice_is_identity() {
        let image = numbered_image();

        let once = mirrored(&image);
        assert_ne!(once, image);
        assert_eq!(&once[..4], &[4.0, 3.0, 2.0, 1.0]);
        assert_eq!(mirrored(&once), image);
    }

    #[test]
    fn flip_gives_image_or_mirror() {
        let image = numbered_image();
        let flip = Augment {
            horizontal_flip: true,
            ..Augment::default()
        };

        let mut flipped = 0;
        for seed in 0..40 {
            let out = augment(&flip, &image, seed);
            if out == mirrored(&image) {
                flipped += 1;
            } else {
                assert_eq!(out, image, "seed {seed}");
            }
        }
        assert!((5..=35).contains(&flipped), "{flipped} of 40 flipped");
    }

    /// Checks that `out` is `image` moved by one offset of at most `max` pixels per axis,
    /// with zeros elsewhere, and returns the offset.
    fn check_shifted(image: &[f32], out: &[f32], max: usize) -> (isize, isize) {
        let (channels, height, width) = SHAPE;
        assert_eq!(out.len(), image.len());

        let mut offset = None;
        for c in 0..channels {
            for y in 0..height {
                for x in 0..width {
                    let value = out[(c * height + y) * width + x];
                    if value == 0.0 {
                        continue;
                    }
                    // Values are numbered from 1, so the value gives the source position.
                    let source = value as usize - 1;
                    let (source_c, source_y, source_x) = (
                        source / (height * width),
                        source / width % height,
                        source % width,
                    );
                    assert_eq!(source_c, c, "a pixel moved between channels");
                    let moved = (
                        source_y as isize - y as isize,
                        source_x as isize - x as isize,
                    );
                    assert!(moved.0.unsigned_abs() <= max, "moved {moved:?}");
                    assert!(moved.1.unsigned_abs() <= max, "moved {moved:?}");
                    assert_eq!(*offset.get_or_insert(moved), moved, "pixels moved apart");
                }
            }
        }

        let (dy, dx) = offset.unwrap_or((0, 0));
        let inside = |v: isize, len: usize| v >= 0 && v < len as isize;
        for c in 0..channels {
            for y in 0..height {
                for x in 0..width {
                    let expected_zero =
                        !inside(y as isize + dy, height) || !inside(x as isize + dx, width);
                    let value = out[(c * height + y) * width + x];
                    assert_eq!(value == 0.0, expected_zero, "pixel ({c}, {y}, {x})");
                }
            }
        }
        (dy, dx)
    }

    #[test]
    fn crop_moves_pixels_at_most_padding() {
        let image = numbered_image();
        let crop = Augment {
            crop_padding: 2,
            ..Augment::default()
        };

        let mut offsets = std::collections::HashSet::new();
        for seed in 0..200 {
            let out = augment(&crop, &image, seed);
            offsets.insert(check_shifted(&image, &out, 2));
        }
        // 5 x 5 offsets are possible, and 200 draws reach every one with near certainty.
        assert_eq!(offsets.len(), 25, "{offsets:?}");
    }

    #[test]
    fn crop_and_shift_add_up() {
        let image = numbered_image();
        let both = Augment {
            crop_padding: 1,
            max_shift: 1,
            ..Augment::default()
        };

        for seed in 0..50 {
            let out = augment(&both, &image, seed);
            check_shifted(&image, &out, 2);
        }
    }

    #[test]
    #[should_panic(expected = "out has 3 values")]
    fn apply_panics_on_wrong_out_len() {
        let image = numbered_image();
        Augment::default().apply_into(&image, SHAPE, &mut Rng::new(0), &mut [0.0; 3]);
    }
}
