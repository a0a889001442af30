//! One file per model, each mirroring the transformers file it ports.

pub mod bert;
pub mod clap;
pub mod common;
pub mod llama;
pub mod opt;
pub mod qwen2;
pub mod qwen3;
pub mod rope;
pub mod t5;
pub mod vit;
pub mod wav2vec2;
pub mod whisper;
