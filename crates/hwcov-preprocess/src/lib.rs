//! hwcov-preprocess: what turns user input into model input tensors, identical to transformers'
//! processors, so that every platform gets the same inputs.
//!
//! - [`text`]: tokenizer.json through the tokenizers crate, batched and padded as transformers pads.
//! - [`image`]: image files to `pixel_values` (and `pixel_mask`) as transformers' image processors
//!   make them with their PIL backend (ViT, CLIP, DETR, VideoMAE).
//! - [`video`]: GIFs and folders of frames, sampled to a model's frame count.

pub mod image;
pub mod text;
pub mod video;
