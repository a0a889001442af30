//! Audio into model inputs, as transformers' feature extractors make them.
//!
//! - [`decode`]: WAV (PCM and float), FLAC and MP3 files to samples, in pure Rust (symphonia).
//! - [`resample`]: a windowed-sinc resampler set up like soxr's "HQ" (librosa's default).
//! - [`spectrogram`]: transformers' `audio_utils` (Hann window, STFT power, mel filter banks).
//! - [`features`]: the Whisper, Wav2Vec2 and CLAP feature extractors, picked by
//!   preprocessor_config.json.
//!
//! [`file_features`] runs the whole chain: decode, average the channels, resample to the
//! extractor's rate, extract.

pub mod decode;
pub mod features;
pub mod resample;
pub mod spectrogram;

use std::path::Path;

use hwcov_core::Result;

pub use features::{AudioFeatureExtractor, Features, PreparedAudio, RandomCrop, prepare_audio};

/// The features of an audio file for the model folder `model_dir`, with the prepared audio.
pub fn file_features(model_dir: &Path, audio: &Path, crop: RandomCrop) -> Result<(Features, PreparedAudio)> {
    let fx = AudioFeatureExtractor::from_dir(model_dir)?;
    let prepared = prepare_audio(audio, fx.sampling_rate())?;
    let mut features = fx.extract(&prepared.samples, audio, crop)?;
    let mut notes = prepared.conversions();
    notes.append(&mut features.notes);
    features.notes = notes;
    Ok((features, prepared))
}
