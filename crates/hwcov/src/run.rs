//! `hwcov run`: a model folder on user input. Each task (under `tasks/`) turns the request into
//! model inputs through hwcov-preprocess, runs the Handler of the chosen platform, and post-processes
//! the outputs; this module picks the task from the model's class.

use std::path::{Path, PathBuf};

use hwcov_core::{Error, LoadOptions, ModelClass, ModelFiles, PlatformId, Result};

use crate::tasks;

/// Everything a user can hand to `hwcov run`; each task reads what it needs and rejects what it
/// cannot use.
#[derive(Debug, Clone, Default)]
pub struct RunRequest {
    /// Texts: sentences to embed, prompts, or candidate labels for zero-shot tasks.
    pub texts: Vec<String>,
    pub image: Option<PathBuf>,
    pub video: Option<PathBuf>,
    pub audio: Option<PathBuf>,
    /// How token states become one embedding (feature extraction).
    pub pooling: tasks::embed::Pooling,
    /// The most new tokens to generate.
    pub max_new_tokens: Option<usize>,
    /// Whisper: the language of the audio (code, name or token; default: the generation config's,
    /// else detected) and the task (transcribe or translate).
    pub language: Option<String>,
    pub task: Option<String>,
    /// Sampling, chat template and truncation of text generation (`max_new_tokens` above wins over
    /// the one in here).
    pub generation: tasks::generate::TextGenerationSettings,
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

/// Runs the task of the model's class on `platform`.
pub fn run(model_dir: &Path, request: &RunRequest, platform: PlatformId, opts: &LoadOptions) -> Result<RunOutput> {
    let files = ModelFiles::open(model_dir)?;
    if (request.language.is_some() || request.task.is_some()) && files.class != ModelClass::Whisper {
        return Err(Error::Usage(format!(
            "--language and --task are for Whisper; this is a {} model",
            files.class.name()
        )));
    }
    let vision = matches!(
        files.class,
        ModelClass::Vit | ModelClass::Clip | ModelClass::Detr | ModelClass::XClip
    );
    if let (Some(b), false) = (request.image_backend, vision) {
        return Err(Error::Usage(format!(
            "--image-backend {b} is for models that take images or videos; this is a {} model",
            files.class.name()
        )));
    }
    match files.class {
        ModelClass::Bert => tasks::embed::run(&files, request, platform, opts),
        ModelClass::Wav2Vec2 => tasks::speech_recognition::run(&files, request, platform, opts),
        ModelClass::Whisper => tasks::speech_recognition_whisper::run(&files, request, platform, opts),
        ModelClass::Clap => tasks::zero_shot_audio::run(&files, request, platform, opts),
        ModelClass::T5 | ModelClass::Opt | ModelClass::Llama | ModelClass::Qwen2 | ModelClass::Qwen3 => {
            tasks::generate::run(&files, request, platform, opts)
        }
        ModelClass::Vit => tasks::image_classification::run(&files, request, platform, opts),
        ModelClass::Clip => tasks::zero_shot_image::run(&files, request, platform, opts),
        ModelClass::Detr => tasks::object_detection::run(&files, request, platform, opts),
        ModelClass::XClip => tasks::video_text::run(&files, request, platform, opts),
        ModelClass::Llava | ModelClass::LlavaNext => tasks::image_text::run(&files, request, platform, opts),
    }
}
