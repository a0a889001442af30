//! The user-facing tasks of `hwcov run`, one module each.

pub mod embed;
pub mod generate;
pub mod image_classification;
pub mod image_text;
pub mod object_detection;
pub mod speech_recognition;
pub mod speech_recognition_whisper;
pub mod video_text;
pub mod vision;
pub mod zero_shot_audio;
pub mod zero_shot_image;
