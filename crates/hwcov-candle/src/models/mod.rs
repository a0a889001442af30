//! One file per model, each mirroring the transformers file it ports.

pub mod bert;
pub mod clap;
pub mod common;
pub mod vit;
pub mod wav2vec2;
