//! hwcov-preprocess: what turns user input into model input tensors, identical to transformers'
//! processors, so that every platform gets the same inputs.
//!
//! - [`text`]: tokenizer.json through the tokenizers crate, batched and padded as transformers pads.
//! - [`audio`]: audio files through transformers' feature extractors (Whisper, Wav2Vec2, CLAP).
//! - [`ctc`]: CTC logits back to text (Wav2Vec2CTCTokenizer's decoding).

pub mod audio;
pub mod ctc;
pub mod text;
