//! One file per model, each mirroring the transformers file it ports.

pub mod bert;
pub mod common;
pub mod vit;
