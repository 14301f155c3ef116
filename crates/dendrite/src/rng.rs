//! Seeded random numbers, so that the same seed gives the same weights and data order.

use rand_chacha::ChaCha8Rng;
use rand_core::{Rng as _, SeedableRng};
use serde::{Deserialize, Serialize};

/// A seeded generator (ChaCha8) with the few distributions training needs.
#[derive(Debug, Clone)]
pub struct Rng {
    inner: ChaCha8Rng,
}

impl Rng {
    /// Creates a generator from a seed.
    pub fn new(seed: u64) -> Self {
        Rng {
            inner: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// Creates a generator for one independent purpose (`stream`) of a run with `seed`, so
    /// that weight initialization, shuffling and dropout draw from separate sequences.
    pub fn for_stream(seed: u64, stream: u64) -> Self {
        let mut mixer = Rng::new(seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        Rng::new(mixer.next_u64())
    }

    /// Returns the generator's position, from which [`Rng::from_state`] continues the same
    /// sequence.
    pub fn state(&self) -> RngState {
        let seed: String = self
            .inner
            .get_seed()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        RngState {
            seed,
            stream: self.inner.get_stream(),
            word_position: self.inner.get_word_pos().to_string(),
        }
    }

    /// Creates a generator that continues from a position returned by [`Rng::state`].
    ///
    /// Returns `None` if the state's fields are not valid numbers.
    pub fn from_state(state: &RngState) -> Option<Self> {
        if state.seed.len() != 64 || !state.seed.is_ascii() {
            return None;
        }
        let mut seed = [0u8; 32];
        for (i, byte) in seed.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&state.seed[2 * i..2 * i + 2], 16).ok()?;
        }
        let word_position: u128 = state.word_position.parse().ok()?;
        let mut inner = ChaCha8Rng::from_seed(seed);
        inner.set_stream(state.stream);
        inner.set_word_pos(word_position);
        Some(Rng { inner })
    }

    /// Returns a uniform `u64`.
    pub fn next_u64(&mut self) -> u64 {
        self.inner.next_u64()
    }

    /// Returns a uniform float in `[0, 1)` with 24 bits of precision.
    pub fn uniform(&mut self) -> f32 {
        (self.inner.next_u32() >> 8) as f32 * (1.0 / (1u32 << 24) as f32)
    }

    /// Returns a uniform float in `[low, high)`.
    pub fn uniform_range(&mut self, low: f32, high: f32) -> f32 {
        low + (high - low) * self.uniform()
    }

    /// Returns a standard normal sample (Box-Muller transform, computed in f64).
    pub fn normal(&mut self) -> f32 {
        let u1 = ((self.inner.next_u64() >> 11) as f64 + 1.0) * (1.0 / (1u64 << 53) as f64);
        let u2 = (self.inner.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    }

    /// Returns a uniform integer in `0..n`. Panics if `n` is 0.
    pub fn below(&mut self, n: usize) -> usize {
        assert!(n > 0, "Rng::below called with n = 0");
        // Multiply-shift maps 64 random bits onto 0..n with a bias below 2^-32 for n < 2^32.
        ((self.inner.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// Shuffles `items` in place (Fisher-Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }
}

/// The position of an [`Rng`] in its sequence, as checkpoints store it: the ChaCha8 seed in
/// hexadecimal, the stream number and the position in 32-bit words (a decimal string, because
/// it can exceed the integers JSON readers handle exactly).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RngState {
    /// The 32-byte seed, as 64 hexadecimal digits.
    pub seed: String,
    /// The ChaCha stream number.
    pub stream: u64,
    /// The number of 32-bit words drawn so far, in decimal.
    pub word_position: String,
}

#[cfg(test)]
mod state_tests {
    use super::*;

    #[test]
    fn state_round_trip_continues_sequence() {
        let mut rng = Rng::for_stream(7, 3);
        for _ in 0..13 {
            rng.uniform();
        }
        let state = rng.state();
        let mut restored = Rng::from_state(&state).expect("a state from Rng::state is valid");
        for _ in 0..100 {
            assert_eq!(rng.next_u64(), restored.next_u64());
        }
    }

    #[test]
    fn state_with_bad_seed_is_rejected() {
        let mut state = Rng::new(1).state();
        state.seed = "zz".repeat(32);
        assert!(Rng::from_state(&state).is_none());
    }
}
