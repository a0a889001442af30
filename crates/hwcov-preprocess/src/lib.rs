//! hwcov-preprocess: what turns user input into model input tensors, identical to transformers'
//! processors, so that every platform gets the same inputs.
//!
//! - [`text`]: tokenizer.json through the tokenizers crate, batched and padded as transformers pads.
//! - [`audio`]: audio files through transformers' feature extractors (Whisper, Wav2Vec2, CLAP).
//! - [`ctc`]: CTC logits back to text (Wav2Vec2CTCTokenizer's decoding).
//! - [`image`]: image files to `pixel_values` (and `pixel_mask`) as transformers' image processors
//!   make them (ViT, CLIP, DETR, VideoMAE) with their torchvision backend or their PIL one.
//! - [`llava`]: LLaVA's and LLaVA-NeXT's processors: images, and the image tokens of the prompts
//!   expanded to the model's count of image features.
//! - [`video`]: GIFs and folders of frames, sampled to a model's frame count.

pub mod audio;
pub mod ctc;
pub mod image;
pub mod llava;
pub mod text;
pub mod video;
