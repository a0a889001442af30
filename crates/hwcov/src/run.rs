//! `hwcov run`: a model folder on user input. Each task (under `tasks/`) turns the request into
//! model inputs through hwcov-preprocess, runs the Handler of the chosen platform, and post-processes
//! the outputs; this module picks the task from the model's class.

use std::path::Path;

use hwcov_core::{Error, LoadOptions, ModelClass, ModelFiles, PlatformId, Result};

use crate::tasks;
pub use crate::tasks::{RunOutput, RunRequest};

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
            tasks::text_generation::run(&files, request, platform, opts)
        }
        ModelClass::Vit => tasks::image_classification::run(&files, request, platform, opts),
        ModelClass::Clip => tasks::zero_shot_image::run(&files, request, platform, opts),
        ModelClass::Detr => tasks::object_detection::run(&files, request, platform, opts),
        ModelClass::XClip => tasks::video_text::run(&files, request, platform, opts),
        ModelClass::Llava | ModelClass::LlavaNext => tasks::image_text::run(&files, request, platform, opts),
    }
}
