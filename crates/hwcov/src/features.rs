//! The model input tensors that hwcov-preprocess makes of user input, named as transformers'
//! processors name them (`pixel_values`, `pixel_mask`): what `hwcov features` writes, and what the
//! tasks of `hwcov run` feed the model.
//!
//! Images and videos go through the image processor of transformers' torchvision backend unless the
//! caller names a backend: that is the one `AutoImageProcessor` (and every pipeline) picks where
//! torchvision is installed, as it is where transformers runs on a GPU (hwcov_preprocess::image::Backend).

use std::path::Path;

use hwcov_core::error::read_json;
use hwcov_core::{Error, NamedTensors, Result};
pub use hwcov_preprocess::image::Backend as ImageBackend;
use hwcov_preprocess::image::{ImageProcessor, load_image};
use hwcov_preprocess::video::load_video;

/// The image processor of `model_dir`, computing with `backend` (default: as transformers picks it
/// with torchvision installed).
pub fn image_processor(model_dir: &Path, backend: Option<ImageBackend>) -> Result<ImageProcessor> {
    let processor = ImageProcessor::from_dir(model_dir)?;
    Ok(match backend {
        Some(b) => processor.with_backend(b)?,
        None => processor,
    })
}

/// `pixel_values` (and `pixel_mask` where the processor pads) of a batch of image files, with the
/// image processor of `model_dir` on `backend` (see [`image_processor`]).
pub fn image(model_dir: &Path, images: &[&Path], backend: Option<ImageBackend>) -> Result<NamedTensors> {
    if images.is_empty() {
        return Err(Error::Usage("give an image file with --image".to_string()));
    }
    let processor = image_processor(model_dir, backend)?;
    let decoded = images.iter().map(|p| load_image(p)).collect::<Result<Vec<_>>>()?;
    processor.preprocess(&decoded)
}

/// The number of frames a video model takes: config.json's `vision_config.num_frames` (X-CLIP) or
/// `num_frames` (VideoMAE); `None` where the folder has no such config.
pub fn model_num_frames(model_dir: &Path) -> Result<Option<usize>> {
    let path = model_dir.join("config.json");
    if !path.is_file() {
        return Ok(None);
    }
    let config = read_json(&path)?;
    let (field, value) = match config.get("vision_config").and_then(|v| v.get("num_frames")) {
        Some(v) => ("vision_config.num_frames", Some(v)),
        None => ("num_frames", config.get("num_frames")),
    };
    match value {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if n > 0 => Ok(Some(n as usize)),
            _ => Err(Error::config(
                &path,
                field,
                format!("expected a positive integer, got {v}"),
            )),
        },
    }
}

/// `pixel_values` (1, frames, channels, height, width) of a video (an animated GIF or a folder of
/// frames), sampled to `num_frames` (by default the model's, else every frame), with the image
/// processor of `model_dir` on `backend` (see [`image_processor`]).
pub fn video(
    model_dir: &Path,
    video: &Path,
    num_frames: Option<usize>,
    backend: Option<ImageBackend>,
) -> Result<NamedTensors> {
    let processor = image_processor(model_dir, backend)?;
    let n = match num_frames {
        Some(n) => Some(n),
        None => model_num_frames(model_dir)?,
    };
    let frames = load_video(video, n)?;
    processor.preprocess_videos(&[frames])
}
