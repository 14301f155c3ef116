//! dendrite: train neural networks on the CPU from Rust or from a TOML config.

pub mod autograd;
pub mod error;
pub mod rng;
pub mod tensor;

pub use error::{Error, Result};
