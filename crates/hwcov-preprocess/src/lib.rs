//! hwcov-preprocess: what turns user input into model input tensors, identical to transformers'
//! processors, so that every platform gets the same inputs.
//!
//! - [`text`]: tokenizer.json through the tokenizers crate, batched and padded as transformers pads.

pub mod text;
