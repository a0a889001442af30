//! One file per model, each mirroring the transformers file it ports.

pub mod bert;
pub mod clap;
pub mod clip;
pub mod common;
pub mod detr;
pub mod llama;
pub mod llava;
pub mod llava_next;
pub mod mistral;
pub mod opt;
pub mod qwen2;
pub mod qwen3;
pub mod resnet;
pub mod rope;
pub mod t5;
pub mod vit;
pub mod wav2vec2;
pub mod whisper;
pub mod x_clip;
