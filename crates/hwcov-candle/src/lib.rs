//! hwcov-candle: the model graphs on candle, generic over candle's `Device`. The eager platform
//! crates (cpu, cuda, metal) pick a device and hand it here.
//!
//! - [`models`]: one file per model, mirroring the transformers file it ports.
//! - [`adapters`]: one per model family, between named tensors and the model's forward().
//! - [`handler`]: the `Handler`, which picks the adapter of the model's class.
//! - [`weights`], [`config`]: reading a `save_pretrained` folder.
//! - [`nn`]: the layers; [`kernels`]: the seam where a platform crate gives them its device's kernels.

pub mod activation;
pub mod adapters;
pub mod config;
pub mod handler;
pub mod io;
pub mod kernels;
pub mod models;
pub mod nn;
pub mod weights;

pub use handler::CandleHandler;

use hwcov_core::{ModelClass, Support};

/// What the platforms on candle claim: every class of the matrix has a candle port.
pub fn support(_class: ModelClass) -> Support {
    Support::Implemented
}
