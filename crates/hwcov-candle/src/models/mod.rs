//! One file per model, each mirroring the transformers file it ports.

pub mod bert;
pub mod clip;
pub mod common;
pub mod detr;
pub mod resnet;
pub mod vit;
pub mod x_clip;
