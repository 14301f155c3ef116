//! Layers, models, losses and initializers.

mod init;
pub mod loss;
mod sequential;

pub use crate::autograd::Activation;
pub use init::Init;
pub use loss::Loss;
pub use sequential::{LayerSpec, LayerSummary, Sequential};
