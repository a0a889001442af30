//! The user-facing tasks of `hwcov run`, one module each.

pub mod embed;
pub mod generate;
pub mod speech_recognition;
pub mod speech_recognition_whisper;
pub mod zero_shot_audio;
