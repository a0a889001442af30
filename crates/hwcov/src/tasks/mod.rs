//! The user-facing tasks of `hwcov run`, one module each, and the request and output they share
//! (`crate::run` picks the task; the tasks never call back into it).

use std::path::PathBuf;

pub mod embed;
pub mod image_classification;
pub mod image_text;
pub mod object_detection;
pub mod sentence_transformers;
pub mod speech_recognition;
pub mod speech_recognition_whisper;
pub mod text_generation;
pub mod video_text;
pub mod vision;
pub mod zero_shot_audio;
pub mod zero_shot_image;

/// Everything a user can hand to `hwcov run`; each task reads what it needs and rejects what it
/// cannot use.
#[derive(Debug, Clone, Default)]
pub struct RunRequest {
    /// Texts: sentences to embed, prompts, or candidate labels for zero-shot tasks.
    pub texts: Vec<String>,
    pub image: Option<PathBuf>,
    pub video: Option<PathBuf>,
    pub audio: Option<PathBuf>,
    /// How token states become one embedding (feature extraction; default mean). A
    /// sentence-transformers folder's own Pooling module decides instead.
    pub pooling: Option<embed::Pooling>,
    /// Feature extraction: also the similarity of every pair of texts (a sentence-transformers
    /// folder's function, else cosine).
    pub similarity: bool,
    /// Feature extraction: the sentence-transformers prompt to put before each text (default: the
    /// folder's `default_prompt_name`).
    pub prompt_name: Option<String>,
    /// The most new tokens to generate.
    pub max_new_tokens: Option<usize>,
    /// Whisper: the language of the audio (code, name or token; default: the generation config's,
    /// else detected) and the task (transcribe or translate).
    pub language: Option<String>,
    pub task: Option<String>,
    /// Sampling, chat template and truncation of text generation (`max_new_tokens` above wins over
    /// the one in here).
    pub generation: text_generation::TextGenerationSettings,
    /// How many labels image classification returns (default 5).
    pub top_k: Option<usize>,
    /// The score above which object detection keeps a box (default 0.5).
    pub threshold: Option<f64>,
    /// Zero-shot image classification's template for the candidate labels (default
    /// "This is a photo of {}.").
    pub hypothesis_template: Option<String>,
    /// The image processor backend for images and videos (default: torchvision, as transformers
    /// picks where torchvision is installed).
    pub image_backend: Option<crate::features::ImageBackend>,
}

/// What a task returns: a human-readable rendering and the same as JSON.
#[derive(Debug, Clone)]
pub struct RunOutput {
    pub text: String,
    pub json: serde_json::Value,
}
