//! dendrite: train neural networks on the CPU from Rust or from a TOML config.
//!
//! Data flows one way: files are read by [`data`] into datasets, [`train`] drives the model
//! ([`nn`]), the tape ([`autograd`]) and an optimizer ([`optim`]) over minibatches, and
//! [`model`] saves the result.

pub mod autograd;
pub mod data;
pub mod error;
pub mod model;
pub mod nn;
pub mod optim;
pub mod rng;
pub mod tensor;
pub mod train;
pub mod tune;

pub use error::{Error, Result};
